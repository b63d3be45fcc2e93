"""End to end: the /report wizard over Telegram and Signal (issue #5), `vigil run` as a subprocess.

An operator's setup, as the docs describe it: `vigil init`, `vigil keys sealing-new --out FILE`
on a machine without the network (the key file's passphrase from VIGIL_SEALING_PASSPHRASE,
given to that command only), `vigil keys sealing-import FILE.pub` on the server, then
`vigil run` against the fakes. The administrator from `vigil init` redeems the printed code,
creates a case with /newcase and invites a relative with /invite family SLUG. The relative goes
through every step of the wizard the way a person does it: pressing the inline buttons on
Telegram, typing the numbers of the numbered menus on Signal, typing the free-text answers.

Checked: the case's coordinator receives the live report with every answer; on Telegram the
relative's messages that carried report words are deleted from the chat (delete_reports is on
by default); neither fake records a contract violation; the database files on disk never hold
the free text in the clear, and neither does the log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import VigilProcess, vigil_process
from tests.fakes.signal_api import FakeSignal
from tests.fakes.telegram_api import FakeTelegram, FloodLimits, ThreadedFakeTelegram

pytestmark = pytest.mark.timeout(120)

SEALING_PASSPHRASE = "e2e sealing key file passphrase, not the network's"
SLUG = "anna-k"
CASE_NAME = "Anna Karimova"
CONDITIONS = "sentinel-cond Q7XW9: cold cell, no blanket since March"
NEWS = "sentinel-news Z3KP4: the lawyer saw bruises on her left arm"
INVITE_CODE = re.compile(r"\b[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}\b")
WAIT = 20.0  # seconds for one answer; Signal paces a chat to one message every 2 s

# Telegram user ids (private chats share the user's id).
TG_COORDINATOR = 5_300_100_201
TG_RELATIVE = 5_300_100_202

# Signal senders: ACIs; the relative hides her number, the coordinator does not.
SIG_COORDINATOR = "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
SIG_COORDINATOR_NUMBER = "+4915112345678"
SIG_RELATIVE = "7f6e5d4c-3b2a-4918-8776-655443322110"


# --- shared ---------------------------------------------------------------------------------


def make_sealing_key(v: VigilProcess) -> Path:
    """`vigil keys sealing-new --out FILE` before `vigil run` starts (it reads the key at start).
    The key file lands outside the data dir, as the docs ask."""
    out = v.workdir / "sealing-key.json"
    v.env["VIGIL_SEALING_PASSPHRASE"] = SEALING_PASSPHRASE
    v.env["VIGIL_DATA_DIR"], server = str(v.workdir / "offline-laptop"), v.env["VIGIL_DATA_DIR"]
    try:
        printed = v.cli("keys", "sealing-new", "--out", str(out)).stdout
    finally:
        del v.env["VIGIL_SEALING_PASSPHRASE"]  # `vigil run` never needs it
        v.env["VIGIL_DATA_DIR"] = server
    assert "Sealing key written" in printed
    assert out.exists()
    v.cli("keys", "sealing-import", f"{out}.pub")
    return out


def invite_code(text: str) -> str:
    found = INVITE_CODE.search(text)
    assert found, "no invite code in the answer to /invite"
    return found.group(0)


def assert_db_files_free_of(v: VigilProcess, *texts: str) -> None:
    """The raw files (vigil.db, -wal, -shm, ...) never hold the report words in the clear."""
    files = sorted(v.data_dir.glob("vigil.db*"))
    assert files, "no database file in the data dir"
    for path in files:
        raw = path.read_bytes()
        for text in texts:
            for encoded in (text.encode("utf-8"), text.encode("utf-16-le")):
                assert encoded not in raw, f"report words in the clear in {path.name}"


def check_logs(v: VigilProcess, family_code: str, *secrets: str | int) -> None:
    """No traceback; no report words, invite code, passphrase, id or token in stderr."""
    v.assert_no_tracebacks()
    codes = [c for c in (v.admin_code, family_code) if c]
    v.assert_log_free_of(
        [CONDITIONS, NEWS, SEALING_PASSPHRASE, CASE_NAME, *codes]
        + [c.replace("-", "") for c in codes]
        + list(secrets)
    )


def assert_live_copy(text: str) -> None:
    """The coordinator's copy carries every answer of the wizard."""
    assert f"about {CASE_NAME}" in text
    assert "Visit" in text
    assert "Health: Concern" in text
    assert f"Conditions: {CONDITIONS}" in text
    assert "Needs: Medicine" in text
    assert NEWS in text
    assert "/publish" in text


# --- Telegram -------------------------------------------------------------------------------


def tg_last(tg: ThreadedFakeTelegram, chat: int) -> int:
    return max((m.message_id for m in tg.messages(chat)), default=0)


def tg_say(tg: ThreadedFakeTelegram, user: int, text: str) -> Any:
    """`user` types `text`; returns the bot's first answer after it."""
    msg = tg.user_sends(user, text)
    return tg.next_sent(user, WAIT, after=msg.message_id)


def tg_press(tg: ThreadedFakeTelegram, user: int, question: Any, label: str) -> Any:
    """`user` presses the inline button `label` under `question`; returns the next answer."""
    assert question.buttons, f"no buttons under: {question.content!r}"
    data = question.button_data(label)
    assert len(data.encode()) <= 64
    last = tg_last(tg, user)
    query = tg.user_presses(user, question.message_id, data)
    answer = tg.next_sent(user, WAIT, after=last)
    tg.wait_for(lambda f: f.callback_answer(query) is not None, WAIT)  # the spinner stops
    return answer


@pytest.fixture
def tg() -> Iterator[ThreadedFakeTelegram]:
    # Telegram's flood limits are enforced: a wizard must never provoke a 429.
    with FakeTelegram.in_thread(flood=FloodLimits()) as fake:
        yield fake


def test_report_wizard_on_telegram_with_buttons(tg: ThreadedFakeTelegram, tmp_path: Path) -> None:
    env = {"VIGIL_TELEGRAM_TOKEN": tg.token, "VIGIL_TELEGRAM_API_URL": tg.base_url}
    with vigil_process(tmp_path, env, start=False) as v:
        make_sealing_key(v)
        v.start()
        assert v.admin_code
        tg.register_user(TG_COORDINATOR, "Coordinator", language_code="en")
        tg.register_user(TG_RELATIVE, "Relative", language_code="en")

        # The coordinator (the administrator from `vigil init`) sets up the case.
        assert "administrator" in tg_say(tg, TG_COORDINATOR, f"/start {v.admin_code}").content
        created = tg_say(tg, TG_COORDINATOR, f"/newcase {SLUG} {CASE_NAME}").content
        assert "Case created" in created
        code = invite_code(tg_say(tg, TG_COORDINATOR, f"/invite family {SLUG}").content)
        joined = tg_say(tg, TG_RELATIVE, f"/start {code}").content
        assert "relative" in joined and CASE_NAME in joined

        # The relative reports, pressing buttons and typing the free text.
        q = tg_say(tg, TG_RELATIVE, "/report")
        assert "(1 of 7)" in q.content and f"How did you get news of {CASE_NAME}" in q.content
        q = tg_press(tg, TG_RELATIVE, q, "Visit")
        assert "(2 of 7) When was it?" in q.content
        q = tg_press(tg, TG_RELATIVE, q, "Today")
        assert "(3 of 7)" in q.content and "health" in q.content
        q = tg_press(tg, TG_RELATIVE, q, "Concern")
        assert "(4 of 7)" in q.content and "conditions" in q.content
        typed = [tg.user_sends(TG_RELATIVE, CONDITIONS)]
        q = tg.next_sent(TG_RELATIVE, WAIT, after=typed[-1].message_id)
        assert "(5 of 7)" in q.content and "need" in q.content
        q = tg_press(tg, TG_RELATIVE, q, "Medicine")
        assert "✓ Medicine" in [b["text"] for b in q.buttons]
        q = tg_press(tg, TG_RELATIVE, q, "Done")
        assert "(6 of 7)" in q.content and "Anything else" in q.content
        typed.append(tg.user_sends(TG_RELATIVE, NEWS))
        q = tg.next_sent(TG_RELATIVE, WAIT, after=typed[-1].message_id)
        assert "(7 of 7)" in q.content and "photo or a document" in q.content
        thanks = tg_press(tg, TG_RELATIVE, q, "Send the report without a file")
        assert "Thank you. Your report about" in thanks.content
        assert "report #1" in thanks.content

        # The coordinator gets the live copy.
        live = tg.wait_for(
            lambda f: next(
                (m for m in f.sent(TG_COORDINATOR) if "Report #1 " in (m.content or "")), None
            ),
            WAIT,
        )
        assert_live_copy(live.content)
        assert live.parse_mode is None  # the family's words never go out as markup

        # The relative's typed report messages are deleted from the chat; nothing else is.
        typed_ids = {m.message_id for m in typed}

        def carriers_deleted(f: FakeTelegram) -> bool:
            return all(f.get_message(TG_RELATIVE, mid).deleted for mid in typed_ids)

        tg.wait_for(carriers_deleted, WAIT)
        assert all(m.deleted == (m.message_id in typed_ids) for m in tg.messages(TG_RELATIVE)), (
            "a message was deleted that carried no report words"
        )

        # "Done" closes the window for more photos.
        assert "Thank you." in tg_press(tg, TG_RELATIVE, thanks, "Done").content

        assert_db_files_free_of(v, CONDITIONS, NEWS)
        assert v.stop() == 0

    assert_db_files_free_of(v, CONDITIONS, NEWS)
    tg.assert_no_violations()
    assert tg.stats.flood_429 == 0, "Vigil provoked Telegram's flood control"
    assert tg.stats.early_retries == 0
    token = tg.token
    check_logs(v, code, token, token.split(":", 1)[1], TG_COORDINATOR, TG_RELATIVE)


# --- Signal ---------------------------------------------------------------------------------


def sig_say(fake: FakeSignal, who: str, text: str, number: str | None = None) -> str:
    """`who` types `text` on Signal; returns the bot's next message to them."""
    before = len(fake.sent_to(who))
    fake.user_sends(who, text, number)
    fake.wait_until_blocking(lambda: len(fake.sent_to(who)) > before, timeout=WAIT)
    return fake.sent_to(who)[before].message or ""


def number_of(menu: str, label: str) -> str:
    """The number a person types to pick `label` from a numbered menu."""
    for line in menu.splitlines():
        number, sep, text = line.partition(") ")
        if sep and number.isdigit() and text == label:
            return number
    raise AssertionError(f"no {label!r} in the menu:\n{menu}")


@pytest.fixture
def sg() -> Iterator[FakeSignal]:
    with FakeSignal.in_thread() as fake:  # json-rpc mode, as signal-cli-rest-api recommends
        yield fake


def test_report_wizard_on_signal_with_numbered_menus(sg: FakeSignal, tmp_path: Path) -> None:
    env = {"VIGIL_SIGNAL_API_URL": sg.url, "VIGIL_SIGNAL_NUMBER": sg.number}
    with vigil_process(tmp_path, env, start=False) as v:
        make_sealing_key(v)
        v.start()
        sg.wait_for_clients_blocking(1, timeout=10)  # the json-rpc receive socket
        assert v.admin_code

        def coordinator(text: str) -> str:
            return sig_say(sg, SIG_COORDINATOR, text, SIG_COORDINATOR_NUMBER)

        def relative(text: str) -> str:
            return sig_say(sg, SIG_RELATIVE, text)

        assert "administrator" in coordinator(f"/start {v.admin_code}")
        assert "Case created" in coordinator(f"/newcase {SLUG} {CASE_NAME}")
        code = invite_code(coordinator(f"/invite family {SLUG}"))
        joined = relative(f"/start {code}")
        assert "relative" in joined and CASE_NAME in joined

        menu = relative("/report")
        assert "(1 of 7)" in menu and "1) Visit" in menu
        menu = relative(number_of(menu, "Visit"))
        assert "(2 of 7)" in menu and "1) Today" in menu
        menu = relative(number_of(menu, "Today"))
        assert "(3 of 7)" in menu and "2) Concern" in menu
        menu = relative(number_of(menu, "Concern"))
        assert "(4 of 7)" in menu and "1) Skip" in menu
        menu = relative(CONDITIONS)
        assert "(5 of 7)" in menu and "1) Medicine" in menu
        menu = relative(number_of(menu, "Medicine"))
        assert "1) ✓ Medicine" in menu
        menu = relative(number_of(menu, "Done"))
        assert "(6 of 7)" in menu and "Anything else" in menu
        menu = relative(NEWS)
        assert "(7 of 7)" in menu and "1) Send the report without a file" in menu
        thanks = relative(number_of(menu, "Send the report without a file"))
        assert "Thank you. Your report about" in thanks and "report #1" in thanks

        def live_copy() -> bool:
            return any("Report #1 " in (m.message or "") for m in sg.sent_to(SIG_COORDINATOR))

        sg.wait_until_blocking(live_copy, timeout=WAIT)
        texts = [m.message or "" for m in sg.sent_to(SIG_COORDINATOR)]
        live = next(t for t in texts if "Report #1 " in t)
        assert_live_copy(live)
        assert "Thank you." in relative(number_of(thanks, "Done"))
        assert all(m.text_mode == "normal" for m in sg.sent)

        assert_db_files_free_of(v, CONDITIONS, NEWS)
        assert v.stop() == 0

    assert_db_files_free_of(v, CONDITIONS, NEWS)
    sg.assert_no_violations()
    check_logs(v, code, SIG_COORDINATOR, SIG_COORDINATOR_NUMBER, SIG_RELATIVE, sg.number)
