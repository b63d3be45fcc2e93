"""Solidarity actions through the real router and encrypted store, with a controllable clock.

The reminder engine is driven the way the alarm clock drives it (bot/alarms.py): jump the
clock to `next_wakeup`, call `fire_due`, repeat. No test sleeps or measures wall time.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.context import Context
from handlers import actions as ha
from handlers.common import zone
from storage import cases, subscriptions
from storage.store import unlock
from tests.harness import PASSPHRASE, ChatHarness, Clock

HOUR, DAY = 3600, 86400


def ts(text: str) -> float:
    """'2026-03-29T01:30' (UTC) -> epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.services.default_timezone = "Europe/Berlin"
    chat.case("nasrin", "Nasrin S.")
    public(chat, "nasrin")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    chat.member("ann")
    return chat


def public(chat: ChatHarness, slug: str) -> None:
    chat.run(lambda c: c.execute("UPDATE cases SET visibility = 'public' WHERE slug = ?", (slug,)))


def follow(chat: ChatHarness, who: str, slug: str) -> None:
    def go(conn: Any) -> None:
        case = cases.by_slug(conn, slug)
        assert case is not None
        subscriptions.subscribe(conn, chat.members[who], case.id, "instant", chat.clock())

    chat.run(go)


def step(chat: ChatHarness, until: float) -> list[float]:
    """Run the alarm loop until `until`: jump to each wake-up, fire. Returns the fire times."""
    fired = []
    while True:
        at = chat.run(ha.next_wakeup)
        if at is None or at > until:
            break
        chat.clock.now = max(chat.clock.now, at)
        chat.run(ha.fire_due, chat.clock.now)
        fired.append(chat.clock.now)
    chat.clock.now = max(chat.clock.now, until)
    return fired


def reminder_rows(chat: ChatHarness, action_id: int) -> list[tuple[float, int, str, float | None]]:
    """(occurrence start, offset, state, fired_at) of every reminder of an action."""
    return chat.run(
        lambda c: c.execute(
            "SELECT o.start_at, r.offset_s, r.state, r.fired_at FROM reminders r "
            "JOIN occurrences o ON o.id = r.occurrence_id WHERE o.action_id = ? "
            "ORDER BY o.start_at, r.offset_s DESC",
            (action_id,),
        ).fetchall()
    )


def outbox_keys(chat: ChatHarness, prefix: str) -> list[tuple[str, float, str]]:
    rows = chat.run(
        lambda c: c.execute(
            "SELECT idem_key, created_at, body FROM outbox WHERE idem_key LIKE ? ORDER BY id",
            (prefix + "%",),
        ).fetchall()
    )
    return [(k, t, json.loads(b)["text"]) for k, t, b in rows]


def action_id_from(reply: str) -> int:
    marker = "Scheduled #"
    assert marker in reply, reply
    return int(reply.split(marker, 1)[1].split(":", 1)[0])


# -- scheduling, listing, RSVP --------------------------------------------------------------


def test_one_line_schedule_list_join_leave(net: ChatHarness) -> None:
    reply = net.say("coo", "/schedule nasrin kind=vigil 2026-09-25T18:00 Vigil for Nasrin")
    aid = action_id_from(reply)
    assert "Vigil for Nasrin" in reply and "Europe/Berlin" in reply
    listing = net.say("ann", "/actions")
    assert f"#{aid} Vigil for Nasrin" in listing and f"/join {aid}" in listing
    assert "going" not in listing.replace("You are going", "")  # no headcount for activists
    assert "You are going to Vigil for Nasrin" in net.say("ann", f"/join {aid}")
    assert "already going" in net.say("ann", f"/join {aid}")
    assert "You are going" in net.say("ann", "/actions")
    assert "1 going" in net.say("coo", "/actions")
    assert "1 person going" in net.say("coo", f"/headcount {aid}")
    assert "no longer going" in net.say("ann", f"/leave {aid}")
    assert "had not joined" in net.say("ann", f"/leave {aid}")
    assert "0 people going" in net.say("coo", f"/headcount {aid}")


def test_schedule_shows_times_in_member_zone(net: ChatHarness) -> None:
    aid = action_id_from(net.say("coo", "/schedule - 2026-12-01T10:00 Letter evening"))
    net.say("ann", "/timezone America/New_York")
    listing = net.say("ann", "/actions")
    assert "America/New_York" in listing and "4:00" in listing  # 10:00 Berlin = 04:00 NY
    assert f"#{aid}" in listing


def test_schedule_wizard(net: ChatHarness) -> None:
    assert "Which case" in net.say("coo", "/schedule")
    assert "What kind" in net.say("coo", "nasrin")
    assert "When?" in net.say("coo", "protest")
    assert "already passed" in net.say("coo", "2020-01-01T10:00")  # asked again
    assert "Does the series end?" in net.say("coo", "weekly:sun@18:00")
    assert "already passed" in net.say("coo", "2020-01-01")  # asked again
    assert "short title" in net.say("coo", "2027-03-07")
    assert "Where?" in net.say("coo", "Sunday vigil")
    reply = net.say("coo", "Alexanderplatz")
    assert "Scheduled #" in reply and "every Sunday at 18:00" in reply
    assert "Last date: 2027-03-07" in reply
    assert "Alexanderplatz" in reply and "protest" in reply


def test_schedule_parses_options_and_refuses_bad_input(net: ChatHarness) -> None:
    reply = net.say(
        "coo",
        "/schedule - tz=America/New_York to=role:activist remind=2d,3h "
        "2026-12-01 10:00 Call-in day",
    )
    assert "America/New_York" in reply and "2 days, 3 hours before" in reply
    assert "members with the role activist" in reply
    assert "time must be between" in net.say("coo", "/schedule - weekly:sun@25:00 Late")
    assert "Weekdays are" in net.say("coo", "/schedule - weekly:xyz@18:00 Oops")
    assert "already passed" in net.say("coo", "/schedule - 2026-01-01T10:00 Past")
    assert "Give reminders" in net.say("coo", "/schedule - remind=5s daily@10:00 X")
    assert "Only an action for a case" in net.say("coo", "/schedule - to=case daily@10:00 X")


# -- authorization ----------------------------------------------------------------------------


def test_activists_cannot_schedule_or_manage(net: ChatHarness) -> None:
    aid = action_id_from(net.say("coo", "/schedule - daily@10:00 Daily call-in"))
    unknown = net.say("ann", "/nosuchcommand")
    for cmd in (
        "/schedule - daily@10:00 Mine",
        f"/headcount {aid}",
        f"/unschedule {aid}",
        f"/editaction {aid} title X",
        "/template oct30 on",
    ):
        assert net.say("ann", cmd) == unknown


def test_restricted_case_actions_are_invisible_to_outsiders(net: ChatHarness) -> None:
    net.case("secret", "Secret Case", visibility="restricted")
    net.member("rel", "family", family_of=("secret",))
    net.member("boss", "coordinator", coordinates=("secret",))
    net.member("coo2", "coordinator", coordinates=("nasrin",))
    assert "restricted" in net.say("boss", "/schedule secret to=all 2026-12-01T10:00 Hearing")
    aid = action_id_from(net.say("boss", "/schedule secret 2026-12-01T10:00 Family visit day"))
    missing = net.say("ann", "/join 99999")
    assert net.say("ann", f"/join {aid}") == missing
    assert net.say("ann", f"/leave {aid}") == missing
    assert "Family visit day" not in net.say("ann", "/actions")
    assert "Family visit day" in net.say("rel", "/actions")
    assert "You are going" in net.say("rel", f"/join {aid}")
    # A coordinator assigned to another case does not manage it: same answer as nonexistent.
    assert net.say("coo2", f"/headcount {aid}") == net.say("coo2", "/headcount 99999")
    # The invitation reaches only people tied to the case (and followers allowed to see it).
    follow(net, "ann", "secret")  # an outsider's stale follow does not leak it
    mark = net.last_id()
    step(net, ts("2026-12-01T08:59"))
    chats = {s.chat for s in net.outbox(mark) if "Family visit day" in s.text}
    assert chats == {"rel", "boss"}  # relatives and assigned coordinators only


def test_role_audience(net: ChatHarness) -> None:
    aid = action_id_from(net.say("coo", "/schedule - to=role:coordinator daily@09:00 Stand-up"))
    assert "Stand-up" not in net.say("ann", "/actions")
    assert net.say("ann", f"/join {aid}") == net.say("ann", "/join 99999")
    assert "Stand-up" in net.say("coo", "/actions")


# -- the reminder engine ----------------------------------------------------------------------


def test_invitation_to_audience_then_reminder_to_those_who_joined(net: ChatHarness) -> None:
    net.member("bob")
    follow(net, "ann", "nasrin")
    follow(net, "bob", "nasrin")
    aid = action_id_from(net.say("coo", "/schedule nasrin 2026-09-25T18:00 Vigil for Nasrin"))
    start = ts("2026-09-25T16:00")
    mark = net.last_id()
    step(net, start - DAY)
    invitations = [s for s in net.outbox(mark) if "Vigil for Nasrin" in s.text]
    # The followers, and coo: a case's coordinators are part of its audience.
    assert {s.chat for s in invitations} == {"ann", "bob", "coo"}
    assert all(f"/join {aid}" in s.text and s.priority == 3 for s in invitations)
    net.say("ann", f"/join {aid}")
    mark = net.last_id()
    step(net, start - HOUR)
    last = [s for s in net.outbox(mark) if "Vigil for Nasrin" in s.text]
    assert [s.chat for s in last] == ["ann"]
    assert "Reminder: Vigil for Nasrin" in last[0].text and "in 1 hour" in last[0].text
    assert [r[2] for r in reminder_rows(net, aid)] == ["sent", "sent"]


def test_double_fire_changes_nothing(net: ChatHarness) -> None:
    follow(net, "ann", "nasrin")
    aid = action_id_from(net.say("coo", "/schedule nasrin 2026-09-25T18:00 Vigil"))
    step(net, ts("2026-09-24T16:00"))
    before = net.last_id()
    assert net.run(ha.fire_due, net.clock()) == 0
    # Even if the reminder row were replayed (a crash between writing and marking), the
    # outbox keys absorb it.
    net.run(
        lambda c: c.execute(
            "UPDATE reminders SET state = 'pending', phase = 'audience', cursor = 0"
        )
    )
    assert net.run(ha.fire_due, net.clock()) == 0
    assert net.last_id() == before
    assert len(outbox_keys(net, f"a{aid}:")) == 2  # ann and coo, once each


def _dst_case(net: ChatHarness, zone: str, rule: str, since: str, until: str) -> list[Any]:
    net.clock.now = ts(since)
    net.member("far", "activist")
    net.say("far", f"/timezone {zone}")
    aid = action_id_from(net.say("coo", f"/schedule - tz={zone} {rule} Night watch"))
    step(net, ts(until))
    rows = [r for r in reminder_rows(net, aid) if r[0] - r[1] <= ts(until)]
    for start, offset, state, fired_at in rows:
        assert state == "sent", (start, offset, state)
        # Fired exactly when due (never early, never late); an invitation whose time had
        # passed when the action was scheduled went at once.
        assert fired_at == max(start - offset, ts(since))
    return rows


@pytest.mark.parametrize(
    ("zone", "rule", "since", "until", "starts", "local_shown"),
    [
        # Spring forward: 02:30 does not exist on 29 March; it fires at 03:30, once.
        (
            "Europe/Berlin",
            "daily@02:30",
            "2026-03-25T12:00",
            "2026-03-31T12:00",
            [
                "2026-03-27T01:30",
                "2026-03-28T01:30",
                "2026-03-29T01:30",
                "2026-03-30T00:30",
                "2026-03-31T00:30",
            ],
            "3:30",
        ),
        # Fall back: 02:30 happens twice on 25 October; it fires once, at the first.
        (
            "Europe/Berlin",
            "daily@02:30",
            "2026-10-21T12:00",
            "2026-10-27T12:00",
            [
                "2026-10-23T00:30",
                "2026-10-24T00:30",
                "2026-10-25T00:30",
                "2026-10-26T01:30",
                "2026-10-27T01:30",
            ],
            "2:30",
        ),
        (
            "America/New_York",
            "daily@02:30",
            "2026-03-04T12:00",
            "2026-03-10T12:00",
            [
                "2026-03-06T07:30",
                "2026-03-07T07:30",
                "2026-03-08T07:30",
                "2026-03-09T06:30",
                "2026-03-10T06:30",
            ],
            "3:30",
        ),
        (
            "America/New_York",
            "daily@01:30",
            "2026-10-28T12:00",
            "2026-11-03T12:00",
            [
                "2026-10-30T05:30",
                "2026-10-31T05:30",
                "2026-11-01T05:30",
                "2026-11-02T06:30",
                "2026-11-03T06:30",
            ],
            "1:30",
        ),
    ],
)
def test_dst_reminders_no_skip_no_double(
    net: ChatHarness,
    zone: str,
    rule: str,
    since: str,
    until: str,
    starts: list[str],
    local_shown: str,
) -> None:
    rows = _dst_case(net, zone, rule, since, until)
    fired_starts = sorted({r[0] for r in rows if r[0] <= ts(until)})
    wanted = [ts(s) for s in starts]
    assert [s for s in fired_starts if wanted[0] <= s <= wanted[-1]] == wanted
    for start in wanted:  # both reminders of every day, exactly once
        assert sorted(r[1] for r in rows if r[0] == start) == [HOUR, DAY]
    # The invitation went once per occurrence, showing the local time of the transition day.
    far = f":{net.members['far']}:"
    texts = {k: t for k, _at, t in outbox_keys(net, "a") if far in k}
    transition = wanted[2]
    shown = [t for k, t in texts.items() if f":{int(transition)}:" in k]
    assert len(shown) == 1 and local_shown in shown[0]


def test_weekly_rule_keeps_a_next_date(net: ChatHarness) -> None:
    aid = action_id_from(net.say("coo", "/schedule - weekly:sun@18:00 Sunday vigil"))
    for _ in range(5):
        assert "Sunday vigil" in net.say("ann", "/actions")
        step(net, net.clock() + 7 * DAY)
    starts = sorted({r[0] for r in reminder_rows(net, aid)})
    gaps = {b - a for a, b in itertools.pairwise(starts)}
    assert len(starts) >= 5 and gaps <= {7 * DAY, 7 * DAY + HOUR}  # +1 h: clocks went back


# -- missed while the bot was down -----------------------------------------------------------


def test_missed_reminder_sent_late_if_action_not_started(net: ChatHarness) -> None:
    follow(net, "ann", "nasrin")
    aid = action_id_from(net.say("coo", "/schedule nasrin 2026-09-25T18:00 Vigil"))
    net.say("ann", f"/join {aid}")
    # Down from before the invitation until 30 minutes before the start: both reminders due.
    net.clock.now = ts("2026-09-25T15:30")
    mark = net.last_id()
    net.run(ha.fire_due, net.clock())
    sent = [s for s in net.outbox(mark) if s.chat == "ann"]
    assert len(sent) == 1 and "(Delayed" in sent[0].text
    states = {offset: state for _s, offset, state, _f in reminder_rows(net, aid)}
    assert states == {DAY: "sent", HOUR: "merged"}
    assert "1 late" in net.say("coo", f"/headcount {aid}")


def test_missed_reminder_after_start_is_skipped_counted_and_told(net: ChatHarness) -> None:
    follow(net, "ann", "nasrin")
    aid = action_id_from(net.say("coo", "/schedule nasrin 2026-09-25T18:00 Vigil"))
    net.clock.now = ts("2026-09-25T17:00")  # back after the start
    mark = net.last_id()
    net.run(ha.fire_due, net.clock())
    out = net.outbox(mark)
    assert not [s for s in out if s.chat == "ann"]  # nothing late after the start
    notice = [s for s in out if s.chat == "coo"]
    assert len(notice) == 1 and "2 reminders could not be sent" in notice[0].text
    assert f"#{aid}" in notice[0].text
    assert {r[2] for r in reminder_rows(net, aid)} == {"skipped"}
    assert "2 missed while the bot was offline" in net.say("coo", f"/headcount {aid}")
    assert net.run(ha.fire_due, net.clock()) == 0  # told once


def test_missed_occurrences_of_a_recurring_action_are_all_counted(net: ChatHarness) -> None:
    aid = action_id_from(net.say("coo", "/schedule - daily@09:00 Morning call"))
    step(net, net.clock() + DAY)
    net.clock.advance(5 * DAY)  # down five days
    net.run(ha.fire_due, net.clock())
    rows = reminder_rows(net, aid)
    skipped = [r for r in rows if r[2] == "skipped"]
    assert len(skipped) >= 8  # two per missed day, none silently gone
    assert not [r for r in rows if r[2] == "pending" and r[0] - r[1] < net.clock()]


def test_restart_between_scheduling_and_firing(store, clock: Clock, data_dir) -> None:  # type: ignore[no-untyped-def]
    chat = ChatHarness(store, clock)
    chat.services.default_timezone = "Europe/Berlin"
    chat.member("coo", "coordinator")
    chat.member("ann")
    aid = action_id_from(chat.say("coo", "/schedule - 2026-09-25T18:00 Vigil"))
    chat.say("ann", f"/join {aid}")
    store.close()

    again = unlock(data_dir, PASSPHRASE)
    try:
        chat2 = ChatHarness(again, clock)
        chat2.members = dict(chat.members)
        fired = step(chat2, ts("2026-09-25T16:00"))
        assert fired == [ts("2026-09-24T16:00"), ts("2026-09-25T15:00")]
        ann = f":{chat.members['ann']}:"
        keys = [k for k, _t, _x in outbox_keys(chat2, f"a{aid}:") if ann in k]
        assert len(keys) == 2
        # And once more across a second restart: nothing is sent twice.
        again.close()
        third = unlock(data_dir, PASSPHRASE)
        try:
            chat3 = ChatHarness(third, clock)
            assert third.db.run_sync(ha.fire_due, clock()) == 0
            assert len([k for k, _t, _x in outbox_keys(chat3, f"a{aid}:") if ann in k]) == 2
        finally:
            third.close()
    finally:
        if again.db._thread.is_alive():
            again.close()


# -- scale ----------------------------------------------------------------------------------


def test_ten_thousand_reminders(net: ChatHarness) -> None:
    """10,000 one-off actions, one reminder each, all fired exactly once, none early."""
    net.member("bob")
    t0 = net.clock()

    def bulk(conn: Any) -> None:
        from bot import recurrence as rec

        for i in range(10_000):
            start = t0 + 2 * HOUR + i * 3  # spread over about 8 hours
            local = datetime.fromtimestamp(start, zone("UTC"))
            rule = rec.Rule("once", local.time().replace(second=0), on_date=local.date())
            ha.create_action(
                conn,
                kind="vigil",
                title=f"A{i}",
                case_id=None,
                rule=rule,
                tz="UTC",
                once_at=start,
                audience="all",
                reminders=(HOUR,),
                now=t0,
            )

    net.run(bulk)
    assert net.run(lambda c: c.execute("SELECT count(*) FROM reminders").fetchone()[0]) == 10_000
    # Step the clock a minute at a time, as a loop woken by the alarm (batched) would.
    mark = net.last_id()
    end = t0 + 10 * HOUR
    while net.clock() < end:
        net.clock.advance(60)
        net.run(ha.fire_due, net.clock())
    states = net.run(
        lambda c: c.execute(
            "SELECT state, count(*), max(fired_at - due_at) FROM reminders GROUP BY state"
        ).fetchall()
    )
    assert [(s, n) for s, n, _late in states] == [("sent", 10_000)]
    assert 0 <= states[0][2] < 60
    rows = net.outbox(mark)
    per_member = {c: sum(1 for s in rows if s.chat == c) for c in ("ann", "bob", "coo")}
    assert per_member == {"ann": 10_000, "bob": 10_000, "coo": 10_000}


def test_large_audience_is_streamed_in_bounded_chunks(net: ChatHarness) -> None:
    def many(conn: Any) -> None:
        from storage import members

        for i in range(1_200):
            members.create(
                conn,
                role="activist",
                transport="console",
                address=f"m{i}",
                chat=f"m{i}",
                now=net.clock(),
            )

    net.run(many)
    aid = action_id_from(net.say("coo", "/schedule - 2026-09-25T18:00 Big vigil"))
    net.clock.now = ts("2026-09-24T16:00")
    calls = 0
    while True:
        written = net.run(ha.fire_due, net.clock(), 300)  # a small budget: several calls
        calls += 1
        assert written <= 300 + ha.CHUNK
        if net.run(ha.next_wakeup) > net.clock():
            break
    assert calls >= 3
    keys = outbox_keys(net, f"a{aid}:")
    assert len(keys) == len({k for k, _t, _x in keys}) == 1_200 + 2  # + ann and coo


def test_quiet_hours_hold_the_invitation_but_not_after_the_start(net: ChatHarness) -> None:
    net.say("ann", "/quiet 22-7")
    net.member("bob")
    net.say("bob", "/quiet 22-7")
    net.say("bob", "/timezone Europe/Berlin")
    # Quiet 22:00-07:00 Berlin. Noon vigil: invitation due 02:00, held until 07:00. Dawn
    # vigil at 06:30: invitation due 04:30; after the quiet hours it would be too late.
    a1 = action_id_from(net.say("coo", "/schedule - remind=10h 2026-09-25T12:00 Noon vigil"))
    a2 = action_id_from(net.say("coo", "/schedule - remind=2h 2026-09-25T06:30 Dawn vigil"))
    step(net, ts("2026-09-25T04:00"))
    names = {str(i): n for n, i in net.members.items()}
    noon = {names[k.split(":")[3]] for k, _t, _x in outbox_keys(net, f"a{a1}:")}
    assert noon == {"ann", "bob", "coo"}
    held = net.run(
        lambda c: dict(
            c.execute(
                "SELECT chat, not_before FROM outbox WHERE idem_key LIKE ?", (f"a{a1}:%",)
            ).fetchall()
        )
    )
    quiet_end = ts("2026-09-25T05:00")  # 07:00 Berlin, when their quiet hours end
    assert held == {"ann": quiet_end, "bob": quiet_end, "coo": 0}
    dawn = {names[k.split(":")[3]] for k, _t, _x in outbox_keys(net, f"a{a2}:")}
    assert dawn == {"coo"}  # after 07:00 would be after the start


# -- exact place revealed to those who joined ------------------------------------------------


def test_exact_place_only_to_those_who_joined(net: ChatHarness) -> None:
    net.member("bob")
    aid = action_id_from(net.say("coo", "/schedule - 2026-09-25T18:00 Vigil"))
    net.say("coo", f"/editaction {aid} place Berlin, Mitte")
    net.say("coo", f"/editaction {aid} secret Back gate of St. Mary's church")
    net.say("coo", f"/editaction {aid} reveal 3h")
    listing = net.say("bob", "/actions")
    assert "Berlin, Mitte" in listing and "St. Mary" not in listing
    reply = net.say("ann", f"/join {aid}")
    assert "St. Mary" not in reply and "3 hours before" in reply
    mark = net.last_id()
    step(net, ts("2026-09-25T13:00"))
    secret = [s for s in net.outbox(mark) if "St. Mary" in s.text]
    assert [s.chat for s in secret] == ["ann"]
    assert "St. Mary" in net.say("bob", f"/join {aid}")  # joining later: told at once
    assert all("St. Mary" not in s.text for s in net.outbox(mark) if s.chat == "coo")


def test_one_off_ends_and_rsvps_are_forgotten(net: ChatHarness) -> None:
    aid = action_id_from(net.say("coo", "/schedule - 2026-09-25T18:00 Vigil"))
    net.say("coo", f"/editaction {aid} secret Back gate")
    net.say("ann", f"/join {aid}")
    net.clock.now = ts("2026-09-28T12:00")
    net.run(ha.housekeeping, net.clock())
    assert net.run(lambda c: c.execute("SELECT count(*) FROM rsvps").fetchone()[0]) == 0
    row = net.run(lambda c: c.execute("SELECT state, exact_place FROM actions").fetchone())
    assert row == ("ended", None)
    assert "1 person said they would come" in net.say("coo", f"/headcount {aid}")


# -- changing and calling off ------------------------------------------------------------------


def test_edit_when_moves_one_off_and_tells_those_who_joined(net: ChatHarness) -> None:
    aid = action_id_from(net.say("coo", "/schedule - 2026-09-25T18:00 Vigil"))
    net.say("ann", f"/join {aid}")
    out = net.send("coo", f"/editaction {aid} when 2026-09-26T18:00")
    told = [s for s in out if s.chat == "ann"]
    assert len(told) == 1 and "has moved" in told[0].text
    assert "1 person going" in net.say("coo", f"/headcount {aid}")
    starts = {r[0] for r in reminder_rows(net, aid)}
    assert starts == {ts("2026-09-26T16:00")}


def test_edit_reminders_and_unschedule(net: ChatHarness) -> None:
    aid = action_id_from(net.say("coo", "/schedule - weekly:sun@18:00 Vigil"))
    assert "3 hours, 30 minutes before" in net.say("coo", f"/editaction {aid} reminders 3h,30m")
    offsets = {r[1] for r in reminder_rows(net, aid) if r[2] == "pending"}
    assert offsets == {3 * HOUR, 30 * 60}
    net.say("ann", f"/join {aid}")
    out = net.send("coo", f"/unschedule {aid}")
    assert any(s.chat == "ann" and "called off" in s.text for s in out)
    assert "Vigil" not in net.say("ann", "/actions")
    assert net.run(ha.next_wakeup) is None


# -- court hearings and 30 October -------------------------------------------------------------


def _ctx(chat: ChatHarness, conn: Any, who: str) -> Context:
    """A handler context for `who`, as the router would build it (on the writer thread)."""
    from bot.i18n import Translator
    from bot.messages import Incoming
    from storage import members

    member = members.get(conn, chat.members[who])
    msg = Incoming(transport="console", sender=who, chat=who, key="x", text="")
    return Context(conn, msg, member, chat.services, chat.clock(), Translator("en"))


def test_hearing_creates_moves_and_cancels_a_court_action(net: ChatHarness) -> None:
    follow(net, "ann", "nasrin")
    case_id = net.run(lambda c: cases.by_slug(c, "nasrin").id)
    hearing = ts("2026-10-05T08:00")

    def set_hearing(conn: Any, when: float | None) -> int | None:
        cases.set_next_hearing(conn, case_id, when, False, net.clock())
        return ha.ensure_hearing_action(conn, case_id, when, net.clock(), timezone="Europe/Berlin")

    aid = net.run(set_hearing, hearing)
    assert aid is not None and net.run(set_hearing, hearing) == aid  # idempotent
    assert "Court hearing: Nasrin S." in net.say("ann", "/actions")
    net.say("ann", f"/join {aid}")
    step(net, ts("2026-10-04T09:00"))  # the day-before reminder for 5 October went out
    mark = net.last_id()
    assert net.run(set_hearing, ts("2026-10-07T08:00")) == aid  # postponed
    assert any("has moved" in s.text for s in net.outbox(mark) if s.chat == "ann")
    assert "1 person going" in net.say("coo", f"/headcount {aid}")
    # The reminders are planned again for the new date, although one went for the old date.
    mark = net.last_id()
    step(net, ts("2026-10-07T07:00"))
    again = [s for s in net.outbox(mark) if s.chat == "ann"]
    assert len(again) == 2 and all("Oct 7, 2026" in s.text for s in again)
    assert net.run(set_hearing, None) is None
    assert "Court hearing" not in net.say("ann", "/actions")


def test_hearing_hook_is_registered_and_replies(net: ChatHarness) -> None:
    hook = ha.on_case_hearing_set
    case_id = net.run(lambda c: cases.by_slug(c, "nasrin").id)

    def call(conn: Any) -> None:
        day = ts("2026-10-04T22:00")  # 5 October, date only: local midnight in Berlin
        cases.set_next_hearing(conn, case_id, day, True, net.clock())
        hook(_ctx(net, conn, "coo"), case_id, day)  # type: ignore[arg-type]

    mark = net.last_id()
    net.run(call)
    assert any("Court-hearing action #" in s.text for s in net.outbox(mark))
    listing = net.say("ann", "/actions")
    assert "time to be confirmed" in listing
    # A date-only hearing is reminded as if it began at 09:00 (Berlin) that day.
    dues = net.run(
        lambda c: [r[0] for r in c.execute("SELECT due_at FROM reminders ORDER BY due_at")]
    )
    nine = ts("2026-10-05T07:00")
    assert dues == [nine - DAY, nine - HOUR]


def test_oct30_template(net: ChatHarness) -> None:
    reply = net.say("coo", "/template oct30 on")
    assert "International Day of Political Prisoners" in reply and "October 30" in reply
    again = net.say("coo", "/template oct30 on")
    assert "Scheduled" not in again
    assert net.run(lambda c: c.execute("SELECT count(*) FROM actions").fetchone()[0]) == 1
    mark = net.last_id()
    # 30 October 12:00 Berlin is 11:00 UTC (clocks went back on the 25th); 7 days before.
    step(net, ts("2026-10-23T11:00"))
    invite = [s for s in net.outbox(mark) if s.chat == "ann"]
    assert len(invite) == 1 and "/letters" in invite[0].text
    assert "off" in net.say("coo", "/template oct30 off")
    assert "(off)" in net.say("coo", "/template")


def test_status_lists_next_reminders_without_titles(net: ChatHarness) -> None:
    aid = action_id_from(net.say("coo", "/schedule - 2026-09-25T18:00 Very secret vigil"))
    from bot.app import upcoming_jobs

    jobs = net.run(upcoming_jobs)
    mine = [j for j in jobs if f"action #{aid}" in j[1]]
    assert mine and all("secret" not in what for _w, what in jobs)
    assert mine[0][0].startswith("2026-09-24T16:00")
