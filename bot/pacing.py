"""Send slots: the platform's global and per-chat rates, pauses and halts, most urgent first.

Pacing is by schedule rather than by bursts: each send takes the next free slot of a global
clock (1/rate apart) and of its chat's clock (GCRA: a chat may run `chat_burst` messages ahead
of its steady rate), so the platform's flood control is never provoked.

Global slots are handed out at the moment they come due, not reserved ahead: senders that
wait for one queue in `SlotQueue` by priority, so an interactive reply or an emergency takes
the very next slot however many bulk sends are waiting. The old way had every claimed send
book the next free slot when it was claimed. With 16 bulk sends in flight during a
broadcast at 30/s, a reply found the next half second already booked, and waited ~670 ms
(issue 15).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from bot.messages import Priority

CHAT_MARGIN = 1.1  # per-chat pacing runs 10% under the platform's limit
GLOBAL_CATCH_UP = 0.1  # seconds of missed global slots a late send may still use
PAUSED_REPLY_INTERVAL = 2.0  # replies' budget while bulk is paused by a rate limit
SLOWDOWN = 2.0  # rate divided by this on a rate-limit answer ...
MAX_SLOWDOWN = 16.0  # ... down to 1/16 of the configured rate
RECOVERY = 0.95  # interval multiplied by this per success, back to the configured rate


class Pacer:
    """Global and per-chat send slots, pauses for rate limits, halts for outages. Pure: every
    method takes `now`, nothing here sleeps."""

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

    def _chat_rule(self, chat_interval: float | None) -> tuple[int, float]:
        burst = self.chat_burst if chat_interval is None else 1
        # A margin over the platform's per-chat rate: messages leave on schedule but reach the
        # platform with jitter (a cold connection is slower than a warm one), and a schedule
        # exactly at the limit then lands just inside it.
        return burst, (chat_interval or self.chat_interval) * CHAT_MARGIN

    def gate(
        self,
        chat: str,
        now: float,
        chat_interval: float | None = None,
        priority: int = Priority.REPLY,
    ) -> float:
        """Seconds until this message may queue for a global slot (0: now), set by its chat's
        schedule, a rate-limit pause (priority >= ALERT) or an outage halt. `chat_interval`
        overrides the chat's rate, without burst (Telegram groups: 20/min)."""
        burst, interval = self._chat_rule(chat_interval)
        tat = self._chat_next.get(chat, now)
        gate = max(now, self.halted_until, tat - (burst - 1) * interval)
        if priority > Priority.REPLY:
            gate = max(gate, self.paused_until)
        return gate - now

    def blocked(self, priority: int, now: float) -> bool:
        """A halt, or a pause for this priority: a sender waiting for a slot gives up."""
        return self.halted_until > now or (priority > Priority.REPLY and self.paused_until > now)

    def global_wait(self, now: float, priority: int = Priority.REPLY) -> float:
        """Seconds until the next global slot; during a pause replies keep a small budget."""
        wait = self._next_global - self.catch_up - now
        if priority <= Priority.REPLY and self.paused_until > now:
            wait = max(wait, self._reply_next - now)
        return max(0.0, wait)

    def take_global(self, now: float) -> None:
        """Use the global slot that `global_wait` said is free."""
        self._next_global = max(now, self._next_global) + self.interval
        if self.paused_until > now:
            self._reply_next = now + PAUSED_REPLY_INTERVAL

    def take_chat(self, chat: str, now: float, chat_interval: float | None = None) -> None:
        """Use the chat's slot that `gate` said is free."""
        _, interval = self._chat_rule(chat_interval)
        tat = self._chat_next.get(chat, now)
        self._chat_next[chat] = max(tat, now) + interval
        if len(self._chat_next) > 50_000:
            self._chat_next = {c: t for c, t in self._chat_next.items() if t > now}

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


class SlotQueue:
    """Hands out the pacer's global slots as they come due, lowest priority value first
    (emergency, reply, alert, bulk), in arrival order within a priority."""

    def __init__(self, pacer: Pacer, clock: Callable[[], float], time_scale: float = 1.0) -> None:
        self.pacer = pacer
        self.clock = clock
        self.time_scale = time_scale
        self._waiting: list[tuple[int, int, asyncio.Future[bool]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    async def turn(self, priority: int) -> bool:
        """Wait for a global slot. True: it is taken for this sender, send now. False: a halt
        or a pause for this priority came first; nothing was taken."""
        now = self.clock()
        if self.pacer.blocked(priority, now):
            return False
        if not self._waiting and self.pacer.global_wait(now, priority) == 0:
            self.pacer.take_global(now)
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), future))
        self._arm(0.0 if len(self._waiting) == 1 else None)
        return await future  # a cancelled waiter is skipped when its turn comes

    def poke(self) -> None:
        """A pause or halt began: let the waiters it concerns go at once."""
        if self._waiting:
            self._arm(0.0)

    def _arm(self, delay: float | None) -> None:
        if delay is None:
            if self._timer is not None:
                return
            delay = self.pacer.global_wait(self.clock(), self._waiting[0][0])
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay / self.time_scale, self._grant)

    def _grant(self) -> None:
        self._timer = None
        now = self.clock()
        while self._waiting:
            priority, _, future = self._waiting[0]
            if future.done():  # its sender was cancelled
                heapq.heappop(self._waiting)
                continue
            if self.pacer.blocked(priority, now):
                heapq.heappop(self._waiting)
                future.set_result(False)
                continue
            if self.pacer.global_wait(now, priority) > 0:
                break
            heapq.heappop(self._waiting)
            self.pacer.take_global(now)
            future.set_result(True)
        if self._waiting:
            self._arm(self.pacer.global_wait(now, self._waiting[0][0]))
