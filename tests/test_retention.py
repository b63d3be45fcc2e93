"""Retention: one table of periods, a job that enforces each of them, and what /mydata says."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from bot import scheduler
from storage import actions, audit, broadcasts, cases, outbox, reports, retention
from storage.db import Connection
from tests.authz_world import dump
from tests.harness import ChatHarness

DAY = 86400.0
R = retention.Retention()


def count(chat: ChatHarness, table: str, where: str = "1") -> int:
    return chat.run(
        lambda c: c.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]
    )


def test_the_table_is_complete_and_within_its_bounds() -> None:
    assert set(retention.KINDS) == set(retention.BOUNDS)
    for kind in retention.KINDS:
        least, most = retention.BOUNDS[kind]
        assert least <= getattr(R, kind) <= most, kind
    assert R.inbox_keys >= 2 * DAY  # Telegram re-delivers for up to 24 hours
    assert R.wizard_state <= 7 * DAY and R.delivered_messages <= 30 * DAY


def test_scheduler_uses_this_table_and_purges_soon_after_start(store) -> None:  # type: ignore[no-untyped-def]
    assert scheduler.Retention is retention.Retention
    assert scheduler.housekeeping is retention.housekeeping

    async def start() -> list[tuple[str, str]]:
        s = scheduler.Scheduler(store.db, lambda: None)
        s.start()
        try:
            return s.next_jobs()
        finally:
            s.stop()

    jobs = dict(asyncio.run(start()))
    assert "housekeeping" in jobs  # first run a minute after start, then every 6 hours


def _old_and_new(conn: Connection, now: float) -> None:
    """One stale and one fresh row of every kind, with the retention's own clock."""
    case = cases.create(conn, "nasrin", "Nasrin S.", "restricted", now - 800 * DAY)
    mid = conn.execute(
        "INSERT INTO members (role, created_at) VALUES ('activist', ?)", (now - 800 * DAY,)
    ).lastrowid
    for age in (R.inbox_keys + DAY, DAY):
        conn.execute("INSERT INTO inbox VALUES ('signal', ?, ?)", (f"uuid:{age}", now - age))
    for age in (R.delivered_messages + DAY, DAY):
        oid = outbox.enqueue(conn, transport="console", chat="c", body={"text": "SENTINEL-OLD"},
                             priority=1, now=now - age, member_id=mid)  # fmt: skip
        outbox.mark_sent(conn, oid, "ref", now - age)
    # Undelivered messages are never purged, however old.
    outbox.enqueue(conn, transport="console", chat="c", body={"text": "waiting"}, priority=1,
                   now=now - 99 * DAY)  # fmt: skip
    mid2 = conn.execute(
        "INSERT INTO members (role, created_at) VALUES ('activist', ?)", (now - DAY,)
    ).lastrowid
    for who, age in ((mid, R.wizard_state + DAY), (mid2, 60.0)):
        conn.execute("INSERT INTO conversations VALUES (?, 'x', 'y', '{}', ?)", (who, now - age))
    for age in (R.report_bodies + DAY, DAY):
        rid = reports.create(conn, case_id=case.id, source="line", kind=None, health=None,
                             urgent=False, key_id="k", now=now - age)  # fmt: skip
        reports.set_sealed(conn, rid, b"sealed")
        aid = reports.add_attachment(conn, rid, "photo", "k", now - age)
        reports.set_attachment_sealed(conn, aid, b"sealed")
    for age, acked in ((R.urgent_alerts + DAY, True), (R.urgent_alerts + DAY, False), (DAY, True)):
        alert = reports.create_alert(conn, case.id, None, now - age)
        if acked:
            reports.ack_alert(conn, alert, mid, now - age + 60)
    for age in (R.audit + DAY, DAY):
        audit.record(conn, mid, "case.edited", f"case:{case.id}", now - age)
    for age, state in (
        (R.broadcasts + DAY, "done"),
        (DAY, "done"),
        (R.broadcasts + DAY, "running"),
    ):
        bid = broadcasts.create(conn, kind="broadcast", segment="all", body={"text": "x"},
                                priority=3, now=now - age, state=state)  # fmt: skip
        if state == "done":
            conn.execute("UPDATE broadcasts SET finished_at = ? WHERE id = ?", (now - age, bid))
    action = actions.create(conn, kind="vigil", title="T", case_id=case.id, rule="once",
                            timezone="UTC", once_at=now - 10 * DAY, audience="case",
                            reminders=(), now=now - 20 * DAY)  # fmt: skip
    for age in (R.rsvps + DAY, R.rsvps - DAY / 2):
        occ = actions.add_occurrence(conn, action, now - age, None)
        assert occ is not None
        actions.join(conn, occ, mid, now - age - DAY)


def test_enforce_removes_exactly_what_is_past_its_period(chat: ChatHarness) -> None:
    now = chat.clock()
    chat.run(_old_and_new, now)
    counts = chat.run(retention.enforce, now)
    assert counts["inbox"] == 1 and count(chat, "inbox") == 1
    assert counts["outbox"] == 1 and count(chat, "outbox", "state = 'sent'") == 1
    assert count(chat, "outbox", "state = 'pending'") == 1
    assert counts["conversations"] == 1 and count(chat, "conversations") == 1
    assert counts["reports"] == 1 and count(chat, "reports") == 1
    assert count(chat, "report_attachments") == 1  # went with its report
    assert counts["urgent_alerts"] == 1 and count(chat, "urgent_alerts") == 2  # open one stays
    assert counts["audit"] == 1 and count(chat, "audit") == 1
    assert counts["broadcasts"] == 1 and count(chat, "broadcasts") == 2  # running one stays
    assert count(chat, "rsvps") == 1  # who came is forgotten, the count is kept
    kept = chat.run(lambda c: c.execute("SELECT going FROM occurrences ORDER BY start_at")
                    .fetchall())  # fmt: skip
    assert kept[0] == (1,)
    # The words of the purged message are gone from the decrypted database, not just hidden.
    assert "SENTINEL-OLD" in json.dumps(chat.run(lambda c: dump(c, skip=())), default=repr)
    chat.clock.advance(R.delivered_messages)
    chat.run(retention.enforce, chat.clock())
    assert "SENTINEL-OLD" not in json.dumps(chat.run(lambda c: dump(c, skip=())), default=repr)


def test_enforce_is_idempotent_and_cheap_on_an_empty_network(chat: ChatHarness) -> None:
    first = chat.run(retention.enforce, chat.clock())
    again = chat.run(retention.enforce, chat.clock())
    assert set(first.values()) <= {0} and set(again.values()) <= {0}


def test_operator_overrides_are_bounded_and_read_by_everyone(chat: ChatHarness) -> None:
    chat.run(retention.set_period, "report_bodies", 30)
    assert chat.run(retention.current).report_bodies == 30 * DAY
    with pytest.raises(retention.RetentionError):
        chat.run(retention.set_period, "inbox_keys", 0.5)  # below Telegram's replay window
    with pytest.raises(retention.RetentionError):
        chat.run(retention.set_period, "no_such_kind", 3)
    # A damaged override is ignored, not obeyed.
    chat.run(lambda c: c.execute(
        "INSERT OR REPLACE INTO settings VALUES ('retention.audit', 'forever')"))  # fmt: skip
    assert chat.run(retention.current).audit == R.audit
    chat.case("nasrin", "Nasrin S.")
    chat.member("rana", "family", family_of=("nasrin",))
    assert "kept 30 days" in chat.say("rana", "/mydata")


def test_enforce_uses_the_overrides(chat: ChatHarness) -> None:
    now = chat.clock()
    chat.run(lambda c: audit.record(c, None, "x.y", None, now - 40 * DAY))
    assert chat.run(retention.enforce, now)["audit"] == 0
    chat.run(retention.set_period, "audit", 30)
    assert chat.run(retention.enforce, now)["audit"] == 1


def test_retention_dataclass_is_frozen_and_days_round() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        R.audit = 1  # type: ignore[misc]
    assert R.days("wizard_state") == 2
