"""The alarm clock (bot/alarms.py) on a real asyncio loop with the real APScheduler 3.11.

These tests use the wall clock, because APScheduler's triggers do; they wait for events with
generous time-outs and never assert how long anything took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bot import alarms
from bot import recurrence as rec
from bot.scheduler import Scheduler
from handlers import actions as ha
from handlers.common import zone
from storage.store import Store, unlock
from tests.harness import PASSPHRASE, ChatHarness, Clock

HOUR = 3600


class Wall(Clock):
    def __call__(self) -> float:
        return time.time()


def people(store: Store) -> ChatHarness:
    chat = ChatHarness(store, Wall())
    chat.member("coo", "coordinator")
    chat.member("ann")
    return chat


def add_action(conn: Any, start: float, now: float, offsets: tuple[int, ...] = (HOUR,)) -> int:
    local = datetime.fromtimestamp(start, zone("UTC"))
    rule = rec.Rule("once", local.time().replace(second=0, microsecond=0), on_date=local.date())
    action = ha.create_action(
        conn,
        kind="vigil",
        title="Vigil",
        case_id=None,
        rule=rule,
        tz="UTC",
        once_at=start,
        audience="all",
        reminders=offsets,
        now=now,
    )
    return action.id


def reminder_messages(conn: Any, action_id: int) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT chat, body FROM outbox WHERE idem_key LIKE ? ORDER BY id", (f"a{action_id}:%",)
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())


def started(store: Store) -> tuple[Scheduler, alarms.AlarmClock, list[int]]:
    woken: list[int] = []
    s = Scheduler(
        store.db, lambda: woken.append(1), clock=time.time, alarms=[ha.capability().alarm]
    )
    s.start()
    (alarm,) = s.alarm_clocks
    return s, alarm, woken


def test_alarm_rings_when_due_and_wakes_the_dispatchers(store: Store) -> None:
    chat = people(store)

    async def main() -> None:
        s, alarm, woken = started(store)
        try:
            assert s.aps.get_job("actions-safety") is not None
            now = time.time()
            aid = await store.db.run(add_action, now + HOUR + 1.0, now)
            alarm.poke()  # what a handler does after its change: re-arm once it committed
            assert await until(lambda: _async(close(alarm.armed_at, now + 1.0)))
            assert await until(lambda: store.db.run(lambda c: len(reminder_messages(c, aid)) == 2))
            assert woken
            # Nothing else is due: the alarm job goes away rather than polling.
            assert await until(lambda: _async(s.aps.get_job(alarms.JOB_ID) is None))
        finally:
            s.stop()

    run(main)
    assert chat.run(lambda c: c.execute("SELECT state FROM reminders").fetchone()[0]) == "sent"


def close(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) < 1e-3


def _async(value: bool) -> Awaitable[bool]:
    async def done() -> bool:
        return value

    return done()


def test_rebuilt_from_the_tables_after_a_restart(store: Store, data_dir: Path) -> None:
    people(store)
    now = time.time()
    aid = store.db.run_sync(add_action, now + HOUR + 3.0, now)
    store.close()  # the process stops between scheduling and firing
    again = unlock(data_dir, PASSPHRASE)
    try:

        async def main() -> None:
            s, alarm, _woken = started(again)
            try:
                assert await until(lambda: _async(close(alarm.armed_at, now + 3.0)))
                job = s.aps.get_job(alarms.JOB_ID)
                assert job is not None and close(job.next_run_time.timestamp(), now + 3.0)
                assert await until(
                    lambda: again.db.run(lambda c: len(reminder_messages(c, aid)) == 2)
                )
                # A second ring (double fire) changes nothing.
                await alarm.ring()
                await alarm.ring()
                assert len(await again.db.run(reminder_messages, aid)) == 2
            finally:
                s.stop()

        run(main)
    finally:
        again.close()


def test_missed_while_down_is_sent_at_start_with_a_delay_note(store: Store) -> None:
    people(store)
    now = time.time()
    # Scheduled 1,000 s ago for half an hour from now: its invitation fell due while down.
    aid = store.db.run_sync(add_action, now + 1800, now - 1000)

    async def main() -> None:
        s, _alarm, _woken = started(store)
        try:
            assert await until(lambda: store.db.run(lambda c: len(reminder_messages(c, aid)) == 2))
            bodies = await store.db.run(reminder_messages, aid)
            assert all("(Delayed" in body for _chat, body in bodies)
        finally:
            s.stop()

    run(main)


def test_rearming_from_a_ring_is_not_skipped(store: Store, monkeypatch: Any) -> None:
    """A ring that leaves work due re-arms the alarm for "now". If the APScheduler job itself
    re-armed its own id while still running, APScheduler skipped that run (max_instances=1,
    "maximum number of running instances reached") and the rest waited for the 30 s safety
    tick. Forced here: one reminder per fire call and one call per ring."""
    people(store)
    monkeypatch.setattr(alarms, "MAX_ROUNDS", 1)
    now = time.time()
    ids = [store.db.run_sync(add_action, now + HOUR + 1.0, now) for _ in range(5)]

    async def main() -> None:
        s, alarm, _woken = started(store)
        alarm.fire = lambda conn, at: ha.fire_due(conn, at, 1)  # one reminder per call
        try:

            async def all_sent() -> bool:
                counts = [len(await store.db.run(reminder_messages, aid)) for aid in ids]
                return counts == [2] * len(ids)

            assert await until(all_sent, timeout=10.0)  # well under the 30 s safety tick
        finally:
            s.stop()

    run(main)


def test_nothing_scheduled_means_no_alarm_job(store: Store) -> None:
    async def main() -> None:
        s, alarm, _woken = started(store)
        try:
            assert await until(lambda: _async(s.aps.get_job(alarms.JOB_ID) is None))
            assert alarm.armed_at is None
        finally:
            s.stop()

    run(main)


def test_concurrent_rings_write_once(store: Store) -> None:
    people(store)
    now = time.time()
    aid = store.db.run_sync(add_action, now + 600, now - 1000)

    async def main() -> None:
        s, alarm, _woken = started(store)
        try:
            await asyncio.gather(*(alarm.ring() for _ in range(5)))
            assert len(await store.db.run(reminder_messages, aid)) == 2
        finally:
            s.stop()

    run(main)


def test_upcoming_source_for_vigil_status(store: Store) -> None:
    from bot.app import upcoming_jobs

    people(store)
    now = time.time()
    aid = store.db.run_sync(add_action, now + 2 * HOUR, now)
    jobs = store.db.run_sync(upcoming_jobs)
    assert any(what == f"reminder for action #{aid}" for _when, what in jobs)
