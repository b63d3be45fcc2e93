"""Supervised loops: a loop made to fail restarts; one that keeps failing alerts the admins once
an hour and shows in `vigil status`; a failing or overrunning scheduler job counts as a loop.

The App tests run the real App (router, dispatcher, scheduler, encrypted store) with an
in-process transport whose receive loop is made to raise; the admin's alert is read where an
admin would see it, in what the transport delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot import supervisor as supervisor_module
from bot.app import App
from bot.config import Settings
from bot.health import HealthBook, is_store_fault, status_lines
from bot.scheduler import Scheduler
from bot.supervisor import ALERT_AFTER, LoopHealth, Supervisor
from bot.transports.base import Deliver, Limits
from storage import members
from storage.db import StoreError
from storage.store import Store
from tests.fakes.memory_transport import MemoryTransport

SECRET = "Ann's brother is held in cell 7"  # must never reach a log line


async def until(predicate: Callable[[], Any], limit: float = 20.0) -> Any:
    async with asyncio.timeout(limit):
        while not (found := predicate()):
            await asyncio.sleep(0.01)
    return found


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "BACKOFF_MIN", 0.01)
    monkeypatch.setattr(supervisor_module, "BACKOFF_MAX", 0.02)


async def test_a_loop_that_raises_is_restarted_and_logged_by_kind_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(SECRET)
        steady.set()
        await asyncio.Event().wait()

    sup = Supervisor(backoff_min=0.01, backoff_max=0.02)
    caplog.set_level(logging.DEBUG)
    sup.spawn("flaky", flaky)
    await asyncio.wait_for(steady.wait(), 10)
    health = sup.loops["flaky"]
    assert (health.restarts, health.last_failure, health.running) == (2, "RuntimeError", True)
    assert sup.alive()
    await sup.stop()
    assert SECRET not in caplog.text
    assert "loop flaky failed (RuntimeError)" in caplog.text


async def test_a_loop_that_keeps_failing_alerts_once_an_hour() -> None:
    wall = [1_800_000_000.0]
    alerts: list[tuple[str, int]] = []

    async def alert(health: LoopHealth) -> bool:
        alerts.append((health.name, health.failures_in_row))
        return True

    async def broken() -> None:
        raise ValueError(SECRET)

    sup = Supervisor(wall=lambda: wall[0], on_alert=alert, backoff_min=0.001, backoff_max=0.002)
    sup.spawn("broken", broken)
    await until(lambda: sup.loops["broken"].failures >= 30)
    assert alerts == [("broken", ALERT_AFTER)]
    wall[0] += 3599
    seen = sup.loops["broken"].failures
    await until(lambda: sup.loops["broken"].failures >= seen + 10)
    assert len(alerts) == 1  # still within the hour
    wall[0] += 2
    await until(lambda: len(alerts) == 2)
    seen = sup.loops["broken"].failures
    await until(lambda: sup.loops["broken"].failures >= seen + 10)
    await sup.stop()
    assert len(alerts) == 2
    assert sup.alive(), "a loop in its restart back-off is not wedged"


async def test_an_alert_the_store_refused_is_tried_again_until_stored() -> None:
    stored: list[str] = []
    refuse = [True]

    async def alert(health: LoopHealth) -> bool:
        if refuse[0]:
            raise StoreError("the database refused the write")
        stored.append(health.name)
        return True

    sup = Supervisor(on_alert=alert)
    for _ in range(ALERT_AFTER):
        sup.fault("dispatcher:fake", StoreError("full"))
    await until(lambda: sup.loops["dispatcher:fake"].alert_pending and not sup._alerting)
    assert stored == []
    refuse[0] = False
    sup.recovered("dispatcher:fake")  # the disk has room again; the news is still owed
    await sup.flush_alerts()
    assert stored == ["dispatcher:fake"]
    await sup.flush_alerts()
    assert stored == ["dispatcher:fake"]


def test_store_faults_are_told_from_bugs() -> None:
    import errno

    import sqlcipher3

    full = sqlcipher3.connect(":memory:")
    try:
        full.execute("SELECT * FROM missing")
    except sqlcipher3.Error as exc:
        bug = exc
    assert not is_store_fault(bug)
    assert is_store_fault(StoreError("the database refused the write"))
    assert is_store_fault(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_store_fault(KeyError("x"))


# -- through the App -----------------------------------------------------------------------


class BrokenReceiver(MemoryTransport):
    """A transport whose receive loop (started through `spawn`, as transports must) raises."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.receive_runs = 0

    async def start(self, deliver: Deliver) -> None:
        self.spawn("fake-receive", self._receive)

    async def _receive(self) -> None:
        self.receive_runs += 1
        raise ConnectionError(SECRET)


def seed_admin(store: Store) -> None:
    store.db.run_sync(
        lambda c: members.create(
            c, role="admin", transport="fake", address="admin-1", chat="admin-chat", now=0
        )
    )


async def test_app_alerts_admins_once_per_hour_and_status_shows_the_loop(
    store: Store, data_dir: Path, quick_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    seed_admin(store)
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    transport = BrokenReceiver(clock=clock, limits=Limits(per_second=30, in_flight=4))
    app = App(store, Settings(data_dir=data_dir), [transport], clock=clock)
    stop = asyncio.Event()
    caplog.set_level(logging.DEBUG)
    runner = asyncio.create_task(app.run(stop))
    try:
        alerts = lambda: transport.texts_to("admin-chat")  # noqa: E731
        await until(lambda: len(alerts()) == 1)
        assert "fake-receive" in alerts()[0] and "ConnectionError" in alerts()[0]
        runs = transport.receive_runs
        await until(lambda: transport.receive_runs >= runs + 20)
        await app.settle()
        assert len(alerts()) == 1, "a second alert within the hour"
        await until(lambda: any("fake-receive FAILING" in line for line in status(store)))
        offset[0] += 3601
        await until(lambda: len(alerts()) == 2)
    finally:
        stop.set()
        await runner
    lines = status(store)
    assert any(line.startswith("loops") and "stopped cleanly" in line for line in lines)
    failing = next(line for line in lines if "fake-receive" in line)
    assert "ConnectionError" in failing and "restarts" in failing
    assert SECRET not in caplog.text and SECRET not in "\n".join(lines)
    assert transport.duplicates() == 0


def status(store: Store) -> list[str]:
    return store.db.run_sync(status_lines)


async def test_a_restarted_bot_does_not_alert_again_within_the_hour(
    store: Store, data_dir: Path, quick_backoff: None
) -> None:
    seed_admin(store)
    for first_run in (True, False):
        transport = BrokenReceiver(limits=Limits(per_second=30, in_flight=4))
        app = App(store, Settings(data_dir=data_dir), [transport])
        stop = asyncio.Event()
        runner = asyncio.create_task(app.run(stop))
        try:
            await until(lambda: transport.receive_runs > 3 * ALERT_AFTER)
            loop = app.supervisor.loops["fake-receive"]
            if first_run:
                await until(lambda: len(transport.texts_to("admin-chat")) == 1)
            else:
                assert loop.alerted_at is not None and not loop.alert_pending
                await app.settle()
                assert transport.texts_to("admin-chat") == []
        finally:
            stop.set()
            await runner


# -- scheduler jobs --------------------------------------------------------------------------


async def test_a_failing_job_counts_as_a_failing_loop_and_an_overrun_as_wedged(
    store: Store,
) -> None:
    alerts: list[str] = []

    async def alert(health: LoopHealth) -> bool:
        alerts.append(health.name)
        return True

    sup = Supervisor(on_alert=alert)
    scheduler = Scheduler(store.db, lambda: None)
    release = asyncio.Event()

    async def boom() -> None:
        raise LookupError(SECRET)

    async def slow() -> None:
        await release.wait()

    scheduler.every("boom", boom, 0.05)
    scheduler.every("slow", slow, 0.05)
    scheduler.supervise(sup.job_event, lambda: sup.beat("scheduler"), 0.05)
    sup.watch("scheduler", 60)
    scheduler.start()
    try:
        await until(lambda: "job:boom" in sup.loops and sup.loops["job:boom"].failures >= 5)
        assert alerts == ["job:boom"]
        assert sup.loops["job:boom"].last_failure == "LookupError"
        await until(lambda: "job:slow" in sup.unhealthy())
        assert not sup.alive()
        release.set()
        await until(lambda: sup.alive())
    finally:
        scheduler.stop()


async def test_health_written_by_the_bot_reads_as_stale_when_it_stops_reporting(
    store: Store,
) -> None:
    sup = Supervisor(wall=lambda: 1_800_000_000.0)
    sup.fault("dispatcher:fake", StoreError("full"))
    book = HealthBook(store.db, sup, wall=lambda: 1_800_000_000.0)
    assert await book.write("running")
    fresh = store.db.run_sync(status_lines, 1_800_000_030.0)
    assert "reported just now" in fresh[0]
    assert any("dispatcher:fake" in line and "1 failures in a row" in line for line in fresh)
    stale = store.db.run_sync(status_lines, 1_800_001_000.0)
    assert "NOT REPORTING" in stale[0]


async def test_a_loop_cancelled_as_its_event_is_set_still_stops(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's wait_for loses a cancel that comes with the event it waits for; a health
    writer that lost its cancel so kept `vigil run` from exiting at SIGTERM."""
    from bot import health as health_module

    monkeypatch.setattr(health_module, "MIN_GAP", 0.0)
    sup = Supervisor()
    book = HealthBook(store.db, sup)
    sup.changed.set()
    task = asyncio.create_task(book.run())
    await until(lambda: book.writes >= 1)
    await asyncio.sleep(0.05)  # it now waits for the next change
    sup.changed.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done and task.cancelled()
