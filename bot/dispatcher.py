"""Drains the outbox for one transport: priorities, platform limits, retries, crash safety.

Pacing is by schedule rather than by bursts: each send gets the next free slot of a global
clock (1/rate apart) and of its chat's clock, so the platform's flood control is never
provoked. A 429 pauses the whole transport for `retry_after`. Retry policy: temporary errors
(5xx, timeouts, lost connections) are retried with exponential backoff up to MAX_ATTEMPTS; a
timeout after the request left may mean the message arrived, so such retries can duplicate,
which we accept over losing a hearing date. Signal's "maybe sent" answers are not retried
except for emergencies (see `MaybeSent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from bot.messages import Choice, Outgoing, Priority
from bot.transports.base import MaybeSent, RecipientGone, Rejected, RetryLater, Transport
from storage import members, outbox
from storage.db import Connection, Database

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BASE_BACKOFF = 2.0
MAX_BACKOFF = 300.0
IDLE_POLL = 30.0  # safety net: rows whose not_before passed while nobody woke us


class Pacer:
    """Global and per-chat send slots; `reserve` returns how long to wait for this chat."""

    def __init__(self, per_second: float, per_chat_per_second: float, chat_burst: int) -> None:
        self.interval = 1.0 / per_second
        self.chat_interval = 1.0 / per_chat_per_second
        self.chat_burst = chat_burst
        self._next_global = 0.0
        self._chat_next: dict[str, float] = {}
        self.paused_until = 0.0

    def reserve(self, chat: str, now: float, chat_interval: float | None = None) -> float:
        """Claim the next send slot and return how long to wait for it. GCRA per chat: a chat
        may run `chat_burst` messages ahead of its steady rate (a reply plus a menu).
        `chat_interval` overrides the chat's rate, without burst (Telegram groups: 20/min)."""
        burst = self.chat_burst if chat_interval is None else 1
        interval = chat_interval or self.chat_interval
        tat = self._chat_next.get(chat, now)
        at = max(now, self._next_global, self.paused_until, tat - (burst - 1) * interval)
        self._next_global = at + self.interval
        self._chat_next[chat] = max(tat, at) + interval
        if len(self._chat_next) > 50_000:
            self._chat_next = {c: t for c, t in self._chat_next.items() if t > now}
        return at - now

    def pause(self, seconds: float, now: float) -> None:
        self.paused_until = max(self.paused_until, now + seconds)


def to_outgoing(item: outbox.Item, ref: str | None) -> Outgoing:
    body = item.body
    return Outgoing(
        transport=item.transport,
        chat=item.chat,
        text=body.get("text", ""),
        choices=tuple(Choice(label, value) for label, value in body.get("choices", [])),
        kind=body.get("kind", "message"),
        ref=ref,
        priority=Priority(item.priority),
        outbox_id=item.id,
    )


class Dispatcher:
    def __init__(
        self, db: Database, transport: Transport, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.transport = transport
        self.clock = clock
        limits = transport.limits
        self.pacer = Pacer(limits.per_second, limits.per_chat_per_second, limits.chat_burst)
        self.in_flight = limits.in_flight
        self._wake = asyncio.Event()
        self._stopping = False
        self._chat_tail: dict[str, asyncio.Task[None]] = {}
        self._active: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(self.in_flight)
        self.sent = 0
        self.failed = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        name = self.transport.name
        while not self._stopping:
            self._wake.clear()
            want = max(1, self.in_flight * 4 - len(self._active))
            items = await self.db.run(outbox.claim, name, want, self.clock())
            for item in items:
                await self._slots.acquire()
                task = asyncio.create_task(self._send_after(item, self._chat_tail.get(item.chat)))
                self._chat_tail[item.chat] = task
                self._active.add(task)
                task.add_done_callback(self._done)
            if items:
                continue
            due = await self.db.run(outbox.next_due, name)
            timeout = IDLE_POLL if due is None else max(0.0, min(IDLE_POLL, due - self.clock()))
            if due is not None and timeout == 0.0:
                timeout = 0.05  # rows claimed by in-flight tasks; look again shortly
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._slots.release()
        for chat, tail in list(self._chat_tail.items()):
            if tail is task:
                del self._chat_tail[chat]

    async def _send_after(self, item: outbox.Item, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            # Keep one chat's messages in order even though chats are sent concurrently.
            await asyncio.wait([previous])
        try:
            await self._send(item)
        except Exception as exc:  # never let one message kill the dispatcher
            log.error("dispatch of one message failed unexpectedly: %s", type(exc).__name__)
            await self.db.run(outbox.retry_later, item.id, self.clock() + MAX_BACKOFF, "internal")

    async def _send(self, item: outbox.Item) -> None:
        ref = item.body.get("ref")  # a platform message id given directly (an incoming message)
        if ref is None and item.body.get("kind") in ("edit", "delete"):
            # Or the outbox row of a message we sent earlier, whose platform id we learnt.
            target = item.body.get("target")
            ref = await self.db.run(outbox.platform_ref, int(target)) if target else None
            if ref is None:
                await self.db.run(outbox.finish, item.id, "failed", "no target", self.clock())
                return
        wait = self.pacer.reserve(item.chat, self.clock(), self.transport.chat_interval(item.chat))
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            platform_ref = await self.transport.send(to_outgoing(item, ref))
        except RetryLater as err:
            await self._retry(item, err.kind, err.retry_after)
        except MaybeSent as err:
            await self._maybe_sent(item, err)
        except RecipientGone as err:
            self.failed += 1
            await self.db.run(_gone, item, err.kind, self.clock())
        except Rejected as err:
            self.failed += 1
            await self.db.run(outbox.finish, item.id, "failed", err.kind, self.clock())
        else:
            self.sent += 1
            await self.db.run(outbox.mark_sent, item.id, platform_ref, self.clock())

    async def _retry(self, item: outbox.Item, kind: str, retry_after: float | None) -> None:
        now = self.clock()
        if retry_after is not None:
            self.pacer.pause(retry_after, now)
        if item.attempts >= MAX_ATTEMPTS:
            self.failed += 1
            await self.db.run(outbox.finish, item.id, "failed", kind, now)
            return
        backoff = min(MAX_BACKOFF, BASE_BACKOFF * 2 ** (item.attempts - 1))
        delay = retry_after if retry_after is not None else backoff * (0.5 + random.random())
        await self.db.run(outbox.retry_later, item.id, now + delay, kind)
        self._schedule_wake(delay)

    async def _maybe_sent(self, item: outbox.Item, err: MaybeSent) -> None:
        now = self.clock()
        if err.retry_after is not None:
            self.pacer.pause(err.retry_after, now)
        # Policy: a possible duplicate of an emergency is better than a lost one; for all else
        # a possible duplicate is worse than a possible loss, so the row stays for review.
        if item.priority == Priority.EMERGENCY and item.attempts < MAX_ATTEMPTS:
            await self._retry(item, err.kind, err.retry_after)
            return
        await self.db.run(outbox.finish, item.id, "maybe_sent", err.kind, now)

    def _schedule_wake(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def drain(self, grace: float) -> None:
        """Stop taking new rows and wait up to `grace` seconds for the ones in flight."""
        self._stopping = True
        self._wake.set()
        if self._active:
            await asyncio.wait(list(self._active), timeout=grace)


def _gone(conn: Connection, item: outbox.Item, kind: str, now: float) -> None:
    outbox.finish(conn, item.id, "failed", kind, now)
    members.mark_unreachable(conn, item.transport, item.chat)


def outbox_body(text: str, choices: tuple[Choice, ...] = (), **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text, **extra}
    if choices:
        body["choices"] = [[c.label, c.value] for c in choices]
    return body
