"""`vigil demo` driven through stdin as a person would type, reaching every persona."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

from bidi import get_display
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.demo import DEMO_PASSPHRASE
from bot.messages import Choice, Outgoing
from bot.transports import terminal_bidi
from bot.transports.console import ConsoleTransport
from bot.transports.terminal_bidi import display
from storage.store import unlock
from tests.conftest import REPO

VIGIL = str(Path(sys.executable).with_name("vigil"))


def run_demo(script: list[str], tmp_path: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["HOME"] = str(tmp_path)  # the demo must not need or touch the user's real data dir
    proc = subprocess.run(
        [VIGIL, "demo", *args],
        input="\n".join(script) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def test_demo_tour_reaches_every_persona(tmp_path: Path) -> None:
    out = run_demo(
        [
            "/start",
            "/cases",
            "/case ales-demo",
            "/case nasrin-demo",  # restricted: a newcomer may not see it
            ":as relative",
            "/help",
            "/case nasrin-demo",
            ":as activist",
            "/help",
            ":as coordinator",
            "/invite activist",
            "/language ru",
            "/help",
            "/language en",
            ":as admin",
            "/invite coordinator",
            ":who",
            ":quit",
        ],
        tmp_path,
    )
    assert "Welcome to the Vigil demo" in out
    for persona in ("newcomer>", "relative>", "activist>", "coordinator>", "admin>"):
        assert persona in out, persona
    assert "Ales Demo-Bialiatski" in out
    assert out.count("No case by that name was found, or you may not see it.") == 1
    assert "Nasrin Sotoudeh-Demo" in out  # the relative sees their restricted case
    assert out.count("Invite code") == 2
    assert "Язык" in out or "язык" in out  # the coordinator switched to Russian and back
    assert "Language set: English." in out
    assert "Bye." in out


class DemoSession:
    """Types a line, then reads until the next prompt, like a person at the terminal."""

    def __init__(self, tmp_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        env["HOME"] = str(tmp_path)
        self.proc = subprocess.Popen(
            [VIGIL, "demo"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env, bufsize=0,
        )  # fmt: skip
        self.read_until_prompt()

    def read_until_prompt(self) -> str:
        assert self.proc.stdout is not None
        buf = ""
        while not re.search(r"(^|\n)[a-z]+> $", buf):
            ch = self.proc.stdout.read(1)
            assert ch, f"demo ended early: {buf!r}"
            buf += ch
        return buf

    def type(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read_until_prompt()

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(":quit\n")
        self.proc.stdin.flush()
        return self.proc.wait(timeout=30)


def test_demo_invite_passes_between_personas(tmp_path: Path) -> None:
    demo = DemoSession(tmp_path)
    try:
        demo.type(":as coordinator")
        answer = demo.type("/invite activist")
        code = re.search(r"\b[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}\b", answer)
        assert code, answer
        demo.type(":as newcomer")
        assert "You joined as supporter" in demo.type(f"/start {code.group(0)}")
        demo.type(":as activist")
        assert "not valid" in demo.type(f"/start {code.group(0)}")  # one use only
        menu = demo.type("/language")  # a numbered menu, answered with the number
        number = re.search(r"(\d+)\) English", menu)
        assert number, menu
        assert "Language set: English." in demo.type(number.group(1))
    finally:
        assert demo.close() == 0


PERSONAS = ["admin", "coordinator", "relative", "activist", "newcomer"]


def who_names(listing: str) -> list[str]:
    return re.findall(r"^ [ *] (\S+) ", listing, re.M)


def who_line(listing: str, name: str) -> str:
    found = re.search(rf"^ [ *] {name} +(.*)$", listing, re.M)
    assert found, listing
    return found.group(1)


def test_unknown_console_command_shows_help(tmp_path: Path) -> None:
    out = run_demo([":dance", ":as two words", ":quit"], tmp_path)
    assert ":as NAME  switch persona" in out
    assert "No one is called 'two words'" in out
    assert "   relative     Rana, sister of Nasrin Sotoudeh-Demo — relative" in out
    assert who_names(out.split("'two words'")[-1]) == PERSONAS  # no one was made of it


def test_as_matches_personas_in_any_case(tmp_path: Path) -> None:
    demo = DemoSession(tmp_path)
    try:
        assert "(you are now relative: Rana" in demo.type(":as RANA")
        assert demo.type(":as Coordinator").endswith("\ncoordinator> ")
        assert demo.type(":AS ada").endswith("\nadmin> ")
        answer = demo.type(":as Relative")
        assert answer.endswith("\nrelative> ")
        assert "Nasrin Sotoudeh-Demo" in demo.type("/case nasrin-demo")  # really the relative
        assert who_names(demo.type(":who")) == PERSONAS  # no one was made of the spellings
    finally:
        assert demo.close() == 0


def test_who_shows_people_as_they_are_after_joins(tmp_path: Path) -> None:
    demo = DemoSession(tmp_path)
    try:
        before = demo.type(":who")
        assert who_line(before, "newcomer").endswith("— not a member yet")
        assert who_line(before, "activist").endswith("— supporter")
        demo.type(":as coordinator")
        codes = [
            re.search(r"\b[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}\b", demo.type("/invite activist"))
            for _ in range(2)
        ]
        assert all(codes), codes
        assert "(you are now sam: someone new — not a member yet)" in demo.type(":as Sam")
        assert who_line(demo.type(":who"), "sam") == "someone new — not a member yet"
        assert "You joined as supporter" in demo.type(f"/start {codes[0].group(0)}")
        demo.type(":as newcomer")
        assert "You joined as supporter" in demo.type(f"/start {codes[1].group(0)}")
        after = demo.type(":who")
        assert who_line(after, "sam") == "someone new — supporter"
        assert who_line(after, "newcomer") == "someone who just found the bot — supporter"
        assert re.search(r"^ \* newcomer ", after, re.M)  # the one typing now is marked
        assert after.index(" sam ") > after.index(" newcomer ")  # personas first, then new people
    finally:
        assert demo.close() == 0


# --- right-to-left text on the terminal ----------------------------------------------------

FA_LANGUAGE_SET = "زبان تنظیم شد: فارسی."  # what /language fa answers, in logical order
FA_LANGUAGE_SET_SHOWN = ".یسراف :دش میظنت نابز"  # and as it reads on a terminal, right to left
# The terminal drops bidi controls after reordering: isolates, and the RLM that starts a line
# beginning with a command (bot/i18n.py).
STRIP_ISOLATES = dict.fromkeys([*range(0x2066, 0x206A), 0x200E, 0x200F])


def outbox_texts(data_dir: Path, chat: str) -> list[str]:
    store = unlock(data_dir, DEMO_PASSPHRASE)
    try:
        rows = store.db.run_sync(
            lambda c: c.execute(
                "SELECT body FROM outbox WHERE transport = 'console' AND chat = ? ORDER BY id",
                (chat,),
            ).fetchall()
        )
    finally:
        store.close()
    return [json.loads(body)["text"] for (body,) in rows]


def test_persian_reply_printed_in_visual_order_stored_in_logical_order(tmp_path: Path) -> None:
    data_dir = tmp_path / "kept"
    out = run_demo(
        [":as relative", "/language fa", "/help", ":quit"], tmp_path, "--data-dir", str(data_dir)
    )
    texts = outbox_texts(data_dir, "relative")
    assert texts[0] == FA_LANGUAGE_SET  # the outbox holds the text as Telegram would get it
    assert f"relative> [bot] {FA_LANGUAGE_SET_SHOWN}\n" in out
    assert get_display(FA_LANGUAGE_SET) == FA_LANGUAGE_SET_SHOWN
    assert FA_LANGUAGE_SET not in out

    help_text = texts[1]
    assert "\u2066/case NAME\u2069" in help_text  # Vigil isolated the command for RTL readers
    printed = out.split("relative> [bot] ", 2)[2].split("\nrelative> ")[0].split("\n")
    logical = help_text.split("\n")
    assert len(printed) == len(logical)
    plain = 0
    for shown, line in zip(printed, logical, strict=True):
        assert shown == display(line), line
        if re.search(r"[\u0600-\u06ff]", line):
            assert shown != line
        if not any(unicodedata.bidirectional(ch) == "NSM" for ch in line) and not re.search(
            r"[][()]", line
        ):
            # python-bidi's own reordering, isolates dropped; it neither places combining marks
            # nor mirrors brackets, which terminal_bidi does (tested on their own above)
            assert shown == get_display(line).translate(STRIP_ISOLATES), line
            plain += 1
    assert plain >= len(logical) // 2  # most lines: no marks, no brackets
    assert not re.search("[\u2066-\u2069]", "\n".join(printed))


def test_english_lines_print_exactly_as_sent() -> None:
    for text in (
        "Invite code (one use, valid for 7 days).\n\n/start D9Q7-DEZD-ZCSW",
        "Cases: \u2068Ales Demo-Bialiatski\u2069 [public] (3) <ok> {x}",
        "café naïve — 12:30, 1.5%",
    ):
        assert display(text) == text


def console_print(out: Outgoing) -> str:
    stdout = io.StringIO()
    console = ConsoleTransport({"relative": "Rana"}, "relative", stdout=stdout)
    asyncio.run(console.send(out))
    return stdout.getvalue()


def test_console_send_shows_visual_order_and_leaves_the_message_alone() -> None:
    text = "پرونده (خانواده) را با \u2066/case ales-demo\u2069 ببینید."
    menu = (Choice("فارسی", "/language fa"), Choice("English", "/language en"))
    out = Outgoing(transport="console", chat="relative", text=text, choices=menu)
    printed = console_print(out)
    assert printed == (
        "[bot] .دینیبب /case ales-demo اب ار (هداوناخ) هدنورپ\n   1) یسراف\n   2) English\n"
    )
    assert out.text == text and out.choices == menu  # what a platform would be given
    english = Outgoing(transport="console", chat="relative", text="Language set: English.")
    assert console_print(english) == "[bot] Language set: English.\n"


def test_brackets_and_marks_in_right_to_left_runs() -> None:
    # L4: brackets in a right-to-left run are drawn mirrored; python-bidi alone leaves them.
    assert get_display("سلام (دنیا)") == ")ایند( مالس"
    assert display("سلام (دنیا)") == "(ایند) مالس"
    assert display("a (ب [ج] د) e") == "a (د [ج] ب) e"  # left-to-right line, nested run
    # L3: the tanwin of مثلاً follows its alef, not the space before the word.
    assert display("مثلاً ۲") == "۲ اًلثم"


BIDI_ALPHABET = st.sampled_from(
    list("abc XY12٣۴.,:;-/()[]<>\t") + list("سلامبنعשלו") + ["\u064b", "\u0651"]
    + ["\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u200f", "\u202b", "\u202c"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(BIDI_ALPHABET, min_size=1, max_size=40).map("".join))
def test_reordering_is_python_bidis(line: str) -> None:
    """The L1/L2 done here (for L3 and L4) orders every line as python-bidi's get_display does,
    so the mirrored, mark-mended line is python-bidi's reordering, never a guess."""
    resolved = terminal_bidi._resolved(line)
    assert resolved is not None
    classes, levels = resolved
    order = terminal_bidi._visual_order(classes, levels, terminal_bidi.get_base_level(line))
    assert sorted(order) == list(range(len(line)))
    assert "".join(line[i] for i in order) == get_display(line)
