"""The dispatcher's writes to the store: shielded, sent marks batched, outcomes never dropped.

* Every call runs on the database writer thread, shielded: if the calling task is cancelled
  (stop, crash test) the work still completes, and its future is never cancelled under the
  writer (a cancelled future there would fail the writer's whole batch).
* `record_sent`: marks made while one write is under way go together in the next (one writer
  job for many messages); the caller returns, and frees its in-flight slot, only once its mark
  is committed, which is what bounds duplicates after a crash. No extra wait to gather more: a
  slot held longer is throughput lost (bench/throughput.py fell from ~950 to ~730 updates/s
  with a 4 ms gathering wait).
* `store`: a write that must happen (a send's outcome, a hand-back). While the store refuses
  it (a full disk) it is tried again after a back-off, STORE_RETRY_MIN doubling to
  STORE_RETRY_MAX, the caller keeping its in-flight slot, so a message whose outcome is not
  stored is neither sent again nor forgotten, and it is written within seconds of space
  returning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bot.health import is_store_fault
from storage import outbox
from storage.db import Database

SENT_FLUSH_WAIT = 0.0  # one loop turn: sends finishing together share one write
STORE_RETRY_MIN = 0.25  # the store refused a write: try again after this, doubling ...
STORE_RETRY_MAX = 5.0  # ... up to this, so sending resumes within seconds of space returning


def store_backoff(failures: int) -> float:
    return min(STORE_RETRY_MAX, STORE_RETRY_MIN * 2 ** max(0, failures - 1))


class OutboxWriter:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        on_fault: Callable[[BaseException], None],
        on_recovered: Callable[[], None],
        heartbeat: Callable[[], None],
    ) -> None:
        self.db = db
        self.clock = clock
        self.sleep = sleep  # in the caller's (possibly simulated) seconds
        self.on_fault = on_fault
        self.on_recovered = on_recovered
        # A send waiting for the store holds its in-flight slot, and may hold the last one the
        # loop waits for: it beats for the loop, which is waiting, not wedged.
        self.heartbeat = heartbeat
        self.waiting = 0  # callers waiting for the store to take a write
        self._sent_batch: list[tuple[int, str | None]] = []
        self._sent_flush: asyncio.Future[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.shield(asyncio.wrap_future(self.db.submit(fn, *args)))

    async def store(self, fn: Callable[..., Any], *args: Any) -> Any:
        failures = 0
        while True:
            try:
                result = await self.run(fn, *args)
            except Exception as exc:
                if not is_store_fault(exc):
                    raise
                failures += 1
                self.on_fault(exc)
                self.heartbeat()
                self.waiting += 1
                try:
                    await self.sleep(store_backoff(failures))
                finally:
                    self.waiting -= 1
                continue
            if failures:
                self.on_recovered()
            return result

    async def record_sent(self, item_id: int, platform_ref: str | None) -> None:
        self._sent_batch.append((item_id, platform_ref))
        if self._sent_flush is None:
            self._sent_flush = asyncio.get_running_loop().create_future()
            flush = asyncio.create_task(self._flush_sent(self._sent_flush))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        await asyncio.shield(self._sent_flush)

    async def _flush_sent(self, done: asyncio.Future[None]) -> None:
        await asyncio.sleep(SENT_FLUSH_WAIT)  # let sends finishing meanwhile join the batch
        batch, self._sent_batch = self._sent_batch, []
        self._sent_flush = None
        try:
            await self.store(outbox.mark_sent_many, batch, self.clock())
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            return
        if not done.done():
            done.set_result(None)
