"""/promote, /revoke and /panic: an administrator's levers, and what each one changes."""

from __future__ import annotations

import pytest

from storage import crypto, members
from tests.harness import ChatHarness


def role(chat: ChatHarness, who: str) -> str | None:
    m = chat.run(lambda c: members.get(c, chat.members[who]))
    return m.role if m else None


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("nasrin", "Nasrin S.", visibility="restricted")
    chat.member("ada", "admin")
    chat.member("ann", "activist")
    return chat


def test_promote_to_coordinator_of_a_case_and_the_member_is_told(net: ChatHarness) -> None:
    ann = net.members["ann"]
    asked = net.say("ada", f"/promote {ann} coordinator nasrin")
    # The admin sees whom they act on (number, role, cases, transport, month) and confirms.
    assert f"#{ann} · supporter · no case" in asked and "/confirm" in asked
    assert role(net, "ann") == "activist"
    out = net.send("ada", "/confirm")
    assert any(s.chat == "ada" and "now has the role coordinator" in s.text for s in out)
    assert any(s.chat == "ann" and "coordinator of the case of Nasrin S." in s.text for s in out)
    assert role(net, "ann") == "coordinator"
    assert "Recent reports" in net.say("ann", "/reports nasrin") or "No reports yet" in net.say(
        "ann", "/reports nasrin"
    )


def test_promote_family_needs_a_case_and_links_it(net: ChatHarness) -> None:
    ann = net.members["ann"]
    assert "linked to a case" in net.say("ada", f"/promote {ann} family")
    net.say("ada", f"/promote {ann} family nasrin")
    assert "relative" in net.say("ada", "/confirm")
    assert "stored, sealed" in net.say("ann", "/report he is well")


def test_promote_refuses_bad_targets(net: ChatHarness) -> None:
    assert "No member with that number" in net.say("ada", "/promote 999 coordinator")
    assert "No member with that number" in net.say("ada", "/promote x coordinator")
    ada = net.members["ada"]
    assert "your own role" in net.say("ada", f"/promote {ada} coordinator")
    assert "Send /promote N ROLE" in net.say("ada", "/promote")
    assert "Send /promote N ROLE" in net.say("ada", f"/promote {net.members['ann']} god")
    net.say("ada", f"/promote {net.members['ann']} coordinator")
    net.say("ada", "/confirm")
    assert "already has" in net.say("ada", f"/promote {net.members['ann']} coordinator")
    assert "revoke that role first" in net.say(
        "ada", f"/promote {net.members['ann']} family nasrin"
    )


def test_revoke_strips_every_privilege_at_once(net: ChatHarness) -> None:
    net.member("coo", "coordinator", coordinates=("nasrin",))
    net.member("rana", "family", family_of=("nasrin",))
    coo = net.members["coo"]
    invite = net.say("coo", "/invite family nasrin").splitlines()[-1].removeprefix("/start ")
    net.say("coo", "/broadcast case:nasrin Vigil at noon")
    net.say("coo", "/confirm")  # a running fan-out
    net.say("coo", "/broadcast case:nasrin Second message")  # a draft
    net.say("rana", "/report he has a fever")  # a live copy queued to coo
    queued = "SELECT count(*) FROM outbox WHERE member_id = ? AND state = 'pending'"
    assert net.run(lambda c: c.execute(queued, (coo,)).fetchone()[0]) > 0

    assert f"#{coo} · coordinator · coordinates nasrin" in net.say("ada", f"/revoke {coo}")
    assert role(net, "coo") == "coordinator"  # nothing yet: it waits for /confirm
    reply = net.say("ada", "/confirm")
    assert "now a supporter" in reply and "1 case link" in reply and "1 unused invite" in reply
    assert "2 broadcasts of theirs" in reply and "They were not told" in reply
    assert role(net, "coo") == "activist"
    assert net.run(lambda c: c.execute(queued, (coo,)).fetchone()[0]) == 0
    states = net.run(lambda c: c.execute("SELECT state FROM broadcasts").fetchall())
    assert {s for (s,) in states} == {"cancelled"}
    assert "pending" not in {
        s
        for (s,) in net.run(
            lambda c: c.execute(
                "SELECT state FROM outbox WHERE broadcast_id IS NOT NULL"
            ).fetchall()
        )
    }
    # From their very next message: no coordinator command, no restricted case.
    unknown = net.say("coo", "/nosuchcommand")
    assert net.say("coo", "/reports nasrin") == unknown
    assert "No case by that name" in net.say("coo", "/case nasrin")
    # The code they minted no longer opens the door.
    assert "not valid" in net.say("mallory", f"/start {invite}")
    # Nobody told them (a hijacked account learns nothing).
    assert not [s for s in net.outbox(0, chat="coo") if "revoked" in s.text.lower()]


def test_revoke_remove_deletes_the_member(net: ChatHarness) -> None:
    ann = net.members["ann"]
    assert "Remove member" in net.say("ada", f"/revoke {ann} remove")
    assert "is removed" in net.say("ada", "/confirm")
    assert role(net, "ann") is None
    assert "Welcome" in net.say("ann", "/start")


def test_revoke_refuses_self_and_nonsense(net: ChatHarness) -> None:
    assert "your own role" in net.say("ada", f"/revoke {net.members['ada']}")
    assert "Send /revoke N" in net.say("ada", f"/revoke {net.members['ann']} now")
    assert "No member with that number" in net.say("ada", "/revoke 4242")
    assert role(net, "ada") == "admin"


def test_panic_needs_the_phrase_and_the_app(net: ChatHarness) -> None:
    asked = net.say("ada", "/panic")
    assert "/panic wipe everything" in asked
    assert "not the confirmation phrase" in net.say("ada", "/panic wipe")
    assert "not available in this process" in net.say("ada", "/panic wipe everything")
    calls: list[int] = []
    net.services.panic = lambda: calls.append(1)
    try:
        assert "Wiping now" in net.say("ada", "/panic  WIPE everything ")
    finally:
        net.services.panic = None
    assert calls == [1]
    actions = net.run(lambda c: c.execute("SELECT action FROM audit").fetchall())
    assert ("panic.requested",) in actions


def test_panic_trigger_failure_changes_nothing(net: ChatHarness) -> None:
    def broken() -> None:
        raise RuntimeError("loop closed")

    net.services.panic = broken
    try:
        assert "Something went wrong" in net.say("ada", "/panic wipe everything")
    finally:
        net.services.panic = None
    assert net.run(lambda c: c.execute("SELECT count(*) FROM audit").fetchone()[0]) == 0
