"""The running bot's side of the panic wipe: the admin's /panic and `vigil wipe` from a shell.

Two triggers, one path:

* `/panic PHRASE` (handlers/admin.py) runs on the database writer thread inside a
  transaction, where no I/O may happen. It calls `Services.panic`, which is
  `PanicSwitch.request`: thread-safe and non-blocking, it only schedules the switch on the
  event loop (`loop.call_soon_threadsafe`). The wipe itself starts after that message's
  transaction committed, because `Database.close` runs after every queued job.
* `vigil wipe` from a shell erases the key slots under a running bot. `PanicSwitch.watch`
  notices within WATCH_EVERY seconds that keyslots.json is gone and flips the same switch.

`panic_wipe(app)` then: stops intake (each transport's `stop`, bounded by STOP_GRACE), stops
the scheduler, cancels the dispatchers **without draining** (nothing more leaves the
server), and runs storage/wipe.py `wipe(data_dir, db)` in a thread (checkpoint and close the
database, overwrite and delete the key slots, delete the files). The process then exits 0, so a
`Restart=on-failure` unit does not start it again on an empty data directory.

Wiring in bot/app.py (App), kept small on purpose:

    # __init__
    self.panic = PanicSwitch(store.data_dir)
    self.services.panic = self.panic.request
    # run(): first thing
    self.panic.bind(asyncio.get_running_loop())
    watcher = asyncio.create_task(self.panic.watch())
    # run(): instead of `await stop.wait()`
    await self.panic.wait_or(stop)
    # run(): finally, before stopping transports
    watcher.cancel()
    if self.panic.triggered:
        await panic_wipe(self)
        return
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from storage import wipe

log = logging.getLogger(__name__)

WATCH_EVERY = 1.0
STOP_GRACE = 3.0


class PanicSwitch:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.triggered = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def _set(self) -> None:
        self.triggered = True
        if self._event is not None:
            self._event.set()

    def request(self) -> None:
        """Thread-safe, non-blocking: safe to call from the database writer thread."""
        self.triggered = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._set)

    async def watch(self) -> None:
        """Flip the switch when the key slots disappear (a `vigil wipe` from a shell)."""
        while not self.triggered:
            await asyncio.sleep(WATCH_EVERY)
            if not await asyncio.to_thread(wipe.slots_present, self.data_dir):
                log.warning("key slots gone: panic wipe")
                self._set()

    async def wait_or(self, stop: asyncio.Event) -> None:
        assert self._event is not None, "bind() first"
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._event.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()


async def panic_wipe(app: Any) -> wipe.WipeReport:
    """Stop intake, drop the outbox unsent, crypto-erase. `app` is a bot.app.App."""
    log.warning("panic wipe: stopping intake")
    for t in app.transports:
        for step in ("stop", "close"):
            method = getattr(t, step, None)
            if method is None:
                continue
            try:
                await asyncio.wait_for(method(), STOP_GRACE)
            except Exception as exc:  # includes TimeoutError: the wipe must go on
                log.warning("transport did not %s before the wipe: %s", step, type(exc).__name__)
    with contextlib.suppress(Exception):
        app.scheduler.stop()
    for task in getattr(app, "_tasks", []):
        task.cancel()
    await asyncio.gather(*getattr(app, "_tasks", []), return_exceptions=True)
    report = await asyncio.to_thread(wipe.wipe, app.store.data_dir, app.store.db)
    log.warning(
        "panic wipe done: %d key file(s) erased, %d file(s) deleted",
        len(report.erased),
        len(report.deleted),
    )
    return report
