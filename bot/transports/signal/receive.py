"""Reading signal-cli-rest-api's receive stream into a bounded queue of frames.

* Mode from `GET /v1/about`. `json-rpc`: one WebSocket on `/v1/receive/{number}`, our own
  keepalive pings (the server pings every 54 s but never times a client out), a watchdog that
  reconnects when neither a frame nor a pong arrived for `silence_timeout`, and an immediate
  reconnect after a drop (then exponential backoff with jitter while it keeps failing). Exactly
  one reader exists per transport: a second consumer would get every message too.
  `normal`/`native`: `GET /v1/receive/{number}?timeout=N` in a loop.
* signal-cli-rest-api does not buffer in json-rpc mode: a message that arrives while no
  WebSocket is connected (during a reconnect, or while Vigil is down but the REST container is
  up) is lost for good (upstream #834, #537), and so is one that arrives while its writer is
  still busy with the previous frame. Reconnects are logged, so an operator can see when a gap
  happened. Normal mode does not lose messages while Vigil is down (they wait on Signal's
  server) but costs a JVM start per call.
* Frames are read off the socket at once into the queue, so a slow database never holds up
  the socket. The queue is bounded (`queue_frames`): when the store cannot write for long and
  the queue is full, reading stops (back-pressure) until the processing loop has stored some.
  What that costs: in json-rpc mode the REST layer's writer blocks on the socket and every
  message that arrives meanwhile is dropped by it, exactly as while disconnected; in normal
  mode no poll is made and messages wait on Signal's server. The keepalive and the watchdog
  stand still meanwhile, so a paused socket is not taken for a dead one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from bot.transports.signal.rest import SignalRest

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 4 * 1024 * 1024  # an envelope with many attachments stays far below this
QUEUE_FRAMES = 1000  # frames read but not yet stored, held in memory

Raw = str | dict[str, Any]


def _kind(exc: BaseException) -> str:
    return type(exc).__name__


class Receiver:
    """The one reader of the receive stream. `about` asks /v1/about and returns the mode."""

    def __init__(
        self,
        rest: SignalRest,
        about: Callable[[], Awaitable[str]],
        *,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        silence_timeout: float = 90.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 10.0,
        poll_timeout: int = 1,
        queue_frames: int = QUEUE_FRAMES,
    ) -> None:
        self.rest = rest
        self.about = about
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.silence_timeout = silence_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.poll_timeout = poll_timeout
        self.queue: asyncio.Queue[Raw] = asyncio.Queue(maxsize=queue_frames)
        self.stopping = False
        self.receiving = asyncio.Event()  # a connection is open (or a poll succeeded)
        self.connections = 0  # receive connections opened (tests and status)
        self.frames = 0
        self.paused = False  # the queue is full: reading waits for the store
        self.pauses = 0
        self._last_alive = 0.0

    def backoff(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.backoff_max, self.backoff_base * 2 ** (failures - 1)) * (
            0.5 + random.random()
        )

    async def put(self, frame: Raw) -> None:
        """Queue a frame read off the stream; waits (back-pressure) while the queue is full."""
        self.frames += 1
        if not self.queue.full():
            self.queue.put_nowait(frame)
            return
        self.paused = True
        self.pauses += 1
        log.warning("signal receive queue full (%d frames not yet stored): reading paused "
                    "until the store accepts them", self.queue.maxsize)  # fmt: skip
        try:
            await self.queue.put(frame)
        finally:
            self.paused = False
        log.info("signal receive queue has room again: reading resumed")

    async def run(self) -> None:
        """Until stopped: find the mode, then read the stream of that mode."""
        failures = 0
        rounds = 0  # receive loops in a row that ended quickly (mode and endpoint disagree)
        while not self.stopping:
            try:
                mode = await self.about()
            except (httpx.HTTPError, ValueError, TimeoutError) as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("signal-cli-rest-api unreachable (%s); retrying", _kind(exc))
                await asyncio.sleep(self.backoff(failures))
                continue
            failures = 0
            began = time.monotonic()
            if mode == "json-rpc":
                await self._ws_loop()
            else:
                await self._poll_loop()
            if self.stopping:
                return
            rounds = 0 if time.monotonic() - began >= self.stable_after else rounds + 1
            await asyncio.sleep(self.backoff(rounds))

    # -- json-rpc: the WebSocket ------------------------------------------------------------

    async def _ws_loop(self) -> None:
        """Keep one WebSocket open; returns when the server no longer speaks WebSocket there
        (the REST container restarted in another mode), so the caller looks again."""
        failures = 0  # attempts in a row that gave no stable connection
        delay = 0.0
        while not self.stopping:
            if delay:
                await asyncio.sleep(delay)
            opened = None
            try:
                async with connect(
                    self.rest.ws_url,
                    ping_interval=None,  # our own keepalive below, with a watchdog
                    close_timeout=1.0,
                    open_timeout=10.0,
                    proxy=None,
                    compression=None,
                    max_size=MAX_FRAME_BYTES,
                    user_agent_header="vigil",
                ) as ws:
                    opened = time.monotonic()
                    self.connections += 1
                    if self.connections == 1:
                        log.info("signal receive stream connected")
                    else:
                        log.info("signal receive stream reconnected")
                    self.receiving.set()
                    await self._consume(ws)
                    reason = "closed by the server"
            except InvalidStatus as exc:
                # No WebSocket here (any status but 101): perhaps the REST API restarted in
                # another mode. The caller asks /v1/about again, with a back-off.
                log.warning("signal receive stream refused (HTTP %d)", exc.response.status_code)
                return
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason = _kind(exc)
            self.receiving.clear()
            if self.stopping:
                return
            if opened is not None:
                lived = time.monotonic() - opened
                failures = 0 if lived >= self.stable_after else failures + 1
                # The first reconnect after a drop is immediate: every second counts, since
                # upstream drops what arrives meanwhile. Only repeated short lives back off.
                delay = self.backoff(failures - 1)
                log.warning(
                    "signal receive stream lost (%s); reconnecting. Messages arriving before "
                    "it is back are dropped by signal-cli-rest-api",
                    reason,
                )
            else:
                failures += 1
                delay = self.backoff(failures)
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("signal receive stream cannot connect (%s); retrying", reason)

    async def _consume(self, ws: ClientConnection) -> None:
        self._last_alive = time.monotonic()
        guards = [asyncio.create_task(self._watchdog(ws))]
        if self.ping_interval is not None:
            guards.append(asyncio.create_task(self._keepalive(ws)))
        try:
            async for raw in ws:
                self._last_alive = time.monotonic()
                if isinstance(raw, str):
                    await self.put(raw)
                    self._last_alive = time.monotonic()
        finally:
            for guard in guards:
                guard.cancel()
            await asyncio.gather(*guards, return_exceptions=True)

    async def _keepalive(self, ws: ClientConnection) -> None:
        assert self.ping_interval is not None
        while True:
            await asyncio.sleep(self.ping_interval)
            if self.paused:
                continue  # nothing is read while paused, pongs included
            try:
                async with asyncio.timeout(self.ping_timeout):
                    await (await ws.ping())
            except TimeoutError:
                if self.paused:
                    continue
                log.warning("signal receive stream: no pong in %.1f s", self.ping_timeout)
                _abort(ws)
                return
            except ConnectionClosed:
                return
            self._last_alive = time.monotonic()

    async def _watchdog(self, ws: ClientConnection) -> None:
        period = max(0.05, self.silence_timeout / 4)
        while True:
            await asyncio.sleep(period)
            if self.paused:
                self._last_alive = time.monotonic()
                continue
            if time.monotonic() - self._last_alive > self.silence_timeout:
                log.warning(
                    "signal receive stream silent for %.0f s (half-open?)", self.silence_timeout
                )
                _abort(ws)
                return

    # -- normal/native: polling --------------------------------------------------------------

    async def _poll_loop(self) -> None:
        """Each GET runs `signal-cli receive`; what it returns is already off Signal's server,
        so a started poll is always finished and queued."""
        failures = 0
        params = {
            "timeout": str(self.poll_timeout),
            "ignore_stories": "true",
            "ignore_avatars": "true",
            "ignore_stickers": "true",
        }
        # A receive waits `timeout` s after the last message, behind signal-cli's config lock.
        deadline = self.poll_timeout + 180.0
        while not self.stopping:
            delay = self.backoff(failures)
            if delay:
                await asyncio.sleep(delay)
            try:
                resp = await self.rest.receive(params, deadline)
            except (httpx.HTTPError, TimeoutError) as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("signal receive poll failed (%s); retrying", _kind(exc))
                continue
            if resp.status_code == 400 and "websocket" in resp.text.lower():
                return  # the REST API now runs in json-rpc mode
            try:
                frames = json.loads(resp.text) if resp.status_code == 200 else None
            except ValueError:
                frames = None
            if not isinstance(frames, list):
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("signal receive poll answered HTTP %d; retrying", resp.status_code)
                continue
            if failures:
                log.info("signal receive poll working again")
            failures = 0
            self.receiving.set()
            for frame in frames:
                await self.put(frame)


def _abort(ws: ClientConnection) -> None:
    """Drop the TCP connection at once: a half-open socket would never finish a closing
    handshake, and `recv` then raises ConnectionClosedError."""
    ws.transport.abort()
