"""Cases through the real router: /newcase, /editcase, /cases, /case; who sees and edits what;
hostile input changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bot.router import CommandRateLimiter
from storage import cases
from tests.harness import ChatHarness

NOT_FOUND = "No case by that name was found, or you may not see it."
UNKNOWN = "I don't know that command. Send /help to see what you can do."


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.router.limiter = CommandRateLimiter(rate_per_minute=100_000, burst=100_000)
    chat.case("ales", "Ales B.", "public")
    chat.case("nasrin", "Nasrin S.", "restricted")
    chat.member("coo", "coordinator", coordinates=("ales", "nasrin"))
    chat.member("ada", "admin")
    chat.member("rana", "family", family_of=("nasrin",))
    chat.member("bo", "family", family_of=("ales",))
    chat.member("act", "activist")
    return chat


def case_row(chat: ChatHarness, slug: str) -> tuple[Any, ...]:
    return chat.run(lambda c: c.execute("SELECT * FROM cases WHERE slug = ?", (slug,)).fetchone())


def get(chat: ChatHarness, slug: str) -> cases.Case:
    found = chat.run(cases.by_slug, slug)
    assert found is not None
    return found


# --- /newcase ------------------------------------------------------------------------------


def test_newcase_creates_a_restricted_case(net: ChatHarness) -> None:
    reply = net.say("coo", "/newcase narges Narges Mohammadi")
    assert "Case created: Narges Mohammadi" in reply and "restricted" in reply
    case = get(net, "narges")
    assert (case.name, case.visibility, case.status, case.checkin_days) == (
        "Narges Mohammadi", "restricted", "detained", 14,
    )  # fmt: skip
    assert net.say("act", "/case narges") == NOT_FOUND
    assert "already a case" in net.say("coo", "/newcase narges Someone Else")
    audit = net.run(lambda c: c.execute("SELECT action, target FROM audit").fetchall())
    assert ("case.created", f"case:{case.id}") in audit


@pytest.mark.parametrize("slug", ["a", "-bad", "bad-", "UPPER_", "x" * 33, "all", "sl/ug", "ünï"])
def test_newcase_refuses_bad_slugs(net: ChatHarness, slug: str) -> None:
    before = net.run(lambda c: c.execute("SELECT count(*) FROM cases").fetchone())
    assert "A slug is" in net.say("coo", f"/newcase {slug} Some Name")
    assert net.run(lambda c: c.execute("SELECT count(*) FROM cases").fetchone()) == before


HOSTILE = {
    "rtl override": "Evil\u202eman",
    "isolate": "Evil\u2067man\u2069",
    "zero-width space": "Ev\u200bil",
    "bom": "\ufeffEvil",
    "control": "Evil\x07bell",
    "escape": "Evil\x1b[31m",
    "newline": "Evil\nSecond line",
    "line separator": "Evil\u2028man",
    "hangul filler": "Evil\u3164",
    "lonely joiner": "\u200dEvil",
}


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_newcase_refuses_hostile_names_and_changes_nothing(net: ChatHarness, name: str) -> None:
    before = net.run(lambda c: c.execute("SELECT count(*) FROM cases").fetchone())
    reply = net.say("coo", f"/newcase evil {name}")
    assert "invisible or control characters" in reply or "one line" in reply
    assert net.run(lambda c: c.execute("SELECT count(*) FROM cases").fetchone()) == before


def test_legitimate_joiners_are_kept(net: ChatHarness) -> None:
    persian = "نرگس\u200cمحمدی"  # ZWNJ inside a Persian name
    assert "Case created" in net.say("coo", f"/newcase narges {persian}")
    assert get(net, "narges").name == persian


def test_oversized_input_is_refused_before_parsing(net: ChatHarness) -> None:
    before = case_row(net, "ales")
    assert "too long" in net.say("coo", "/editcase ales summary " + "x" * 100_000)
    assert "too long" in net.say("coo", "/newcase big " + "y" * 100_000)
    assert "at most 120" in net.say("coo", "/newcase big " + "y" * 121)
    assert case_row(net, "ales") == before
    assert net.run(cases.by_slug, "big") is None


# --- /editcase -------------------------------------------------------------------------------


def test_editcase_fields(net: ChatHarness) -> None:
    net.services.default_timezone = "Europe/Minsk"  # UTC+3, no DST
    say = net.say
    assert "country is now Belarus" in say("coo", "/editcase ales country Belarus")
    assert "2021-07-14" in say("coo", "/editcase ales detained_since 2021-07-14")
    assert "sentenced" in say("coo", "/editcase ales status sentenced")
    assert "awaiting trial" in say("coo", "/editcase ales status awaiting trial")
    assert "Unknown status" in say("coo", "/editcase ales status sleeping")
    say("coo", "/editcase ales charges Smuggling (art. 228)\nTax evasion")
    say("coo", "/editcase ales letters_address Penal colony 9, Gorki")
    say("coo", "/editcase ales summary Founder of a human rights centre.")
    say("coo", "/editcase ales help Send a postcard for his birthday.")
    assert "rights, belarus" in say("coo", "/editcase ales tags #Rights, Belarus, rights")
    hearing = say("coo", "/editcase ales hearing 2026-12-01T10:00")
    assert "10:00" in hearing and "Europe/Minsk" in hearing
    case = get(net, "ales")
    assert case.country == "Belarus" and case.status == "awaiting_trial"
    assert case.charges == "Smuggling (art. 228)\nTax evasion"
    assert case.tag_list == ["rights", "belarus"]
    expected = datetime(2026, 12, 1, 7, 0, tzinfo=UTC).timestamp()  # 10:00 in Minsk
    assert case.next_hearing == expected and not case.next_hearing_all_day
    say("coo", "/editcase ales next_hearing 2026-12-02")
    assert get(net, "ales").next_hearing_all_day
    assert "(empty)" in say("coo", "/editcase ales hearing -")
    assert get(net, "ales").next_hearing is None
    assert "every 30 days" in say("coo", "/editcase ales checkin_days 30")
    assert "0 (off) to 365" in say("coo", "/editcase ales checkin 400")
    assert "public or restricted" in say("coo", "/editcase ales visibility secret")
    assert "always has a name" in say("coo", "/editcase ales name -")
    assert "Unknown status" not in say("coo", "/editcase ales name Ales Bialiatski")
    assert get(net, "ales").name == "Ales Bialiatski"


def test_hearing_dates_are_checked(net: ChatHarness) -> None:
    net.services.default_timezone = "Europe/Berlin"
    assert "does not exist" in net.say("coo", "/editcase ales hearing 2027-03-28T02:30")
    assert "has passed" in net.say("coo", "/editcase ales hearing 2020-01-01")
    assert "Give the date" in net.say("coo", "/editcase ales hearing next tuesday")
    assert "Give the date" in net.say("coo", "/editcase ales hearing 2026-02-30")
    assert "Give the date" in net.say("coo", "/editcase ales detained_since 2999-01-01")
    assert get(net, "ales").next_hearing is None


def test_facility_change_records_a_transfer(net: ChatHarness) -> None:
    net.say("coo", "/editcase ales facility Pre-trial centre 1, Minsk")
    net.clock.advance(86400 * 30)
    net.say("coo", "/editcase ales facility Penal colony 9, Gorki")
    net.say("coo", "/editcase ales facility Penal colony 9, Gorki")  # unchanged: no new row
    history = net.run(cases.facility_history, get(net, "ales").id)
    assert [f.facility for f in history] == ["Penal colony 9, Gorki", "Pre-trial centre 1, Minsk"]
    card = net.say("act", "/case ales")
    assert "Held at: Penal colony 9, Gorki" in card
    assert "transferred from Pre-trial centre 1, Minsk" in card
    assert "(empty)" in net.say("coo", "/editcase ales facility -")
    assert get(net, "ales").facility is None
    assert len(net.run(cases.facility_history, get(net, "ales").id)) == 2


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("field", ["name", "facility", "country"])
def test_editcase_refuses_hostile_values(net: ChatHarness, field: str, value: str) -> None:
    before = case_row(net, "ales")
    reply = net.say("coo", f"/editcase ales {field} {value}")
    assert "invisible or control characters" in reply or "one line" in reply
    assert case_row(net, "ales") == before


def test_editcase_multiline_fields_still_refuse_controls(net: ChatHarness) -> None:
    before = case_row(net, "ales")
    assert "invisible" in net.say("coo", "/editcase ales summary line one\nline\u202etwo")
    assert "invisible" in net.say("coo", "/editcase ales summary a\x00b")
    assert "Tags are words" in net.say("coo", "/editcase ales tags good, b\u200bad")
    assert case_row(net, "ales") == before


def test_editcase_usage_and_unknown_fields(net: ChatHarness) -> None:
    assert "Send /editcase SLUG FIELD VALUE" in net.say("coo", "/editcase")
    assert "Send /editcase SLUG FIELD VALUE" in net.say("coo", "/editcase ales colour red")
    assert "Send a value" in net.say("coo", "/editcase ales status")


def test_who_may_edit(net: ChatHarness) -> None:
    assert net.say("act", "/editcase ales country X") == UNKNOWN
    assert net.say("rana", "/newcase x Y") == UNKNOWN
    net.member("own", "coordinator", coordinates=("nasrin",))
    net.member("cob", "coordinator", coordinates=("ales",))
    # A coordinator of another case gets the "no such case" answer.
    assert net.say("cob", "/editcase nasrin country X") == NOT_FOUND
    assert net.say("cob", "/editcase nosuch country X") == NOT_FOUND
    assert "Iran" in net.say("own", "/editcase nasrin country Iran")
    assert "Iran" in net.say("ada", "/editcase nasrin country Iran")


# --- /cases and /case ------------------------------------------------------------------------


def test_restricted_cases_look_like_missing_ones(net: ChatHarness) -> None:
    for who in ("act", "bo", "stranger"):
        assert net.say(who, "/case nasrin") == NOT_FOUND
        assert net.say(who, "/case nosuch") == NOT_FOUND
        assert "Nasrin" not in net.say(who, "/cases")
        assert "Ales B." in net.say(who, "/cases")
    assert "Nasrin S." in net.say("rana", "/case nasrin")
    assert "Nasrin S." in net.say("coo", "/cases")


def test_case_card_reads_in_ten_seconds(net: ChatHarness) -> None:
    net.services.default_timezone = "Europe/Minsk"
    for line in [
        "/editcase ales country Belarus",
        "/editcase ales status sentenced",
        "/editcase ales detained_since 2021-07-14",
        "/editcase ales letters_address Penal colony 9, Gorki",
        "/editcase ales hearing 2026-12-01T10:00",
        "/editcase ales help Send a postcard for his birthday.",
    ]:
        net.say("coo", line)
    ales_id = get(net, "ales").id
    net.run(lambda c: cases.add_update(c, ales_id, "Appeal rejected.", now=net.clock()))
    card = net.say("act", "/case ales")
    lines = card.splitlines()
    assert lines[0] == "Ales B. — sentenced"
    assert "Belarus · detained since 2021-07-14" in card
    assert "Next hearing: " in card and "10:00" in card
    assert "Latest news:" in card and "Appeal rejected." in card
    assert "How to help:" in card
    assert "Send a postcard for his birthday." in card
    assert "Write to Ales B.: Penal colony 9, Gorki" in card
    assert "/reports" not in card  # coordinator tools only for coordinators
    assert "/reports ales" in net.say("coo", "/case ales")
    assert "Send news with /report" in net.say("bo", "/case ales")
    assert "/start" in net.say("stranger", "/case ales")
    assert "No news posted yet." in net.say("rana", "/case nasrin")
