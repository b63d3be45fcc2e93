"""A python-telegram-bot `BaseRequest` on aiohttp, several times cheaper than PTB's httpx stack.

Why: `../shared/research/throughput.md` measured PTB's default httpx/httpcore stack at 350-500
calls/s on the target hardware and an aiohttp-based request class at ~1,650/s. PTB lets an
application supply its own request class (`Bot(request=..., get_updates_request=...)`).

Wire format: parameters as an `application/json` body (the Bot API documents four encodings;
PTB's own `HTTPXRequest` url-encodes, which costs several times the CPU), a multipart body
like PTB's when files are present, and an empty body without Content-Type when there are no
parameters. Errors carry the exception's type only: aiohttp puts URLs in its messages and
a Bot API URL contains the bot token.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TelegramError, TimedOut
from telegram.request import BaseRequest, RequestData

_JSON = {"Content-Type": "application/json"}
DOWNLOAD_CHUNK = 64 * 1024


def _dumps(params: dict[str, Any]) -> bytes:
    return json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class DownloadTooLarge(Exception):
    """The file exceeds the caller's byte limit; nothing beyond the limit was read."""


class ConnectTimedOut(TimedOut):
    """No connection within the connect or pool timeout: the request was certainly not sent
    (a plain TimedOut may come after Telegram received it)."""


class AiohttpRequest(BaseRequest):
    """One aiohttp session with a bounded connection pool.

    Timeouts follow PTB's meaning: `connect_timeout` for the TCP connect, `pool_timeout` for
    waiting on a free pooled connection, `read_timeout` between reads of the answer, and
    `write_timeout` (or `media_write_timeout` for uploads) for sending the body. aiohttp has no
    write timeout of its own, so the sum of all four bounds the whole call.
    """

    def __init__(
        self,
        connection_pool_size: int = 8,
        *,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size,
                limit_per_host=self._pool_size,
                # Keep connections warm between bursts; the Bot API keeps them alive too.
                keepalive_timeout=60,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self.USER_AGENT},
                # Bot API answers are small JSON; no cookies, no automatic redirects.
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            raise RuntimeError("AiohttpRequest is not initialized")
        return self._session

    def _timeout(
        self,
        read: ODVInput[float],
        write: ODVInput[float],
        connect: ODVInput[float],
        pool: ODVInput[float],
        *,
        files: bool,
    ) -> aiohttp.ClientTimeout:
        r = self._read_timeout if isinstance(read, DefaultValue) else read
        c = self._connect_timeout if isinstance(connect, DefaultValue) else connect
        p = self._pool_timeout if isinstance(pool, DefaultValue) else pool
        if isinstance(write, DefaultValue):
            w = self._media_write_timeout if files else self._write_timeout
        else:
            w = write
        parts = (r, w, c, p)
        total = None if any(x is None for x in parts) else sum(x for x in parts if x is not None)
        # aiohttp's `connect` covers waiting for a pooled connection plus the connect itself.
        acquire = None if c is None or p is None else c + p
        return aiohttp.ClientTimeout(total=total, connect=acquire, sock_connect=c, sock_read=r)

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session = self.session
        files = bool(request_data and request_data.contains_files)
        timeout = self._timeout(
            read_timeout, write_timeout, connect_timeout, pool_timeout, files=files
        )
        data: Any = None
        headers: dict[str, str] | None = None
        if request_data is not None:
            params = request_data.json_parameters
            if files:
                form = aiohttp.FormData(quote_fields=False)
                for name, value in params.items():
                    form.add_field(name, value)
                for name, (filename, content, mimetype) in request_data.multipart_data.items():
                    form.add_field(name, content, filename=filename, content_type=mimetype)
                data = form
            elif params:
                # JSON, one of the Bot API's documented encodings: a C-speed json.dumps instead
                # of url-quoting every character (a tenth of this process's CPU per message).
                data = _dumps(request_data.parameters)
                headers = _JSON
        try:
            async with session.request(
                method, url, data=data, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                return resp.status, await resp.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise ConnectTimedOut("Connect or pool timeout: the request was not sent") from None
            raise TimedOut() from None
        except aiohttp.ClientError as exc:
            # The type only: aiohttp's messages quote the URL, which holds the token.
            raise NetworkError(f"aiohttp.{type(exc).__name__}") from None

    async def download(self, url: str, max_bytes: int) -> bytes:
        """GET a file, reading at most `max_bytes`; raises DownloadTooLarge beyond that."""
        timeout = self._timeout(
            BaseRequest.DEFAULT_NONE,
            BaseRequest.DEFAULT_NONE,
            BaseRequest.DEFAULT_NONE,
            BaseRequest.DEFAULT_NONE,
            files=True,
        )
        try:
            async with self.session.get(url, timeout=timeout, allow_redirects=False) as resp:
                if not 200 <= resp.status < 300:
                    raise NetworkError(f"file download answered {resp.status}")
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise DownloadTooLarge()
                buf = bytearray()
                async for chunk in resp.content.iter_chunked(DOWNLOAD_CHUNK):
                    buf += chunk
                    if len(buf) > max_bytes:
                        raise DownloadTooLarge()
                return bytes(buf)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise TimedOut() from None
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}") from None

    @staticmethod
    def parse_json_payload(payload: bytes) -> dict[str, Any]:
        # PTB's version logs the undecodable payload, which may quote a person's message.
        try:
            return json.loads(payload.decode("utf-8", "replace"))
        except ValueError:
            raise TelegramError("Invalid server response") from None
