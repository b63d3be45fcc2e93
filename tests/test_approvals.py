"""The two-person rule (issue 14): network-wide and large broadcasts, promotions, an admin's
revocation and assignments wait for a second eligible person; the initiator cannot approve,
a coordinator of another case cannot, an expired request cannot be approved."""

from __future__ import annotations

import re

import pytest

from bot.cli.status import Facts, approval_lines
from bot.config import Settings
from bot.jobs import JobContext
from handlers import approvals as approvals_capability
from storage import crypto, members
from tests.harness import ChatHarness

TEXT = "Vigil at the court, Friday 18:00"


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("nasrin", "Nasrin S.", visibility="public")
    chat.case("ales", "Ales B.", visibility="restricted")
    chat.member("ada", "admin")
    chat.member("abe", "admin")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    chat.member("co2", "coordinator", coordinates=("nasrin",))
    chat.member("cob", "coordinator", coordinates=("ales",))
    for who in ("sup1", "sup2", "sup3"):
        chat.member(who, "activist")
    return chat


def request_id(reply: str) -> int:
    found = re.search(r"Request #(\d+)", reply)
    assert found, reply
    return int(found.group(1))


def reached(chat: ChatHarness, needle: str) -> set[str]:
    return {s.chat for s in chat.outbox(0) if needle in s.text and s.chat.startswith("sup")}


def role(chat: ChatHarness, who: str) -> str | None:
    m = chat.run(lambda c: members.get(c, chat.members[who]))
    return m.role if m else None


def expire_job(chat: ChatHarness) -> int:
    job = approvals_capability.capability().jobs[0]
    return chat.run(lambda c: job.fn(JobContext(c, chat.clock(), chat.services)))


def test_a_coordinators_network_wide_broadcast_waits_for_a_second_person(
    net: ChatHarness,
) -> None:
    preview = net.say("coo", f"/broadcast all {TEXT}")
    assert "needs a second person" in preview
    out = net.send("coo", "/confirm")
    mine = "\n".join(s.text for s in out if s.chat == "coo")
    aid = request_id(mine)
    assert reached(net, TEXT) == set()  # nobody yet
    # Every eligible person (the admins) gets the full text, the audience and the count.
    for admin in ("ada", "abe"):
        got = [s.text for s in out if s.chat == admin]
        assert got and TEXT in got[0] and "everyone" in got[0] and f"/approve {aid}" in got[0]
        assert re.search(r"\d+ people", got[0])
    # Not the other coordinators: a network-wide audience is the admins' to approve.
    assert not [s for s in out if s.chat in ("co2", "cob")]
    # Confirming again does not send it either.
    assert "waiting for a second person" in net.say("coo", "/confirm")
    assert reached(net, TEXT) == set()

    done = net.say("ada", f"/approve {aid}")
    assert "going out" in done
    assert reached(net, TEXT) == {"sup1", "sup2", "sup3"}
    assert any("approved broadcast" in s.text for s in net.outbox(0, chat="coo"))
    # A second approval does nothing more.
    assert "already decided" in net.say("abe", f"/approve {aid}")
    assert len([s for s in net.outbox(0, chat="sup1") if TEXT in s.text]) == 1
    audited = {a for (a,) in net.run(lambda c: c.execute("SELECT action FROM audit").fetchall())}
    assert {"approval.requested", "approval.approved", "broadcast.approved"} <= audited


def test_the_initiator_cannot_approve_their_own_even_an_admin(net: ChatHarness) -> None:
    net.say("ada", f"/broadcast role:activist {TEXT}")
    aid = request_id(net.say("ada", "/confirm"))
    assert "a second person has to approve" in net.say("ada", f"/approve {aid}")
    assert reached(net, TEXT) == set()
    assert "going out" in net.say("abe", f"/approve {aid}")
    assert reached(net, TEXT) == {"sup1", "sup2", "sup3"}


def test_a_coordinator_of_an_unrelated_case_cannot_approve(net: ChatHarness) -> None:
    net.say("coo", f"/broadcast all {TEXT}")
    aid = request_id(net.say("coo", "/confirm"))
    unknown = net.say("cob", "/approve 987654")
    assert net.say("cob", f"/approve {aid}") == unknown
    assert net.say("co2", f"/approve {aid}") == unknown  # network-wide: admins only
    assert net.say("cob", f"/reject {aid}") == net.say("cob", "/reject 987654")
    assert reached(net, TEXT) == set()


def test_a_large_case_audience_may_be_approved_by_the_cases_other_coordinator(
    net: ChatHarness,
) -> None:
    net.services.approval_threshold = 1
    for who in ("sup1", "sup2"):
        net.run(lambda c, w=who: net_link_follower(c, net, w))
    assert "needs a second person" in net.say("coo", f"/broadcast case:nasrin {TEXT}")
    aid = request_id(net.say("coo", "/confirm"))
    assert net.say("cob", f"/approve {aid}") == net.say("cob", "/approve 987654")
    assert "going out" in net.say("co2", f"/approve {aid}")
    assert reached(net, TEXT) == {"sup1", "sup2"}


def net_link_follower(conn: object, chat: ChatHarness, who: str) -> None:
    from storage import cases, subscriptions

    case = cases.by_slug(conn, "nasrin")  # type: ignore[arg-type]
    assert case is not None
    subscriptions.subscribe(conn, chat.members[who], case.id, "instant", chat.clock())  # type: ignore[arg-type]


def test_a_small_case_audience_needs_nobody_else(net: ChatHarness) -> None:
    net.say("coo", f"/broadcast case:nasrin {TEXT}")
    assert "Sending broadcast" in net.say("coo", "/confirm")


def test_an_expired_request_cannot_be_approved_and_its_author_is_told(net: ChatHarness) -> None:
    net.say("coo", f"/broadcast all {TEXT}")
    aid = request_id(net.say("coo", "/confirm"))
    net.clock.advance(24 * 3600 + 1)
    assert "expired after 24 hours" in net.say("ada", f"/approve {aid}")
    assert reached(net, TEXT) == set()
    assert any("expired after 24 hours" in s.text for s in net.outbox(0, chat="coo"))
    assert "expired after 24 hours" in net.say("abe", f"/approve {aid}")
    state = net.run(lambda c: c.execute("SELECT state FROM broadcasts").fetchall())
    assert state == [("cancelled",)]


def test_the_expiry_job_tells_the_author(net: ChatHarness) -> None:
    net.say("coo", f"/broadcast all {TEXT}")
    request_id(net.say("coo", "/confirm"))
    assert expire_job(net) == 0  # not yet
    net.clock.advance(24 * 3600 + 1)
    assert expire_job(net) == 1
    assert expire_job(net) == 0  # once
    told = [s for s in net.outbox(0, chat="coo") if "expired after 24 hours" in s.text]
    assert len(told) == 1


def test_a_rejected_broadcast_is_dropped_and_its_author_told(net: ChatHarness) -> None:
    net.say("coo", f"/broadcast all {TEXT}")
    aid = request_id(net.say("coo", "/confirm"))
    assert "Rejected" in net.say("abe", f"/reject {aid}")
    assert any("was rejected" in s.text for s in net.outbox(0, chat="coo"))
    assert "already decided" in net.say("ada", f"/approve {aid}")
    assert reached(net, TEXT) == set()
    assert "no broadcast of yours" in net.say("coo", "/confirm")


def test_revoking_the_initiator_voids_their_request(net: ChatHarness) -> None:
    net.say("coo", f"/broadcast all {TEXT}")
    aid = request_id(net.say("coo", "/confirm"))
    net.say("ada", f"/revoke {net.members['coo']}")
    net.say("ada", "/confirm")
    assert role(net, "coo") == "activist"
    assert "already decided" in net.say("abe", f"/approve {aid}")
    assert reached(net, TEXT) == set()
    got = net.run(
        lambda c: c.execute("SELECT state FROM approvals WHERE id = ?", (aid,)).fetchone()
    )
    assert got == ("void",)


def test_a_request_whose_member_is_gone_is_void(net: ChatHarness) -> None:
    sup = net.members["sup1"]
    net.say("ada", f"/promote {sup} coordinator")
    aid = request_id(net.say("ada", "/confirm"))
    net.say("ada", f"/revoke {sup} remove")
    assert "is removed" in net.say("ada", "/confirm")
    assert "can no longer be carried out" in net.say("abe", f"/approve {aid}")
    got = net.run(
        lambda c: c.execute("SELECT state FROM approvals WHERE id = ?", (aid,)).fetchone()
    )
    assert got == ("void",)


def test_a_promotion_to_coordinator_needs_a_second_admin(net: ChatHarness) -> None:
    sup = net.members["sup1"]
    asked = net.say("ada", f"/promote {sup} coordinator nasrin")
    assert f"#{sup} · supporter" in asked
    aid = request_id(net.say("ada", "/confirm"))
    assert role(net, "sup1") == "activist"
    assert "a second person" in net.say("ada", f"/approve {aid}")
    assert net.say("coo", f"/approve {aid}") == net.say("coo", "/approve 987654")
    out = net.send("abe", f"/approve {aid}")
    assert role(net, "sup1") == "coordinator"
    assert any(s.chat == "sup1" and "coordinator of the case" in s.text for s in out)
    assert any(s.chat == "ada" and f"request #{aid}" in s.text for s in out)


def test_revoking_an_admin_needs_a_second_admin_a_coordinator_does_not(net: ChatHarness) -> None:
    net.say("ada", f"/revoke {net.members['abe']}")
    aid = request_id(net.say("ada", "/confirm"))
    assert role(net, "abe") == "admin"
    # The admin being revoked is eligible too: another admin. Here a third one decides.
    net.member("ann", "admin")
    net.say("ann", f"/approve {aid}")
    assert role(net, "abe") == "activist"
    net.say("ada", f"/revoke {net.members['cob']}")
    assert "now a supporter" in net.say("ada", "/confirm")


def test_assign_needs_a_second_admin_and_unassign_does_not(net: ChatHarness) -> None:
    cob = net.members["cob"]
    aid = request_id(net.say("ada", f"/assign {cob} nasrin"))
    assert net.say("cob", "/reports nasrin") == net.say("cob", "/reports nosuchcase")
    assert "coordinates Nasrin S." in net.say("abe", f"/approve {aid}")
    assert net.say("cob", "/reports nasrin") != net.say("cob", "/reports nosuchcase")
    assert "no longer coordinates" in net.say("ada", f"/unassign {cob} nasrin")
    assert net.say("cob", "/reports nasrin") == net.say("cob", "/reports nosuchcase")
    assert "does not coordinate" in net.say("ada", f"/unassign {cob} nasrin")


def test_in_a_one_admin_network_acts_go_through_and_status_warns(chat: ChatHarness) -> None:
    chat.member("ada", "admin")
    chat.member("sup", "activist")
    chat.say("ada", f"/broadcast all {TEXT}")
    assert "Sending broadcast" in chat.say("ada", "/confirm")
    assert any(TEXT in s.text for s in chat.outbox(0, chat="sup"))
    facts = Facts(Settings(data_dir=chat.store.data_dir), admins=1)
    assert any("cannot apply" in line for line in approval_lines(facts))
    facts = Facts(Settings(data_dir=chat.store.data_dir), admins=2, pending_approvals=3)
    assert not any("cannot apply" in line for line in approval_lines(facts))
    assert any("3 pending" in line for line in approval_lines(facts))


def test_panic_stays_one_person(net: ChatHarness) -> None:
    calls: list[int] = []
    net.services.panic = lambda: calls.append(1)
    try:
        assert "Wiping now" in net.say("ada", "/panic wipe everything")
    finally:
        net.services.panic = None
    assert calls == [1]


def test_an_approval_from_a_group_chat_or_a_replay_does_nothing(net: ChatHarness) -> None:
    net.say("coo", f"/broadcast all {TEXT}")
    aid = request_id(net.say("coo", "/confirm"))
    # THREATS rule 9: an admin's /approve typed in a group is never taken.
    assert net.send("ada", f"/approve {aid}", chat="group-1", private=False) == []
    assert reached(net, TEXT) == set()
    net.send("ada", f"/approve {aid}", key="approve-once")
    assert reached(net, TEXT) == {"sup1", "sup2", "sup3"}
    # The same platform message delivered again is not a second approval, nor a second send.
    assert net.send("ada", f"/approve {aid}", key="approve-once") == []
    assert len([s for s in net.outbox(0, chat="sup1") if TEXT in s.text]) == 1
