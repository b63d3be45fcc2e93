"""Authority is per case (issue 14 items 1, 5, 6): who coordinates a new case, who may stop or
confirm whose broadcast, what /members shows an admin, and drafts that never queue silently."""

from __future__ import annotations

import re

import pytest

from storage import cases, crypto
from tests.harness import ChatHarness


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("nasrin", "Nasrin S.", visibility="public")
    chat.case("ales", "Ales B.", visibility="public")
    chat.member("ada", "admin")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    chat.member("cob", "coordinator", coordinates=("ales",))
    chat.member("sup", "activist")
    chat.say("sup", "/subscribe nasrin")
    return chat


def coordinators(chat: ChatHarness, slug: str) -> list[int]:
    def read(conn: object) -> list[int]:
        case = cases.by_slug(conn, slug)  # type: ignore[arg-type]
        assert case is not None
        return cases.coordinators_of(conn, case.id)  # type: ignore[arg-type]

    return chat.run(read)


def test_newcase_assigns_its_creator_and_an_unassigned_case_is_the_admins(
    net: ChatHarness,
) -> None:
    assert "You coordinate it" in net.say("cob", "/newcase vera Vera K.")
    assert coordinators(net, "vera") == [net.members["cob"]]
    # coo did not create it and is not assigned: no authority there.
    assert net.say("coo", "/reports vera") == net.say("coo", "/reports nosuchcase")
    net.say("ada", f"/unassign {net.members['cob']} vera")
    # Nobody coordinates it now: its reports go to the admins, never to every coordinator.
    assert coordinators(net, "vera") == [net.members["ada"]]
    assert net.say("cob", "/reports vera") == net.say("cob", "/reports nosuchcase")


def test_a_coordinator_of_another_case_cannot_stop_or_confirm_a_broadcast(
    net: ChatHarness,
) -> None:
    preview = net.say("coo", "/broadcast case:nasrin Court at nine")
    bid = re.search(r"Broadcast #(\d+)", preview)
    assert bid
    probe = net.say("cob", "/cancel 987654")
    # The same words as for a number that does not exist: no count, no state, no case.
    assert net.say("cob", f"/cancel {bid.group(1)}") == probe
    assert net.say("cob", f"/confirm {bid.group(1)}") == net.say("cob", "/confirm 987654")
    assert "Sending broadcast" in net.say("coo", f"/confirm {bid.group(1)}")
    assert net.say("cob", f"/cancel {bid.group(1)}") == probe
    # The case's own coordinator and an admin may stop a running one.
    assert "Stopped" in net.say("ada", f"/cancel {bid.group(1)}")


def test_a_case_broadcast_preview_shows_counts_only_to_its_coordinators(net: ChatHarness) -> None:
    assert "people" in net.say("coo", "/broadcast case:nasrin Court at nine")
    denied = net.say("cob", "/broadcast case:nasrin Court at nine")
    assert denied == net.say("cob", "/broadcast case:nosuchcase Court at nine")
    assert "people" not in denied


def test_a_new_draft_replaces_the_unsent_one_and_says_so(net: ChatHarness) -> None:
    first = net.say("coo", "/broadcast case:nasrin First text")
    old = re.search(r"Broadcast #(\d+)", first)
    assert old
    second = net.say("coo", "/broadcast case:nasrin Second text")
    assert f"replaces your unsent draft #{old.group(1)}" in second
    net.say("coo", "/confirm")
    got = [s.text for s in net.outbox(0, chat="sup")]
    assert any("Second text" in t for t in got)
    assert not any("First text" in t for t in got)


def test_bare_cancel_drops_the_one_pending_draft_or_lists_several(net: ChatHarness) -> None:
    assert "nothing to cancel" in net.say("coo", "/cancel")
    net.say("coo", "/broadcast case:nasrin A draft")
    assert "was dropped" in net.say("coo", "/cancel")
    assert "nothing to cancel" in net.say("coo", "/cancel")
    net.member("abe", "admin")  # now a network-wide broadcast waits for a second person
    net.say("coo", "/broadcast all Everyone")
    net.say("coo", "/confirm")
    net.say("coo", "/broadcast case:nasrin Another draft")
    listed = net.say("coo", "/cancel")
    assert "more than one" in listed and "waiting for a second person" in listed
    assert "not confirmed yet" in listed
    states = net.run(lambda c: c.execute("SELECT state FROM broadcasts ORDER BY id").fetchall())
    assert states[-2:] == [("draft",), ("draft",)]  # nothing dropped without an id


def test_members_lists_numbers_roles_cases_and_transports_never_names(net: ChatHarness) -> None:
    listing = net.say("ada", "/members")
    assert f"#{net.members['coo']} · coordinator · coordinates nasrin · console" in listing
    assert f"#{net.members['sup']} · supporter · no case" in listing
    for name in ("ada", "coo", "cob", "sup"):  # addresses and chats are the names here
        assert f" {name} " not in listing.replace("·", " ")
    only = net.say("ada", "/members coordinators")
    assert f"#{net.members['sup']}" not in only and f"#{net.members['cob']}" in only
    case = net.say("ada", "/members ales")
    assert f"#{net.members['cob']}" in case and f"#{net.members['coo']}" not in case
    assert "Send /members" in net.say("ada", "/members nosuch")
    audited = net.run(lambda c: c.execute("SELECT action FROM audit").fetchall())
    assert ("members.listed",) in audited


def test_a_typo_in_promote_changes_nothing_until_confirmed(net: ChatHarness) -> None:
    sup = net.members["sup"]
    asked = net.say("ada", f"/promote {sup} admin")
    assert f"#{sup} · supporter" in asked
    assert "Cancelled" in net.say("ada", "/cancel")
    roles = net.run(lambda c: c.execute("SELECT role FROM members WHERE id = ?", (sup,)).fetchone())
    assert roles == ("activist",)
