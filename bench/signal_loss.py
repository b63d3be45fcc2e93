"""How many incoming Signal messages reach Vigil through the real signal-cli-rest-api.

signal-cli-rest-api (json-rpc mode) hands each notification of its signal-cli daemon to the
WebSocket writer without waiting: one that arrives while the writer is still busy with the
previous frame is lost (upstream #834, #419), and so is everything that arrives while no socket
is connected. This drives bursts of 10, 100 and 500 messages through the real REST layer in
`../shared/signal-cli-rest-api/` (upstream's Go binary in front of a scripted signal-cli daemon),
written back to back and with 1 ms and 5 ms between them, into

  vigil  Vigil's Signal transport (receive stream → bounded queue → intake → a counting store)
  bare   a bare WebSocket client that only counts frames (what any client could get)

one after the other, and prints, side by side, how many of each burst arrived. Then 10 messages
sent while no socket is connected (Vigil stopped), and the calls that hang for ever when the
daemon answers instantly (upstream's `getRaw` race; Vigil's deadline makes each a
maybe-sent retry instead of a stuck send).

    .venv/bin/python bench/signal_loss.py
    .venv/bin/python bench/signal_loss.py --bursts 10 100 --gaps 0 5 --hang-calls 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from websockets.asyncio.client import connect  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.messages import Incoming, Outgoing  # noqa: E402
from bot.transports.base import RetryLater  # noqa: E402
from bot.transports.signal import SignalTransport  # noqa: E402
from tests.signal_rest import RealSignal, sender_uuid, unavailable  # noqa: E402

SENDER = sender_uuid("bench sender")
QUIET = 1.5  # seconds without a new arrival that end a burst


def transport_for(layer: RealSignal, **kw: object) -> SignalTransport:
    settings = Settings(
        data_dir=Path("/nonexistent"), signal_api_url=layer.url, signal_number=layer.number
    )
    return SignalTransport(settings, backoff_base=0.05, backoff_max=0.5, **kw)  # type: ignore[arg-type]


async def settled(count: Callable[[], int], quiet: float = QUIET, most: float = 60.0) -> int:
    """The count once it stopped growing for `quiet` seconds."""
    last, since, began = count(), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - began < most:
        await asyncio.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last


async def ready(layer: RealSignal, arrived: Callable[[], int]) -> None:
    """Until a probe arrives: the REST layer subscribes a new socket just after the upgrade."""
    stamp = int(time.time() * 1000)
    before = arrived()
    while arrived() == before:
        await asyncio.to_thread(layer.user_sends, SENDER, "probe", timestamp=stamp)
        await asyncio.sleep(0.3)
    await settled(arrived, quiet=0.5)


def burst_bodies(layer: RealSignal, n: int, first_ts: int) -> list[dict[str, object]]:
    return [layer.envelope_body(SENDER, f"message {i}", timestamp=first_ts + i) for i in range(n)]


class Stamps:
    """Unique sender timestamps (a repeated one would be a replay, dropped by the inbox)."""

    def __init__(self) -> None:
        self.next = int(time.time() * 1000) + 10_000_000

    def take(self, n: int) -> int:
        first, self.next = self.next, self.next + n + 1
        return first


async def with_vigil(
    layer: RealSignal, work: Callable[[Callable[[], int]], Awaitable[list[int]]]
) -> list[int]:
    stored: list[Incoming] = []

    async def deliver(msg: Incoming) -> None:
        stored.append(msg)

    t = transport_for(layer)
    await t.start(deliver)
    try:
        await ready(layer, lambda: len(stored))
        return await work(lambda: len(stored))
    finally:
        await t.stop()
        await t.close()


async def with_bare(
    layer: RealSignal, work: Callable[[Callable[[], int]], Awaitable[list[int]]]
) -> list[int]:
    frames = 0

    async def reader(ws: object) -> None:
        nonlocal frames
        async for _ in ws:  # type: ignore[attr-defined]
            frames += 1

    url = layer.url.replace("http", "ws", 1) + f"/v1/receive/{layer.number}"
    async with connect(url, ping_interval=None, proxy=None, max_size=4 << 20) as ws:
        task = asyncio.create_task(reader(ws))
        try:
            await ready(layer, lambda: frames)
            return await work(lambda: frames)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def bursts(layer: RealSignal, sizes: list[int], gaps: list[float]) -> None:
    stamps = Stamps()
    cases = [(n, gap) for n in sizes for gap in gaps]

    async def run(count: Callable[[], int]) -> list[int]:
        got = []
        for n, gap in cases:
            before = count()
            bodies = burst_bodies(layer, n, stamps.take(n))
            await asyncio.to_thread(layer.inject_batch, bodies, gap)
            got.append(await settled(count) - before)
        return got

    vigil = await with_vigil(layer, run)
    bare = await with_bare(layer, run)
    print("\nIncoming bursts through the real signal-cli-rest-api (json-rpc mode)")
    print(f"{'burst':>6} {'gap':>6} | {'reach Vigil':>14} | {'reach a bare client':>20}")
    for (n, gap), v, b in zip(cases, vigil, bare, strict=True):
        print(
            f"{n:>6} {gap:>4.0f}ms | {v:>5}/{n:<4} {100 * v / n:>3.0f}% "
            f"| {b:>9}/{n:<4} {100 * b / n:>3.0f}%"
        )


async def while_disconnected(layer: RealSignal, n: int = 10) -> None:
    stamps = Stamps()
    stored: list[Incoming] = []

    async def deliver(msg: Incoming) -> None:
        stored.append(msg)

    first = stamps.take(n)
    for body in burst_bodies(layer, n, first):  # nobody connected: each is written and lost
        await asyncio.to_thread(layer._post, "/inject", body)
        await asyncio.sleep(0.01)
    t = transport_for(layer)
    await t.start(deliver)
    try:
        await ready(layer, lambda: len(stored))
        late = sum(1 for m in stored if m.text.startswith("message "))
    finally:
        await t.stop()
        await t.close()
    print(f"\n{n} messages sent while no socket was connected: {late} reached Vigil afterwards")


async def hung_calls(calls: int) -> None:
    layer = RealSignal.start(reply_delay_ms=0)
    try:
        t = transport_for(layer, send_timeout=1.0)
        outcomes: Counter[str] = Counter()
        began = time.monotonic()
        for i in range(calls):
            try:
                await t.send(Outgoing(transport="signal", chat=SENDER, text=f"call {i}"))
                outcomes["answered"] += 1
            except RetryLater as err:
                outcomes[("maybe sent: " if err.maybe_sent else "not sent: ") + err.kind] += 1
        took = time.monotonic() - began
        await t.close()
        reached = len(layer.sent())
    finally:
        layer.stop()
    print(
        f"\n{calls} sends with the daemon answering instantly (FAKE_REPLY_DELAY_MS=0), "
        f"{took:.1f} s in all; signal-cli received {reached}:"
    )
    for outcome, n in outcomes.most_common():
        print(f"  {n:>6}  {outcome}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bursts", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.0, 1.0, 5.0])
    parser.add_argument("--hang-calls", type=int, default=3000)
    args = parser.parse_args()
    reason = unavailable()
    if reason is not None:
        sys.exit(f"cannot run: {reason}")
    logging.basicConfig(level=logging.ERROR)
    layer = RealSignal.start()
    try:
        await bursts(layer, args.bursts, args.gaps)
        await while_disconnected(layer)
    finally:
        layer.stop()
    if args.hang_calls:
        await hung_calls(args.hang_calls)


if __name__ == "__main__":
    asyncio.run(main())
