"""/overview (issue 18 item 6) end to end through the chat harness: each section from the
commands that fill it, authority per case, ordering, caps, language of times, and group chats."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from handlers.common import zone
from storage import crypto
from tests.harness import ChatHarness

DAY = 86400.0
BERLIN = "Europe/Berlin"
ACT = re.compile(r" /(case|ack|headcount|cancel|approve) [a-z0-9]+$")
UNKNOWN = "/nosuchcommand"


def local(chat: ChatHarness, days: float, hour: int = 18, tz: str = BERLIN) -> str:
    """An ISO local time `days` from now at `hour`:00, as /schedule and /editcase read it."""
    day = datetime.fromtimestamp(chat.clock() + days * DAY, zone(tz)).date()
    return f"{day.isoformat()}T{hour:02d}:00"


def number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found, text
    return int(found.group(1))


def bullets(text: str) -> list[str]:
    return [line[2:] for line in text.splitlines() if line.startswith("• ")]


def line_ending(text: str, command: str) -> str:
    """The one bullet line that ends with `command` (e.g. '/ack 3')."""
    found = [line for line in bullets(text) if line.endswith(" " + command)]
    assert len(found) == 1, (command, text)
    return found[0]


def has_line(text: str, command: str) -> bool:
    return any(line.endswith(" " + command) for line in bullets(text))


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.services.default_timezone = BERLIN
    chat.case("nasrin", "Nasrin S.")
    chat.case("ales", "Ales B.")
    chat.member("ada", "admin")
    chat.member("abe", "admin")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    chat.member("co2", "coordinator", coordinates=("nasrin",))
    chat.member("cob", "coordinator", coordinates=("ales",))
    chat.member("cob2", "coordinator", coordinates=("ales",))
    chat.member("kin_a", "family", family_of=("nasrin",))
    chat.member("kin_b", "family", family_of=("ales",))
    chat.member("fan1")
    for slug in ("nasrin", "ales"):
        chat.say("fan1", f"/subscribe {slug}")
    return chat


def fill(net: ChatHarness) -> dict[str, int]:
    """Something in every section for both cases, made the way coordinators make it."""
    ids: dict[str, int] = {}
    for kin, coordinator, key in (("kin_a", "coo", "alert_a"), ("kin_b", "cob", "alert_b")):
        sent = net.send(kin, "/urgent He needs a doctor now.")
        told = "\n".join(s.text for s in sent if s.chat == coordinator)
        ids[key] = number(r"alert #(\d+)", told)
    # An emergency is news too; two days on, both cases are silent past a 1-day check-in
    # while their alerts (repeated for three days) are still open.
    for who, slug in (("coo", "nasrin"), ("cob", "ales")):
        assert "every 1 days" in net.say(who, f"/editcase {slug} checkin_days 1")
    net.clock.advance(2 * DAY)
    for who, slug, key in (("coo", "nasrin", "vigil_a"), ("cob", "ales", "vigil_b")):
        reply = net.say(who, f"/schedule {slug} kind=vigil {local(net, 3)} Vigil at the court")
        ids[key] = number(r"Scheduled #(\d+)", reply)
    ids["far_a"] = number(
        r"Scheduled #(\d+)", net.say("coo", f"/schedule nasrin {local(net, 30)} Far away")
    )
    net.say("fan1", f"/join {ids['vigil_a']}")
    net.say("kin_a", f"/join {ids['vigil_a']}")
    ids["hearing_a"] = number(
        r"action #(\d+)", net.say("coo", f"/editcase nasrin hearing {local(net, 5, 10)}")
    )
    for who, slug, key in (("coo", "nasrin", "bc_a"), ("cob", "ales", "bc_b")):
        preview = net.say(who, f"/broadcast case:{slug} Court at nine")
        ids[key] = number(r"Broadcast #(\d+)", preview)
        assert "Sending broadcast" in net.say(who, "/confirm")
    # Above the threshold a case broadcast waits for another of the case's coordinators.
    net.services.approval_threshold = 1
    for who, slug, key in (("co2", "nasrin", "ap_a"), ("cob2", "ales", "ap_b")):
        preview = net.say(who, f"/broadcast case:{slug} Letters tonight")
        ids[key + "_bc"] = number(r"Broadcast #(\d+)", preview)
        ids[key] = number(r"Request #(\d+)", net.say(who, "/confirm"))
    net.say("cob", "/broadcast all Network-wide vigil")  # the admins' to approve only
    ids["ap_all"] = number(r"Request #(\d+)", net.say("cob", "/confirm"))
    return ids


def test_a_coordinator_sees_their_case_and_nothing_of_another(net: ChatHarness) -> None:
    ids = fill(net)
    got = net.say("coo", "/overview")
    assert got.startswith(f"Your overview (times in {BERLIN}):")
    silence = line_ending(got, "/case nasrin")
    assert silence.startswith("Nasrin S.: no news for 2 days (check-in every 1 day)")
    assert "Nasrin S." in line_ending(got, f"/ack {ids['alert_a']}")
    vigil = line_ending(got, f"/headcount {ids['vigil_a']}")
    assert "Vigil at the court" in vigil and "6:00\u202fPM" in vigil and "2 going" in vigil
    hearing = line_ending(got, f"/headcount {ids['hearing_a']}")
    assert (
        "Court hearing: Nasrin S." in hearing
        and "10:00\u202fAM" in hearing
        and "0 going" in hearing
    )
    assert not has_line(got, f"/headcount {ids['far_a']}")  # beyond the 14 days
    fanout = line_ending(got, f"/cancel {ids['bc_a']}")
    assert "followers and relatives of Nasrin S." in fanout and "to go" in fanout
    approval = line_ending(got, f"/approve {ids['ap_a']}")
    assert f"asked by member {net.members['co2']}" in approval and "Nasrin S." in approval
    # Nothing of case B, nor the admins' network-wide request.
    assert "Ales" not in got and "/case ales" not in got
    for command in (
        f"/ack {ids['alert_b']}", f"/headcount {ids['vigil_b']}", f"/cancel {ids['bc_b']}",
        f"/approve {ids['ap_b']}", f"/approve {ids['ap_all']}",
    ):  # fmt: skip
        assert not has_line(got, command), command
    # No relative, reporter or platform id: the harness uses the name as address and chat.
    for name in ("kin_a", "kin_b", "fan1", "co2", "cob"):
        assert name not in got
    assert all(ACT.search(line) for line in bullets(got)), got
    assert "overview.viewed" in audit_actions(net)


def test_acting_on_a_line_takes_it_off_the_overview(net: ChatHarness) -> None:
    ids = fill(net)
    assert has_line(net.say("coo", "/overview"), f"/ack {ids['alert_a']}")
    assert "Acknowledged" in net.say("coo", f"/ack {ids['alert_a']}")
    assert "Stopped" in net.say("coo", f"/cancel {ids['bc_a']}")
    assert "Approved:" in net.say("coo", f"/approve {ids['ap_a']}")
    net.say("kin_a", "/report Visited today, he is well.")
    got = net.say("coo", "/overview")
    assert not has_line(got, f"/ack {ids['alert_a']}")
    assert not has_line(got, f"/cancel {ids['bc_a']}")
    assert not has_line(got, f"/approve {ids['ap_a']}")
    assert line_ending(got, "/case nasrin").startswith("Nasrin S.: news today")
    # The broadcast coo approved is going out now: coo may stop it, so it is listed.
    assert "to go" in line_ending(got, f"/cancel {ids['ap_a_bc']}")


def test_an_admin_sees_every_case(net: ChatHarness) -> None:
    ids = fill(net)
    net.say("ada", "/timezone America/New_York")
    got = net.say("ada", "/overview")
    assert "(times in America/New_York)" in got
    assert line_ending(got, "/case ales").startswith("Ales B.: no news for 2 days")
    assert line_ending(got, "/case nasrin").startswith("Nasrin S.: no news for 2 days")
    for key in ("alert_a", "alert_b"):
        line_ending(got, f"/ack {ids[key]}")
    for key in ("vigil_a", "vigil_b"):
        # 18:00 in Berlin is noon in New York: times are in the reader's zone.
        assert "12:00\u202fPM" in line_ending(got, f"/headcount {ids[key]}")
    for key in ("bc_a", "bc_b"):
        line_ending(got, f"/cancel {ids[key]}")
    for key in ("ap_a", "ap_b", "ap_all"):
        line_ending(got, f"/approve {ids[key]}")
    assert "broadcast" in line_ending(got, f"/approve {ids['ap_all']}")
    assert "everyone" in line_ending(got, f"/approve {ids['ap_all']}")


def test_the_other_cases_coordinator_sees_only_theirs(net: ChatHarness) -> None:
    ids = fill(net)
    got = net.say("cob", "/overview")
    assert has_line(got, "/case ales") and not has_line(got, "/case nasrin")
    assert has_line(got, f"/ack {ids['alert_b']}") and has_line(got, f"/cancel {ids['bc_b']}")
    assert has_line(got, f"/approve {ids['ap_b']}")
    # Their own network-wide request is not theirs to approve.
    assert not has_line(got, f"/approve {ids['ap_all']}")
    assert "Nasrin" not in got


@pytest.mark.parametrize("who", ["fan1", "kin_a"])
def test_activists_and_relatives_get_the_unknown_command_answer(net: ChatHarness, who: str) -> None:
    fill(net)
    unknown = net.say(who, UNKNOWN)
    assert "I don't know that command" in unknown
    assert net.say(who, "/overview") == unknown


def test_silent_cases_come_first_then_the_longest_silence(chat: ChatHarness) -> None:
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("yana", "Yana L.")
    chat.case("gone", "Gone R.")
    chat.member("boss", "coordinator", coordinates=("yana", "gone"))
    chat.member("kin_y", "family", family_of=("yana",))
    assert "every 30 days" in chat.say("boss", "/editcase yana checkin_days 30")
    chat.say("kin_y", "/report A letter came.")
    chat.say("boss", "/editcase gone status released")
    chat.clock.advance(15 * DAY)
    chat.case("xeni", "Xeni K.")
    chat.case("zara", "Zara M.")
    chat.case("omar", "Omar T.")
    chat.run(link_all, chat, "boss", ("xeni", "zara", "omar"))
    chat.member("kin_z", "family", family_of=("zara",))
    chat.say("boss", "/editcase xeni checkin_days 7")
    chat.say("boss", "/editcase omar checkin_days 0")
    chat.clock.advance(10 * DAY)
    chat.say("kin_z", "/report We spoke on the phone.")
    got = chat.say("boss", "/overview")
    order = [line.rsplit(" ", 1)[1] for line in bullets(got) if line.endswith(tuple(SLUGS))]
    # Xeni is silent past 7 days; Yana has waited longer but her check-in is 30 days.
    assert order == ["xeni", "yana", "omar", "zara"], got
    assert line_ending(got, "/case xeni").startswith("Xeni K.: no news for 10 days")
    assert "(check-in every 7 days)" in line_ending(got, "/case xeni")
    assert line_ending(got, "/case yana").startswith("Yana L.: last news 25 days ago")
    omar = line_ending(got, "/case omar")
    assert omar.startswith("Omar T.: no report yet, opened 10 days ago (check-ins off)")
    assert line_ending(got, "/case zara").startswith("Zara M.: news today")
    assert "/case gone" not in got  # released: nothing to watch


SLUGS = ("/case xeni", "/case yana", "/case omar", "/case zara")


def link_all(conn: object, chat: ChatHarness, who: str, slugs: tuple[str, ...]) -> None:
    from storage import cases

    for slug in slugs:
        case = cases.by_slug(conn, slug)  # type: ignore[arg-type]
        assert case is not None
        cases.link_member(conn, case.id, chat.members[who], "coordinator")  # type: ignore[arg-type]


def test_sections_are_capped_with_a_count_of_the_rest(chat: ChatHarness) -> None:
    chat.member("boss", "coordinator")
    for i in range(13):
        chat.say("boss", f"/newcase case{i:02d} Case {i:02d}")
    got = chat.say("boss", "/overview")
    assert len([line for line in bullets(got) if " /case case" in line]) == 10
    assert "… and 3 more." in got


def test_nothing_to_show_is_one_line(chat: ChatHarness) -> None:
    chat.member("idle", "coordinator")
    chat.case("other", "Other P.")
    got = chat.say("idle", "/overview")
    assert got.startswith("Nothing to show") and "\n" not in got
    assert "Other" not in got


def test_a_group_chat_gets_no_overview(net: ChatHarness) -> None:
    fill(net)
    mark = net.last_id()
    assert net.send("coo", "/overview", chat="grp", private=False) == []
    assert net.send("ada", "/overview", transport="telegram", chat="grp", private=False) == []
    assert net.outbox(mark) == []
    # The same member in private gets it: the silence above is the group's, not a failure.
    assert has_line(net.say("coo", "/overview"), "/case nasrin")


def audit_actions(chat: ChatHarness) -> set[str]:
    rows = chat.run(lambda c: c.execute("SELECT action FROM audit").fetchall())
    return {a for (a,) in rows}
