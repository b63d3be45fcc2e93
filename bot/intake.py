"""From a transport's message to a committed transaction: attachments only after the checks,
then the router, then the transport requests handlers left behind (/trust, /captcha).

A transport confirms a message to its platform only after `deliver` returned, so anything that
raises here leaves the message with the platform, to be delivered again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.context import RequestResult, TransportRequest
from bot.guard import AttachmentQuota
from bot.messages import Attachment, Incoming
from bot.router import Router
from bot.services import Services
from bot.transports.base import Transport
from storage.db import Database

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 60.0


class Intake:
    def __init__(
        self,
        db: Database,
        router: Router,
        services: Services,
        transports: list[Transport],
        wake: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self.db = db
        self.router = router
        self.services = services
        self.transports = {t.name: t for t in transports}
        self.wake = wake
        self.clock = clock
        self.quota = AttachmentQuota(clock=clock)

    async def deliver(self, msg: Incoming) -> None:
        """Handle one incoming message durably; raises if it could not be stored."""
        if msg.attachments:
            msg = await self._attachments(msg)
        outcome = await self.db.run(self.router.process, msg)
        self.wake()  # a handler may have written rows for any transport
        for request in outcome.requests:
            await self._run(request)

    # -- attachments ----------------------------------------------------------------------------

    async def _attachments(self, msg: Incoming) -> Incoming:
        """Fetch bytes only for a sender who may send them now; everything else is discarded
        unread (deleted from the REST API's disk on Signal, never downloaded on Telegram)."""
        transport = self.transports.get(msg.transport)
        member_id = await self.db.run(self.router.attachments_wanted, msg)
        out: list[Attachment] = []
        for i, att in enumerate(msg.attachments):
            data, refused = None, None
            within = att.size <= self.services.max_attachment_bytes
            if member_id is None or transport is None:
                refused = "not now"
            elif i >= self.services.max_attachments or not within:
                refused = "size"
            elif not self.quota.allows(member_id, att.size):
                refused = "quota"
            else:
                try:
                    data = await transport.fetch_attachment(att, self.services.max_attachment_bytes)
                except Exception as exc:
                    log.warning("attachment fetch failed: %s", type(exc).__name__)
                if data is not None:
                    self.quota.take(member_id, len(data))
            if data is None and transport is not None:
                await self._discard(transport, att)
            out.append(dataclasses.replace(att, data=data, refused=refused))
        return dataclasses.replace(msg, attachments=tuple(out))

    @staticmethod
    async def _discard(transport: Transport, att: Attachment) -> None:
        try:
            await transport.discard_attachment(att)
        except Exception as exc:
            log.warning("attachment could not be discarded: %s", type(exc).__name__)

    # -- transport requests ---------------------------------------------------------------------

    async def _run(self, request: TransportRequest) -> None:
        result = await self._call(request)
        released = await self.db.run(request.on_result, self.clock(), result)
        self.wake()
        for msg in released:
            await self.db.run(_process_held, self.router, msg)
            self.wake()

    async def _call(self, request: TransportRequest) -> RequestResult:
        transport = self.transports.get(request.transport)
        op: Callable[[str], Awaitable[Any]] | None = getattr(transport, request.op, None)
        if op is None:
            return RequestResult(False, "unavailable")
        try:
            answer = await asyncio.wait_for(op(request.argument), REQUEST_TIMEOUT)
        except Exception as exc:
            log.warning("transport request %s failed: %s", request.op, type(exc).__name__)
            return RequestResult(False, "unavailable")
        if isinstance(answer, bool):
            return RequestResult(answer, "")
        return RequestResult(bool(getattr(answer, "ok", False)), str(getattr(answer, "value", "")))


def _process_held(conn: Any, router: Router, msg: Incoming) -> None:
    router.process(conn, msg, held=True)
