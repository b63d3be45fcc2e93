"""Fault tests of a broadcast: kill -9 at random points, a 60-second outage, a storm of 429s.

Each counts, from the platform's side (the in-process transport's record), the messages lost
and duplicated, and asserts the bounds the outbox promises:

* crash: nobody is skipped; duplicates per crash <= the dispatcher's in-flight window;
* outage: nothing lost, nothing duplicated, nothing failed, sending resumes within OUTAGE_MAX;
* 429 storm: nothing lost or duplicated, every retry_after honoured, and the pacing itself
  never provokes a 429 from the platform's flood buckets.

A crash is simulated in-process the way `kill -9` looks to the database: the writer thread's
queued work is dropped (never committed), the connection closes, and every task of the old
dispatcher dies mid-await, including sends the platform already has but that were not yet
marked sent. The store is then unlocked again and a new dispatcher resumes, as `vigil run`
does at start (`recover_in_flight`). Time is simulated (`ScaledClock`), so the 60-second outage
takes about two seconds.
"""

from __future__ import annotations

import asyncio
import queue
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bot.app import default_producers
from bot.dispatcher import OUTAGE_MAX, Dispatcher
from bot.transports.base import Limits, RetryLater
from bot.transports.telegram import TelegramTransport
from storage import outbox
from storage.store import Store, unlock
from tests.fakes.memory_transport import Flood, MemoryTransport, ScaledClock
from tests.harness import PASSPHRASE, ChatHarness

PRODUCERS = default_producers()


def seed_network(store: Store, n: int, *, transport: str = "fake") -> None:
    def go(conn: Any) -> None:
        conn.executemany(
            "INSERT INTO members (role, language, created_at, vetted) "
            "VALUES ('activist', 'en', 0, 1)",
            [()] * n,
        )
        conn.execute(
            "INSERT INTO identities (transport, address, member_id, chat, created_at) "
            "SELECT ?, 'u' || id, id, 'c' || id, 0 FROM members WHERE role = 'activist'",
            (transport,),
        )

    store.db.run_sync(go)


def start_broadcast(store: Store, clock: Any, text: str) -> int:
    chat = ChatHarness(store)
    chat.clock.now = clock()
    chat.member("coord", "coordinator", transport="fake")
    assert "Broadcast #" in chat.say("coord", f"/broadcast all {text}", transport="fake")
    chat.send("coord", "/confirm", transport="fake")
    return store.db.run_sync(lambda c: c.execute("SELECT max(id) FROM broadcasts").fetchone()[0])


def crash(store: Store, dispatcher: Dispatcher, task: asyncio.Task[None]) -> int:
    """kill -9: queued database work never commits; every task stops where it is."""
    db = store.db
    dropped = 0
    while True:
        try:
            db._queue.get_nowait()
        except queue.Empty:
            break
        dropped += 1
    db.close()  # the batch being written, if any, is the last commit before the kill
    for t in [task, *dispatcher._active]:
        t.cancel()
    return dropped


def broadcast_rows(store: Store, bid: int) -> dict[str, int]:
    rows = store.db.run_sync(
        lambda c: c.execute(
            "SELECT state, count(*) FROM outbox WHERE broadcast_id = ? GROUP BY state", (bid,)
        ).fetchall()
    )
    counters = store.db.run_sync(
        lambda c: c.execute(
            "SELECT materialised, sent_count, failed_count + maybe_count + cancelled_count "
            "FROM broadcasts WHERE id = ?",
            (bid,),
        ).fetchone()
    )
    counts = dict(rows)
    # The fan-out's counters agree with its rows, crashes or not.
    assert counters == (
        sum(counts.values()),
        counts.get("sent", 0),
        sum(counts.get(s, 0) for s in ("failed", "maybe_sent", "cancelled")),
    )
    return counts


def recipients_seen(transport: MemoryTransport, text: str) -> dict[str, int]:
    seen: dict[str, int] = {}
    for d in transport.deliveries:
        if d.text == text:
            seen[d.chat] = seen.get(d.chat, 0) + 1
    return seen


async def wait_for(predicate: Any, limit: float = 30.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():
            await asyncio.sleep(0.002)


async def test_kill_at_random_points_of_a_5000_broadcast(data_dir: Path, store: Store) -> None:
    n, in_flight, crashes = 5000, 16, 4
    seed_network(store, n)
    clock = ScaledClock(1.0)
    text = "Hearing moved to Monday 10:00, court 3"
    bid = start_broadcast(store, clock, text)
    limits = Limits(per_second=20_000, per_chat_per_second=1000, chat_burst=10, in_flight=in_flight)
    # Latency on both sides of the platform's "receipt": a crash can fall before the message
    # arrives (not delivered, resent: fine) or after it but before the answer (a duplicate).
    transport = MemoryTransport(clock=clock, limits=limits, latency=0.0005)
    original_send = transport.send

    async def send_with_answer_latency(out: Any) -> str | None:
        ref = await original_send(out)
        await asyncio.sleep(0.001)
        return ref

    transport.send = send_with_answer_latency  # type: ignore[method-assign]
    rng = random.Random(20260921)
    points = sorted(rng.sample(range(200, n - 200), crashes))
    current = store
    for point in points:
        await asyncio.sleep(0)
        dispatcher = Dispatcher(current.db, transport, clock, producers=PRODUCERS)
        await current.db.run(outbox.recover_in_flight)
        task = asyncio.create_task(dispatcher.run())
        await wait_for(lambda p=point: len(transport.deliveries) >= p)
        crash(current, dispatcher, task)
        await asyncio.gather(task, *dispatcher._active, return_exceptions=True)
        current = unlock(data_dir, PASSPHRASE)  # the restart
    dispatcher = Dispatcher(current.db, transport, clock, producers=PRODUCERS)
    await current.db.run(outbox.recover_in_flight)
    task = asyncio.create_task(dispatcher.run())

    def finished() -> bool:
        return any(d.chat == "coord" and "finished" in d.text for d in transport.deliveries)

    try:
        await wait_for(finished, limit=60)
    finally:
        await dispatcher.drain(1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    seen = recipients_seen(transport, text)
    expected = {f"c{i}" for i in range(1, n + 1)} | {"coord"}
    lost = expected - set(seen)
    duplicates = sum(k - 1 for k in seen.values())
    print(f"\n5000-recipient broadcast, {crashes} kills: lost {len(lost)}, duplicated {duplicates}")
    assert not lost
    assert duplicates <= in_flight * crashes
    assert broadcast_rows(current, bid) == {"sent": n + 1}
    summary = [d.text for d in transport.deliveries if d.chat == "coord" and "finished" in d.text]
    assert len(summary) == 1 and f"{n + 1} sent" in summary[0]
    current.close()


async def test_sixty_second_outage_loses_nothing(store: Store) -> None:
    n, scale = 1000, 20.0
    seed_network(store, n)
    clock = ScaledClock(scale)
    text = "Vigil tonight at 19:00"
    bid = start_broadcast(store, clock, text)
    transport = MemoryTransport(
        clock=clock,
        limits=Limits(per_second=100, in_flight=8),
        flood=Flood(per_second=100, burst=100),
    )
    dispatcher = Dispatcher(store.db, transport, clock, producers=PRODUCERS, time_scale=scale)
    task = asyncio.create_task(dispatcher.run())
    try:
        await wait_for(lambda: len(transport.deliveries) >= 200)
        outage_start = clock()
        transport.down_until = outage_start + 60.0  # connection refused for 60 s
        await wait_for(lambda: len(recipients_seen(transport, text)) >= n + 1, limit=30)
    finally:
        await dispatcher.drain(1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    seen = recipients_seen(transport, text)
    after = [d.at for d in transport.deliveries if d.at >= transport.down_until]
    resumed_after = min(after) - transport.down_until
    duplicates = sum(k - 1 for k in seen.values())
    print(
        f"\n60 s outage: lost 0 of {n + 1}, duplicated {duplicates}, resumed {resumed_after:.1f} s"
    )
    assert len(seen) == n + 1 and duplicates == 0
    assert resumed_after <= OUTAGE_MAX * 1.2 + 3
    counts = broadcast_rows(store, bid)
    assert counts == {"sent": n + 1}
    attempts = store.db.run_sync(
        lambda c: c.execute("SELECT max(attempts) FROM outbox WHERE broadcast_id = ?", (bid,))
    ).fetchone()[0]
    assert attempts <= 3  # an outage spends no attempts beyond the ones that revealed it
    assert transport.rate_limited == 0


async def test_storm_of_429s(store: Store) -> None:
    n, scale = 1000, 20.0
    seed_network(store, n)
    clock = ScaledClock(scale)
    text = "Letters evening on Thursday"
    bid = start_broadcast(store, clock, text)
    transport = MemoryTransport(
        clock=clock,
        limits=Limits(per_second=30, in_flight=8),
        flood=Flood(per_second=30, burst=30),
    )
    dispatcher = Dispatcher(store.db, transport, clock, producers=PRODUCERS, time_scale=scale)
    answered: list[float] = []
    original = transport.send

    storm: list[float] = []  # [start, end) in simulated time, set once 100 are out

    async def storming(out: Any) -> str | None:
        # A storm: for 20 simulated seconds every request is answered 429, retry_after 1-3 s.
        if not storm and len(transport.deliveries) >= 100:
            storm[:] = [clock(), clock() + 20.0]
        if storm and storm[0] <= clock() < storm[1]:
            transport.injected += 1
            answered.append(clock())
            raise RetryLater("429", float(rng.randint(1, 3)))
        return await original(out)

    rng = random.Random(7)
    transport.send = storming  # type: ignore[method-assign]
    task = asyncio.create_task(dispatcher.run())
    try:
        await wait_for(lambda: len(recipients_seen(transport, text)) >= n + 1, limit=60)
    finally:
        await dispatcher.drain(1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    seen = recipients_seen(transport, text)
    duplicates = sum(k - 1 for k in seen.values())
    print(
        f"\n429 storm: {transport.injected} injected 429s, lost 0 of {n + 1}, "
        f"duplicated {duplicates}, flood 429s provoked {transport.rate_limited}"
    )
    assert 5 <= transport.injected <= 8 * 21  # in-flight requests per retry_after, no more
    assert len(seen) == n + 1 and duplicates == 0
    assert transport.rate_limited == 0
    assert broadcast_rows(store, bid) == {"sent": n + 1}


def test_kill_9_of_vigil_run_mid_broadcast(tmp_path: Path) -> None:
    """The operator's view: `vigil run` against the Telegram fake (flood limits on) is killed
    with SIGKILL mid-broadcast and started again. Every supporter gets the message, at most
    the in-flight window twice, and Telegram's flood control is never provoked."""
    from storage import members
    from tests.e2e import vigil_process
    from tests.fakes.telegram_api import FakeTelegram, FloodLimits

    n, coordinator, first = 240, 4_200_000_001, 5_000_000_000
    text = "Court hearing moved: Monday 10:00, room 3. Please come."
    with FakeTelegram.in_thread(flood=FloodLimits()) as fake:
        fake.register_user(coordinator, "Cora")
        for i in range(n):
            fake.register_user(first + i, "Supporter")
        env = {"VIGIL_TELEGRAM_TOKEN": fake.token, "VIGIL_TELEGRAM_API_URL": fake.base_url}
        with vigil_process(tmp_path, env, start=False, log_level="INFO") as v:
            store = unlock(v.data_dir, v.passphrase)

            def seed(conn: Any) -> None:
                members.create(
                    conn, role="coordinator", transport="telegram", address=str(coordinator),
                    chat=str(coordinator), now=0,
                )  # fmt: skip
                for i in range(n):
                    members.create(
                        conn, role="activist", transport="telegram", address=str(first + i),
                        chat=str(first + i), now=0,
                    )  # fmt: skip

            store.db.run_sync(seed)
            store.close()
            v.start()

            def delivered() -> list[Any]:
                return [m for m in fake.sent() if m.text == text]

            preview = fake.user_sends(coordinator, f"/broadcast all {text}")
            assert "241 people" in fake.next_sent(coordinator, 15, after=preview.message_id).text
            fake.user_sends(coordinator, "/confirm")
            deadline = time.monotonic() + 30
            while len(delivered()) < n // 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            before_kill = len(delivered())
            assert 0 < before_kill < n + 1
            v.kill()  # SIGKILL: no drain
            v.start()

            def summary() -> list[str]:
                return [
                    m.text or "" for m in fake.sent(coordinator) if "finished" in (m.text or "")
                ]

            deadline = time.monotonic() + 60
            while not summary() and time.monotonic() < deadline:
                time.sleep(0.1)
            got = Counter(m.chat_id for m in delivered())
            lost = {first + i for i in range(n)} | {coordinator}
            lost -= set(got)
            duplicates = sum(k - 1 for k in got.values())
            print(
                f"\nvigil run killed after {before_kill}/{n + 1}: lost {len(lost)}, "
                f"duplicated {duplicates}, flood 429s {fake.stats.flood_429}"
            )
            assert not lost
            assert duplicates <= TelegramTransport.limits.in_flight
            assert summary() and f"{n + 1} sent" in summary()[0]
            assert fake.stats.flood_429 == 0 and fake.stats.early_retries == 0
            v.assert_no_tracebacks()
