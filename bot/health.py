"""Loop health for people: written to the store by the running bot, read by `vigil status`.

`vigil status` is another process, so the running bot's `HealthBook` writes the supervisor's
view to the encrypted store (storage/health.py): at once when something changed (a failure,
a restart, a recovery, an alert), at most every MIN_GAP seconds, and every REFRESH seconds
anyway so a reader can tell a live picture from a stale one. `status_lines(conn)` turns the
stored rows into the lines `vigil status` prints.

While the store cannot write (full disk) nothing new reaches it; `status_lines` then says
that the bot has not reported for a while instead of showing a picture that looks current.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import sqlcipher3

from bot.supervisor import LoopHealth, Supervisor, wait_event
from storage import health as repo
from storage.db import Connection, Database, StoreError

log = logging.getLogger(__name__)

MIN_GAP = 2.0  # seconds between two writes caused by changes
REFRESH = 30.0  # seconds between two writes when nothing changed
STALE = 3 * REFRESH + repo.GRANULE  # older than this, the picture is not current

# SQLite result codes (low byte) that mean "the store cannot write just now", as opposed to a
# bug in a statement: BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL. CORRUPT
# is not among them: waiting does not mend a damaged page.
_STORE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})


def is_store_fault(exc: BaseException) -> bool:
    """Whether an error says the store cannot write now (full disk and the like), so waiting
    and trying again is right, rather than a bug that would fail the same way every time."""
    if isinstance(exc, StoreError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)
    if isinstance(exc, sqlcipher3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _STORE_CODES
    return False


def record_of(health: LoopHealth, now: float) -> repo.LoopRecord:
    return repo.LoopRecord(
        name=health.name,
        state=health.state(now),
        restarts=health.restarts,
        failures=health.failures,
        failures_in_row=health.failures_in_row,
        last_failure=health.last_failure,
        last_failure_at=health.last_failure_at,
        alerted_at=health.alerted_at,
    )


class HealthBook:
    """Keeps the stored loop health in step with the supervisor (a loop of its own)."""

    def __init__(
        self, db: Database, supervisor: Supervisor, wall: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.supervisor = supervisor
        self.wall = wall
        self.writes = 0
        self._failing = False

    async def restore(self) -> None:
        """Carry the last run's alert times over (one alert per hour survives a restart)."""
        try:
            self.supervisor.restore_alerts(await self.db.run(repo.alerted))
        except Exception as exc:
            log.warning("earlier loop health not read (%s)", type(exc).__name__)

    async def run(self) -> None:
        sup = self.supervisor
        while True:
            await wait_event(sup.changed, REFRESH)
            sup.changed.clear()
            await sup.flush_alerts()
            await self.write("running")
            await asyncio.sleep(MIN_GAP)

    async def write(self, process_state: str) -> bool:
        sup = self.supervisor
        now = sup.clock()
        records = [record_of(h, now) for h in sup.loops.values()]
        try:
            await self.db.run(repo.save, process_state, records, self.wall())
        except Exception as exc:
            if not is_store_fault(exc):
                raise
            if not self._failing:
                log.warning("loop health not stored (%s); trying again", type(exc).__name__)
            self._failing = True
            sup.changed.set()  # still to be written
            return False
        self._failing = False
        self.writes += 1
        return True


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ago(seconds: float) -> str:
    if seconds < 90:
        return "just now"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def status_lines(conn: Connection, now: float | None = None) -> list[str]:
    """What `vigil status` prints about the running bot's loops (no content, no ids)."""
    now = time.time() if now is None else now
    process, loops = repo.load(conn)
    if process is None:
        return [f"{'loops':14} no report yet (the bot has not run since this was added)"]
    age = now - process.updated_at
    if process.state == "stopped":
        head = f"stopped cleanly; last report {_when(process.updated_at)}"
    elif age > STALE:
        head = (
            f"NOT REPORTING since {_when(process.updated_at)}: the bot is not running, or "
            "cannot write to its store (full disk?)"
        )
    else:
        head = f"reported {_ago(age)}"
    bad = [r for r in loops if r.state in ("failing", "wedged", "restarting")]
    counts = f"{len(loops)} supervised, {len(loops) - len(bad)} healthy"
    lines = [f"{'loops':14} {counts}; {head}"]
    for r in loops:
        if r.state not in ("failing", "wedged", "restarting") and not r.failures:
            continue
        parts = [f"{r.name} {r.state.upper() if r in bad else r.state}"]
        if r.failures_in_row:
            parts.append(f"{r.failures_in_row} failures in a row ({r.last_failure})")
        elif r.failures:
            parts.append(f"{r.failures} failures in all, last {r.last_failure}")
        if r.restarts:
            parts.append(f"{r.restarts} restarts")
        if r.last_failure_at is not None:
            parts.append(f"last failure {_when(r.last_failure_at)}")
        if r.alerted_at is not None:
            parts.append(f"admins alerted {_when(r.alerted_at)}")
        lines.append(f"{'loop':14} " + ", ".join(parts))
    return lines
