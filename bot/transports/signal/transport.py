"""`SignalTransport`: the Signal adapter the core sees, built from the package's parts.

Receiving: receive.py reads the stream into a bounded queue; intake.py stores each message,
in order, retrying until the store takes it; frames.py says what a frame means.

Attachments: `Attachment(kind, ref=id, mime=contentType, size)`; the sender's file name is
never kept (it can identify people). Bytes are read only in `fetch_attachment`, when the core
asks; every file a frame names is deleted from the REST API's disk once the frame is stored
(attachments.py), so a delivery retried after a failed store can still read them.

Sending (sending.py maps the answers). `kind: "edit"` is sent as a new message (the API's
`edit_timestamp` only shows in recent Signal clients and within a time window; a lost edit
would be silent). `kind: "delete"` is a no-op success: a bot cannot delete a person's messages
on Signal. A rate-limit challenge suspends sending (challenge.py); `solve_challenge` lifts it.

Limits: Signal publishes none; signal-cli's author does not know them (signal-cli#1174), and
bulk sends to many new contacts are what trips proof-required (#1603). So the pace is slow and
steady: 1 message/s overall (a 300-person alert takes 5 minutes), one per 2 s per chat with a
burst of 3 (a reply and its menu), and 2 requests in flight (signal-cli serialises much of its
work anyway, in-flight requests bound duplicates after a crash, and a hung request holds one
slot only until its deadline).

Typing indicator: shown just before a message with choices (a wizard question) and cleared
after it, best effort, in the background, and only in json-rpc mode (in normal mode each call
starts a JVM). `set_disappearing(chat, seconds)` sets a 1:1 chat's disappearing-messages timer
(`PUT /v1/contacts/{number}`); an outbox row of kind "disappearing" (optional
`extra["seconds"]`, else `VIGIL_SIGNAL_DISAPPEARING_SECONDS`) does the same durably.

Logs name event kinds only: never a number, UUID, text, challenge token, captcha or attachment
id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bot.config import Settings
from bot.messages import Attachment, Outgoing
from bot.transports.base import (
    Capabilities,
    Deliver,
    IdentityUntrusted,
    Limits,
    MaybeSent,
    RecipientGone,
    Rejected,
    RetryLater,
    Transport,
)
from bot.transports.menus import MENU_TTL, NumberedMenus
from bot.transports.signal import sending
from bot.transports.signal.attachments import AttachmentJanitor
from bot.transports.signal.challenge import ChallengeDesk, ChallengeOutcome, Suspension
from bot.transports.signal.intake import Intake
from bot.transports.signal.receive import QUEUE_FRAMES, Receiver
from bot.transports.signal.rest import (
    SEND_TIMEOUT_CLI,
    SEND_TIMEOUT_JSON_RPC,
    SignalIdentity,
    SignalRest,
    canonical_uuid,
    is_attachment_id,
)

log = logging.getLogger(__name__)

Alert = Callable[[str], Awaitable[None]]

STOP_DRAIN = 30.0  # seconds stop() waits for frames already read to be stored
_INT = re.compile(r"[0-9]{1,10}")


def _kind(exc: BaseException) -> str:
    return type(exc).__name__


def _older_than(version: str | None, minimum: tuple[int, int]) -> bool:
    match = re.fullmatch(r"([0-9]+)\.([0-9]+).*", version or "")
    if match is None:
        return False  # "unset" (a dev build) or unknown: do not guess
    return (int(match.group(1)), int(match.group(2))) < minimum


class SignalTransport(Transport):
    name = "signal"
    limits = Limits(per_second=1.0, per_chat_per_second=0.5, chat_burst=3, in_flight=2)
    capabilities = Capabilities(
        edits=False, buttons=False, deletes_incoming=False, end_to_end=True, disappearing=True
    )

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
        menu_ttl: float = MENU_TTL,
        typing: bool = True,
        start_wait: float = 5.0,
        send_timeout: float | None = None,
        queue_frames: int = QUEUE_FRAMES,
        deliver_backoff: tuple[float, float] = (0.5, 30.0),
        stop_drain: float = STOP_DRAIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.signal_api_url or not settings.signal_number:
            raise ValueError("the Signal transport needs an API URL and a number")
        self.number = settings.signal_number
        self.disappearing_seconds = settings.signal_disappearing_seconds
        self.rest = SignalRest(settings.signal_api_url, self.number)
        self.receiver = Receiver(
            self.rest,
            self._about,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            silence_timeout=silence_timeout,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            stable_after=stable_after,
            poll_timeout=settings.signal_poll_timeout if poll_timeout is None else poll_timeout,
            queue_frames=queue_frames,
        )
        self.janitor = AttachmentJanitor(self.rest)
        self.suspension = Suspension(
            suspend_seconds=suspend_seconds, reply_interval=reply_interval, clock=clock
        )
        self.menus = NumberedMenus(ttl=menu_ttl, clock=clock)
        self.intake = Intake(
            self.number,
            self.receiver.queue,
            self.menus,
            self.janitor,
            self.fetch_attachment,
            backoff=deliver_backoff,
        )
        self.desk = ChallengeDesk(self.rest, self.suspension, self._alert)
        self.typing = typing
        self.start_wait = start_wait
        self.send_timeout = send_timeout
        self.stop_drain = stop_drain
        self.clock = clock
        # Wired by the app: tells the admins (on every transport) what needs a human.
        self.on_alert: Alert | None = None

        self.mode: str | None = None
        self.version: str | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._stopping = False
        self._swept = False
        self._background: set[asyncio.Task[Any]] = set()

    # -- what the core and tests read -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.rest.base_url

    @property
    def connections(self) -> int:
        return self.receiver.connections

    @property
    def frames(self) -> int:
        return self.receiver.frames

    @property
    def suspended(self) -> bool:
        return self.suspension.active

    @property
    def on_resume(self) -> Callable[[], None] | None:
        """Wired by the app (optional): sending just resumed, wake the dispatcher now."""
        return self.desk.on_resume

    @on_resume.setter
    def on_resume(self, hook: Callable[[], None] | None) -> None:
        self.desk.on_resume = hook

    @property
    def challenge_pending(self) -> bool:
        """Signal asked for a captcha and gave a token: `solve_challenge` can lift the pause."""
        return self.suspension.pending

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        if self._tasks:
            raise RuntimeError("the Signal transport is already receiving")
        self.intake.deliver = deliver
        self._stopping = False
        self.receiver.stopping = False
        with contextlib.suppress(httpx.HTTPError, ValueError, TimeoutError):
            await self._about()
        self._keeper = asyncio.create_task(self._close_at_exit(), name="signal-close-at-exit")
        self._tasks = {
            "signal.attachments": self.spawn("signal.attachments", self.janitor.run),
            "signal.process": self.spawn("signal.process", self.intake.run),
            "signal.receive": self.spawn("signal.receive", self._receive_main),
        }
        # Give the first connection a moment, so messages sent right after start arrive.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.receiver.receiving.wait(), self.start_wait)

    async def stop(self) -> None:
        """Stop intake: close the stream (or finish the poll under way, whose messages are
        already off Signal's server), then store every frame already read (bounded)."""
        self._stopping = True
        self.receiver.stopping = True
        receiver = self._tasks.pop("signal.receive", None)
        if receiver is not None:
            if self.mode == "json-rpc":
                receiver.cancel()
            grace = 2.0 if self.mode == "json-rpc" else self.receiver.poll_timeout + 10.0
            done, _ = await asyncio.wait([receiver], timeout=grace)
            if not done:
                receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        processor = self._tasks.pop("signal.process", None)
        if processor is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.receiver.queue.join(), self.stop_drain)
            left = self.receiver.queue.qsize() + (1 if self.intake.waiting_for_store else 0)
            if left:
                log.error("%d incoming Signal message(s) could not be stored before stopping "
                          "and are lost", left)  # fmt: skip
            processor.cancel()
            await asyncio.gather(processor, return_exceptions=True)
        janitor = self._tasks.pop("signal.attachments", None)
        if janitor is not None:
            await self.janitor.drain(5.0)
            janitor.cancel()
            await asyncio.gather(janitor, return_exceptions=True)
        self.receiver.receiving.clear()

    async def close(self) -> None:
        """Release the HTTP client, after the dispatcher drained (sends need it)."""
        if not self._stopping:
            await self.stop()
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not asyncio.current_task():
            keeper.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.rest.aclose()

    async def _close_at_exit(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            if self._keeper is not None:
                self._keeper = None
                await self.close()

    async def probe(self) -> str:
        temporary = self.rest._client is None
        try:
            await self._about(wait=5.0)
        finally:
            if temporary:
                await self.rest.aclose()
        return f"/v1/about ok, mode {self.mode}, version {self.version}"

    async def _about(self, wait: float = 10.0) -> str:
        mode, version = await self.rest.about(wait)
        self.version = version
        if mode != self.mode:
            log.info("signal-cli-rest-api %s in %s mode", self.version, mode)
            if _older_than(self.version, (0, 85)):
                log.warning("signal-cli-rest-api is older than 0.85: it cannot send to UUIDs")
        self.mode = mode
        return mode

    # -- receiving ------------------------------------------------------------------------------

    async def _receive_main(self) -> None:
        if not self._swept:
            self._swept = True
            await self.janitor.sweep()
        await self.receiver.run()

    # -- attachments ----------------------------------------------------------------------------

    async def fetch_attachment(self, attachment: Attachment, max_bytes: int) -> bytes | None:
        """The file's bytes (at most `max_bytes`), or None when larger, absent or unreachable.
        The file stays on the REST API's disk until its message is stored, then is deleted."""
        if not is_attachment_id(attachment.ref):
            return None
        try:
            return await self.rest.get_attachment(attachment.ref, max_bytes)
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("an attachment could not be fetched (%s)", _kind(exc))
            return None

    async def discard_attachment(self, attachment: Attachment) -> None:
        """Delete the file from the REST API's disk, unread (in the background)."""
        self.janitor.discard(attachment.ref)

    # -- sending --------------------------------------------------------------------------------

    async def send(self, out: Outgoing) -> str | None:
        if out.chat.startswith("group."):
            # The bot never writes into a group, whatever asked it to.
            raise Rejected("not_private")
        if out.kind == "delete":
            return None  # a bot cannot delete a person's messages on Signal
        if out.kind == "disappearing":
            return await self._send_timer(out)
        self.desk.gate(out.priority)
        started = self.clock()
        show_typing = (
            bool(out.choices) and self.typing and self.mode == "json-rpc" and not self.suspended
        )
        if show_typing:
            self._spawn(self.rest.typing(out.chat, True))
        if self.send_timeout is not None:
            deadline = self.send_timeout
        elif self.mode in ("normal", "native"):
            deadline = SEND_TIMEOUT_CLI
        else:
            deadline = SEND_TIMEOUT_JSON_RPC
        try:
            resp = await self.rest.send(sending.body(self.number, out), deadline)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise RetryLater(_kind(exc)) from None  # never left: no duplicate possible
        except (httpx.TimeoutException, TimeoutError):
            # The request left; the answer did not come (upstream can lose it for ever).
            raise RetryLater("timeout", maybe_sent=True) from None
        except httpx.TransportError as exc:
            raise RetryLater(_kind(exc), maybe_sent=True) from None
        finally:
            if show_typing:
                self._spawn(self.rest.typing(out.chat, False))
        return self._outcome(sending.read_answer(resp), out, started)

    def _outcome(self, answer: sending.SendAnswer, out: Outgoing, started: float) -> str | None:
        kind = answer.kind
        if kind == "sent":
            self.menus.after_send(out)
            self.desk.succeeded(started)
            return answer.ref
        if kind == "untrusted":
            log.warning("a Signal message was refused: the recipient's safety number changed")
            raise IdentityUntrusted("untrusted_identity")
        if kind == "unregistered":
            raise RecipientGone("unregistered")
        if kind == "server_error":
            raise RetryLater("server_error")
        if kind == "recipient_failure":
            raise RetryLater("network_failure")
        if kind == "http":
            raise RetryLater(f"http_{answer.status}")
        # The message may have arrived: remember its menu, as for a message that did.
        self.menus.after_send(out)
        if kind == "rate_limited":
            raise MaybeSent("rate_limited", self.desk.suspend(answer.wait, list(answer.tokens)))
        if kind == "too_old":
            log.error("signal-cli is too old for the Signal servers: update the image")
        raise MaybeSent("bad_request")

    async def _send_timer(self, out: Outgoing) -> None:
        """An outbox row asking for the chat's timer (durable and retried like a message)."""
        raw = out.extra.get("seconds")
        if raw is not None and not _INT.fullmatch(raw):
            raise Rejected("bad_timer")
        seconds = int(raw) if raw is not None else (self.disappearing_seconds or None)
        if seconds is None:
            return None  # not configured: the chat's own timer stays as the person set it
        if not await self.set_disappearing(out.chat, seconds):
            raise RetryLater("disappearing_timer")
        return None

    async def set_disappearing(self, chat: str, seconds: int) -> bool:
        """Set the disappearing-messages timer of the 1:1 chat with `chat` (a UUID); 0 turns
        it off. True when signal-cli accepted it. Best effort: the person may change it back."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        try:
            status = await self.rest.update_contact(chat, seconds)
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("disappearing-messages timer not set (%s)", _kind(exc))
            return False
        if status in (200, 204):
            return True
        log.warning("disappearing-messages timer not set (HTTP %d)", status)
        return False

    # -- the rate-limit challenge ----------------------------------------------------------------

    async def solve_challenge(self, captcha: str) -> ChallengeOutcome:
        """Hand a solved captcha (`signalcaptcha://…`) to Signal with the pending challenge
        token. SOLVED resumes sending at once; every other outcome leaves it paused. The
        outcome's `text` says what happened in plain words."""
        return await self.desk.solve(captcha)

    def _alert(self, text: str) -> None:
        if self.on_alert is None:
            return
        self._spawn(self._call_alert(self.on_alert, text))

    @staticmethod
    async def _call_alert(callback: Alert, text: str) -> None:
        try:
            await callback(text)
        except Exception as exc:
            log.warning("admin alert failed: %s", _kind(exc))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- identities ------------------------------------------------------------------------------

    async def identities(self) -> list[SignalIdentity]:
        """Every identity key signal-cli holds (SignalApiError when it cannot be asked)."""
        return await self.rest.identities()

    async def identity(self, address: str) -> SignalIdentity | None:
        """The identity signal-cli holds for one person (their ACI), or None."""
        wanted = canonical_uuid(address)
        if wanted is None:
            return None
        return next((i for i in await self.rest.identities() if i.address == wanted), None)

    async def trust_identity(self, address: str, safety_number: str | None = None) -> bool:
        """Trust the key signal-cli now holds for `address` (an ACI), after a coordinator
        confirmed the person in person. With `safety_number` (as their phone shows it) the key
        is trusted only if it is still that one; without, the number signal-cli lists now is
        used, so a key that changes again meanwhile is not trusted by accident. True when
        signal-cli trusts it now; it then hands over the messages it held from them.
        SignalApiError when the API cannot be asked."""
        wanted = canonical_uuid(address)
        if wanted is None:
            return False
        known = await self.identity(wanted)
        if known is None or not known.safety_number:
            return False
        if safety_number is not None and "".join(safety_number.split()) != known.safety_number:
            log.warning("a Signal identity was NOT trusted: the safety number did not match")
            return False
        if known.status == "TRUSTED_VERIFIED":
            return True  # signal-cli refuses a trust that changes nothing
        trusted = await self.rest.trust(wanted, known.safety_number)
        if trusted:
            log.warning("a Signal identity was trusted after a coordinator's check")
        else:
            log.warning("a Signal identity was NOT trusted: the safety number did not match")
        return trusted
