"""An in-process transport for outbox tests and benchmarks: records every delivery, enforces
flood limits like Telegram (token buckets), and injects outages, 429 storms and blocked chats.

Time comes from a clock (tests use `ScaledClock`, which runs simulated time faster than the
event loop, so a 60-second outage takes a fraction of a second and nobody sleeps 60 s).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.messages import Outgoing
from bot.transports.base import Capabilities, Deliver, Limits, RecipientGone, RetryLater, Transport


class ScaledClock:
    """Simulated epoch seconds running `scale` times faster than the running event loop."""

    def __init__(self, scale: float = 1.0, start: float = 1_790_000_000.0) -> None:
        self.scale = scale
        self.start = start
        self._origin: float | None = None

    def __call__(self) -> float:
        real = time.monotonic()
        if self._origin is None:
            self._origin = real
        return self.start + (real - self._origin) * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)


class _Bucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Flood:
    """Token buckets as the Telegram fake keeps them: `burst` at once, then `rate`."""

    per_second: float = 30.0
    burst: float = 30.0
    per_chat_per_second: float = 1.0
    chat_burst: float = 3.0
    retry_after: float = 1.0


@dataclass
class Delivery:
    chat: str
    text: str
    outbox_id: int | None
    kind: str
    at: float


@dataclass
class MemoryTransport(Transport):
    clock: Callable[[], float] = time.time
    limits: Limits = field(default_factory=Limits)
    name: str = "fake"
    latency: float = 0.0  # simulated seconds per request (before the platform has it)
    flood: Flood | None = None
    can_edit: bool = True  # the test's knob; the dispatcher reads `capabilities`

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return Capabilities(edits=self.can_edit, buttons=True)

    def __post_init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.by_outbox: Counter[int] = Counter()
        self.rate_limited = 0  # 429s answered by the flood buckets
        self.injected = 0  # failures answered by fault injection
        self.down_until = 0.0  # outage: connection refused until then
        self.storm_left = 0  # answer this many sends with 429
        self.storm_retry_after = 1.0
        self.gone: set[str] = set()
        self.timeouts_left = 0  # deliver, then time out (the request left: maybe sent)
        self.timeout_chats: set[str] = set()  # the same, always, for these chats
        self._global: _Bucket | None = None
        self._chats: dict[str, _Bucket] = {}
        self._refs = itertools.count(1)
        self.scale = getattr(self.clock, "scale", 1.0)

    async def start(self, deliver: Deliver) -> None:
        return None

    async def stop(self) -> None:
        return None

    def _flood_ok(self, chat: str, now: float) -> bool:
        f = self.flood
        if f is None:
            return True
        if self._global is None:
            self._global = _Bucket(f.per_second, f.burst, now)
        bucket = self._chats.get(chat)
        if bucket is None:
            bucket = self._chats[chat] = _Bucket(f.per_chat_per_second, f.chat_burst, now)
        # Both must have a token; taking from one only when both do keeps the count honest.
        g_ok = self._global.take(now)
        c_ok = bucket.take(now)
        if g_ok and not c_ok:
            self._global.tokens += 1.0
        if c_ok and not g_ok:
            bucket.tokens += 1.0
        return g_ok and c_ok

    async def send(self, out: Outgoing) -> str | None:
        if self.latency:
            await asyncio.sleep(self.latency / self.scale)
        now = self.clock()
        if now < self.down_until:
            self.injected += 1
            raise RetryLater("connect")
        if self.storm_left > 0:
            self.storm_left -= 1
            self.injected += 1
            raise RetryLater("429", self.storm_retry_after)
        if out.chat in self.gone:
            raise RecipientGone("blocked")
        if not self._flood_ok(out.chat, now):
            self.rate_limited += 1
            assert self.flood is not None
            raise RetryLater("429", self.flood.retry_after)
        self.deliveries.append(Delivery(out.chat, out.text, out.outbox_id, out.kind, now))
        if out.outbox_id is not None:
            self.by_outbox[out.outbox_id] += 1
        if out.chat in self.timeout_chats or self.timeouts_left > 0:
            self.timeouts_left = max(0, self.timeouts_left - 1)
            self.injected += 1
            raise RetryLater("timeout", maybe_sent=True)
        return str(next(self._refs))

    # -- what the platform saw ----------------------------------------------------------

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.by_outbox.values() if n > 1)

    def texts_to(self, chat: str) -> list[str]:
        return [d.text for d in self.deliveries if d.chat == chat]
