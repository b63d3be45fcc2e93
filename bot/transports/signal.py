"""Signal transport over signal-cli-rest-api (httpx for REST, websockets for the receive stream).

Contract and pitfalls: `shared/research/signal.md`. The decisions, kept with the code:

Receiving
  * Mode from `GET /v1/about`. `json-rpc`: one WebSocket on `/v1/receive/{number}`, our own
    keepalive pings (the server pings every 54 s but never times a client out), a watchdog that
    reconnects when neither a frame nor a pong arrived for `silence_timeout`, and an immediate
    reconnect after a drop (then exponential backoff with jitter while it keeps failing). Exactly
    one consumer task exists per transport: a second consumer would get every message too.
    `normal`/`native`: `GET /v1/receive/{number}?timeout=N` in a loop.
  * signal-cli-rest-api does not buffer in json-rpc mode: a message that arrives while no
    WebSocket is connected (during a reconnect, or while Vigil is down but the REST container
    is up) is lost for good (upstream #834, #537). Reconnects are logged, so an operator can see
    when a gap happened. Normal mode does not lose messages while Vigil is down (they wait on
    Signal's server) but costs a JVM start per call.
  * Frames are read off the socket at once into a queue and delivered one by one, in order, by
    a single processing task, so a slow database never holds up the socket (upstream drops
    frames a busy reader cannot take).
  * Only 1:1 `dataMessage`s with text or attachments become `Incoming`s. Typing, receipts,
    sync messages (the account owner's own sends), reactions, remote deletes, edits, stickers,
    expiration-timer changes, calls and stories are ignored. **Group messages are ignored**:
    relatives' reports must stay 1:1, and answering in a group would show the bot's presence
    and its answers to every member of it.
  * `sender = chat = sourceUuid` (never the phone number: THREATS rule 5); replies go to the
    UUID (`/v2/send` accepts UUIDs since 0.85). `key = "<sourceUuid>:<timestamp>"`: the inbox
    drops Signal redeliveries and replays.
  * Attachments: `Attachment(kind, ref=id, mime=contentType, size)`; the sender's file name is
    never kept (it can identify people). `fetch_attachment` reads at most `max_bytes` and then
    deletes the file from the REST API's disk; after `deliver` every other attachment of the
    message (too large, surplus, ignored envelopes) is deleted unread. At start, files left on
    that disk by messages we never saw (dropped frames) are deleted too: the account is the
    bot's alone, and those files are plaintext.
Sending
  * `POST /v2/send` with `text_mode: "normal"` (user text is never parsed as styles) and
    `notify_self: false`. Choices become a numbered menu ("1) label"); the transport remembers
    each chat's last menu in memory, so a reply of just "2" becomes that choice's value (as on
    the console). A restart forgets the menus: the person then types the command.
  * `kind: "edit"` is sent as a new message (the API's `edit_timestamp` only shows in recent
    Signal clients and within a time window; a lost edit would be silent). `kind: "delete"` is a
    no-op success: a bot cannot delete a person's messages on Signal.
  * Errors: 201 -> the timestamp is the message reference (object or array body). 400 naming an
    unregistered user or untrusted identity -> `RecipientGone`. Any other 400 -> `MaybeSent`:
    signal-cli sometimes answers 400 for a delivered message (#586). 429, or a 400 saying "rate
    limit"/"CAPTCHA proof required" (normal mode) -> `MaybeSent("rate_limited")` (#881: a 429 can
    follow a delivery) **and** sending is suspended, see below. 5xx and connection errors ->
    `RetryLater`; a timeout after the request left -> `RetryLater("timeout", maybe_sent=True)`.
  * Suspension (Signal's proof-required / rate-limit challenge): for `suspend_seconds` (the
    "wait N seconds" of the answer when given; doubled, up to a day, when it trips again within
    an hour of the last one) ALERT and BULK rows get `Suspended` (a `RetryLater` with a
    `retry_after` of at most a minute, so the dispatcher pauses alerts and bulk without
    spending attempts and asks again) without calling the API; EMERGENCY rows are always
    tried; REPLY rows get a budget of one per `reply_interval` seconds. A send that began after
    the challenge and succeeds proves the limit lifted: sending resumes at once. Admins are
    told what to do through `on_alert` (wired by the app) and a WARNING log line.
  * Limits: Signal publishes none; signal-cli's author does not know them (signal-cli#1174), and
    bulk sends to many new contacts are what trips proof-required (#1603). So the pace is slow
    and steady: 1 message/s overall (a 300-person alert takes 5 minutes), one per 2 s per chat
    with a burst of 3 (a reply and its menu), and 2 requests in flight (signal-cli serialises
    much of its work anyway, and in-flight requests bound duplicates after a crash).
  * Typing indicator: shown just before a message with choices (a wizard question) and cleared
    after it, best effort and only in json-rpc mode (in normal mode each call starts a JVM).
  * `set_disappearing(chat, seconds)` sets the disappearing-messages timer of a 1:1 chat with
    `PUT /v1/contacts/{number}` (`expiration_in_seconds`). An outbox row of kind
    `"disappearing"` (optional `extra["seconds"]`, else `VIGIL_SIGNAL_DISAPPEARING_SECONDS`)
    does the same through the dispatcher, so a relative's timer is set durably when they join.

Logs name event kinds only: never a number, UUID, text, challenge token or attachment id.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import re
import time
import uuid as uuid_mod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from bot.config import Settings
from bot.messages import Attachment, Incoming, Outgoing, Priority
from bot.transports.base import (
    Deliver,
    Limits,
    MaybeSent,
    RecipientGone,
    RetryLater,
    Transport,
)

log = logging.getLogger(__name__)

Alert = Callable[[str], Awaitable[None]]

CAPTCHA_PAGE = "https://signalcaptchas.org/challenge/generate.html"
MAX_FRAME_BYTES = 4 * 1024 * 1024  # an envelope with many attachments stays far below this
MAX_SUSPENSION = 86_400.0
MIN_SUSPENSION = 60.0
ESCALATION_WINDOW = 3600.0
RECHECK = 60.0  # the longest pause handed to the dispatcher at a time (see Suspended)
MENU_CHATS = 10_000  # menus remembered (least recently used chats are forgotten first)
DELIVER_ATTEMPTS = 4
LONG_TEXT_MIME = "text/x-signal-plain"
LONG_TEXT_BYTES = 64 * 1024  # Signal clients' own limit for a message text

_ATTACHMENT_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_CHOICE_NUMBER = re.compile(r"[0-9]{1,3}")
_WAIT_SECONDS = re.compile(r'or wait "?([0-9]{1,7})"? seconds')
_CHALLENGE_TOKEN = re.compile(r'challenge token "([A-Za-z0-9-]{1,100})"')
_EXCEPTION_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.$]{0,80}")


class Suspended(RetryLater):
    """Not sent, the API was not called: Signal sending is suspended for this priority.

    `retry_after` is at most RECHECK: the dispatcher pauses alerts and bulk for it (without
    spending an attempt) and then asks again, so a suspension lifted early by a successful
    probe holds bulk back for at most RECHECK longer.
    """

    def __init__(self, retry_after: float) -> None:
        super().__init__("suspended", max(0.1, retry_after))


@dataclass
class _Menu:
    values: tuple[str, ...]
    at: float


def _canonical_uuid(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid_mod.UUID(value))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _attachment_ids(envelope: dict[str, Any]) -> list[str]:
    """Every attachment id an envelope mentions, wherever it sits (each is a file on disk)."""
    found: list[str] = []
    parts = [envelope.get("dataMessage"), (envelope.get("editMessage") or {}).get("dataMessage")]
    sync = envelope.get("syncMessage")
    if isinstance(sync, dict):
        parts.append(sync.get("sentMessage"))
    for part in parts:
        if not isinstance(part, dict):
            continue
        for att in part.get("attachments") or []:
            if isinstance(att, dict) and isinstance(att.get("id"), str):
                found.append(att["id"])
    return found


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return ""


def _timestamp(body: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """The message timestamp and per-recipient errors of a /v2/send answer, either shape:
    release 0.100 `{"timestamp": "…"}`, unreleased HEAD `[{"timestamp": "…", "errors": …}]`."""
    if isinstance(body, list):
        body = body[0] if body and isinstance(body[0], dict) else {}
    if not isinstance(body, dict):
        return None, []
    ts = body.get("timestamp")
    ref = str(ts) if isinstance(ts, int | str) and not isinstance(ts, bool) and ts != "" else None
    errors = body.get("errors")
    recipients = errors.get("recipients") if isinstance(errors, dict) else None
    return ref, [r for r in recipients or [] if isinstance(r, dict)]


def _is_rate_limit(text: str) -> bool:
    low = text.lower()
    return "rate limit" in low or "captcha proof required" in low or "proofrequired" in low


class SignalTransport(Transport):
    name = "signal"
    can_edit = False  # the dispatcher turns edits into new messages
    limits = Limits(per_second=1.0, per_chat_per_second=0.5, chat_burst=3, in_flight=2)

    def __init__(
        self,
        settings: Settings,
        *,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        silence_timeout: float = 90.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 10.0,
        poll_timeout: int | None = None,
        suspend_seconds: float = 3600.0,
        reply_interval: float = 10.0,
        menu_ttl: float = 7 * 86400.0,
        typing: bool = True,
        start_wait: float = 5.0,
        send_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.signal_api_url or not settings.signal_number:
            raise ValueError("the Signal transport needs an API URL and a number")
        self.base_url = settings.signal_api_url.rstrip("/")
        self.number = settings.signal_number
        self.disappearing_seconds = settings.signal_disappearing_seconds
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.silence_timeout = silence_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.poll_timeout = settings.signal_poll_timeout if poll_timeout is None else poll_timeout
        self.suspend_seconds = suspend_seconds
        self.reply_interval = reply_interval
        self.menu_ttl = menu_ttl
        self.typing = typing
        self.start_wait = start_wait
        self.send_timeout = send_timeout
        self.clock = clock
        # Wired by the app: tells the admins (on every transport) what needs a human.
        self.on_alert: Alert | None = None

        self.mode: str | None = None
        self.version: str | None = None
        self.connections = 0  # receive connections opened (tests and status)
        self.frames = 0
        self._client: httpx.AsyncClient | None = None
        self._deliver: Deliver | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._processor: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[str | dict[str, Any]] = asyncio.Queue(maxsize=10_000)
        self._stopping = False
        self._receiving = asyncio.Event()
        self._last_alive = 0.0
        self._menus: collections.OrderedDict[str, _Menu] = collections.OrderedDict()
        self._deleted: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        # Suspension state (clock seconds).
        self._suspended_until = 0.0
        self._suspension_length = 0.0
        self._suspension_began = 0.0
        self._suspension_ended = -ESCALATION_WINDOW * 2
        self._next_reply = 0.0
        self._last_untrusted_alert = -ESCALATION_WINDOW * 2

    # -- paths ----------------------------------------------------------------------------------

    @property
    def _number_path(self) -> str:
        return quote(self.number, safe="+")

    @property
    def ws_url(self) -> str:
        scheme, _, rest = self.base_url.partition("://")
        ws_scheme = "wss" if scheme == "https" else "ws"
        return f"{ws_scheme}://{rest}/v1/receive/{self._number_path}"

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(30.0, connect=5.0),
                trust_env=False,  # never route the unauthenticated API through a proxy
                headers={"User-Agent": "vigil"},
            )
        return self._client

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        if self._receiver is not None:
            raise RuntimeError("the Signal transport is already receiving")
        self._deliver = deliver
        self._stopping = False
        with contextlib.suppress(httpx.HTTPError, ValueError):
            await self._about()
        if self.mode is not None:
            await self._sweep_attachments()
        self._keeper = asyncio.create_task(self._close_at_exit(), name="signal-close-at-exit")
        self._processor = asyncio.create_task(self._process_loop(), name="signal-process")
        self._receiver = asyncio.create_task(self._receive_main(), name="signal-receive")
        # Give the first connection a moment, so messages sent right after start arrive.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._receiving.wait(), self.start_wait)

    async def stop(self) -> None:
        """Stop intake: close the stream (or finish the poll under way, whose messages are
        already off Signal's server), then hand every frame already read to `deliver`."""
        self._stopping = True
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            if self.mode == "json-rpc":
                receiver.cancel()
            grace = 2.0 if self.mode == "json-rpc" else self.poll_timeout + 10.0
            done, _ = await asyncio.wait([receiver], timeout=grace)
            if not done:
                receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        processor, self._processor = self._processor, None
        if processor is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), 30.0)
            processor.cancel()
            await asyncio.gather(processor, return_exceptions=True)
        self._receiving.clear()

    async def close(self) -> None:
        """Release the HTTP client, after the dispatcher drained (sends need it). The core has
        no close hook yet, so a keeper task also calls this when the event loop winds down."""
        if not self._stopping:
            await self.stop()
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not asyncio.current_task():
            keeper.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _close_at_exit(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            if self._keeper is not None:
                self._keeper = None
                await self.close()

    async def probe(self) -> str:
        temporary = self._client is None
        try:
            await self._about(wait=5.0)
        finally:
            if temporary and self._client is not None:
                await self._client.aclose()
                self._client = None
        return f"/v1/about ok, mode {self.mode}, version {self.version}"

    async def _about(self, wait: float = 10.0) -> str:
        resp = await self._http().get("/v1/about", timeout=wait)
        resp.raise_for_status()
        about = resp.json()
        mode = about.get("mode") if isinstance(about, dict) else None
        if mode not in ("json-rpc", "normal", "native"):
            raise ValueError("unknown mode")
        version = about.get("version")
        self.version = version if isinstance(version, str) and len(version) < 40 else "unknown"
        if mode != self.mode:
            log.info("signal-cli-rest-api %s in %s mode", self.version, mode)
            if _older_than(self.version, (0, 85)):
                log.warning("signal-cli-rest-api is older than 0.85: it cannot send to UUIDs")
        self.mode = mode
        return mode

    # -- receiving ------------------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.backoff_max, self.backoff_base * 2 ** (failures - 1)) * (
            0.5 + random.random()
        )

    async def _receive_main(self) -> None:
        failures = 0
        rounds = 0  # receive loops in a row that ended quickly (mode and endpoint disagree)
        while not self._stopping:
            try:
                mode = await self._about()
            except (httpx.HTTPError, ValueError) as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("signal-cli-rest-api unreachable (%s); retrying", _kind(exc))
                await asyncio.sleep(self._backoff(failures))
                continue
            failures = 0
            began = time.monotonic()
            try:
                if mode == "json-rpc":
                    await self._ws_loop()
                else:
                    await self._poll_loop()
            except Exception as exc:  # never let the one consumer die
                log.error("signal receiving failed unexpectedly: %s", _kind(exc))
            if self._stopping:
                return
            rounds = 0 if time.monotonic() - began >= self.stable_after else rounds + 1
            await asyncio.sleep(self._backoff(rounds))

    async def _ws_loop(self) -> None:
        """Keep one WebSocket open; returns when the server no longer speaks WebSocket there
        (the REST container restarted in another mode), so the caller looks again."""
        failures = 0  # attempts in a row that gave no stable connection
        delay = 0.0
        while not self._stopping:
            if delay:
                await asyncio.sleep(delay)
            opened = None
            try:
                async with connect(
                    self.ws_url,
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
                    self._receiving.set()
                    await self._consume(ws)
                    reason = "closed by the server"
            except InvalidStatus as exc:
                # No WebSocket here (any status but 101): perhaps the REST API restarted in
                # another mode. The caller asks /v1/about again, with a back-off.
                log.warning("signal receive stream refused (HTTP %d)", exc.response.status_code)
                return
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason = _kind(exc)
            except Exception as exc:  # never let the one consumer die
                log.error("signal receive stream failed unexpectedly: %s", _kind(exc))
                reason = _kind(exc)
            self._receiving.clear()
            if self._stopping:
                return
            if opened is not None:
                lived = time.monotonic() - opened
                failures = 0 if lived >= self.stable_after else failures + 1
                # The first reconnect after a drop is immediate: every second counts, since
                # upstream drops what arrives meanwhile. Only repeated short lives back off.
                delay = self._backoff(failures - 1)
            else:
                failures += 1
                delay = self._backoff(failures)
            if opened is not None:
                log.warning(
                    "signal receive stream lost (%s); reconnecting. Messages arriving before "
                    "it is back are dropped by signal-cli-rest-api",
                    reason,
                )
            elif failures in (1, 10) or failures % 100 == 0:
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
                    self.frames += 1
                    await self._queue.put(raw)
        finally:
            for guard in guards:
                guard.cancel()
            await asyncio.gather(*guards, return_exceptions=True)

    async def _keepalive(self, ws: ClientConnection) -> None:
        assert self.ping_interval is not None
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                async with asyncio.timeout(self.ping_timeout):
                    await (await ws.ping())
            except TimeoutError:
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
            if time.monotonic() - self._last_alive > self.silence_timeout:
                log.warning(
                    "signal receive stream silent for %.0f s (half-open?)", self.silence_timeout
                )
                _abort(ws)
                return

    async def _poll_loop(self) -> None:
        """normal/native mode: each GET runs `signal-cli receive`; what it returns is already
        off Signal's server, so a started poll is always finished and handed on."""
        failures = 0
        params = {
            "timeout": str(self.poll_timeout),
            "ignore_stories": "true",
            "ignore_avatars": "true",
            "ignore_stickers": "true",
        }
        path = f"/v1/receive/{self._number_path}"
        # A receive waits `timeout` s after the last message, behind signal-cli's config lock.
        timeout = httpx.Timeout(self.poll_timeout + 180.0, connect=5.0)
        while not self._stopping:
            delay = self._backoff(failures)
            if delay:
                await asyncio.sleep(delay)
            try:
                resp = await self._http().get(path, params=params, timeout=timeout)
            except httpx.HTTPError as exc:
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
            self._receiving.set()
            for frame in frames:
                self.frames += 1
                await self._queue.put(frame)

    async def _process_loop(self) -> None:
        while True:
            raw = await self._queue.get()
            try:
                await self._handle_frame(raw)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad frame must not stop receiving
                log.error("a signal frame could not be handled: %s", type(exc).__name__)
            finally:
                self._queue.task_done()

    async def _handle_frame(self, raw: str | dict[str, Any]) -> None:
        if isinstance(raw, str):
            try:
                frame = json.loads(raw)
            except ValueError:
                log.warning("signal receive stream sent a frame that is not JSON")
                return
        else:
            frame = raw
        if not isinstance(frame, dict):
            return
        envelope = frame.get("envelope")
        if not isinstance(envelope, dict):
            if "error" in frame:
                log.warning("signal-cli reported a receive error")
            return
        if frame.get("account") not in (None, self.number):
            return  # another account on the same REST API: not ours to read or clean up
        ids = _attachment_ids(envelope)
        try:
            exception = frame.get("exception")
            if isinstance(exception, dict):
                kind = exception.get("type")
                kind = kind if isinstance(kind, str) and _EXCEPTION_TYPE.fullmatch(kind) else "?"
                log.warning(
                    "signal-cli could not read an incoming message (%s). If it is an "
                    "UntrustedIdentityException, a contact's safety number changed: verify it "
                    "with them out of band before trusting the new key",
                    kind,
                )
                return
            incoming = await self._incoming(envelope)
            if incoming is not None:
                await self._deliver_durably(incoming)
        finally:
            for att_id in ids:
                if att_id in self._deleted:
                    self._deleted.discard(att_id)
                else:
                    await self._delete_attachment(att_id)

    async def _incoming(self, envelope: dict[str, Any]) -> Incoming | None:
        data = envelope.get("dataMessage")
        if not isinstance(data, dict):
            return None  # typing, receipts, sync, edits, calls, stories
        sender = _canonical_uuid(envelope.get("sourceUuid"))
        if sender is None or envelope.get("sourceNumber") == self.number:
            return None
        if data.get("groupInfo") is not None:
            log.debug("ignored a group message: Vigil works in direct chats only")
            return None
        if any(data.get(k) for k in ("reaction", "remoteDelete", "sticker", "isExpirationUpdate")):
            return None
        text = data.get("message")
        text = text if isinstance(text, str) else ""
        atts = [a for a in data.get("attachments") or [] if isinstance(a, dict)]
        if not text.strip() and not atts:
            return None
        timestamp = _int(envelope.get("timestamp")) or _int(data.get("timestamp"))
        if timestamp is None:
            return None
        attachments = []
        for att in atts:
            att_id = att.get("id")
            if not isinstance(att_id, str):
                continue
            mime = att.get("contentType")
            mime = mime if isinstance(mime, str) and 0 < len(mime) < 128 else ""
            if mime == LONG_TEXT_MIME:
                # Signal sends a text over 2000 bytes (1000 Cyrillic letters) cut short, with
                # the whole text as this attachment; a report must not lose its end.
                text = await self._long_text(att_id) or text
                continue
            attachments.append(
                Attachment(
                    kind="photo" if mime.startswith("image/") else "document",
                    ref=att_id,
                    mime=mime or "application/octet-stream",
                    size=max(0, _int(att.get("size")) or 0),
                    name="",  # the sender's file name can identify people: never kept
                )
            )
        text, is_choice = self._from_menu(sender, text)
        return Incoming(
            transport=self.name,
            sender=sender,
            chat=sender,
            key=f"{sender}:{timestamp}",
            text=text,
            attachments=tuple(attachments),
            private=True,
            is_choice=is_choice,
        )

    async def _long_text(self, att_id: str) -> str | None:
        ref = Attachment(kind="document", ref=att_id, mime=LONG_TEXT_MIME)
        try:
            data = await self.fetch_attachment(ref, LONG_TEXT_BYTES)
        except httpx.HTTPError as exc:
            log.warning("the full text of a long message could not be fetched (%s)", _kind(exc))
            return None
        return data.decode("utf-8", errors="replace") if data else None

    async def _deliver_durably(self, incoming: Incoming) -> None:
        """Nobody can hand this message to us again, so a failed store is retried a few times."""
        assert self._deliver is not None
        for attempt in range(DELIVER_ATTEMPTS):
            try:
                await self._deliver(incoming)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == DELIVER_ATTEMPTS - 1:
                    log.error("an incoming Signal message could not be stored and is lost: %s",
                              type(exc).__name__)  # fmt: skip
                    return
                log.warning("storing an incoming Signal message failed (%s); retrying",
                            type(exc).__name__)  # fmt: skip
                await asyncio.sleep(0.5 * 2**attempt)

    # -- numbered menus -------------------------------------------------------------------------

    def _from_menu(self, chat: str, text: str) -> tuple[str, bool]:
        answer = text.strip()
        menu = self._menus.get(chat)
        if menu is None or not _CHOICE_NUMBER.fullmatch(answer):
            return text, False
        if self.clock() - menu.at > self.menu_ttl:
            del self._menus[chat]
            return text, False
        n = int(answer)
        if 1 <= n <= len(menu.values):
            return menu.values[n - 1], True
        return text, False

    def _remember_menu(self, out: Outgoing) -> None:
        if out.choices:
            self._menus[out.chat] = _Menu(tuple(c.value for c in out.choices), self.clock())
            self._menus.move_to_end(out.chat)
            while len(self._menus) > MENU_CHATS:
                self._menus.popitem(last=False)
        elif out.priority <= Priority.REPLY:
            # The conversation moved on; alerts and broadcasts in between leave the menu be.
            self._menus.pop(out.chat, None)

    @staticmethod
    def render(out: Outgoing) -> str:
        if not out.choices:
            return out.text
        menu = "\n".join(f"{i}) {c.label}" for i, c in enumerate(out.choices, 1))
        return f"{out.text}\n\n{menu}" if out.text else menu

    # -- attachments ----------------------------------------------------------------------------

    async def fetch_attachment(self, attachment: Attachment, max_bytes: int) -> bytes | None:
        att_id = attachment.ref
        if not _ATTACHMENT_ID.fullmatch(att_id):
            return None
        try:
            async with self._http().stream("GET", f"/v1/attachments/{quote(att_id)}") as resp:
                if resp.status_code != 200:
                    return None
                declared = _int(resp.headers.get("content-length"))
                if declared is not None and declared > max_bytes:
                    return None
                data = bytearray()
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        return None
                return bytes(data)
        finally:
            # Plaintext on the REST API's disk: gone whether we kept it or not.
            if await self._delete_attachment(att_id):
                self._deleted.add(att_id)

    async def _delete_attachment(self, att_id: str) -> bool:
        if not _ATTACHMENT_ID.fullmatch(att_id):
            return False
        try:
            resp = await self._http().delete(f"/v1/attachments/{quote(att_id)}", timeout=30.0)
        except httpx.HTTPError as exc:
            log.warning("an attachment could not be deleted from signal-cli-rest-api (%s)",
                        _kind(exc))  # fmt: skip
            return False
        if resp.status_code in (200, 204, 404):
            return True
        log.warning("an attachment could not be deleted from signal-cli-rest-api (HTTP %d)",
                    resp.status_code)  # fmt: skip
        return False

    async def _sweep_attachments(self) -> None:
        """Delete attachment files left behind by messages nobody received (dropped frames)."""
        try:
            resp = await self._http().get("/v1/attachments", timeout=30.0)
            names = resp.json() if resp.status_code == 200 else []
        except (httpx.HTTPError, ValueError):
            return
        removed = 0
        for name in names if isinstance(names, list) else []:
            if isinstance(name, str) and await self._delete_attachment(name):
                removed += 1
        if removed:
            log.info("deleted %d leftover attachment file(s) from signal-cli-rest-api", removed)

    # -- sending --------------------------------------------------------------------------------

    async def send(self, out: Outgoing) -> str | None:
        if out.kind == "delete":
            return None  # a bot cannot delete a person's messages on Signal
        if out.kind == "disappearing":
            # An outbox row asking for the chat's timer (durable and retried like a message).
            raw = out.extra.get("seconds")
            seconds = _int(raw) if raw is not None else (self.disappearing_seconds or None)
            if seconds is None:
                return None  # not configured: the chat's own timer stays as the person set it
            if not await self.set_disappearing(out.chat, seconds):
                raise RetryLater("disappearing_timer")
            return None
        self._gate(out.priority)
        started = self.clock()
        body = {
            "number": self.number,
            "recipients": [out.chat],
            "message": self.render(out),
            "text_mode": "normal",
            "notify_self": False,
        }
        show_typing = (
            bool(out.choices) and self.typing and self.mode == "json-rpc" and not self.suspended
        )
        if show_typing:
            await self._typing(out.chat, True)
        # signal-cli may fetch keys for a new contact; in normal mode it also starts a JVM.
        read = self.send_timeout or (180.0 if self.mode in ("normal", "native") else 60.0)
        try:
            resp = await self._http().post(
                "/v2/send", json=body, timeout=httpx.Timeout(read, connect=5.0)
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise RetryLater(_kind(exc)) from None
        except httpx.TimeoutException:
            raise RetryLater("timeout", maybe_sent=True) from None
        except httpx.TransportError as exc:
            raise RetryLater(_kind(exc), maybe_sent=True) from None
        finally:
            if show_typing:
                self._spawn(self._typing(out.chat, False))
        try:
            ref = self._result(resp, started)
        except MaybeSent:
            self._remember_menu(out)
            raise
        self._remember_menu(out)
        return ref

    def _result(self, resp: httpx.Response, started: float) -> str | None:
        status = resp.status_code
        if status in (200, 201):
            try:
                ref, errors = _timestamp(resp.json())
            except ValueError:
                ref, errors = None, []
            if errors:  # one recipient per request, so any error entry is about it
                self._check_reasons({str(e.get("reason")) for e in errors})
            self._sent_ok(started)
            return ref
        if status == 429:
            tokens: list[str] = []
            with contextlib.suppress(ValueError):
                payload = resp.json()
                raw_tokens = payload.get("challenge_tokens") if isinstance(payload, dict) else None
                tokens = [t for t in raw_tokens or [] if isinstance(t, str) and t]
            raise MaybeSent("rate_limited", self._suspend(None, tokens))
        text = _error_text(resp)
        if status == 400:
            low = text.lower()
            if _is_rate_limit(text):
                wait = _WAIT_SECONDS.search(text)
                token = _CHALLENGE_TOKEN.search(text)
                seconds = float(wait.group(1)) if wait else None
                raise MaybeSent(
                    "rate_limited", self._suspend(seconds, [token.group(1)] if token else [])
                )
            if "not registered" in low or "unregistered" in low:
                raise RecipientGone("unregistered")
            if "untrusted" in low:
                self._untrusted()
                raise RecipientGone("untrusted_identity")
            if "too old" in low:
                log.error("signal-cli is too old for the Signal servers: update the image")
            raise MaybeSent("bad_request")
        if status >= 500:
            raise RetryLater("server_error")
        raise RetryLater(f"http_{status}")

    def _check_reasons(self, reasons: set[str]) -> None:
        """A 201 whose only recipient failed (the array shape says why)."""
        if "UNREGISTERED_FAILURE" in reasons:
            raise RecipientGone("unregistered")
        if "IDENTITY_FAILURE" in reasons:
            self._untrusted()
            raise RecipientGone("untrusted_identity")
        if "RATE_LIMIT_FAILURE" in reasons:
            raise MaybeSent("rate_limited", self._suspend(None, []))
        raise RetryLater("network_failure")

    async def _typing(self, chat: str, on: bool) -> None:
        method = "PUT" if on else "DELETE"
        with contextlib.suppress(httpx.HTTPError):
            await self._http().request(
                method,
                f"/v1/typing-indicator/{self._number_path}",
                json={"recipient": chat},
                timeout=5.0,
            )

    async def set_disappearing(self, chat: str, seconds: int) -> bool:
        """Set the disappearing-messages timer of the 1:1 chat with `chat` (a UUID); 0 turns
        it off. True when signal-cli accepted it. Best effort: the person may change it back."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        try:
            resp = await self._http().put(
                f"/v1/contacts/{self._number_path}",
                json={"recipient": chat, "expiration_in_seconds": int(seconds)},
                timeout=60.0,
            )
        except httpx.HTTPError as exc:
            log.warning("disappearing-messages timer not set (%s)", _kind(exc))
            return False
        if resp.status_code in (200, 204):
            return True
        log.warning("disappearing-messages timer not set (HTTP %d)", resp.status_code)
        return False

    # -- suspension -----------------------------------------------------------------------------

    @property
    def suspended(self) -> bool:
        return self.clock() < self._suspended_until

    def _gate(self, priority: int) -> None:
        now = self.clock()
        if self._suspended_until == 0.0:
            return
        if now >= self._suspended_until:
            self._resume("the suspension period ended")
            return
        if priority == Priority.EMERGENCY:
            return  # always tried: a possible delay is worse than another challenge
        if priority == Priority.REPLY:
            if now >= self._next_reply:
                self._next_reply = now + self.reply_interval
                return
            raise Suspended(min(RECHECK, self._next_reply - now))
        raise Suspended(min(RECHECK, self._suspended_until - now))

    def _sent_ok(self, started: float) -> None:
        # Only a send that began after the challenge proves anything: one already in flight
        # when the 429 came may still succeed.
        if self._suspended_until and started >= self._suspension_began:
            self._resume("a send succeeded")

    def _resume(self, why: str) -> None:
        self._suspended_until = 0.0
        self._suspension_ended = self.clock()
        log.warning("Signal sending resumed: %s", why)
        self._alert(
            "Signal sending has resumed: alerts and broadcasts that waited go out now, slowly."
        )

    def _suspend(self, wait: float | None, tokens: list[str]) -> float:
        """Enter (or extend) the suspension; returns the pause for the dispatcher."""
        now = self.clock()
        seconds = wait if wait is not None else self.suspend_seconds
        if now < self._suspended_until:
            self._suspended_until = max(self._suspended_until, now + seconds)
            return min(RECHECK, self._suspended_until - now)
        if now - self._suspension_ended < ESCALATION_WINDOW and wait is None:
            seconds = max(seconds, self._suspension_length * 2)
        seconds = min(MAX_SUSPENSION, max(MIN_SUSPENSION, seconds))
        self._suspension_length = seconds
        self._suspension_began = now
        self._suspended_until = now + seconds
        self._next_reply = now + self.reply_interval
        minutes = max(1, round(seconds / 60))
        log.warning(
            "Signal sending SUSPENDED by a rate-limit challenge for up to %d min: alerts and "
            "broadcasts wait, replies go out at most one per %.0f s, emergencies are still tried. "
            "It resumes by itself, or at once when a send succeeds. To lift it now, solve the "
            "captcha at %s and POST {challenge_token, captcha} to "
            "/v1/accounts/<bot number>/rate-limit-challenge on signal-cli-rest-api. The challenge "
            "token went to the admins in an alert; to see it yourself, send one test message "
            "through /v2/send and read the 429 answer",
            minutes,
            self.reply_interval,
            CAPTCHA_PAGE,
        )
        self._alert(self._suspension_alert(minutes, tokens))
        return min(RECHECK, seconds)

    def _suspension_alert(self, minutes: int, tokens: list[str]) -> str:
        lines = [
            f"Signal sending is paused for up to {minutes} minutes: Signal answered with a "
            "rate-limit challenge. Alerts and broadcasts wait; replies go out slowly and "
            "emergencies are still tried. It resumes by itself, or as soon as a send succeeds.",
        ]
        if tokens:
            lines += [
                "To lift it now: 1) open " + CAPTCHA_PAGE + " and solve the captcha; "
                "2) copy the signalcaptcha://… link it shows; 3) on the server, POST "
                '{"challenge_token": "' + tokens[0] + '", "captcha": "<that link>"} to '
                "/v1/accounts/<bot number>/rate-limit-challenge of signal-cli-rest-api.",
            ]
        else:
            lines.append(
                "Signal gave no challenge token: wait, and keep broadcasts small for a while."
            )
        return "\n".join(lines)

    def _untrusted(self) -> None:
        now = self.clock()
        log.warning(
            "a Signal message was refused: the recipient's safety number changed. Messages to "
            "them stop until they write again and their new key is trusted after checking with "
            "them out of band (GET /v1/identities/<bot number>, then PUT .../trust/...)"
        )
        if now - self._last_untrusted_alert >= ESCALATION_WINDOW:
            self._last_untrusted_alert = now
            self._alert(
                "A member's Signal safety number changed, so messages to them are stopped. This "
                "happens when someone reinstalls Signal, but also when a phone number is taken "
                "over. Check with them out of band before trusting the new key on the server "
                "(signal-cli-rest-api: GET /v1/identities/<bot number>, then PUT "
                "/v1/identities/<bot number>/trust/<their id>)."
            )

    def _alert(self, text: str) -> None:
        if self.on_alert is None:
            return
        self._spawn(self._call_alert(self.on_alert, text))

    @staticmethod
    async def _call_alert(callback: Alert, text: str) -> None:
        try:
            await callback(text)
        except Exception as exc:
            log.warning("admin alert failed: %s", type(exc).__name__)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _abort(ws: ClientConnection) -> None:
    """Drop the TCP connection at once: a half-open socket would never finish a closing
    handshake, and `recv` then raises ConnectionClosedError."""
    ws.transport.abort()


def _kind(exc: BaseException) -> str:
    return type(exc).__name__


def _older_than(version: str | None, minimum: tuple[int, int]) -> bool:
    match = re.fullmatch(r"([0-9]+)\.([0-9]+).*", version or "")
    if match is None:
        return False  # "unset" (a dev build) or unknown: do not guess
    return (int(match.group(1)), int(match.group(2))) < minimum
