"""The in-process alarm clock: APScheduler 3.11 in memory, rebuilt from our tables at start.

Schedules live in the database; APScheduler only wakes us. Jobs do nothing but write outbox
rows under unique keys (so a double fire is harmless) and wake the dispatchers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.alarms import AlarmClock
from bot.jobs import Alarm, JobContext, PeriodicJob
from bot.services import Services
from storage.db import Connection, Database
from storage.retention import Retention, housekeeping

__all__ = ["Retention", "Scheduler", "housekeeping"]

log = logging.getLogger(__name__)


# Retention periods and the housekeeping job live in storage/retention.py (one table, also
# read by /mydata); `Retention` and `housekeeping` are re-exported here for existing callers.
HOUSEKEEPING_EVERY = 6 * 3600.0
HOUSEKEEPING_FIRST = 60.0  # seconds after start: a bot restarted daily must still purge


Job = Callable[[], Awaitable[None]]
DbJob = Callable[[Connection, float], int]
# (job id, "ok" | "error" | "overrun", the exception of an "error")
JobOutcome = Callable[[str, str, BaseException | None], None]


class Scheduler:
    def __init__(
        self,
        db: Database,
        wake: Callable[[], None],
        clock: Callable[[], float] = time.time,
        retention: Retention | None = None,
        *,
        services: Services | None = None,
        jobs: Sequence[PeriodicJob] = (),
        alarms: Sequence[Alarm] = (),
    ) -> None:
        self.db = db
        self.wake = wake
        self.clock = clock
        self.services = services or Services(index_key=b"")
        self.jobs = tuple(jobs)
        self.alarms = tuple(alarms)
        self.alarm_clocks: list[AlarmClock] = []
        self.retention = retention  # None: the periods in the database (defaults + overrides)
        # misfire_grace_time=None: a job missed while the loop was busy runs late, never dropped.
        self.aps = AsyncIOScheduler(
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        self._extra: list[tuple[str, Job, float]] = []

    def every(self, name: str, job: Job, seconds: float) -> None:
        """Other capabilities (actions, digests, check-ins) add their periodic ticks here."""
        self._extra.append((name, job, seconds))

    def every_db(self, name: str, fn: DbJob, seconds: float) -> None:
        """A periodic pure-DB job `fn(conn, now) -> int` (rows written); wakes the dispatchers
        when it wrote outbox rows. Capabilities keep their logic testable without a loop."""

        async def job() -> None:
            written = await self.db.run(fn, self.clock())
            if written:
                self.wake()

        self.every(name, job, seconds)

    def job_context(self, conn: Connection, now: float) -> JobContext:
        return JobContext(conn, now, self.services)

    def _add_job(self, job: PeriodicJob) -> None:
        def run(conn: Connection, now: float) -> int:
            return job.fn(self.job_context(conn, now))

        self.every_db(job.name, run, job.every)

    async def _housekeeping(self) -> None:
        counts = await self.db.run(housekeeping, self.clock(), self.retention)
        log.info("housekeeping removed %s", counts)

    async def _tick(self) -> None:
        self.wake()

    def start(self) -> None:
        for job in self.jobs:
            self._add_job(job)
        for alarm in self.alarms:
            clock = AlarmClock(self, alarm)
            self.alarm_clocks.append(clock)
            clock.install()
        self.aps.add_job(
            self._housekeeping,
            IntervalTrigger(seconds=HOUSEKEEPING_EVERY),
            id="housekeeping",
            next_run_time=datetime.now(UTC) + timedelta(seconds=HOUSEKEEPING_FIRST),
        )
        self.aps.add_job(self._tick, IntervalTrigger(seconds=30), id="tick")
        for name, job, seconds in self._extra:
            self.aps.add_job(job, IntervalTrigger(seconds=seconds), id=name)
        self.aps.start()

    def supervise(self, outcome: JobOutcome, heartbeat: Callable[[], None], every: float) -> None:
        """The one place job execution is watched, whoever added the job (capabilities, the
        actions alarm): every run's outcome goes to `outcome`, so a failing job counts as a
        failing loop, and a job still running when its next run is due counts as wedged.
        `heartbeat` runs as a job every `every` seconds: it proves APScheduler still runs jobs
        (its own loop is not ours to watch)."""

        async def beat() -> None:
            heartbeat()

        def listener(event: JobEvent) -> None:
            if event.code == EVENT_JOB_MAX_INSTANCES:
                outcome(event.job_id, "overrun", None)
            elif isinstance(event, JobExecutionEvent) and event.exception is not None:
                outcome(event.job_id, "error", event.exception)
            else:
                outcome(event.job_id, "ok", None)

        self.aps.add_listener(
            listener, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES
        )
        self.aps.add_job(beat, IntervalTrigger(seconds=every), id="supervisor-heartbeat")

    def next_jobs(self) -> list[tuple[str, str]]:
        return [(j.id, str(j.next_run_time)) for j in self.aps.get_jobs()]

    def stop(self) -> None:
        if self.aps.running:
            self.aps.shutdown(wait=False)
