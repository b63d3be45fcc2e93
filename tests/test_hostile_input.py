"""Hostile input: every command's arguments under hypothesis, with Unicode tricks (direction
overrides, zero-width characters, lone surrogates), control characters, NUL and 100 kB texts.

For every message: no crash (no handler raises anything but UserError), a clear answer to the
sender, no partial state (a refused message changes nothing but its inbox row and its
answer), and text that other people will read is never stored with characters that can
disguise it (direction overrides, NUL and other controls).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import default_registry
from bot.capability import Command, may_use
from bot.context import UserError
from bot.messages import MAX_TEXT_CHARS
from storage import members
from storage.store import init_network
from tests.authz_world import ROLES, World, build_world
from tests.harness import PASSPHRASE, ChatHarness, Clock

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
HOSTILE = [
    "\u202e", "\u2067", "\u200b", "\u200d", "\ufeff", "\u2060", "\x00", "\x07", "\x1b[31m",
    "\r\n", "\u0085", "\u2028", "\U000e0041", "\u3164", "ﾠ", "𝓪𝓵𝓹𝓱𝓪", "ａｌｐｈａ",
    "<b>x</b>", "*bold*", "[x](http://e.vil)", "'; DROP TABLE members;--", "%s%n", "{text}",
    "{0}", "../../etc/passwd", "\\", "\"", "#", "@", "", " ",
]  # fmt: skip
VALID = [
    "alpha", "beta", "pub", "nosuch", "all", "case:alpha", "role:family", "lang:ru",
    "2026-12-01T10:00", "weekly:sun@18:00", "yearly:10-30@12:00", "22-7", "off", "en",
    "Europe/Minsk", "summary", "visibility", "public", "restricted", "hearing", "status",
    "released", "facility", "hearing:", "health+urgent:", "-", "instant", "digest", "#1", "1",
    "0", "-1", "99999999999999999999", "coordinator", "family", "admin", "remove", "title",
    "reminders", "oct30", "on", "tz=Asia/Tehran", "secret=", "place=Minsk", "remind=24h,1h",
    "kind", "visit", "delete me", "wipe everything",
]  # fmt: skip
FORBIDDEN_STORED = set(BIDI) | {"\x00", "\x07", "\x1b", "\ufeff", "\u200b", "\u2060"}
PUBLIC_TABLES = ("cases", "case_updates", "case_facilities", "actions", "broadcasts")

# Stored-text findings in code owned by others. The deterministic test below runs them as
# strict xfail; the hypothesis tests skip only the stored-text check for them (a random search
# cannot be a strict xfail). Empty now: /update and /broadcast check their text (clean_text).
FINDINGS: dict[str, str] = {}
# Crashes found here and since fixed (e.g. "²".isdigit() then int(): now bot.router.parse_id).
# A new finding goes in as {"command": ("/command input", "where and why")}: a strict xfail.
CRASH_FINDINGS: dict[str, tuple[str, str]] = {}
TOLERATED = (ValueError, OverflowError)  # only for CRASH_FINDINGS commands, in random runs
EVIL = ["\u202eevil", "a\x00b", "zero\u200bwidth", "\x1b[31mred", "\u2067isolate\u2069"]
STORED = {
    "update": ("/update alpha {evil}",),
    "broadcast": ("/broadcast all {evil}",),
    "schedule": ("/schedule alpha 2026-12-02T10:00 {evil}",),
    "newcase": ("/newcase zed {evil}",),
    "editaction": ("/editaction {action} title {evil}",),
    "publish": ("/publish {report} {evil}",),
    "editcase": ("/editcase alpha summary {evil}",),
    "update-wizard": ("/update alpha hearing:", "{evil}"),
}


def pick_role(cmd: Command) -> str:
    """The most capable role that may use the command (reaches the deepest parsing)."""
    fake = {
        "admin": members.Member(6, "admin", None, None, None),
        "family_this": members.Member(2, "family", None, None, None),
        "activist": members.Member(1, "activist", None, None, None),
    }
    for role, member in fake.items():
        if may_use(cmd, member):
            return role
    return "nonmember"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("hostile") / "data"
    store = init_network(data_dir, PASSPHRASE)
    w = build_world(ChatHarness(store, Clock()))
    raised: list[BaseException] = []
    dispatch = w.chat.router._dispatch

    def recording(ctx: Any) -> None:
        try:
            dispatch(ctx)
        except BaseException as exc:
            raised.append(exc)
            raise

    w.chat.router._dispatch = recording  # type: ignore[method-assign]
    w.raised = raised  # type: ignore[attr-defined]
    try:
        yield w
    finally:
        store.close()


def hostile_args() -> st.SearchStrategy[str]:
    atom = st.one_of(
        st.sampled_from(HOSTILE),
        st.sampled_from(VALID),
        st.text(max_size=12),
        st.sampled_from(["A" * 5000, "Ж" * 3000 + "\u202e", "x\u0301" * 2000]),
    )
    sep = st.sampled_from([" ", "  ", "\n", "\t", "", "\u00a0", "\u3000"])
    return st.lists(st.tuples(atom, sep), max_size=6).map(
        lambda parts: "".join(a + s for a, s in parts)
    )


def check(
    world: World,
    role: str,
    texts: tuple[str, ...],
    label: str,
    *,
    stored: bool = True,
    tolerate: bool = False,
) -> None:
    raised: list[BaseException] = world.raised  # type: ignore[attr-defined]
    raised.clear()
    got = world.probe(role, *texts)
    if tolerate and any(isinstance(e, TOLERATED) for e in raised):
        return  # a known crash (CRASH_FINDINGS), proven by its own strict-xfail test
    crashes = [e for e in raised if not isinstance(e, UserError)]
    assert not crashes, f"{label}: {type(crashes[0]).__name__} for {texts!r:.300}"
    assert "Something went wrong" not in got.reply, f"{label} crashed for {texts!r:.300}"
    assert got.reply.strip(), f"{label}: no answer for {texts!r:.300}"
    if any(isinstance(e, UserError) for e in raised) and len(texts) == 1:
        assert not got.changes, f"{label}: refused but changed {sorted(got.changes)}"
    for table in PUBLIC_TABLES if stored else ():
        if table not in got.changes:
            continue
        before, after = got.changes[table]
        for row in after:
            if row in before:
                continue
            for value in row:
                if isinstance(value, str):
                    bad = sorted({c for c in value if c in FORBIDDEN_STORED} | {
                        c for c in value if unicodedata.category(c) == "Cc" and c not in "\n\t"
                    })  # fmt: skip
                    assert not bad, f"{label}: stored {bad!r} in {table}"


REGISTRY = default_registry()
COMMANDS = sorted(REGISTRY.commands)


@pytest.mark.parametrize("name", COMMANDS)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=hostile_args())
def test_command_arguments(world: World, name: str, args: str) -> None:
    role = pick_role(REGISTRY.commands[name])
    check(world, role, (f"/{name} {args}",), f"/{name} as {role}",
          stored=name not in FINDINGS, tolerate=name in CRASH_FINDINGS)  # fmt: skip


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=r), id=n)
     for n, (_m, r) in CRASH_FINDINGS.items()],
)  # fmt: skip
def test_known_crashes(world: World, name: str) -> None:
    message = CRASH_FINDINGS[name][0]
    check(world, pick_role(REGISTRY.commands[name]), (message,), message)


def test_number_arguments_in_every_script(world: World) -> None:
    """Superscripts and other scripts' digits, and huge numbers, for every command that is not
    a known finding."""
    for name in COMMANDS:
        if name in CRASH_FINDINGS:
            continue
        role = pick_role(REGISTRY.commands[name])
        for arg in ("²", "#²", "١٢", "² x", "alpha ²", "99999999999999999999", "-0", "1e9"):
            check(world, role, (f"/{name} {arg}",), f"/{name} {arg}")


def _stored_params() -> list[Any]:
    out = []
    for label in STORED:
        name = label.split("-")[0]
        marks = [pytest.mark.xfail(strict=True, reason=FINDINGS[name])] if name in FINDINGS else []
        out.append(pytest.param(label, marks=marks, id=label))
    return out


@pytest.mark.parametrize("label", _stored_params())
def test_text_others_read_is_never_stored_with_disguising_characters(
    world: World, label: str
) -> None:
    for evil in EVIL:
        texts = tuple(world.fill(t.replace("{evil}", "{{evil}}")).replace("{evil}", evil)
                      for t in STORED[label])  # fmt: skip
        check(world, "admin", texts, label)


@pytest.mark.parametrize(
    ("role", "opener"),
    [
        ("family_this", "/report"),
        ("family_this", "/urgent alpha"),
        ("admin", "/update alpha hearing:"),
        ("admin", "/schedule"),
        ("activist", "/forgetme"),
        ("admin", "/language"),
    ],
)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=hostile_args())
def test_wizard_answers(world: World, role: str, opener: str, text: str) -> None:
    stored = opener.split()[0][1:] not in FINDINGS
    check(world, role, (opener, text or "x"), f"{opener} then text", stored=stored)


def test_every_role_survives_the_worst_strings(world: World) -> None:
    worst = ["\x00" * 10, "\u202e" * 500, "A" * (MAX_TEXT_CHARS + 1), "/" * 50]
    for role in ROLES:
        for name in COMMANDS:
            for text in worst:
                check(world, role, (f"/{name} {text}",), f"/{name} as {role}")


def test_lone_surrogates_are_answered_cleanly(world: World) -> None:
    for name in ("case", "subscribe", "letters", "schedule", "update", "wrote"):
        cmd = REGISTRY.commands[name]
        check(world, pick_role(cmd), (f"/{name} x\ud800y",), f"/{name}")


def test_a_100_kb_message_is_refused_before_parsing(world: World) -> None:
    got = world.probe("admin", "/broadcast all " + "x" * 100_000)
    assert "too long" in got.reply and not got.changes


def test_plain_hostile_text_outside_commands(world: World) -> None:
    for role in ROLES:
        for text in [*HOSTILE, "\u202e/help", "／help", "/HELP", "/help@otherbot", "/"]:
            check(world, role, (text or "x",), f"text as {role}")
