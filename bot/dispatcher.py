"""Drains the outbox for one transport: priorities, platform limits, retries, crash safety.

Pacing is by schedule rather than by bursts: each send takes the next free slot of a global
clock (1/rate apart) and of its chat's clock (GCRA: a chat may run `chat_burst` messages ahead
of its steady rate), so the platform's flood control is never provoked. A message whose chat
is not ready, or whose priority is paused, takes no global slot: it waits without holding back
other chats, or is handed back to the outbox (`unclaim`) when the wait is long, so it never
sits on one of the `in_flight` slots that interactive replies need.

Retry policy (what may be duplicated, and why):

* `RetryLater` without `retry_after` (connection refused or reset before the request was
  sent, 5xx): retried with exponential back-off and jitter, at most MAX_ATTEMPTS attempts.
  When such failures hit OUTAGE_THRESHOLD different chats with no success in between, the
  transport is treated as down: all sending halts for OUTAGE_MIN doubling to OUTAGE_MAX
  seconds, and rows are handed back without spending an attempt, so an outage of any length
  loses nothing and costs no attempts; sending resumes within OUTAGE_MAX of the platform's
  return.
* `RetryLater` with `retry_after` (429): the platform proved it did not take the message. Bulk
  and alerts (priority >= ALERT) pause for `retry_after`; replies and emergencies keep flowing
  on a small budget (one per PAUSED_REPLY_INTERVAL). The row is re-queued after `retry_after`
  without spending an attempt, and the rate is halved (recovering by a few per cent per
  success): additive-increase, multiplicative-decrease, which is what Signal's unpublished
  limits need.
* `RetryLater(maybe_sent=True)` (a timeout after the request left): the message may have
  arrived. Replies, alerts and emergencies are retried (a possible duplicate beats a lost
  hearing date); bulk is retried once, then recorded as `maybe_sent`.
* `MaybeSent` (Signal's 400/429, which do not prove non-delivery): never retried, except for
  emergencies; recorded as `maybe_sent`. A `retry_after` pauses bulk and slows down as above.
* `RecipientGone` (403, blocked, unregistered): failed, and the identity is marked unreachable
  so later fan-outs skip it. `Rejected`: failed.
* A row older than MAX_AGE when its turn comes is failed as `expired` (the vigil was
  yesterday).

Crash safety: a row is marked sent only after the transport answered, and a send task holds
its in-flight slot until that mark is committed (marks of concurrent sends share one writer
job). After `kill -9`, rows in `sending` go back to `pending` at start; at most `in_flight`
of them were already with the platform, so duplicates per crash are bounded by the in-flight
window, and nothing is skipped (rows claimed but not yet handed to the transport are simply
sent after the restart).

Producers: steps that write outbox rows over time (the streaming fan-out of a broadcast, the
progress message, daily digests) are given to each dispatcher by the app; it runs them
on the database writer thread, in the background of its loop (claims and sends never wait for
them), every `every` seconds and, for `eager` ones, as soon as its queue runs short, so
fan-out rows are materialised just ahead of sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from bot import guard
from bot.jobs import JobContext, Producer
from bot.messages import Choice, Outgoing, Priority
from bot.services import Services
from bot.transports.base import (
    IdentityUntrusted,
    MaybeSent,
    RecipientGone,
    Rejected,
    RetryLater,
    Transport,
)
from storage import members, outbox
from storage.db import Connection, Database

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BASE_BACKOFF = 2.0
MAX_BACKOFF = 300.0
MAX_AGE = 3 * 86400.0  # a message this old is no longer worth sending
CHAT_MARGIN = 1.1  # per-chat pacing runs 10% under the platform's limit
IDLE_POLL = 30.0  # safety net: rows whose not_before passed while nobody woke us
GLOBAL_CATCH_UP = 0.1  # seconds of missed global slots a late send may still use
MAX_HOLD = 2.0  # a claimed row that must wait longer than this goes back to the outbox
PAUSED_REPLY_INTERVAL = 2.0  # replies' budget while bulk is paused by a rate limit
OUTAGE_THRESHOLD = 3  # chats failing in a row, no success between: "the transport is down"
OUTAGE_MIN = 5.0
OUTAGE_MAX = 30.0
SLOWDOWN = 2.0  # rate divided by this on a rate-limit answer ...
MAX_SLOWDOWN = 16.0  # ... down to 1/16 of the configured rate
RECOVERY = 0.95  # interval multiplied by this per success, back to the configured rate
EDIT_TARGET_WAIT = 1.0  # an edit whose message is not sent yet looks again after this
SENT_FLUSH_WAIT = 0.0  # one loop turn: sends finishing together share one write


# -- pacing -------------------------------------------------------------------------------


class Pacer:
    """Global and per-chat send slots, pauses for rate limits, halts for outages."""

    def __init__(self, per_second: float, per_chat_per_second: float, chat_burst: int) -> None:
        # A send that comes late for its slot (the loop was busy) may use slots it missed, up
        # to GLOBAL_CATCH_UP seconds' worth: the long-run rate stays exactly the configured one
        # (GCRA with this tolerance equals a token bucket of 1 + rate * GLOBAL_CATCH_UP, far
        # below the platform's own burst; below 10/s, as on Signal, no burst at all), and
        # lateness no longer costs throughput.
        self.catch_up = GLOBAL_CATCH_UP
        self.base_interval = 1.0 / per_second
        self.interval = self.base_interval
        self.chat_interval = 1.0 / per_chat_per_second
        self.chat_burst = chat_burst
        self._next_global = 0.0
        self._chat_next: dict[str, float] = {}
        self.paused_until = 0.0  # priority >= ALERT waits (rate limited)
        self.halted_until = 0.0  # everything waits (transport down)
        self._reply_next = 0.0  # replies' budget during a pause

    def reserve(
        self,
        chat: str,
        now: float,
        chat_interval: float | None = None,
        priority: int = Priority.REPLY,
    ) -> tuple[float, bool]:
        """(wait, reserved). When the chat, a pause or a halt holds this message back nothing
        is reserved and `wait` says when to ask again; otherwise a global slot is taken and
        `wait` is how long until it. `chat_interval` overrides the chat's rate, without burst
        (Telegram groups: 20/min)."""
        burst = self.chat_burst if chat_interval is None else 1
        # A margin over the platform's per-chat rate: messages leave on schedule but reach the
        # platform with jitter (a cold connection is slower than a warm one), and a schedule
        # exactly at the limit then lands just inside it.
        interval = (chat_interval or self.chat_interval) * CHAT_MARGIN
        tat = self._chat_next.get(chat, now)
        gate = max(now, self.halted_until, tat - (burst - 1) * interval)
        pausing = self.paused_until > now
        if priority > Priority.REPLY:
            gate = max(gate, self.paused_until)
        elif pausing:
            gate = max(gate, self._reply_next)
        if gate > now:
            return gate - now, False
        at = max(now, self._next_global - self.catch_up)
        self._next_global = max(at, self._next_global) + self.interval
        self._chat_next[chat] = max(tat, at) + interval
        if pausing:
            self._reply_next = at + PAUSED_REPLY_INTERVAL
        if len(self._chat_next) > 50_000:
            self._chat_next = {c: t for c, t in self._chat_next.items() if t > now}
        return at - now, True

    def pause(self, seconds: float, now: float) -> None:
        self.paused_until = max(self.paused_until, now + seconds)

    def halt(self, until: float) -> None:
        self.halted_until = max(self.halted_until, until)

    def rate_limited(self, retry_after: float, now: float) -> None:
        """A rate-limit answer: pause bulk, and slow down once per pause (answers to requests
        that were already in flight when the first came do not compound)."""
        if now >= self.paused_until:
            self.interval = min(self.base_interval * MAX_SLOWDOWN, self.interval * SLOWDOWN)
        self.pause(retry_after, now)

    def on_success(self) -> None:
        if self.interval > self.base_interval:
            self.interval = max(self.base_interval, self.interval * RECOVERY)

    @property
    def rate(self) -> float:
        return 1.0 / self.interval


def to_outgoing(item: outbox.Item, ref: str | None, kind: str | None = None) -> Outgoing:
    body = item.body
    return Outgoing(
        transport=item.transport,
        chat=item.chat,
        text=body.get("text", ""),
        choices=tuple(Choice(label, value) for label, value in body.get("choices", [])),
        kind=kind or body.get("kind", "message"),
        ref=ref,
        priority=Priority(item.priority),
        outbox_id=item.id,
    )


class Dispatcher:
    def __init__(
        self,
        db: Database,
        transport: Transport,
        clock: Callable[[], float] = time.time,
        *,
        producers: Sequence[Producer] = (),
        services: Services | None = None,
        time_scale: float = 1.0,
    ) -> None:
        """`time_scale` > 1 lets tests run simulated time: `clock` must then run that many
        times faster than the event loop, and every wait here is shortened to match."""
        self.db = db
        self.transport = transport
        self.clock = clock
        self.producers = tuple(producers)
        self.services = services or Services(index_key=b"")
        self.time_scale = time_scale
        limits = transport.limits
        self.pacer = Pacer(limits.per_second, limits.per_chat_per_second, limits.chat_burst)
        self.in_flight = limits.in_flight
        self.batch = max(1, min(self.in_flight * 4, math.ceil(limits.per_second / 4)))
        self.editable = transport.capabilities.edits
        self._wake = asyncio.Event()
        self._stopping = False
        self._chat_tail: dict[str, asyncio.Task[None]] = {}
        self._active: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(self.in_flight)
        self._produced_at: dict[str, float] = {}
        self._producing: asyncio.Task[None] | None = None
        self._sent_batch: list[tuple[int, str | None]] = []
        self._sent_flush: asyncio.Future[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._failing_chats: set[str] = set()  # transient failures since the last success
        self._outage_backoff = 0.0
        # Counters for status and benchmarks (no content, no ids).
        self.sent = 0
        self.failed = 0
        self.rate_limited = 0
        self.retried = 0
        self.handed_back = 0

    @property
    def busy(self) -> bool:
        """Sends are in flight (the app's `settle` waits for them)."""
        return bool(self._active)

    def wake(self) -> None:
        self._wake.set()

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run on the writer thread. Shielded: if this task is cancelled (stop, crash test),
        the database work still completes and its future is never cancelled under the
        writer (a cancelled future there would fail the writer's whole batch)."""
        return await asyncio.shield(asyncio.wrap_future(self.db.submit(fn, *args)))

    async def _record_sent(self, item_id: int, platform_ref: str | None) -> None:
        """Mark a row sent. Marks made while one write is under way go together in the next
        (one writer job for many messages); the caller returns, and frees its in-flight slot,
        only once its mark is committed, which is what bounds duplicates after a crash.
        No extra wait to gather more: a slot held longer is throughput lost (bench/throughput.py
        fell from ~950 to ~730 updates/s with a 4 ms gathering wait)."""
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
            await self._db(outbox.mark_sent_many, batch, self.clock())
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            return
        if not done.done():
            done.set_result(None)

    # -- time -------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.time_scale)

    def _schedule_wake(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(max(0.0, delay) / self.time_scale, self._wake.set)

    # -- main loop --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._loop(self.transport.name)
        finally:
            if self._producing is not None:
                self._producing.cancel()

    async def _loop(self, name: str) -> None:
        while not self._stopping:
            self._wake.clear()
            now = self.clock()
            self._kick_producers(now, dry=False)
            if self.pacer.halted_until > now:
                await self._idle(self.pacer.halted_until - now)
                continue
            max_priority = Priority.REPLY if self.pacer.paused_until > now else Priority.BULK
            items = await self._db(outbox.claim, name, self.batch, now, max_priority)
            for item in items:
                await self._slots.acquire()
                task = asyncio.create_task(self._send_after(item, self._chat_tail.get(item.chat)))
                self._chat_tail[item.chat] = task
                self._active.add(task)
                task.add_done_callback(self._done)
            if len(items) == self.batch:
                continue
            self._kick_producers(self.clock(), dry=True)  # the queue ran short: refill
            if items:
                continue
            due = await self._db(outbox.next_due, name, max_priority)
            now = self.clock()
            timeout = IDLE_POLL if due is None else max(0.0, min(IDLE_POLL, due - now))
            if max_priority < Priority.BULK:
                timeout = min(timeout, max(0.0, self.pacer.paused_until - now))
            for producer in self.producers:
                last = self._produced_at.get(producer.name, -math.inf)
                timeout = min(timeout, max(0.0, last + producer.every - now))
            if timeout == 0.0:
                timeout = 0.05  # rows claimed by in-flight tasks; look again shortly
            await self._idle(timeout)

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds) / self.time_scale)

    def _kick_producers(self, now: float, *, dry: bool) -> None:
        """Start the due producers (and, when the queue ran dry, the eager ones) in the
        background: their writer-thread work never holds up claiming and sending. One batch of
        producers runs at a time; when one wrote rows (or has more to do) the loop is woken."""
        if self._producing is not None and not self._producing.done():
            return
        due = []
        for producer in self.producers:
            last = self._produced_at.get(producer.name, -math.inf)
            if now - last >= producer.every or (dry and producer.eager):
                self._produced_at[producer.name] = now
                due.append(producer)
        if due:
            self._producing = asyncio.create_task(self._produce(due, now))

    async def _produce(self, due: list[Producer], now: float) -> None:
        wrote = False
        for producer in due:
            try:
                wrote |= bool(await self._db(self._run_producer, producer, now))
            except Exception as exc:
                log.error("producer %s failed: %s", producer.name, type(exc).__name__)
        if wrote:
            self._wake.set()

    def _run_producer(self, conn: Connection, producer: Producer, now: float) -> bool:
        return producer.fn(JobContext(conn, now, self.services), self.transport.name)

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
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one message kill the dispatcher
            log.error("dispatch of one message failed unexpectedly: %s", type(exc).__name__)
            await self._db(outbox.retry_later, item.id, self.clock() + MAX_BACKOFF, "internal")

    # -- one message ------------------------------------------------------------------

    async def _send(self, item: outbox.Item) -> None:
        now = self.clock()
        if item.created_at and now - item.created_at > MAX_AGE:
            self.failed += 1
            await self._db(outbox.finish, item.id, "failed", "expired", now)
            return
        kind = item.body.get("kind", "message")
        ref = item.body.get("ref")  # a platform message id given directly (an incoming message)
        if ref is None and kind in ("edit", "delete"):
            resolved = await self._resolve_target(item, kind)
            if resolved is None:
                return
            kind, ref = resolved
        if not await self._take_slot(item):
            return
        try:
            platform_ref = await self.transport.send(to_outgoing(item, ref, kind))
        except RetryLater as err:
            await self._retry(item, err)
        except MaybeSent as err:
            await self._maybe_sent(item, err)
        except IdentityUntrusted:
            # The safety number changed: nothing more goes there until a coordinator confirms
            # the member in person (/trust); this message waits with the rest.
            self._healthy()
            await self._db(_untrusted, item, self.clock(), self.services)
        except RecipientGone as err:
            self.failed += 1
            self._healthy()
            await self._db(_gone, item, err.kind, self.clock())
        except Rejected as err:
            self.failed += 1
            self._healthy()
            await self._db(outbox.finish, item.id, "failed", err.kind, self.clock())
        else:
            self.sent += 1
            self._healthy()
            self.pacer.on_success()
            await self._record_sent(item.id, platform_ref)

    async def _resolve_target(self, item: outbox.Item, kind: str) -> tuple[str, str | None] | None:
        """An edit or delete names the outbox row of a message we sent earlier; use its
        platform id. Not sent yet: look again shortly. Lost, or a transport that cannot edit:
        an edit becomes a new message; a delete has nothing to do."""
        target = item.body.get("target")
        found = await self._db(outbox.target_state, int(target)) if target else None
        now = self.clock()
        if found is not None and found[0] in ("pending", "sending"):
            await self._db(outbox.unclaim, item.id, now + EDIT_TARGET_WAIT)
            self._schedule_wake(EDIT_TARGET_WAIT)
            return None
        ref = found[1] if found is not None and found[0] == "sent" else None
        if kind == "edit" and (ref is None or not self.editable):
            return "message", None
        if ref is None:
            await self._db(outbox.finish, item.id, "failed", "no target", now)
            return None
        return kind, ref

    async def _take_slot(self, item: outbox.Item) -> bool:
        """Wait for this message's send slot; False when it went back to the outbox."""
        chat_interval = self.transport.chat_interval(item.chat)
        while True:
            now = self.clock()
            wait, reserved = self.pacer.reserve(item.chat, now, chat_interval, item.priority)
            if reserved:
                break
            if wait > MAX_HOLD:
                await self._hand_back(item, now + wait)
                return False
            await self._sleep(wait)
        if wait > 0:
            await self._sleep(wait)
        now = self.clock()
        if self.pacer.halted_until > now or (
            item.priority > Priority.REPLY and self.pacer.paused_until > now
        ):
            # A rate limit or an outage arrived while this message waited for its slot.
            await self._hand_back(item, max(self.pacer.halted_until, self.pacer.paused_until))
            return False
        return True

    async def _hand_back(self, item: outbox.Item, not_before: float) -> None:
        self.handed_back += 1
        await self._db(outbox.unclaim, item.id, not_before)
        self._schedule_wake(not_before - self.clock())

    def _healthy(self) -> None:
        self._failing_chats.clear()
        self._outage_backoff = 0.0

    async def _retry(self, item: outbox.Item, err: RetryLater) -> None:
        now = self.clock()
        if err.retry_after is not None:
            # Rate limited: the platform did not take the message; the attempt is free.
            self.rate_limited += 1
            self.pacer.rate_limited(err.retry_after, now)
            await self._db(outbox.unclaim, item.id, now + err.retry_after, err.kind)
            self._schedule_wake(err.retry_after)
            return
        self._failing_chats.add(item.chat)
        recorded = ("maybe:" if err.maybe_sent else "") + err.kind
        if err.maybe_sent and item.priority == Priority.BULK and _was_maybe(item):
            # Bulk that may have arrived twice already is not tried a third time.
            self.failed += 1
            await self._db(outbox.finish, item.id, "maybe_sent", err.kind, now)
            return
        if len(self._failing_chats) >= OUTAGE_THRESHOLD or self._outage_backoff > 0:
            if now >= self.pacer.halted_until:
                self._outage_backoff = min(OUTAGE_MAX, max(OUTAGE_MIN, self._outage_backoff * 2))
                self.pacer.halt(now + self._outage_backoff * (0.8 + 0.4 * random.random()))
                log.warning("transport %s unavailable; pausing sends", self.transport.name)
            self.handed_back += 1
            await self._db(outbox.unclaim, item.id, self.pacer.halted_until, recorded)
            self._schedule_wake(self.pacer.halted_until - now)
            return
        if item.attempts >= MAX_ATTEMPTS:
            self.failed += 1
            await self._db(outbox.finish, item.id, "failed", err.kind, now)
            return
        self.retried += 1
        backoff = min(MAX_BACKOFF, BASE_BACKOFF * 2 ** (item.attempts - 1))
        delay = backoff * (0.5 + random.random())
        await self._db(outbox.retry_later, item.id, now + delay, recorded)
        self._schedule_wake(delay)

    async def _maybe_sent(self, item: outbox.Item, err: MaybeSent) -> None:
        now = self.clock()
        if err.retry_after is not None:
            self.rate_limited += 1
            self.pacer.rate_limited(err.retry_after, now)
        # Policy: a possible duplicate of an emergency is better than a lost one; for all else
        # a possible duplicate is worse than a possible loss, so the row stays for review.
        if item.priority == Priority.EMERGENCY and item.attempts < MAX_ATTEMPTS:
            delay = err.retry_after if err.retry_after is not None else BASE_BACKOFF
            self.retried += 1
            await self._db(outbox.retry_later, item.id, now + delay, "maybe:" + err.kind)
            self._schedule_wake(delay)
            return
        self.failed += 1
        await self._db(outbox.finish, item.id, "maybe_sent", err.kind, now)

    async def drain(self, grace: float) -> None:
        """Stop taking new rows and wait up to `grace` seconds for the ones in flight."""
        self._stopping = True
        self._wake.set()
        if self._active:
            await asyncio.wait(list(self._active), timeout=grace / self.time_scale)


def _was_maybe(item: outbox.Item) -> bool:
    return (item.error or "").startswith("maybe:")


def _untrusted(conn: Connection, item: outbox.Item, now: float, services: Services) -> None:
    outbox.unclaim(conn, item.id, outbox.HELD, "untrusted")
    ident = item.chat  # a Signal chat is the recipient's uuid
    guard.quarantine(conn, item.transport, ident, now, services)


def _gone(conn: Connection, item: outbox.Item, kind: str, now: float) -> None:
    outbox.finish(conn, item.id, "failed", kind, now)
    members.mark_unreachable(conn, item.transport, item.chat)
