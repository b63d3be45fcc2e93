"""Series of a recurring action (issue 18 item 2): until, /join ID all, /leave ID all|DATE,
per-date headcounts, and series RSVPs across a DST change, through the chat harness."""

from __future__ import annotations

import pytest

from storage import actions
from tests.harness import ChatHarness
from tests.test_actions import HOUR, action_id_from, net, outbox_keys, step, ts

__all__ = ["net"]  # the fixture, re-used


def starts(chat: ChatHarness, aid: int) -> list[float]:
    return chat.run(
        lambda c: [
            r[0]
            for r in c.execute(
                "SELECT start_at FROM occurrences WHERE action_id = ? AND state = 'scheduled' "
                "ORDER BY start_at",
                (aid,),
            )
        ]
    )


def rsvp_reminders_to(chat: ChatHarness, aid: int, who: str) -> list[int]:
    """Occurrence starts for which `who` got the 1h reminder (the RSVP scope)."""
    mid = chat.members[who]
    found = []
    for key, _at, _text in outbox_keys(chat, f"a{aid}:"):
        parts = key.split(":")
        if parts[2] == f"r{HOUR}" and parts[3] == str(mid):
            found.append(int(parts[1]))
    return sorted(found)


def test_until_in_the_one_line_form_ends_the_series(net: ChatHarness) -> None:
    reply = net.say("coo", "/schedule - until:2026-10-11 weekly:sun@18:00 Sunday vigil")
    aid = action_id_from(reply)
    assert "Last date: 2026-10-11" in reply
    step(net, ts("2026-11-30T00:00"))
    got = net.run(
        lambda c: [
            r[0] for r in c.execute("SELECT start_at FROM occurrences WHERE action_id = ?", (aid,))
        ]
    )
    # Sundays 27 Sep, 4 Oct, 11 Oct at 18:00 Berlin (CEST, 16:00 UTC); nothing after.
    assert sorted(got) == [ts("2026-09-27T16:00"), ts("2026-10-04T16:00"), ts("2026-10-11T16:00")]
    assert "no upcoming date" in net.say("ann", f"/join {aid}")


def test_until_refused_when_bad_nothing_created(net: ChatHarness) -> None:
    before = net.run(lambda c: c.execute("SELECT count(*) FROM actions").fetchone()[0])
    assert "already passed" in net.say("coo", "/schedule - until:2020-01-01 daily@10:00 X")
    assert "last date of the series" in net.say("coo", "/schedule - until:2026-02-30 daily@10:00 X")
    assert "last date of the series" in net.say("coo", "/schedule - until=soon daily@10:00 X")
    assert "Only a repeating action" in net.say(
        "coo", "/schedule - until:2026-12-31 2026-12-01T10:00 X"
    )
    assert net.run(lambda c: c.execute("SELECT count(*) FROM actions").fetchone()[0]) == before


def test_join_all_leave_one_date_and_the_series(net: ChatHarness) -> None:
    aid = action_id_from(net.say("coo", "/schedule - daily@10:00 Daily call-in"))
    net.member("bob")
    assert "every date of" in net.say("ann", f"/join {aid} all")
    assert "already joined every date" in net.say("ann", f"/join {aid} all")
    assert "You are going to" in net.say("bob", f"/join {aid}")  # bob: the next date only
    head = net.say("coo", f"/headcount {aid}")
    assert "Every date: 1 person joined the whole series." in head
    # ann misses the next date; a date not yet materialised; the series goes on.
    left = net.say("ann", f"/leave {aid}")
    assert "no longer going" in left and f"/leave {aid} all" in left
    assert "Your other dates stay" in net.say("ann", f"/leave {aid} 2026-09-25")
    step(net, ts("2026-09-27T12:00"))
    # Dates: 22 (next, left), 23, 24, 25 (left in advance), 26, 27 Sep, all 08:00 UTC.
    ann = net.members["ann"]
    going = net.run(
        lambda c: [
            r[0]
            for r in c.execute(
                "SELECT o.start_at FROM occurrences o JOIN rsvps r ON r.occurrence_id = o.id "
                "WHERE o.action_id = ? AND r.member_id = ? ORDER BY o.start_at",
                (aid, ann),
            )
        ]
    )
    assert ts("2026-09-22T08:00") not in going and ts("2026-09-25T08:00") not in going
    assert ts("2026-09-26T08:00") in going and ts("2026-09-27T08:00") in going
    assert "no longer going to any date" in net.say("ann", f"/leave {aid} all")
    net.clock.now = ts("2026-09-27T12:00")
    assert "Every date: 0 people" in net.say("coo", f"/headcount {aid}")
    assert "had not joined" in net.say("ann", f"/leave {aid} all")


def test_series_commands_refused_for_one_offs_and_outsiders(net: ChatHarness) -> None:
    once = action_id_from(net.say("coo", "/schedule - 2026-12-01T10:00 Letter evening"))
    assert "happens once" in net.say("ann", f"/join {once} all")
    assert "happens once" in net.say("coo", f"/editaction {once} until 2026-12-31")
    net.case("secret", "Secret Case", visibility="restricted")
    net.member("boss", "coordinator", coordinates=("secret",))
    net.member("coo2", "coordinator", coordinates=("nasrin",))
    hidden = action_id_from(net.say("boss", "/schedule secret weekly:mon@10:00 Family day"))
    missing = net.say("ann", "/join 99999")
    assert net.say("ann", f"/join {hidden} all") == missing
    assert net.say("ann", f"/leave {hidden} all") == missing
    assert net.say("ann", f"/leave {hidden} 2026-10-05") == missing
    # A coordinator of another case cannot end it, and nothing changes.
    assert net.say("coo2", f"/editaction {hidden} until 2026-10-01") == net.say(
        "coo2", "/editaction 99999 until 2026-10-01"
    )
    assert net.run(lambda c: actions.get(c, hidden)).until_date is None
    assert net.say("ann", f"/editaction {hidden} until 2026-10-01") == net.say("ann", "/nosuch")


def test_editaction_until_shortens_tells_and_extends(net: ChatHarness) -> None:
    aid = action_id_from(net.say("coo", "/schedule - remind=3d,1h daily@10:00 Daily call-in"))
    assert "every date of" in net.say("ann", f"/join {aid} all")
    assert len(starts(net, aid)) >= 3  # 3 days of invitations materialised
    mark = net.last_id()
    reply = net.say("coo", f"/editaction {aid} until 2026-09-22")
    assert "Last date: 2026-09-22" in reply
    assert starts(net, aid) == [ts("2026-09-22T08:00")]
    told = [s.text for s in net.outbox(mark) if s.chat == "ann"]
    assert len(told) == len(set(told)) >= 2 and all("called off" in t for t in told)
    assert "already passed" in net.say("coo", f"/editaction {aid} until 2020-01-01")
    net.say("coo", f"/editaction {aid} until -")
    again = starts(net, aid)
    assert len(again) >= 3 and again[0] == ts("2026-09-22T08:00")
    ann = net.members["ann"]
    n = net.run(
        lambda c: c.execute(
            "SELECT count(*) FROM rsvps r JOIN occurrences o ON o.id = r.occurrence_id "
            "WHERE o.action_id = ? AND r.member_id = ?",
            (aid, ann),
        ).fetchone()[0]
    )
    assert n == len(again)  # the series member is back on every date


@pytest.mark.parametrize(
    ("zone", "rule", "since", "until", "expected"),
    [
        # Berlin falls back on Sunday 25 Oct: 02:30 happens twice; it fires once, the first.
        (
            "Europe/Berlin",
            "weekly:sun@02:30",
            "2026-10-14T12:00",
            "2026-11-01",
            ["2026-10-18T00:30", "2026-10-25T00:30", "2026-11-01T01:30"],
        ),
        # New York springs forward on Sunday 14 March 2027, the series' last date: 02:30 does
        # not exist there, so it fires at 03:30.
        (
            "America/New_York",
            "weekly:sun@02:30",
            "2027-02-24T12:00",
            "2027-03-14",
            ["2027-02-28T07:30", "2027-03-07T07:30", "2027-03-14T07:30"],
        ),
    ],
)
def test_series_rsvp_across_dst_reminds_every_date_once_and_stops(
    net: ChatHarness, zone: str, rule: str, since: str, until: str, expected: list[str]
) -> None:
    net.clock.now = ts(since)
    aid = action_id_from(net.say("coo", f"/schedule - tz={zone} until:{until} {rule} Night watch"))
    assert "every date of" in net.say("ann", f"/join {aid} all")
    step(net, ts(expected[-1]) + 30 * 86400)
    got = net.run(
        lambda c: sorted(
            r[0] for r in c.execute("SELECT start_at FROM occurrences WHERE action_id = ?", (aid,))
        )
    )
    assert got == [ts(e) for e in expected]
    # The RSVP reminder (1h before) reached the series member for every date, once.
    assert rsvp_reminders_to(net, aid, "ann") == [int(ts(e)) for e in expected]
