"""Drains the outbox for one transport: priorities, platform limits, retries, crash safety.

Pacing lives in bot/pacing.py: a global clock and per-chat clocks, with global slots handed out
most urgent first as they come due. A message whose chat is not ready, or whose priority is
paused, takes no global slot: it waits without holding back other chats, or is handed back to
the outbox (`unclaim`) when the wait is long. Bulk and alerts may hold at most `bulk_cap` of the
`in_flight` slots, so replies and emergencies always find one free, and the loop never blocks
on bulk: a reply written during a broadcast is claimed at once and sent in the next slot.

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

Store faults (a full disk): the loop and every send survive them. A claim that fails is tried
again after a back-off (bot/outbox_writer.py); a send's outcome that cannot be written (sent,
retry, failed) is retried until it is, while the send keeps its in-flight slot. So nothing
is sent twice knowingly, the crash-duplicate bound stays the window, what is already claimed
still goes out, and sending resumes by itself when the store can write again. Faults and
recoveries are reported (`on_fault`, `on_recovered`) to the supervisor, and `heartbeat` is
called each turn of the loop (bot/supervisor.py: wedge check).

Producers: steps that write outbox rows over time (the streaming fan-out of a broadcast, the
progress message, daily digests) are given to each dispatcher by the app; it runs them
on the database writer thread, in the background of its loop (claims and sends never wait for
them), every `every` seconds and, for `eager` ones, as soon as its queue runs short, so
fan-out rows are materialised just ahead of sending.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Sequence

from bot import guard
from bot.health import is_store_fault
from bot.jobs import JobContext, Producer
from bot.messages import Choice, Outgoing, Priority
from bot.outbox_writer import OutboxWriter, store_backoff
from bot.pacing import Pacer, SlotQueue
from bot.services import Services
from bot.supervisor import wait_event
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
IDLE_POLL = 30.0  # safety net: rows whose not_before passed while nobody woke us
HEARTBEAT_PERIOD = 2 * IDLE_POLL  # the loop beats at least this often unless wedged
MAX_HOLD = 2.0  # a claimed row that must wait longer than this goes back to the outbox
OUTAGE_THRESHOLD = 3  # chats failing in a row, no success between: "the transport is down"
OUTAGE_MIN = 5.0
OUTAGE_MAX = 30.0
EDIT_TARGET_WAIT = 1.0  # an edit whose message is not sent yet looks again after this


def _claim(
    conn: Connection, transport: str, urgent: int, bulk: int, now: float
) -> tuple[list[outbox.Item], bool]:
    """Up to `urgent` replies and emergencies, then up to `bulk` more rows of any priority,
    in one transaction. True when either limit was reached (more may be due)."""
    items = outbox.claim(conn, transport, urgent, now, Priority.REPLY)
    more = len(items) == urgent
    if bulk > 0:
        rest = outbox.claim(conn, transport, bulk, now, Priority.BULK)
        more = more or len(rest) == bulk
        items += rest
    return items, more


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
        # A quarter of the window stays free of bulk and alerts, for replies and emergencies.
        self.bulk_cap = max(1, self.in_flight - max(1, self.in_flight // 4))
        self._refill = max(1, min(self.batch, self.bulk_cap // 2))
        self._turns = SlotQueue(self.pacer, clock, time_scale)
        self.editable = transport.capabilities.edits
        self._wake = asyncio.Event()
        self._stopping = False
        self._chat_tail: dict[str, asyncio.Task[None]] = {}
        self._active: set[asyncio.Task[None]] = set()
        self._bulk: set[asyncio.Task[None]] = set()  # the active sends of priority >= ALERT
        self._slots = asyncio.Semaphore(self.in_flight)
        # Wired by the app to its supervisor (bot/supervisor.py); no-ops when run alone.
        self.heartbeat: Callable[[], None] = _nothing
        self.on_fault: Callable[[BaseException], None] = _ignore
        self.on_recovered: Callable[[], None] = _nothing
        self.writes = OutboxWriter(
            db,
            clock,
            self._sleep,
            lambda exc: self.on_fault(exc),
            lambda: self.on_recovered(),
            lambda: self.heartbeat(),
        )
        self._db = self.writes.run
        self._store = self.writes.store
        self._record_sent = self.writes.record_sent
        self._produced_at: dict[str, float] = {}
        self._producing: asyncio.Task[None] | None = None
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
        failures = 0  # store faults in a row
        while not self._stopping:
            self._wake.clear()
            self.heartbeat()
            now = self.clock()
            self._kick_producers(now, dry=False)
            if self.pacer.halted_until > now:
                await self._idle(self.pacer.halted_until - now)
                continue
            paused = self.pacer.paused_until > now
            bulk_room = 0 if paused else max(0, self.bulk_cap - len(self._bulk))
            try:
                items, more = await self._db(_claim, name, self.batch, bulk_room, now)
                if not items and not more:
                    max_priority = Priority.BULK if bulk_room else Priority.REPLY
                    due = await self._db(outbox.next_due, name, max_priority)
            except Exception as exc:
                if not is_store_fault(exc):
                    raise  # a bug: the supervisor logs it and restarts the loop
                failures += 1
                self.on_fault(exc)
                await self._idle(store_backoff(failures))
                continue
            if failures:
                failures = 0
                self.on_recovered()
            for item in items:
                # Blocks while every slot is held. Sends waiting for the store beat for the
                # loop meanwhile; sends that never return leave it wedged, as they should.
                await self._slots.acquire()
                task = asyncio.create_task(self._send_after(item, self._chat_tail.get(item.chat)))
                self._chat_tail[item.chat] = task
                self._active.add(task)
                if item.priority > Priority.REPLY:
                    self._bulk.add(task)
                task.add_done_callback(self._done)
            if more:
                continue
            if bulk_room:
                self._kick_producers(self.clock(), dry=True)  # the queue ran short: refill
            if items:
                continue
            now = self.clock()
            timeout = IDLE_POLL if due is None else max(0.0, min(IDLE_POLL, due - now))
            if paused:
                timeout = min(timeout, max(0.0, self.pacer.paused_until - now))
            for producer in self.producers:
                last = self._produced_at.get(producer.name, -math.inf)
                timeout = min(timeout, max(0.0, last + producer.every - now))
            if timeout == 0.0:
                timeout = 0.05  # rows claimed by in-flight tasks; look again shortly
            await self._idle(timeout)  # a send that frees bulk room wakes us (`_done`)

    async def _idle(self, seconds: float) -> None:
        await wait_event(self._wake, max(0.0, seconds) / self.time_scale)

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
        if task in self._bulk:
            self._bulk.discard(task)
            if self.bulk_cap - len(self._bulk) >= self._refill:
                self._wake.set()
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
            await self._store(outbox.retry_later, item.id, self.clock() + MAX_BACKOFF, "internal")

    # -- one message ------------------------------------------------------------------

    async def _send(self, item: outbox.Item) -> None:
        now = self.clock()
        if item.created_at and now - item.created_at > MAX_AGE:
            self.failed += 1
            await self._store(outbox.finish, item.id, "failed", "expired", now)
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
            await self._store(_gone, item, err.kind, self.clock())
        except Rejected as err:
            self.failed += 1
            self._healthy()
            await self._store(outbox.finish, item.id, "failed", err.kind, self.clock())
        else:
            self.sent += 1
            self._healthy()
            self.pacer.on_success()
            try:
                await self._record_sent(item.id, platform_ref)
            except Exception as exc:  # not a store fault (those are retried): a bug
                # Sent, so never retried from here; the row stays `sending` and the next start
                # re-queues it: one possible duplicate, inside the crash bound.
                log.error("a sent message could not be recorded: %s", type(exc).__name__)

    async def _resolve_target(self, item: outbox.Item, kind: str) -> tuple[str, str | None] | None:
        """An edit or delete names the outbox row of a message we sent earlier; use its
        platform id. Not sent yet: look again shortly. Lost, or a transport that cannot edit:
        an edit becomes a new message; a delete has nothing to do."""
        target = item.body.get("target")
        found = await self._store(outbox.target_state, int(target)) if target else None
        now = self.clock()
        if found is not None and found[0] in ("pending", "sending"):
            await self._store(outbox.unclaim, item.id, now + EDIT_TARGET_WAIT)
            self._schedule_wake(EDIT_TARGET_WAIT)
            return None
        ref = found[1] if found is not None and found[0] == "sent" else None
        if kind == "edit" and (ref is None or not self.editable):
            return "message", None
        if ref is None:
            await self._store(outbox.finish, item.id, "failed", "no target", now)
            return None
        return kind, ref

    async def _take_slot(self, item: outbox.Item) -> bool:
        """Wait for this message's send slot; False when it went back to the outbox."""
        chat_interval = self.transport.chat_interval(item.chat)
        while True:
            now = self.clock()
            wait = self.pacer.gate(item.chat, now, chat_interval, item.priority)
            if wait <= 0:
                break
            if wait > MAX_HOLD:
                await self._hand_back(item, now + wait)
                return False
            await self._sleep(wait)
        if not await self._turns.turn(item.priority):
            # A rate limit or an outage arrived while this message waited for its slot.
            await self._hand_back(item, max(self.pacer.halted_until, self.pacer.paused_until))
            return False
        self.pacer.take_chat(item.chat, self.clock(), chat_interval)
        return True

    async def _hand_back(self, item: outbox.Item, not_before: float) -> None:
        self.handed_back += 1
        await self._store(outbox.unclaim, item.id, not_before)
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
            self._turns.poke()
            await self._store(outbox.unclaim, item.id, now + err.retry_after, err.kind)
            self._schedule_wake(err.retry_after)
            return
        self._failing_chats.add(item.chat)
        recorded = ("maybe:" if err.maybe_sent else "") + err.kind
        if err.maybe_sent and item.priority == Priority.BULK and _was_maybe(item):
            # Bulk that may have arrived twice already is not tried a third time.
            self.failed += 1
            await self._store(outbox.finish, item.id, "maybe_sent", err.kind, now)
            return
        if len(self._failing_chats) >= OUTAGE_THRESHOLD or self._outage_backoff > 0:
            if now >= self.pacer.halted_until:
                self._outage_backoff = min(OUTAGE_MAX, max(OUTAGE_MIN, self._outage_backoff * 2))
                self.pacer.halt(now + self._outage_backoff * (0.8 + 0.4 * random.random()))
                self._turns.poke()
                log.warning("transport %s unavailable; pausing sends", self.transport.name)
            self.handed_back += 1
            await self._store(outbox.unclaim, item.id, self.pacer.halted_until, recorded)
            self._schedule_wake(self.pacer.halted_until - now)
            return
        if item.attempts >= MAX_ATTEMPTS:
            self.failed += 1
            await self._store(outbox.finish, item.id, "failed", err.kind, now)
            return
        self.retried += 1
        backoff = min(MAX_BACKOFF, BASE_BACKOFF * 2 ** (item.attempts - 1))
        delay = backoff * (0.5 + random.random())
        await self._store(outbox.retry_later, item.id, now + delay, recorded)
        self._schedule_wake(delay)

    async def _maybe_sent(self, item: outbox.Item, err: MaybeSent) -> None:
        now = self.clock()
        if err.retry_after is not None:
            self.rate_limited += 1
            self.pacer.rate_limited(err.retry_after, now)
            self._turns.poke()
        # Policy: a possible duplicate of an emergency is better than a lost one; for all else
        # a possible duplicate is worse than a possible loss, so the row stays for review.
        if item.priority == Priority.EMERGENCY and item.attempts < MAX_ATTEMPTS:
            delay = err.retry_after if err.retry_after is not None else BASE_BACKOFF
            self.retried += 1
            await self._store(outbox.retry_later, item.id, now + delay, "maybe:" + err.kind)
            self._schedule_wake(delay)
            return
        self.failed += 1
        await self._store(outbox.finish, item.id, "maybe_sent", err.kind, now)

    async def drain(self, grace: float) -> None:
        """Stop taking new rows and wait up to `grace` seconds for the ones in flight."""
        self._stopping = True
        self._wake.set()
        if self._active:
            await asyncio.wait(list(self._active), timeout=grace / self.time_scale)


def _nothing() -> None:
    return None


def _ignore(exc: BaseException) -> None:
    return None


def _was_maybe(item: outbox.Item) -> bool:
    return (item.error or "").startswith("maybe:")


def _untrusted(conn: Connection, item: outbox.Item, now: float, services: Services) -> None:
    outbox.unclaim(conn, item.id, outbox.HELD, "untrusted")
    ident = item.chat  # a Signal chat is the recipient's uuid
    guard.quarantine(conn, item.transport, ident, now, services)


def _gone(conn: Connection, item: outbox.Item, kind: str, now: float) -> None:
    outbox.finish(conn, item.id, "failed", kind, now)
    members.mark_unreachable(conn, item.transport, item.chat)
