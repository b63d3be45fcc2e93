"""The audit log: every privileged act leaves a row (who, what, when, internal ids), never
content; /audit shows it to administrators only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.app import default_registry
from bot.context import COORDINATORS
from storage.store import init_network
from tests.authz_world import World, build_world
from tests.harness import PASSPHRASE, ChatHarness, Clock
from tests.test_authz_matrix import EXPECT

# Privileged commands whose allowed use writes no audit row, and why.
NOT_AUDITED = {
    "headcount": "a count of people going, no names: a read like /actions",
    "panic": "without its phrase /panic only explains itself; /panic PHRASE is audited",
}
# Commands that ask /confirm before they act: the act is what is audited.
THEN = {"promote": ("/confirm",), "revoke": ("/confirm",)}
TARGET = re.compile(r"^[a-z_]+(:[A-Za-z0-9_.-]+)*$")
SENTINEL = "SENTINEL-AUDIT-Qx77"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("audit") / "data"
    store = init_network(data_dir, PASSPHRASE)
    try:
        yield build_world(ChatHarness(store, Clock()))
    finally:
        store.close()


def privileged() -> list[tuple[str, str]]:
    """Every (command, role) where a privileged command is allowed: chosen when the tests are
    collected, so no combination is skipped at run time."""
    return sorted(
        (name, role)
        for name, cmd in default_registry().commands.items()
        if cmd.roles is not None and cmd.roles <= COORDINATORS
        for role in ("coordinator", "admin")
        if EXPECT[name][1][role] == "A"
    )


def test_every_privileged_command_has_expectations() -> None:
    names = {
        n for n, c in default_registry().commands.items() if c.roles and c.roles <= COORDINATORS
    }
    assert names <= set(EXPECT)
    assert {name for name, _role in privileged()} >= names - {
        n for n in names if all(EXPECT[n][1][r] != "A" for r in ("coordinator", "admin"))
    }


@pytest.mark.parametrize(("name", "role"), privileged())
def test_every_privileged_act_is_audited(world: World, name: str, role: str) -> None:
    text, _expect = EXPECT[name]
    got = world.probe(role, world.fill(text), *THEN.get(name, ()))
    if name in NOT_AUDITED:
        # A read, or an explanation: it must leave no row rather than be skipped.
        assert "audit" not in got.changes, f"/{name} by {role}: {NOT_AUDITED[name]}"
        return
    assert "audit" in got.changes, f"/{name} by {role} left no audit row"
    before, after = got.changes["audit"]
    new = [r for r in after if r not in before]
    actor = world.ids["m_coo"] if role == "coordinator" else world.ids["m_ada"]
    for _id, _at, actor_id, action, target in new:
        assert actor_id == actor
        assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", action), action
        assert target is None or TARGET.fullmatch(target), target


def test_audit_rows_carry_no_content(world: World) -> None:
    messages = [
        f"/editcase alpha summary {SENTINEL}",
        f"/update alpha {SENTINEL}",
        f"/broadcast all {SENTINEL}",
        f"/newcase sentinel-case {SENTINEL}",
        f"/publish {{report}} {SENTINEL}",
        f"/schedule alpha 2026-12-03T10:00 {SENTINEL}",
    ]
    for message in messages:
        got = world.probe("admin", world.fill(message))
        before, after = got.changes.get("audit", ([], []))
        assert after != before, message
        assert SENTINEL not in repr(after), message
        assert "sentinel-case" not in repr(after)


def test_audit_command_shows_ids_and_filters(chat: ChatHarness) -> None:
    chat.case("nasrin", "Nasrin S.")
    ada = chat.member("ada", "admin")
    coo = chat.member("coo", "coordinator", coordinates=("nasrin",))
    ann = chat.member("ann", "activist")
    chat.say("coo", f"/editcase nasrin summary {SENTINEL}")
    chat.say("ada", f"/promote {ann} coordinator")
    chat.say("ada", "/confirm")
    listing = chat.say("ada", "/audit")
    assert f"#{coo} · case.edited · case:" in listing
    assert f"#{ada} · member.promoted · member:{ann}:coordinator" in listing
    assert SENTINEL not in listing and "Nasrin" not in listing
    mine = chat.say("ada", f"/audit #{coo}")
    assert "case.edited" in mine and "member.promoted" not in mine
    only = chat.say("ada", "/audit member.")
    assert "member.promoted" in only and "case.edited" not in only
    assert len(chat.say("ada", "/audit 1").splitlines()) == 2
    assert "Send /audit" in chat.say("ada", "/audit ';DROP TABLE audit;--")
    # Looking is itself recorded.
    assert "audit.viewed" in chat.say("ada", "/audit audit.")


def test_cli_acts_are_audited_without_an_actor(chat: ChatHarness) -> None:
    from storage import keyadmin

    chat.store.close()  # the CLI works on the files
    keyadmin.add_slot(chat.store.data_dir, PASSPHRASE, "a second holder's words", "second")
    from storage.store import unlock

    again = unlock(chat.store.data_dir, PASSPHRASE)
    try:
        rows = again.db.run_sync(
            lambda c: c.execute("SELECT actor_id, action, target FROM audit").fetchall()
        )
    finally:
        again.close()
    assert rows and rows[-1][0] is None and rows[-1][1] == "keys.slot_added"
    assert rows[-1][2].startswith("slot:")
