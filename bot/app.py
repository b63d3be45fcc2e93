"""Wires store, transports, router, dispatchers and scheduler; runs until told to stop."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import handlers
from bot import captcha_drop, memory
from bot.capability import Capability, Registry, may_use
from bot.config import Settings
from bot.dispatcher import HEARTBEAT_PERIOD, Dispatcher
from bot.health import HealthBook, is_store_fault
from bot.intake import Intake
from bot.jobs import JobContext, PeriodicJob, Producer
from bot.messages import Incoming, Priority
from bot.notify import notify_member
from bot.outbox_writer import store_backoff
from bot.panic import PanicSwitch, panic_wipe
from bot.router import Router
from bot.scheduler import Scheduler
from bot.services import Services
from bot.supervisor import LoopHealth, Supervisor
from bot.transports.base import Transport
from bot.watchdog import Watchdog
from storage import members, outbox
from storage.db import Connection
from storage.store import Store

log = logging.getLogger(__name__)

DRAIN_GRACE = 10.0
SCHEDULER_BEAT = 10.0  # the scheduler proves it runs jobs this often ...
SCHEDULER_PERIOD = 6 * SCHEDULER_BEAT  # ... and is wedged when it has not for this long


def services_for(store: Store, settings: Settings) -> Services:
    return Services(
        index_key=store.subkeys.index,
        invite_only=settings.invite_only,
        approval_threshold=settings.approval_threshold,
        default_language=settings.language,
        default_timezone=settings.timezone,
        sealing_public=store.slots.sealing_public,
        delete_reports=settings.telegram_delete_reports,
    )


class App:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        transports: list[Transport],
        *,
        clock: Callable[[], float] = time.time,
        capabilities: Sequence[Capability] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.transports = transports
        self.clock = clock
        self.registry = Registry.of(
            handlers.capabilities() if capabilities is None else capabilities
        )
        self.services = services_for(store, settings)
        for t in transports:
            self.services.transports[t.name] = t.capabilities
        self.router = Router(self.services, self.registry, clock=clock)
        self.dispatchers = {
            t.name: Dispatcher(
                store.db, t, clock, producers=self.registry.producers, services=self.services
            )
            for t in transports
        }
        self.scheduler = Scheduler(
            store.db,
            self.wake_all,
            clock,
            services=self.services,
            jobs=[*CORE_JOBS, *self.registry.jobs],
            alarms=self.registry.alarms,
        )
        self.services.poke_alarm = self._poke_alarms
        self.intake = Intake(store.db, self.router, self.services, transports, self.wake_all, clock)
        self._tasks: list[asyncio.Task[None]] = []
        # `vigil wipe` from a shell, or /panic in chat, stops a running bot and erases it.
        self.panic = PanicSwitch(store.data_dir)
        self.services.panic = self.panic.request

    async def alert_admins(self, text: str) -> None:
        """Tell every administrator, on every transport they use, ahead of all other traffic.
        The same text is sent at most once an hour."""
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        key = f"admin-alert:{digest}:{int(self.clock() // 3600)}"
        await self.store.db.run(_alert_admins, text, key, self.clock())
        self.wake_all()

    def _captcha_watch(self, transport: Any) -> Callable[[], Awaitable[None]]:
        async def solve(link: str) -> captcha_drop.Outcome:
            got = await transport.solve_challenge(link)
            return captcha_drop.Outcome(got.value, got.text)

        return functools.partial(captcha_drop.watch, self.store.data_dir, solve)

    def _poke_alarms(self) -> None:
        for alarm in self.scheduler.alarm_clocks:
            alarm.poke()

    def wake_all(self) -> None:
        for d in self.dispatchers.values():
            d.wake()

    async def deliver(self, msg: Incoming) -> None:
        """Handle one incoming message durably; raises if it could not be stored."""
        await self.intake.deliver(msg)

    async def settle(self) -> None:
        """Wait until every due outbox row has been handed to its transport (console, tests)."""
        while True:
            due = await self.store.db.run(outbox.due_count, self.clock())
            busy = any(d.busy for d in self.dispatchers.values())
            if not busy and not due:  # rows held for quiet hours are not waited for
                return
            await asyncio.sleep(0.01)

    async def run(self, stop: asyncio.Event) -> None:
        self.panic.bind(asyncio.get_running_loop())
        sup = self._supervise()
        health = HealthBook(self.store.db, sup, self.clock)
        await health.restore()
        watchdog = Watchdog.from_env(sup)
        self._tasks.append(sup.spawn("panic-watch", self.panic.watch))
        self._tasks.append(sup.spawn("recover-in-flight", self._recover_then_dispatch))
        for t in self.transports:
            t.on_alert = self.alert_admins
            t.spawn = sup.spawn
            if hasattr(t, "on_resume"):
                t.on_resume = self.wake_all  # held alerts and broadcasts go at once
            if hasattr(t, "solve_challenge"):
                self._tasks.append(sup.spawn("captcha-watch", self._captcha_watch(t)))
        sup.watch("scheduler", SCHEDULER_PERIOD)
        beat = functools.partial(sup.beat, "scheduler")
        self.scheduler.supervise(sup.job_event, beat, SCHEDULER_BEAT)
        self.scheduler.start()
        self._tasks.append(sup.spawn("health", health.run))
        started: list[Transport] = []
        try:
            for t in self.transports:
                await t.start(self.deliver_when_stored)
                started.append(t)
                link = t.invite_link_prefix()
                if link:
                    self.services.bot_links[t.name] = link
            menus = command_menus(self.registry)
            for t in started:
                try:
                    await t.announce_commands(menus)
                except Exception as exc:
                    log.warning("command menu not published: %s", type(exc).__name__)
            log.info("running with %d transport(s)", len(started))
            watchdog.ready()
            self._tasks.append(asyncio.create_task(watchdog.run(), name="watchdog"))
            self._tasks.append(sup.spawn("memory", memory.keep_released))
            await self.panic.wait_or(stop)
        finally:
            watchdog.stopping()
            if self.panic.triggered:
                await sup.stop()
                await panic_wipe(self)  # no drain: nothing more may be sent or kept
            else:
                await self._shutdown(started)
                await sup.stop()
                await health.write("stopped")

    def _supervise(self) -> Supervisor:
        """The supervisor of this run's loops; a loop that keeps failing alerts the admins."""
        self.supervisor = Supervisor(wall=self.clock, on_alert=self.alert_loop_failing)
        return self.supervisor

    async def _recover_then_dispatch(self) -> None:
        """Rows a previous run left in `sending` go back to `pending`, then the dispatchers
        start (in that order: recovering after a claim would send that row twice). A store that
        cannot write at start delays this (the supervisor retries it), it does not stop the
        bot: intake runs meanwhile and waits for the store itself."""
        recovered = await self.store.db.run(outbox.recover_in_flight)
        if recovered:
            log.info("re-queued %d messages that were in flight at the last stop", recovered)
        sup = self.supervisor
        for name, d in self.dispatchers.items():
            loop = f"dispatcher:{name}"
            d.heartbeat = functools.partial(sup.beat, loop)
            d.on_fault = functools.partial(sup.fault, loop)
            d.on_recovered = functools.partial(sup.recovered, loop)
            self._tasks.append(sup.spawn(loop, d.run, period=HEARTBEAT_PERIOD))

    async def deliver_when_stored(self, msg: Incoming) -> None:
        """What transports are given: `deliver`, waiting while the store cannot write (a full
        disk) instead of failing, so nothing is confirmed to a platform that is not stored and
        nothing is given up: Telegram's offset does not move, Signal's frames stay queued.
        Other errors (a bug) are raised to the transport at once."""
        failures = 0
        while True:
            try:
                await self.deliver(msg)
            except Exception as exc:
                if not is_store_fault(exc):
                    raise
                failures += 1
                self.supervisor.fault("intake", exc)
                log.debug("intake waits for the store (attempt %d)", failures)
                await asyncio.sleep(store_backoff(failures))
                continue
            if failures:
                self.supervisor.recovered("intake")
            return

    async def alert_loop_failing(self, health: LoopHealth) -> bool:
        """Tell every administrator that a loop keeps failing (the supervisor calls this at
        most once an hour per loop). True once the alert is stored in the outbox."""
        now = self.clock()
        key = f"loop-alert:{health.name}:{int(now)}"
        args = (health.name, health.failures_in_row, health.last_failure or "error")
        await self.store.db.run(_alert_loop, args, key, now)  # raises when not stored
        self.wake_all()
        return True

    async def _shutdown(self, started: list[Transport]) -> None:
        log.info("stopping: intake first, then draining the outbox")
        for t in started:
            try:
                await t.stop()
            except Exception as exc:
                log.warning("transport %s did not stop cleanly: %s", t.name, type(exc).__name__)
        self.scheduler.stop()
        for d in self.dispatchers.values():
            await d.drain(DRAIN_GRACE)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for t in self.transports:
            try:
                await t.close()
            except Exception as exc:
                log.warning("transport %s did not close cleanly: %s", t.name, type(exc).__name__)


def _alert_admins(conn: Connection, text: str, key: str, now: float) -> int:
    sent = 0
    for admin_id in members.with_role(conn, ("admin",)):
        sent += notify_member(
            conn, admin_id, lambda tr: text, now=now, priority=Priority.EMERGENCY,
            idem_key=f"{key}:{admin_id}",
        )  # fmt: skip
    return sent


def _scrub_sensitive(job: JobContext) -> int:
    outbox.scrub_final(job.conn, job.now)
    return 0


# The core's own periodic work: sensitive outbox rows (report copies, codes, exact places) go
# within a minute of their delivery.
CORE_JOBS = (PeriodicJob("outbox-scrub", _scrub_sensitive, 60),)


def _alert_loop(conn: Connection, args: tuple[str, int, str], key: str, now: float) -> int:
    loop, count, kind = args
    sent = 0
    for admin_id in members.with_role(conn, ("admin",)):
        sent += notify_member(
            conn, admin_id,
            lambda tr: tr(
                "Vigil alert: a part of the bot ({loop}) failed {count} times in a row "
                "({error}). It keeps restarting by itself. Please look at `vigil status` "
                "and the service log on the server.",
                loop=loop, count=count, error=kind,
            ),
            now=now, priority=Priority.EMERGENCY, idem_key=f"{key}:{admin_id}",
        )  # fmt: skip
    return sent


def default_registry() -> Registry:
    return Registry.of(handlers.capabilities())


def default_producers() -> list[Producer]:
    return default_registry().producers


def command_menus(registry: Registry) -> dict[str, list[tuple[str, str]]]:
    """What a supporter may do, per language: the platform's command menu."""
    from bot.i18n import Translator, available_languages
    from storage.members import Member

    activist = Member(0, "activist", None, None, None)
    menus = {}
    for code in available_languages():
        tr = Translator(code)
        menus[code] = [
            (c.name, tr(c.summary)) for c in registry.allowed(activist) if may_use(c, activist)
        ]
    return menus


def build_transports(settings: Settings) -> list[Transport]:
    """The transports the configuration enables; each module is imported only when used."""
    out: list[Transport] = []
    if settings.telegram_enabled:
        from bot.transports.telegram import TelegramTransport

        out.append(TelegramTransport(settings))
    if settings.signal_enabled:
        from bot.transports.signal import SignalTransport

        out.append(SignalTransport(settings))
    return out


def upcoming_jobs(conn: Connection, registry: Registry | None = None) -> list[tuple[str, str]]:
    """The next scheduled work of every capability, for `vigil status` (no content)."""
    found: list[tuple[str, str]] = []
    for source in (registry or default_registry()).upcoming:
        found += source(conn)
    return sorted(found)[:5]
