"""The outbox engine: priorities, pacing under flood limits, pauses, outages, edits, gone chats.

Runs the real Dispatcher on the real encrypted store with an in-process transport that keeps
Telegram-like token buckets. Time is simulated (`ScaledClock`), so nothing sleeps for long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bot.app import default_producers
from bot.dispatcher import MAX_ATTEMPTS, OUTAGE_MAX, Dispatcher
from bot.messages import Priority
from bot.pacing import GLOBAL_CATCH_UP, PAUSED_REPLY_INTERVAL, Pacer
from bot.transports.base import Limits, MaybeSent
from storage import members, outbox
from storage.db import StoreError
from storage.outbox import TERMINAL
from storage.store import Store
from tests.fakes.memory_transport import Flood, MemoryTransport, ScaledClock


def put(
    store: Store,
    chat: str,
    text: str,
    priority: int = Priority.BULK,
    *,
    transport: str = "fake",
    now: float = 0.0,
    **body: Any,
) -> int:
    def go(conn: Any) -> int:
        row = outbox.enqueue(
            conn, transport=transport, chat=chat, body={"text": text, **body},
            priority=priority, now=now,
        )  # fmt: skip
        assert row is not None
        return row

    return store.db.run_sync(go)


def states(store: Store) -> dict[str, int]:
    rows = store.db.run_sync(
        lambda c: c.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
    )
    return dict(rows)


async def run_until(
    dispatcher: Dispatcher, done: Callable[[], bool], *, limit: float = 20.0
) -> None:
    """Run the dispatcher until `done()` (checked often), at most `limit` real seconds."""
    task = asyncio.create_task(dispatcher.run())
    try:
        async with asyncio.timeout(limit):
            while not done():
                await asyncio.sleep(0.005)
    finally:
        await dispatcher.drain(1.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def make(
    store: Store,
    *,
    scale: float = 20.0,
    limits: Limits | None = None,
    flood: Flood | None = None,
    **kw: Any,
) -> tuple[Dispatcher, MemoryTransport, ScaledClock]:
    clock = ScaledClock(scale)
    transport = MemoryTransport(
        clock=clock, limits=limits or Limits(per_second=30, in_flight=8), flood=flood, **kw
    )
    return (
        Dispatcher(store.db, transport, clock, producers=default_producers(), time_scale=scale),
        transport,
        clock,
    )


def test_pacer_never_exceeds_global_or_chat_rate() -> None:
    pacer = Pacer(per_second=30, per_chat_per_second=1, chat_burst=3)
    now, times = 0.0, []
    for i in range(300):
        chat = "same" if i % 10 == 0 else f"c{i}"
        while True:  # what a send does: its chat's gate, then its turn for a global slot
            wait = pacer.gate(chat, now) or pacer.global_wait(now)
            if wait == 0:
                pacer.take_global(now)
                pacer.take_chat(chat, now)
                times.append((now, chat))
                break
            now += wait
    # Overall: a token bucket of 30/s whose burst is the catch-up tolerance never runs dry.
    burst = 1 + GLOBAL_CATCH_UP * 30
    tokens, last = burst, 0.0
    for t in sorted(t for t, _ in times):
        tokens = min(burst, tokens + (t - last) * 30)
        last = t
        assert tokens >= 1 - 1e-9
        tokens -= 1
    assert times[-1][0] >= (300 - burst) / 30  # and the long-run rate is the limit
    # The chat's token bucket (1/s, burst 3, as Telegram's fake keeps it) never runs dry.
    tokens, last = 3.0, 0.0
    for t in sorted(t for t, c in times if c == "same"):
        tokens = min(3.0, tokens + (t - last))
        last = t
        assert tokens >= 1 - 1e-9
        tokens -= 1


def test_pause_holds_bulk_but_replies_keep_a_budget() -> None:
    pacer = Pacer(per_second=30, per_chat_per_second=1, chat_burst=3)
    pacer.pause(60, now=0.0)
    assert pacer.gate("a", 1.0, priority=Priority.BULK) == pytest.approx(59.0)
    assert pacer.blocked(Priority.BULK, 1.0) and not pacer.blocked(Priority.REPLY, 1.0)
    assert pacer.gate("b", 1.0, priority=Priority.REPLY) == 0
    assert pacer.global_wait(1.0, Priority.REPLY) == 0
    pacer.take_global(1.0)
    # The budget: one reply per PAUSED_REPLY_INTERVAL while bulk is paused.
    assert pacer.global_wait(1.0, Priority.REPLY) == pytest.approx(PAUSED_REPLY_INTERVAL)


async def test_emergency_and_replies_overtake_bulk(store: Store) -> None:
    for i in range(200):
        put(store, f"c{i}", f"bulk {i}")
    put(store, "urgent", "emergency", Priority.EMERGENCY)
    put(store, "asker", "reply", Priority.REPLY)
    dispatcher, transport, _ = make(store)
    await run_until(dispatcher, lambda: len(transport.deliveries) >= 202)
    order = [d.chat for d in transport.deliveries]
    assert order[:2] == ["urgent", "asker"]
    assert transport.duplicates() == 0


async def test_paced_at_the_limit_without_a_single_429(store: Store) -> None:
    """Flood limits ON (30/s overall, 1/s per chat after a burst of 3): zero 429s, and the
    broadcast runs close to the limit. A chat with many messages does not slow the others."""
    for i in range(240):
        put(store, f"c{i}", f"m{i}")
    for i in range(12):
        put(store, "busy", f"chatty {i}", Priority.REPLY)
    dispatcher, transport, _ = make(store, scale=5, flood=Flood(per_second=30, burst=30))
    await run_until(dispatcher, lambda: len(transport.deliveries) >= 252)
    assert transport.rate_limited == 0
    # How close to the limit it runs is a speed figure, measured by bench/broadcast.py side by
    # side; here only what pacing guarantees on any machine: no 429 and per-chat spacing.
    busy = [d.at for d in transport.deliveries if d.chat == "busy"]
    assert busy[-1] - busy[0] >= 12 - 3 - 1  # 1/s after the burst
    assert states(store) == {"sent": 252}


async def test_rate_limit_pauses_bulk_while_replies_flow(store: Store) -> None:
    """A 429 (or Signal's rate limit) with retry_after suspends bulk; a reply written during the
    pause still goes out long before it ends."""
    for i in range(50):
        put(store, f"c{i}", f"bulk {i}")
    dispatcher, transport, clock = make(store, scale=20)
    transport.storm_left = 1
    transport.storm_retry_after = 60.0
    task = asyncio.create_task(dispatcher.run())
    try:
        async with asyncio.timeout(10):
            while transport.injected == 0:
                await asyncio.sleep(0.005)
            paused_at = clock()
            put(store, "asker", "your answer", Priority.REPLY)
            dispatcher.wake()
            while not transport.texts_to("asker"):
                await asyncio.sleep(0.005)
            assert clock() - paused_at < 30  # the pause lasts 60
            bulk_during_pause = [
                d for d in transport.deliveries if d.chat != "asker" and d.at < paused_at + 59
            ]
            assert len(bulk_during_pause) <= 8  # only those already past their slot
            while len(transport.deliveries) < 51:
                await asyncio.sleep(0.01)
    finally:
        await dispatcher.drain(1)
        task.cancel()
    assert transport.duplicates() == 0
    assert states(store) == {"sent": 51}


async def test_outage_costs_no_attempts_and_resumes_promptly(store: Store) -> None:
    for i in range(60):
        put(store, f"c{i}", f"m{i}")
    dispatcher, transport, clock = make(store, scale=20)
    transport.down_until = clock() + 60.0
    await run_until(dispatcher, lambda: len(transport.deliveries) >= 60)
    first = min(d.at for d in transport.deliveries)
    assert first - transport.down_until <= OUTAGE_MAX * 1.2 + 3
    assert states(store) == {"sent": 60}
    attempts = store.db.run_sync(lambda c: c.execute("SELECT max(attempts) FROM outbox").fetchone())
    assert attempts[0] <= 3
    assert transport.duplicates() == 0


async def test_recipient_gone_marks_identity_unreachable(store: Store) -> None:
    def seed(conn: Any) -> int:
        m = members.create(
            conn, role="activist", transport="fake", address="u1", chat="gone", now=0
        )
        return m.id

    mid = store.db.run_sync(seed)
    put(store, "gone", "hello")
    put(store, "fine", "hello")
    dispatcher, transport, _ = make(store)
    transport.gone.add("gone")
    await run_until(dispatcher, lambda: sum(states(store).get(s, 0) for s in TERMINAL) == 2)
    assert states(store) == {"sent": 1, "failed": 1}
    ident = store.db.run_sync(members.identities, mid)
    assert not ident[0].reachable


async def test_edit_waits_for_its_target_and_degrades_without_edit(store: Store) -> None:
    target = put(store, "coord", "progress 0%", Priority.BULK)
    put(store, "coord", "progress 50%", Priority.REPLY, kind="edit", target=target)
    dispatcher, transport, _ = make(store)
    await run_until(dispatcher, lambda: len(transport.deliveries) >= 2)
    kinds = [(d.kind, d.text) for d in transport.deliveries]
    assert kinds == [("message", "progress 0%"), ("edit", "progress 50%")]

    put(store, "coord", "progress 100%", Priority.REPLY, kind="edit", target=target)
    dispatcher, transport, _ = make(store, can_edit=False)
    await run_until(dispatcher, lambda: len(transport.deliveries) >= 1)
    assert [(d.kind, d.text) for d in transport.deliveries] == [("message", "progress 100%")]


async def test_bulk_timeout_retried_once_then_maybe_sent(store: Store) -> None:
    put(store, "a", "bulk")
    put(store, "b", "alert", Priority.ALERT)
    for i in range(40):
        put(store, f"ok{i}", "fine")
    dispatcher, transport, _ = make(store, scale=200)
    transport.timeout_chats = {"a", "b"}  # every send arrives but the answer is lost
    await run_until(
        dispatcher, lambda: states(store).get("failed", 0) + states(store).get("maybe_sent", 0) >= 2
    )
    assert transport.texts_to("a") == ["bulk", "bulk"]  # at most one duplicate for bulk
    assert len(transport.texts_to("b")) == MAX_ATTEMPTS  # alerts keep trying: twice beats never
    assert states(store) == {"sent": 40, "maybe_sent": 1, "failed": 1}
    assert dispatcher.pacer.halted_until == 0  # two failing chats are not an outage


async def test_signal_maybe_sent_is_not_retried_except_emergencies(store: Store) -> None:
    put(store, "a", "bulk")
    put(store, "e", "emergency", Priority.EMERGENCY)
    dispatcher, transport, _ = make(store, scale=100)
    calls: list[str] = []
    original = transport.send

    async def flaky(out: Any) -> str | None:
        calls.append(out.chat)
        if calls.count(out.chat) == 1:
            raise MaybeSent("signal-429", retry_after=5)
        return await original(out)

    transport.send = flaky  # type: ignore[method-assign]
    await run_until(dispatcher, lambda: len(transport.deliveries) >= 1, limit=10)
    assert states(store) == {"maybe_sent": 1, "sent": 1}
    assert transport.texts_to("e") == ["emergency"]
    assert dispatcher.pacer.interval > dispatcher.pacer.base_interval  # slowed down


async def test_stale_message_expires(store: Store) -> None:
    put(store, "late", "yesterday's vigil", now=1.0)
    dispatcher, transport, _ = make(store)
    await run_until(dispatcher, lambda: states(store).get("failed", 0) == 1)
    assert store.db.run_sync(lambda c: c.execute("SELECT error FROM outbox").fetchone()[0]) == (
        "expired"
    )
    assert transport.deliveries == []


async def test_a_reply_written_during_a_broadcast_takes_the_next_slot(store: Store) -> None:
    """In simulated time, at 30/s with 16 in flight: between the moment a reply is written and
    the moment it goes out, at most a couple of bulk messages (those already past their slot)
    may leave. Booking slots ahead let ~16 go first (issue 15)."""
    for i in range(300):
        put(store, f"c{i}", f"bulk {i}")
    dispatcher, transport, _ = make(
        store, scale=5, limits=Limits(per_second=30, in_flight=16), flood=Flood()
    )
    task = asyncio.create_task(dispatcher.run())
    ahead: list[int] = []
    try:
        async with asyncio.timeout(20):
            for round_ in range(5):
                while len(transport.deliveries) < 40 * (round_ + 1):
                    await asyncio.sleep(0.005)
                before = len(transport.deliveries)
                put(store, f"asker{round_}", "your answer", Priority.REPLY)
                dispatcher.wake()
                while not transport.texts_to(f"asker{round_}"):
                    await asyncio.sleep(0.002)
                at = [d.chat for d in transport.deliveries].index(f"asker{round_}")
                ahead.append(at - before)
    finally:
        await dispatcher.drain(1)
        task.cancel()
    assert max(ahead) <= 3, ahead
    assert transport.rate_limited == 0
    assert len(dispatcher._bulk) <= dispatcher.bulk_cap < dispatcher.in_flight


class FullDisk:
    """The store refuses writes of the named kinds while `full`, as SQLite does when the disk
    is full: the writer job fails with the StoreError the writer raises for a failed commit."""

    def __init__(self, store: Store, kinds: set[str]) -> None:
        self.full = True
        self.kinds = kinds
        self.refused = 0
        db = store.db
        real = db.submit

        def submit(fn: Any, *args: Any) -> Any:
            name = getattr(fn, "__name__", "")
            if self.full and name in self.kinds:
                self.refused += 1

                def refuse(conn: Any, *a: Any) -> None:
                    raise StoreError("the database refused the write")

                return real(refuse)
            return real(fn, *args)

        db.submit = submit  # type: ignore[method-assign]


async def test_claims_refused_by_a_full_disk_resume_by_themselves(store: Store) -> None:
    for i in range(20):
        put(store, f"c{i}", f"m{i}", Priority.REPLY)
    disk = FullDisk(store, {"_claim", "next_due"})
    dispatcher, transport, _ = make(store, scale=20)
    faults: list[str] = []
    dispatcher.on_fault = lambda exc: faults.append(type(exc).__name__)
    recovered: list[bool] = []
    dispatcher.on_recovered = lambda: recovered.append(True)
    task = asyncio.create_task(dispatcher.run())
    try:
        async with asyncio.timeout(20):
            while disk.refused < 5:
                await asyncio.sleep(0.005)
            assert not task.done(), "the loop died on a store error"
            assert transport.deliveries == []
            disk.full = False
            while len(transport.deliveries) < 20:
                await asyncio.sleep(0.005)
    finally:
        await dispatcher.drain(1)
        task.cancel()
    assert set(faults) == {"StoreError"} and recovered
    assert transport.duplicates() == 0
    assert states(store) == {"sent": 20}


async def test_a_send_whose_outcome_cannot_be_stored_is_not_sent_again(store: Store) -> None:
    """The platform took the message, the disk is full: the sent mark waits for space, the
    message is neither repeated nor lost, and the send keeps its in-flight slot meanwhile."""
    for i in range(6):
        put(store, f"c{i}", f"m{i}", Priority.REPLY)
    disk = FullDisk(store, {"mark_sent_many"})
    dispatcher, transport, _ = make(store, scale=20, limits=Limits(per_second=30, in_flight=4))
    task = asyncio.create_task(dispatcher.run())
    try:
        async with asyncio.timeout(20):
            while disk.refused < 8:
                await asyncio.sleep(0.005)
            # Only the window went out: the other rows wait for a slot the unrecorded hold.
            assert len(transport.deliveries) == dispatcher.in_flight
            assert len(dispatcher._active) == dispatcher.in_flight
            disk.full = False
            while states(store).get("sent", 0) < 6:
                await asyncio.sleep(0.005)
    finally:
        await dispatcher.drain(1)
        task.cancel()
    assert transport.duplicates() == 0 and len(transport.deliveries) == 6
