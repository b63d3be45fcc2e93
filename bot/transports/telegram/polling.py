"""Long polling that confirms an update to Telegram only after the core has stored it.

python-telegram-bot's `Application`/`Updater` confirm updates on the next poll, before handlers
have finished, so a crash loses them. This loop instead calls `getUpdates`, hands every update
of the batch on (those of different chats concurrently, those of one chat in order, because
the router's wizards depend on order), and only then moves `offset` past them. An update whose
handling failed (the store cannot write) is not confirmed: the offset stops before it, and it
and everything after it are fetched again after a back-off that grows while the failures go
on (1 s doubling to a minute). Redelivery is harmless: the inbox records each `update_id` in
the same transaction as its effects, so at-least-once here is exactly-once in effect.

One exception keeps a single broken update from blocking the whole network: when an update
fails POISON_LIMIT times in a row while others of its batches were stored (so the store
works), it is skipped and logged. A full disk never skips anything: then nothing is stored.

Exactly one poller runs; a 409 Conflict (another instance, or a webhook set elsewhere) is
logged and backed off, never fought.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError, TimedOut

from bot.messages import Incoming
from bot.transports.telegram import api
from bot.transports.telegram.updates import ALLOWED_UPDATES, JoinedGroup, Read, UpdateReader

log = logging.getLogger(__name__)

Json = dict[str, Any]
Call = Callable[..., Awaitable[Any]]

POLL_TIMEOUT = 25  # seconds a getUpdates may wait for news (Telegram allows up to 50)
POLL_READ_MARGIN = 10  # read timeout beyond the long poll's own
CONFLICT_BACKOFF = 5.0  # another poller holds the token: do not fight it every second
STOP_GRACE = 10.0  # seconds stop() waits for a batch being handled
POISON_LIMIT = 5  # failures of one update while others were stored before it is skipped


def chat_key(item: Read) -> str:
    """Updates with the same key are handled in order, different keys concurrently."""
    if isinstance(item, Incoming):
        return item.chat
    if isinstance(item, JoinedGroup):
        return item.chat
    return ""


class Poller:
    """The getUpdates loop. `handle` stores one update's meaning (raises if it could not);
    `after` runs once an update is handled (answers a button press)."""

    def __init__(
        self,
        call: Call,
        reader: UpdateReader,
        handle: Callable[[Incoming | JoinedGroup], Awaitable[None]],
        after: Callable[[Json], None],
    ) -> None:
        self.call = call
        self.reader = reader
        self.handle = handle
        self.after = after
        self.stopping = False
        self.offset: int | None = None
        self.confirmed: int | None = None
        self._poison: dict[int, int] = {}
        # True while the loop waits (long poll, back-off), never while it hands updates on.
        self._cancellable = False

    def read_safely(self, update: Json) -> Read:
        try:
            return self.reader.read(update)
        except Exception as exc:
            log.warning("telegram: unreadable update skipped (%s)", type(exc).__name__)
            return None

    async def run(self) -> None:
        """The loop (started under the app's supervisor); returns once `stop` was asked."""
        failures = 0  # polls in a row that failed
        stalls = 0  # batches in a row that could not all be handled (the store is failing)
        while not self.stopping:
            self._cancellable = True
            try:
                updates = await self.call(
                    "getUpdates",
                    {
                        "offset": self.offset,
                        "timeout": POLL_TIMEOUT,
                        "allowed_updates": list(ALLOWED_UPDATES),
                    },
                    read_timeout=POLL_TIMEOUT + POLL_READ_MARGIN,
                )
            except Exception as exc:
                failures += 1
                await self._poll_failed(exc, failures)
                continue
            finally:
                self._cancellable = False
            if not isinstance(updates, list):
                failures += 1
                await self._poll_failed(TelegramError("Invalid server response"), failures)
                continue
            failures = 0
            self.confirmed = self.offset
            batch = [u for u in updates if isinstance(u, dict) and type(u.get("update_id")) is int]
            if not batch:
                continue
            complete = False
            try:
                self.offset, complete = await self.handle_batch(batch)
            except Exception as exc:  # a bug here must not end intake for good
                log.error("telegram: a batch of updates failed (%s)", type(exc).__name__)
            if complete:
                stalls = 0
            elif not self.stopping:
                # Not stored: give the store a moment, then fetch the rest again.
                stalls += 1
                if stalls in (1, 10) or stalls % 100 == 0:
                    log.warning("telegram: updates not stored (%d tries in a row); fetching "
                                "them again later", stalls)  # fmt: skip
                await self._sleep(api.backoff(stalls))

    async def _poll_failed(self, exc: Exception, failures: int) -> None:
        delay = api.backoff(failures)
        if isinstance(exc, RetryAfter):
            delay = max(api.retry_seconds(exc), 1.0)
            log.warning("telegram: getUpdates flood control; waiting %.0f s", delay)
        elif isinstance(exc, Conflict):
            delay = max(delay, CONFLICT_BACKOFF)
            log.warning(
                "telegram: getUpdates conflict: another instance is polling with this token, "
                "or a webhook is set; retrying in %.0f s",
                delay,
            )
        elif isinstance(exc, TimedOut):
            delay = min(delay, 1.0)  # a lost long poll; ask again soon
            log.info("telegram: getUpdates timed out")
        elif isinstance(exc, InvalidToken):
            log.error("telegram: the bot token was rejected; retrying in %.0f s", delay)
        else:
            log.warning("telegram: getUpdates failed (%s); retrying in %.0f s",
                        type(exc).__name__, delay)  # fmt: skip
        await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        self._cancellable = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self._cancellable = False

    async def handle_batch(self, updates: Sequence[Json]) -> tuple[int, bool]:
        """Handle a batch; return the offset to confirm next and whether all were handled.
        Chats run concurrently, one chat's updates in order; after a failure in a chat its
        later updates wait for the re-fetch, keeping that order."""
        by_chat: dict[str, list[tuple[int, Read, Json]]] = {}
        for update in updates:
            item = self.read_safely(update)
            by_chat.setdefault(chat_key(item), []).append((int(update["update_id"]), item, update))
        handled = 0

        async def run(items: list[tuple[int, Read, Json]]) -> int | None:
            nonlocal handled
            for update_id, item, update in items:
                if item is not None:
                    try:
                        await self.handle(item)
                    except Exception as exc:
                        log.warning("telegram: delivery failed (%s)", type(exc).__name__)
                        return update_id
                    handled += 1
                self.after(update)
            return None

        results = await asyncio.gather(*(run(items) for items in by_chat.values()))
        failed = sorted(r for r in results if r is not None)
        if not failed:
            self._poison.clear()
            return max(int(u["update_id"]) for u in updates) + 1, True
        first = failed[0]
        if handled:
            # Others were stored, so the store works: an update that keeps failing is poison
            # and would block everyone behind it. Later updates of its chat are re-fetched.
            self._poison[first] = self._poison.get(first, 0) + 1
            if self._poison[first] >= POISON_LIMIT:
                log.error("telegram: an update failed %d times while others were stored; "
                          "skipping it", POISON_LIMIT)  # fmt: skip
                del self._poison[first]
                return first + 1, True
        return first, False

    async def stop(self, task: asyncio.Task[None] | None) -> None:
        """Let a batch being handled finish (up to STOP_GRACE), then confirm what was stored."""
        self.stopping = True
        if task is not None:
            if self._cancellable:
                task.cancel()
            done, _ = await asyncio.wait([task], timeout=STOP_GRACE)
            if not done:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.confirm()

    async def confirm(self) -> None:
        """Tell Telegram what was handled since the last poll, so a restart replays less."""
        if self.offset is None or self.offset == self.confirmed:
            return
        with contextlib.suppress(Exception):
            params = {"offset": self.offset, "limit": 1, "timeout": 0}
            await self.call("getUpdates", params, read_timeout=5)
            self.confirmed = self.offset
