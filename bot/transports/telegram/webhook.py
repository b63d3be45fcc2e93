"""Webhook mode: Telegram POSTs each update; 200 only after the core stored it.

An aiohttp server listens on `VIGIL_TELEGRAM_WEBHOOK_LISTEN` (put TLS in front of it) and
answers 403 to requests without the secret token given to `setWebhook`. An update whose
handling failed gets a 500, so Telegram delivers it again later (its own back-off). The
webhook is left in place at stop: Telegram keeps queueing updates while the bot is down.
"""

from __future__ import annotations

import hmac
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bot.config import ConfigError
from bot.messages import Incoming
from bot.transports.telegram.updates import JoinedGroup, Read

if TYPE_CHECKING:
    from aiohttp import web  # imported when a webhook starts: polling bots save ~2 MB

log = logging.getLogger(__name__)

Json = dict[str, Any]

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
MAX_BODY = 1024 * 1024
STOP_GRACE = 10.0


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 < number < 65536:
        raise ConfigError("VIGIL_TELEGRAM_WEBHOOK_LISTEN must be HOST:PORT, e.g. 127.0.0.1:8443.")
    return host.strip("[]"), number


class WebhookServer:
    def __init__(
        self,
        url: str,
        listen: tuple[str, int],
        secret: str,
        read: Callable[[Json], Read],
        handle: Callable[[Incoming | JoinedGroup], Awaitable[None]],
        after: Callable[[Json], None],
    ) -> None:
        self.url = url
        self.listen = listen
        self.secret = secret
        self.read = read
        self.handle = handle
        self.after = after
        self.stopping = False
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        from aiohttp import web

        path = urllib.parse.urlsplit(self.url).path or "/"
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(path, self._on_update)
        # No access log: it records client addresses and paths.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_GRACE)
        await self._runner.setup()
        host, port = self.listen
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        self.stopping = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_update(self, request: web.Request) -> web.Response:
        from aiohttp import web

        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            return web.Response(status=403)
        if self.stopping:
            return web.Response(status=503)  # Telegram retries later
        try:
            update = await request.json()
        except ValueError:
            return web.Response(status=400)
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return web.Response(status=400)
        item = self.read(update)
        if item is not None:
            try:
                await self.handle(item)
            except Exception as exc:
                log.warning("telegram: delivery failed (%s); Telegram will retry",
                            type(exc).__name__)  # fmt: skip
                return web.Response(status=500)
        self.after(update)
        return web.Response(status=200)
