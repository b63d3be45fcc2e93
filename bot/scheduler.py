"""The in-process alarm clock: APScheduler 3.11 in memory, rebuilt from our tables at start.

Schedules live in the database; APScheduler only wakes us. Jobs do nothing but write outbox
rows under unique keys (so a double fire is harmless) and wake the dispatchers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from storage import conversations, inbox, invites, outbox, ratelimits
from storage.db import Connection, Database

log = logging.getLogger(__name__)

DAY = 86400.0


@dataclass(frozen=True)
class Retention:
    """How long each kind of operational record is kept (seconds). Shown to users by /mydata."""

    inbox_keys: float = 30 * DAY  # Telegram re-delivers for 24 h at most; Signal may replay later
    delivered_messages: float = 14 * DAY
    wizard_state: float = 2 * DAY
    rate_buckets: float = 2 * DAY


def housekeeping(conn: Connection, now: float, retention: Retention) -> dict[str, int]:
    return {
        "inbox": inbox.purge_older_than(conn, now - retention.inbox_keys),
        "outbox": outbox.purge_done(conn, now - retention.delivered_messages),
        "conversations": conversations.purge_stale(conn, now - retention.wizard_state),
        "invites": invites.purge_dead(conn, now),
        "rate_buckets": ratelimits.purge(conn, now - retention.rate_buckets),
    }


Job = Callable[[], Awaitable[None]]
DbJob = Callable[[Connection, float], int]


class Scheduler:
    def __init__(
        self,
        db: Database,
        wake: Callable[[], None],
        clock: Callable[[], float] = time.time,
        retention: Retention | None = None,
    ) -> None:
        self.db = db
        self.wake = wake
        self.clock = clock
        self.retention = retention or Retention()
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

    async def _housekeeping(self) -> None:
        counts = await self.db.run(housekeeping, self.clock(), self.retention)
        log.info("housekeeping removed %s", counts)

    async def _tick(self) -> None:
        self.wake()

    def start(self) -> None:
        for registrar in REGISTRARS:
            registrar(self)
        self.aps.add_job(self._housekeeping, IntervalTrigger(hours=6), id="housekeeping")
        self.aps.add_job(self._tick, IntervalTrigger(seconds=30), id="tick")
        for name, job, seconds in self._extra:
            self.aps.add_job(job, IntervalTrigger(seconds=seconds), id=name)
        self.aps.start()

    def next_jobs(self) -> list[tuple[str, str]]:
        return [(j.id, str(j.next_run_time)) for j in self.aps.get_jobs()]

    def stop(self) -> None:
        if self.aps.running:
            self.aps.shutdown(wait=False)


# Capabilities that schedule work (actions, reminders, check-ins) register a function here
# that lists their next jobs as (UTC time, description without content) for `vigil status`.
UpcomingSource = Callable[[Connection], list[tuple[str, str]]]
UPCOMING: list[UpcomingSource] = []

# Capabilities register their periodic jobs at import time: `REGISTRARS.append(fn)` where
# fn(scheduler) calls scheduler.every_db(...) or scheduler.every(...). Called at start.
REGISTRARS: list[Callable[[Scheduler], None]] = []
