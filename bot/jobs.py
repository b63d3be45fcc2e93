"""Background work a capability adds: periodic jobs, outbox producers, the actions alarm."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.services import Services
from storage.db import Connection


@dataclass(frozen=True)
class JobContext:
    """One run of background work: the open transaction, the clock, the app's services."""

    conn: Connection
    now: float
    services: Services


@dataclass(frozen=True)
class PeriodicJob:
    """`fn(job) -> rows written` every `every` seconds on the writer thread; written rows wake
    the dispatchers. It must be idempotent (outbox keys), since a restart may run it twice."""

    name: str
    fn: Callable[[JobContext], int]
    every: float


@dataclass(frozen=True)
class Producer:
    """Writes outbox rows just ahead of sending (a broadcast's streaming fan-out, progress,
    digests): each dispatcher runs `fn(job, transport)` every `every` seconds and, if `eager`,
    whenever its queue runs short. True when it wrote rows or has more to do."""

    name: str
    fn: Callable[[JobContext, str], bool]
    every: float
    eager: bool = False


@dataclass(frozen=True)
class Alarm:
    """A capability with exact due times (action reminders): `fire` writes what is due,
    `next_due` is the earliest instant still pending. The scheduler keeps one alarm set."""

    fire: Callable[[JobContext], int]
    next_due: Callable[[Connection], float | None]


# `vigil status`: a capability's next scheduled work as (UTC time, description without content).
Upcoming = Callable[[Connection], list[tuple[str, str]]]
