"""The alarm clock for scheduled actions: one APScheduler job at the next due instant.

The tables are the truth (handlers/actions/). APScheduler (3.11, the `AsyncIOScheduler` of
bot/scheduler.py, misfire_grace_time=None) holds exactly one date job, `actions-alarm`, set to
`next_due(conn)`: the earliest pending reminder, place reveal or materialisation. When it
rings, `fire(conn, now)` runs on the database writer thread (idempotent: outbox rows carry
unique keys), the dispatchers are woken, and the job is set again to the new earliest instant.
So rebuilding at start is one indexed query, whatever the number of schedules, and a double
fire changes nothing.

Arming at start means "ring now": anything that fell due while the process was down is
handled at once by the capability's missed-while-down policy. A safety-net tick (every
SAFETY_TICK seconds) runs the same wake-up in case a timer was lost, and handlers that change
a schedule call `poke()` (thread-safe: they run on the writer thread) so the alarm is set again
after their transaction committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.triggers.date import DateTrigger

from bot.jobs import Alarm
from storage.db import Connection

if TYPE_CHECKING:
    from bot.scheduler import Scheduler

log = logging.getLogger(__name__)

JOB_ID = "actions-alarm"
SAFETY_TICK = 30.0
MAX_ROUNDS = 50  # fire calls in a row before handing the loop back to other work

Fire = Callable[[Connection, float], int]


class AlarmClock:
    def __init__(
        self,
        scheduler: Scheduler,
        alarm: Alarm,
        *,
        safety_tick: float = SAFETY_TICK,
        after_fire: Callable[[float, int], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.db = scheduler.db
        self.clock = scheduler.clock
        # (conn, now) -> rows written; replaceable by tests and benches
        self.fire: Fire = lambda conn, now: alarm.fire(scheduler.job_context(conn, now))
        self.next_due = alarm.next_due
        self.safety_tick = safety_tick
        self.after_fire = after_fire  # (the `now` a fire ran with, rows written); for benches
        self.armed_at: float | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Called from Scheduler.start(): the safety tick, and a first ring now,
        which both catches up on what fell due while down and sets the alarm."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.scheduler.every("actions-safety", self.ring, self.safety_tick)
        self._arm(self.clock())

    async def rebuild(self) -> float | None:
        """Set the alarm from the tables (after a change, or at start)."""
        at = await self.db.run(self.next_due)
        self._arm(at)
        return at

    async def ring(self) -> None:
        """Fire everything due, then set the alarm to the next due instant."""
        async with self._lock:
            at: float | None = None
            for _ in range(MAX_ROUNDS):
                now = self.clock()
                written = await self.db.run(self.fire, now)
                if self.after_fire is not None:
                    self.after_fire(now, written)
                if written:
                    self.scheduler.wake()
                at = await self.db.run(self.next_due)
                if at is None or at > self.clock():
                    break
                await asyncio.sleep(0)
            self._arm(at)

    def _arm(self, at: float | None) -> None:
        self.armed_at = at
        aps = self.scheduler.aps
        if at is None:
            with contextlib.suppress(JobLookupError):
                aps.remove_job(JOB_ID)
            return
        run_date = datetime.fromtimestamp(at, UTC)
        aps.add_job(self._rang, DateTrigger(run_date), id=JOB_ID, replace_existing=True)

    async def _rang(self) -> None:
        """The alarm job itself only starts the ring as its own task and returns. A job that
        re-armed its own id while still running would find its next run skipped by
        APScheduler (max_instances=1: "maximum number of running instances reached") and the
        alarm lost until the safety tick."""
        task = asyncio.ensure_future(self.ring())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    def poke(self) -> None:
        """A schedule changed (called on the writer thread, inside the change's transaction):
        set the alarm again once the loop gets to it. The query runs after this transaction,
        so it sees the change if it committed and the old state if it rolled back."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._spawn_rebuild)

    def _spawn_rebuild(self) -> None:
        if self.scheduler.aps.running:
            task = asyncio.ensure_future(self.rebuild())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("alarm task failed: %s", type(task.exception()).__name__)
