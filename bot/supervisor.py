"""Runs the bot's long-lived loops, restarts one that fails, and says whether all are alive.

Every loop that must run for the bot to keep its promises (dispatchers, the panic watcher, each
transport's receive loop, the health writer) is started with `spawn`; the scheduler, whose loop
belongs to APScheduler, is `watch`ed and reports each job's outcome through `job_event`.

* A loop that raises is logged by the exception's type only (its text may quote a person),
  restarted after a back-off (BACKOFF_MIN doubling to BACKOFF_MAX), and counted.
* A loop may also report a `fault` without dying (the dispatcher keeps running while the store
  cannot write): counted the same way, and cleared by `recovered`.
* A loop that failed ALERT_AFTER times in a row raises one admin alert (`on_alert`), at most
  one per ALERT_EVERY seconds per loop. An alert that could not be stored (full disk) stays
  pending and is tried again by `flush_alerts` until it is.
* A loop spawned with a `period` must call `beat(name)` at least that often; one that does not
  is *wedged* (it awaits something that never comes). A job whose previous run has not ended
  when its next is due is wedged too, until it ends.

`alive()` is what the systemd watchdog ping is gated on: False while any loop is wedged. A
loop in its restart back-off still counts as alive. The supervisor is already restarting it,
and a process restart cannot fix what an in-process restart did not (Telegram down, a bug
that fires on every run). It would only turn one failing loop into a crash loop of the whole
bot that ends with systemd giving up (StartLimitBurst), and Signal would fall silent with
Telegram. Loops that keep failing are what the admin alert is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

LoopFactory = Callable[[], Awaitable[None]]
BACKOFF_MIN = 0.5
BACKOFF_MAX = 60.0
ALERT_AFTER = 3  # failures in a row that make a loop "keeps failing"
ALERT_EVERY = 3600.0  # seconds between two alerts about the same loop
FAULT_LOG_EVERY = 20  # a fault that lasts is logged again every this many tries


@dataclass
class LoopHealth:
    """What the supervisor knows about one loop; only counters and exception type names."""

    name: str
    period: float | None = None  # a heartbeat is due at least this often (None: not checked)
    restarts: int = 0
    failures: int = 0
    failures_in_row: int = 0
    last_failure: str | None = None  # the exception's type name, never its text
    last_failure_at: float | None = None  # wall clock
    alerted_at: float | None = None  # wall clock of the last stored alert
    alert_pending: bool = False  # due but not stored yet (the store could not write)
    running: bool = False
    finished: bool = False  # ended by itself (stop requested); not a failure
    overrunning: bool = False  # a job still running when its next run was due
    last_beat: float = field(default=0.0)  # monotonic

    def wedged(self, now: float) -> bool:
        if self.finished:
            return False
        if self.overrunning:
            return True
        return self.period is not None and self.running and now - self.last_beat > self.period

    def state(self, now: float) -> str:
        """running | failing | wedged | restarting | stopped (for status and logs)."""
        if self.finished:
            return "stopped"
        if self.wedged(now):
            return "wedged"
        if self.failures_in_row >= ALERT_AFTER:
            return "failing"
        if not self.running and self.period is not None:
            return "restarting"
        return "running"


Alert = Callable[[LoopHealth], Awaitable[bool]]


class Supervisor:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_alert: Alert | None = None,
        backoff_min: float | None = None,
        backoff_max: float | None = None,
    ) -> None:
        self.clock = clock
        self.wall = wall
        # Read at construction, not definition, so a test can shorten the module's values.
        self.backoff_min = BACKOFF_MIN if backoff_min is None else backoff_min
        self.backoff_max = BACKOFF_MAX if backoff_max is None else backoff_max
        self.on_alert = on_alert
        self.loops: dict[str, LoopHealth] = {}
        self.changed = asyncio.Event()  # set on every change a status reader cares about
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._alerting: set[str] = set()
        self._stopping = False

    # -- loops ---------------------------------------------------------------------------

    def spawn(
        self, name: str, factory: LoopFactory, *, period: float | None = None
    ) -> asyncio.Task[None]:
        """Run `factory()` until it returns normally or the supervisor stops; restart on error.
        With `period`, the loop must `beat(name)` at least every `period` seconds."""
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"loop {name} is already running")
        health = self._health(name)
        health.period = period
        health.finished = False
        task = asyncio.create_task(self._keep(health, factory), name=name)
        self._tasks[name] = task
        return task

    def watch(self, name: str, period: float) -> None:
        """A loop driven from elsewhere (APScheduler's): alive while it beats every `period`."""
        health = self._health(name)
        health.period = period
        health.running = True
        health.finished = False
        health.last_beat = self.clock()

    def _health(self, name: str) -> LoopHealth:
        health = self.loops.get(name)
        if health is None:
            health = self.loops[name] = LoopHealth(name, last_beat=self.clock())
        return health

    async def _keep(self, health: LoopHealth, factory: LoopFactory) -> None:
        while not self._stopping:
            health.running = True
            health.last_beat = self.clock()
            try:
                await factory()
                health.finished = True  # a loop that ends by itself is done (stop requested)
                self.changed.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                health.restarts += 1
                self._failed(health, exc)
                log.error("loop %s failed (%s); restarting", health.name, health.last_failure)
            finally:
                health.running = False
            delay = min(self.backoff_max, self.backoff_min * 2 ** (health.failures_in_row - 1))
            await asyncio.sleep(delay)

    def beat(self, name: str) -> None:
        """The loop is making progress (called from inside it)."""
        health = self.loops.get(name)
        if health is not None:
            health.last_beat = self.clock()

    def fault(self, name: str, exc: BaseException) -> None:
        """A loop met an error it survives by itself (it backs off and goes on)."""
        health = self._health(name)
        self._failed(health, exc)
        n = health.failures_in_row
        if n == 1 or n % FAULT_LOG_EVERY == 0:  # the journal shows it lasting, not every try
            log.warning("loop %s: %s (%d in a row); it retries by itself", name,
                        health.last_failure, n)  # fmt: skip

    def recovered(self, name: str) -> None:
        """The loop's last attempt succeeded: its run of failures is over."""
        health = self.loops.get(name)
        if health is not None and health.failures_in_row:
            log.info("loop %s recovered after %d failures", name, health.failures_in_row)
            health.failures_in_row = 0
            self.changed.set()

    def job_event(self, job: str, outcome: str, exc: BaseException | None = None) -> None:
        """A scheduler job ran: outcome "ok", "error" (with `exc`) or "overrun" (still running
        when its next run was due). A job's failure counts as a failing loop."""
        health = self._health(f"job:{job}")
        health.running = True
        if outcome == "overrun":
            if not health.overrunning:
                health.overrunning = True
                log.error("job %s is still running when its next run is due", job)
                self.changed.set()
            return
        health.overrunning = False
        if outcome == "error":
            self._failed(health, exc if exc is not None else RuntimeError())
            log.error("job %s failed (%s)", job, health.last_failure)
        else:
            self.recovered(health.name)

    def _failed(self, health: LoopHealth, exc: BaseException) -> None:
        health.failures += 1
        health.failures_in_row += 1
        health.last_failure = type(exc).__name__
        health.last_failure_at = self.wall()
        self.changed.set()
        if health.failures_in_row >= ALERT_AFTER:
            due = health.alerted_at is None or self.wall() - health.alerted_at >= ALERT_EVERY
            if due and not health.alert_pending:
                health.alert_pending = True
                self._start_alert(health)

    # -- alerts --------------------------------------------------------------------------

    def _start_alert(self, health: LoopHealth) -> None:
        if self.on_alert is None or health.name in self._alerting:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: flush_alerts will try
        self._alerting.add(health.name)
        task = asyncio.create_task(self._alert(health))
        task.add_done_callback(lambda _t: self._alerting.discard(health.name))

    async def _alert(self, health: LoopHealth) -> None:
        assert self.on_alert is not None
        try:
            stored = await self.on_alert(health)
        except Exception as exc:
            stored = False
            log.warning("admin alert about loop %s not stored (%s)", health.name,
                        type(exc).__name__)  # fmt: skip
        if stored:
            health.alert_pending = False
            health.alerted_at = self.wall()
            self.changed.set()

    async def flush_alerts(self) -> None:
        """Try again the alerts that could not be stored (called by the health writer)."""
        for health in list(self.loops.values()):
            if health.alert_pending and health.name not in self._alerting:
                self._alerting.add(health.name)
                try:
                    await self._alert(health)
                finally:
                    self._alerting.discard(health.name)

    def restore_alerts(self, alerted: dict[str, float]) -> None:
        """When each loop was last alerted about, as the previous run stored it: a bot that
        systemd restarts does not alert again within the hour."""
        for name, at in alerted.items():
            self._health(name).alerted_at = at

    # -- health --------------------------------------------------------------------------

    def unhealthy(self) -> list[str]:
        """Names of the loops that are wedged now."""
        now = self.clock()
        return sorted(h.name for h in self.loops.values() if h.wedged(now))

    def alive(self) -> bool:
        return not self.unhealthy()

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        for health in self.loops.values():
            health.finished = True


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """`event.wait()` for at most `seconds`; True if it was set. Unlike Python 3.11's
    `asyncio.wait_for`, it never swallows a cancellation that arrives just as the event is
    set (gh-86296): a loop that lost its cancel that way would never stop."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait([waiter], timeout=seconds)
    finally:
        waiter.cancel()
    return bool(done)


def plain_spawn(name: str, factory: LoopFactory) -> asyncio.Task[None]:
    """What a transport uses when no supervisor is wired (unit tests): a plain task."""

    async def run() -> None:
        await factory()

    return asyncio.create_task(run(), name=name)
