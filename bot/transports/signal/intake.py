"""From queued frames to stored messages: one loop, in order, retried until stored.

The processing loop takes frames from the receive queue in order and hands each message to
`deliver`, retrying with a growing back-off (0.5 s doubling to 30 s) **until it is stored**:
nobody can hand a Signal message to us again, so Vigil never drops one after N attempts. While
a message waits, the ones behind it wait too (order matters to wizards), the queue fills, and
reading pauses (receive.py says what the REST layer then does).

Messages: `sender = chat = sourceUuid` (never the phone number: THREATS rule 5); `key =
"<sourceUuid>:<timestamp>"`, so the inbox drops Signal's redeliveries and replays. A typed
number answering a numbered menu becomes that choice (menus.py). Group messages arrive with
`private=False`, `chat` = the group and no attachments (the core drops them). A changed safety
number arrives as `untrusted_identity=True` with key `"<sourceUuid>:<timestamp>:untrusted"`
(frames.py says why). The sender's file names are never kept (they can identify people).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.messages import Attachment, Incoming
from bot.transports.base import Deliver
from bot.transports.menus import NumberedMenus
from bot.transports.signal import frames
from bot.transports.signal.attachments import AttachmentJanitor
from bot.transports.signal.receive import Raw

log = logging.getLogger(__name__)

LONG_TEXT_BYTES = 64 * 1024  # Signal clients' own limit for a message text

Fetch = Callable[[Attachment, int], Awaitable[bytes | None]]


class Intake:
    def __init__(
        self,
        number: str,
        queue: asyncio.Queue[Raw],
        menus: NumberedMenus,
        janitor: AttachmentJanitor,
        fetch: Fetch,
        *,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.number = number
        self.queue = queue
        self.menus = menus
        self.janitor = janitor
        self.fetch = fetch
        self.backoff = backoff
        self.deliver: Deliver | None = None
        self.stored = 0  # messages handed to `deliver` and stored
        self.store_failures = 0  # failed `deliver` attempts (the store could not write)
        self.waiting_for_store = False  # a message is being retried right now

    async def run(self) -> None:
        """The processing loop (started under the app's supervisor)."""
        while True:
            raw = await self.queue.get()
            try:
                await self.handle(raw)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad frame must not stop receiving
                log.error("a signal frame could not be handled: %s", type(exc).__name__)
            finally:
                self.queue.task_done()

    async def handle(self, raw: Raw) -> None:
        frame = frames.parse(raw, self.number)
        if frame is None:
            return
        try:
            if frame.kind == "unreadable":
                log.warning("signal-cli could not read an incoming message (%s)", frame.exception)
            elif frame.kind == "error":
                log.warning("signal-cli reported a receive error")
            elif frame.kind != "ignored":
                incoming = await self.incoming(frame)
                if incoming is not None:
                    await self.store(incoming)
        finally:
            self.janitor.release(frame.attachment_ids)

    async def incoming(self, frame: frames.Frame) -> Incoming | None:
        sender, ts = frame.sender, frame.timestamp
        if sender is None or ts is None:
            return None
        if frame.kind == "untrusted":
            log.warning("a Signal message came from a changed safety number; it is held "
                        "until a coordinator confirms the sender")  # fmt: skip
            return Incoming(
                transport="signal",
                sender=sender,
                chat=sender,
                key=f"{sender}:{ts}:untrusted",
                untrusted_identity=True,
            )
        if frame.kind == "group":
            # Delivered for the core to drop; nothing of it is read beyond the text.
            return Incoming(
                transport="signal",
                sender=sender,
                chat=frame.group or "group.",
                key=f"{sender}:{ts}",
                text=frame.text,
                private=False,
            )
        text = frame.text
        if frame.long_text_id is not None:
            # Signal sends a text over 2000 bytes cut short, with the whole text attached.
            data = await self.fetch(Attachment("document", frame.long_text_id), LONG_TEXT_BYTES)
            text = data.decode("utf-8", errors="replace") if data else text
        attachments = tuple(
            Attachment(
                kind="photo" if a.mime.startswith("image/") else "document",
                ref=a.id,
                mime=a.mime,
                size=max(0, a.size),
                name="",
            )
            for a in frame.attachments
        )
        text, is_choice = self.menus.resolve(sender, text)
        return Incoming(
            transport="signal",
            sender=sender,
            chat=sender,
            key=f"{sender}:{ts}",
            text=text,
            attachments=attachments,
            is_choice=is_choice,
        )

    async def store(self, incoming: Incoming) -> None:
        """Nobody can hand this message to us again: retry until the store takes it."""
        assert self.deliver is not None
        first, most = self.backoff
        attempt = 0
        while True:
            try:
                await self.deliver(incoming)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                self.store_failures += 1
                self.waiting_for_store = True
                if attempt in (1, 10) or attempt % 100 == 0:
                    log.warning("storing an incoming Signal message failed (%s, %d tries); "
                                "retrying until it is stored", type(exc).__name__,
                                attempt)  # fmt: skip
                await asyncio.sleep(min(most, first * 2 ** (attempt - 1)))
                continue
            self.waiting_for_store = False
            self.stored += 1
            if attempt:
                log.info("an incoming Signal message was stored after %d failed tries", attempt)
            return
