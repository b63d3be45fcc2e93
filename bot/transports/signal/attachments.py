"""Attachment files on signal-cli-rest-api's disk: read only when asked, deleted in any case.

signal-cli downloads every attachment of an incoming message into its config directory, in
plaintext, before the frame reaches us. So each one is deleted from that disk:
* right after `fetch_attachment` read it (the core asked: a relative's report);
* when the core calls `discard_attachment` (the sender may not send it now);
* after the frame was stored, for whatever nobody asked for (group messages, ignored
  envelopes, surplus or oversized files), without ever being read;
* at start, everything left there by messages Vigil never saw (frames the REST layer dropped):
  the account is the bot's alone.

Deletions run in their own loop, so a DELETE that hangs never holds up the receive stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import httpx

from bot.transports.signal.rest import SignalRest, is_attachment_id

log = logging.getLogger(__name__)

SWEEP_DEADLINE = 60.0


class AttachmentJanitor:
    def __init__(self, rest: SignalRest) -> None:
        self.rest = rest
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._handled: set[str] = set()  # ids of frames in hand that need no more deleting
        self.deleted = 0
        self.failed = 0

    def discard(self, att_id: str) -> None:
        """Delete this file soon, unread (at most once per frame)."""
        if not is_attachment_id(att_id) or att_id in self._handled:
            return
        self._handled.add(att_id)
        self.queue.put_nowait(att_id)

    def fetched(self, att_id: str) -> None:
        """`fetch_attachment` deleted it already."""
        self._handled.add(att_id)

    def release(self, ids: Iterable[str]) -> None:
        """The frame naming `ids` is done with: delete what is still on disk."""
        ids = list(ids)
        for att_id in ids:
            self.discard(att_id)
        self._handled.difference_update(ids)

    async def delete_now(self, att_id: str) -> bool:
        try:
            gone = await self.rest.delete_attachment(att_id)
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("an attachment could not be deleted from signal-cli-rest-api (%s)",
                        type(exc).__name__)  # fmt: skip
            gone = False
        if gone:
            self.deleted += 1
        else:
            self.failed += 1
        return gone

    async def run(self) -> None:
        """The deletion loop (started under the app's supervisor)."""
        while True:
            att_id = await self.queue.get()
            try:
                await self.delete_now(att_id)
            finally:
                self.queue.task_done()

    async def sweep(self) -> int:
        """Delete what messages nobody received left on the disk; how many files."""
        removed = 0
        try:
            async with asyncio.timeout(SWEEP_DEADLINE):
                names = await self.rest.list_attachments()
                for name in names:
                    if is_attachment_id(name) and await self.delete_now(name):
                        removed += 1
        except (httpx.HTTPError, ValueError, TimeoutError):
            return removed
        if removed:
            log.info("deleted %d leftover attachment file(s) from signal-cli-rest-api", removed)
        return removed

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` s for queued deletions (what remains is swept at next start)."""
        try:
            async with asyncio.timeout(grace):
                await self.queue.join()
        except TimeoutError:
            log.warning("%d attachment file(s) not yet deleted at stop; the next start deletes "
                        "them", self.queue.qsize())  # fmt: skip
