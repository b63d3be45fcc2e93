"""python-telegram-bot's `Bot` as Vigil builds it, and what its errors mean to the core."""

from __future__ import annotations

import urllib.parse
import warnings
from datetime import timedelta
from typing import Any

from telegram import Bot
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.warnings import PTBDeprecationWarning, PTBUserWarning

from bot.config import ConfigError, Settings
from bot.transports.aiohttp_request import AiohttpRequest, ConnectTimedOut
from bot.transports.base import RecipientGone, Rejected, RetryLater

# PTB 22 warns about its own future change of `RetryAfter.retry_after` every time it builds
# that error (each 429); we read the timedelta directly, so the warning is only noise.
warnings.filterwarnings(
    "ignore", message=r".*`retry_after` will be of type", category=PTBDeprecationWarning
)
# `do_api_request` suggests the typed method; we call it on purpose, for the raw result.
warnings.filterwarnings(
    "ignore",
    message=r"Please use 'Bot\.\w+' instead of 'Bot\.do_api_request",
    category=PTBUserWarning,
)

Json = dict[str, Any]

MAX_BACKOFF = 60.0


def file_base_url(api_url: str) -> str:
    """PTB's `base_file_url` for a `base_url`: `.../bot` becomes `.../file/bot`."""
    if api_url.endswith("/bot"):
        return api_url[: -len("/bot")] + "/file/bot"
    if "/bot{token}" in api_url:
        return api_url.replace("/bot{token}", "/file/bot{token}")
    parts = urllib.parse.urlsplit(api_url)
    return f"{parts.scheme}://{parts.netloc}/file/bot"


def make_bot(settings: Settings, *, pool: int = 8) -> Bot:
    """A `telegram.Bot` on aiohttp for these settings (no rate limiter, no defaults)."""
    if not settings.telegram_token:
        raise ConfigError("VIGIL_TELEGRAM_TOKEN is not set.")
    return Bot(
        settings.telegram_token,
        base_url=settings.telegram_api_url,
        base_file_url=file_base_url(settings.telegram_api_url),
        request=AiohttpRequest(pool),
        # Long polls get their own one-connection pool so they never starve sends.
        get_updates_request=AiohttpRequest(1),
    )


async def fetch_username(settings: Settings) -> str | None:
    """The bot's @username via getMe (for `vigil invite` deep links); None if unreachable."""
    bot = make_bot(settings, pool=1)
    try:
        await bot.initialize()
        return bot.username
    except TelegramError:
        return None
    finally:
        await bot.shutdown()


def retry_seconds(err: RetryAfter) -> float:
    # Read the timedelta directly: the int-valued property warns about a PTB deprecation.
    value: Any = getattr(err, "_retry_after", None)
    if isinstance(value, timedelta):
        return value.total_seconds()
    raw = err.retry_after
    return raw.total_seconds() if isinstance(raw, timedelta) else float(raw)


def map_error(err: TelegramError) -> Exception:
    """The core's delivery errors for a PTB error (order matters: BadRequest and TimedOut are
    NetworkErrors in PTB)."""
    if isinstance(err, RetryAfter):
        return RetryLater("flood", retry_seconds(err))
    if isinstance(err, ConnectTimedOut):
        return RetryLater("connect_timeout")  # never left: no duplicate possible
    if isinstance(err, TimedOut):
        # The request may have reached Telegram before the answer was lost.
        return RetryLater("timeout", maybe_sent=True)
    if isinstance(err, Forbidden):
        return RecipientGone("blocked")  # blocked, kicked from the group, user deactivated
    if isinstance(err, BadRequest):
        message = err.message.lower()
        if any(s in message for s in ("chat not found", "peer_id_invalid", "user not found")):
            return RecipientGone("chat_not_found")
        return Rejected("bad_request")
    if isinstance(err, ChatMigrated):
        return Rejected("chat_migrated")
    if isinstance(err, InvalidToken):
        return RetryLater("unauthorized")
    if isinstance(err, NetworkError):
        return RetryLater("network")
    return RetryLater("telegram")


def backoff(attempt: int) -> float:
    """Seconds to wait after the `attempt`-th failure in a row: 1, 2, 4 … up to a minute."""
    return min(MAX_BACKOFF, 1.0 * 2 ** max(0, attempt - 1))


def encoded_url(file_path: str) -> str:
    """PTB's own encoding of a download URL (the token's ':' is percent-encoded)."""
    parts = urllib.parse.urlsplit(file_path)
    return urllib.parse.urlunsplit(parts._replace(path=urllib.parse.quote(parts.path)))


def host_of(url: str) -> str:
    """Scheme, host and port of a URL, for error messages (a Bot API URL may hold the token)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '-'}" + (f":{parts.port}" if parts.port else "")
