"""Transfers ("etap", issue 18 item 4) through the chat harness: transit, the followers told
to hold letters, days in transit on the card, the daily reminder, the arrival with the new
address and its history, the escalation like an urgent alert, and who may not do it."""

from __future__ import annotations

from typing import Any

import pytest

from handlers import transfers
from storage import cases, subscriptions
from storage import transfers as store
from tests.harness import ChatHarness

DAY = 86400.0


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.services.default_timezone = "Europe/Berlin"
    chat.case("nasrin", "Nasrin S.")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    chat.member("coo2", "coordinator", coordinates=("nasrin",))
    chat.case("other", "Other Case")
    chat.member("elsewhere", "coordinator", coordinates=("other",))
    chat.member("ann")
    chat.member("olga", language="ru")
    chat.member("rel", "family", family_of=("nasrin",))
    for who in ("ann", "olga"):
        follow(chat, who, "nasrin")
    chat.say("coo", "/editcase nasrin facility SIZO-1 Minsk")
    chat.say("coo", "/editcase nasrin address SIZO-1, ul. Volodarskogo 2, Minsk")
    return chat


def follow(chat: ChatHarness, who: str, slug: str) -> None:
    def go(conn: Any) -> None:
        case = cases.by_slug(conn, slug)
        assert case is not None
        subscriptions.subscribe(conn, chat.members[who], case.id, "instant", chat.clock())

    chat.run(go)


def case_of(chat: ChatHarness) -> cases.Case:
    found = chat.run(lambda c: cases.by_slug(c, "nasrin"))
    assert found is not None
    return found


def tick(chat: ChatHarness) -> int:
    return chat.run(transfers.transit_tick, chat.clock.now)


def test_transit_tells_followers_card_counts_days_arrival_ends_it(net: ChatHarness) -> None:
    mark = net.last_id()
    reply = net.say("coo", "/editcase nasrin status transit")
    assert "in transit since" in reply and "2 followers are told" in reply
    told = {s.chat: s.text for s in net.outbox(mark) if s.chat in ("ann", "olga")}
    assert "hold letters and parcels" in told["ann"]
    assert set(told) == {"ann", "olga"}
    assert "не отправляйте письма и посылки" in told["olga"]  # each in their own language
    case = case_of(net)
    assert case.status == "transferred" and case.facility is None
    net.clock.advance(3 * DAY)
    card = net.say("ann", "/case nasrin")
    assert "In transit (etap) since" in card and ": 3 days" in card
    # Arrival: the transit ends, the status comes back, followers get the new address.
    mark = net.last_id()
    reply = net.say("coo", "/editcase nasrin facility Penal colony No. 4, Gomel")
    assert "Penal colony No. 4" in reply
    arrived = {s.chat: s.text for s in net.outbox(mark) if s.chat in ("ann", "olga")}
    assert "new place of detention: Penal colony No. 4, Gomel" in arrived["ann"]
    assert "ul. Volodarskogo" in arrived["ann"]  # the letters address on the sheet
    assert "новое место содержания" in arrived["olga"]
    case = case_of(net)
    assert case.status == "detained" and case.facility == "Penal colony No. 4, Gomel"
    assert net.run(lambda c: store.open_transit(c, case.id)) is None
    past = net.run(lambda c: store.history(c, case.id))
    assert len(past) == 1 and past[0].from_facility == "SIZO-1 Minsk"
    assert past[0].to_facility == "Penal colony No. 4, Gomel" and past[0].ended_at is not None
    history = net.run(lambda c: cases.facility_history(c, case.id))
    assert [h.facility for h in history][:2] == ["Penal colony No. 4, Gomel", "SIZO-1 Minsk"]
    card = net.say("ann", "/case nasrin")
    assert "Last transfer:" in card and "In transit" not in card
    # A second facility change without a transit alerts nobody through this path.
    mark = net.last_id()
    net.say("coo", "/editcase nasrin facility Penal colony No. 4, block 2")
    assert not [s for s in net.outbox(mark) if s.chat == "ann"]


def test_transit_with_a_start_date_and_bad_dates(net: ChatHarness) -> None:
    net.clock.now = 1_790_000_000.0 + 10 * DAY  # 2026-10-01
    assert "today or earlier" in net.say("coo", "/editcase nasrin status transit 2099-01-01")
    assert "today or earlier" in net.say("coo", "/editcase nasrin status transit 30.09")
    assert case_of(net).status == "detained"  # nothing changed
    assert "since 2026-09-25" in net.say("coo", "/editcase nasrin status transit 2026-09-25")
    assert ": 6 days" in net.say("ann", "/case nasrin")
    # Again while in transit corrects the start date, and tells nobody a second time.
    mark = net.last_id()
    assert "since 2026-09-27" in net.say("coo", "/editcase nasrin status transit 2026-09-27")
    assert not [s for s in net.outbox(mark) if s.chat == "ann"]


def test_daily_reminder_to_coordinators_then_escalation(net: ChatHarness) -> None:
    net.say("coo", "/editcase nasrin status transit")
    mark = net.last_id()
    tick(net)
    assert not [s for s in net.outbox(mark) if s.chat == "coo"]  # not the same day again
    net.clock.advance(DAY)
    tick(net)
    tick(net)  # a second run the same day writes nothing more
    got = [s.text for s in net.outbox(mark) if s.chat in ("coo", "coo2")]
    assert len(got) == 2 and all("in transit for 1 day" in t for t in got)
    assert not [s for s in net.outbox(mark) if s.chat in ("elsewhere", "ann", "rel")]
    # Past the limit (a setting, default 14): an urgent alert, re-sent until /ack.
    net.run(
        lambda c: c.execute(
            "INSERT OR REPLACE INTO settings VALUES ('transfers.escalate_days', '5')"
        )
    )
    net.clock.advance(4 * DAY)
    mark = net.last_id()
    tick(net)
    urgent = [s for s in net.outbox(mark) if s.chat == "coo"]
    assert len(urgent) == 1 and "URGENT" in urgent[0].text and "5 days" in urgent[0].text
    aid = int(urgent[0].text.split("alert #", 1)[1].split(")", 1)[0])
    mark = net.last_id()
    net.clock.advance(11 * 60)
    from handlers.reports import resend_unacked

    net.run(resend_unacked, net.clock.now)
    assert [s for s in net.outbox(mark) if s.chat == "coo" and "Still unacknowledged" in s.text]
    tick(net)  # no second escalation
    assert (
        len([s for s in net.outbox(mark) if "in transit for" in s.text and "URGENT" in s.text]) == 0
    )
    assert "Acknowledged" in net.say("coo", f"/ack {aid}")


def test_others_cannot_mark_transit(net: ChatHarness) -> None:
    before = case_of(net)
    for who in ("elsewhere", "ann", "rel"):
        net.say(who, "/editcase nasrin status transit")
    after = case_of(net)
    assert after.status == before.status and after.facility == before.facility
    assert net.run(lambda c: store.open_transit(c, before.id)) is None
    assert net.say("elsewhere", "/editcase nasrin status transit") == net.say(
        "elsewhere", "/editcase nosuchcase status transit"
    )
