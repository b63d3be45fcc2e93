"""Runs the bot's long-lived loops, restarts one that fails, and says whether all are alive.

Every loop that must run for the bot to keep its promises (dispatchers, the scheduler, each
transport's receive loop, periodic jobs) is started with `spawn`. A loop that raises is logged by
the exception's type only (its text may quote a person), restarted after a back-off, and counted;
`alive()` is what the systemd watchdog ping is gated on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

LoopFactory = Callable[[], Awaitable[None]]
BACKOFF_MIN = 0.5
BACKOFF_MAX = 60.0


@dataclass
class LoopHealth:
    name: str
    restarts: int = 0
    failures_in_row: int = 0
    last_failure: str | None = None  # the exception's type name, never its text
    running: bool = False


class Supervisor:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.loops: dict[str, LoopHealth] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    def spawn(self, name: str, factory: LoopFactory) -> asyncio.Task[None]:
        """Run `factory()` until it returns normally or the supervisor stops; restart on error."""
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"loop {name} is already running")
        health = self.loops.setdefault(name, LoopHealth(name))
        task = asyncio.create_task(self._keep(health, factory), name=name)
        self._tasks[name] = task
        return task

    async def _keep(self, health: LoopHealth, factory: LoopFactory) -> None:
        while not self._stopping:
            health.running = True
            try:
                await factory()
                return  # a loop that ends by itself is done (stop requested)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                health.running = False
                health.restarts += 1
                health.failures_in_row += 1
                health.last_failure = type(exc).__name__
                log.error("loop %s failed (%s); restarting", health.name, health.last_failure)
            finally:
                health.running = False
            delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (health.failures_in_row - 1))
            await asyncio.sleep(delay)

    def alive(self) -> bool:
        return all(t.done() or self.loops[n].running for n, t in self._tasks.items())

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def plain_spawn(name: str, factory: LoopFactory) -> asyncio.Task[None]:
    """What a transport uses when no supervisor is wired (unit tests): a plain task."""

    async def run() -> None:
        await factory()

    return asyncio.create_task(run(), name=name)
