"""Telegram transport: PTB's API layer, our own update loop, updates confirmed after delivery.

Receiving. python-telegram-bot's `Application`/`Updater` confirm updates to Telegram on the next
poll, before handlers have finished, so a crash loses them. This module runs its own loop
instead: `getUpdates`, `deliver` every update (those of different chats concurrently, those of
one chat in order, because the router's wizards depend on order), and only then move `offset`
past them. An update whose delivery failed (store unavailable) is fetched again after a
back-off. Redelivery is harmless: the inbox records each `update_id` in the same transaction as
its effects, so at-least-once here is exactly-once in effect. Exactly one poller runs; a 409
Conflict (another instance, or a webhook set elsewhere) is logged and backed off, never fought.

Webhook mode (`VIGIL_TELEGRAM_WEBHOOK_URL`): an aiohttp server on `VIGIL_TELEGRAM_WEBHOOK_LISTEN`
(put TLS in front of it), `setWebhook` with a secret token, 403 for requests without it, and
200 only after `deliver` returned, so Telegram redelivers what we could not store. The webhook
is left in place at stop: Telegram keeps queueing updates while the bot is down.

What is ignored, and why:
* edited messages: an edit must not re-run a command or silently rewrite a stored report; we do
  not even subscribe to them (`allowed_updates`);
* updates without a person (channel posts, anonymous group admins, automatic forwards, other
  bots): nobody to answer and no identity to attach;
* in groups, everything but commands addressed to us and button presses: group members did
  not write to the bot, so their chatter is neither read nor answered.

Sending. User text always goes without a parse mode (no Markdown/HTML injection). Texts over
4096 characters (UTF-16 units, the stricter count) are split at line, then word boundaries.
Choices become an inline keyboard, one button per row, whose callback data is the choice
value; if a value exceeds Telegram's 64-byte callback limit the transport falls back to a
numbered text menu and maps a typed number back to its value (in memory, like the console).
Pacing is the dispatcher's job (`limits`, `chat_interval`); PTB's AIORateLimiter is not used.

Speed: the hot calls (getUpdates, sendMessage, editMessageText) go through PTB's public
`Bot.do_api_request`, which returns the raw JSON instead of building `Update`/`Message`
objects; in profiles that construction was the largest CPU cost per update, and holding the
GIL it also slowed the database writer thread (bench/throughput.py). PTB still prepares the
parameters and maps error answers to exceptions, `AiohttpRequest` does the HTTP, and updates
are read from their JSON here (`to_incoming`), touching only the fields this module documents.

Logs and exception messages carry event kinds only: no text, no ids, no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import secrets
import urllib.parse
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from aiohttp import web
from telegram import Bot, BotCommand
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.warnings import PTBDeprecationWarning, PTBUserWarning

from bot.config import ConfigError, Settings
from bot.messages import Attachment, Choice, Incoming, Outgoing
from bot.transports.aiohttp_request import AiohttpRequest, ConnectTimedOut, DownloadTooLarge
from bot.transports.base import (
    Deliver,
    Limits,
    RecipientGone,
    Rejected,
    RetryLater,
    Transport,
)

log = logging.getLogger(__name__)

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

MAX_TEXT = 4096  # sendMessage / editMessageText, counted here in UTF-16 units
MAX_CALLBACK_DATA = 64  # bytes
MAX_COMMANDS = 100
ALLOWED_UPDATES = ("message", "callback_query")
POLL_TIMEOUT = 25  # seconds a getUpdates may wait for news (Telegram allows up to 50)
POLL_READ_MARGIN = 10  # read timeout beyond the long poll's own
# Message fields that make a private message worth an answer even without text or a file.
_CONTENT_KEYS = ("sticker", "animation", "location", "contact", "venue", "poll", "dice", "story")
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2}$")

START_ATTEMPTS = 6  # getMe tries at start: ~30 s of back-off before giving up
MAX_BACKOFF = 60.0
CONFLICT_BACKOFF = 5.0  # another poller holds the token: do not fight it every second
STOP_GRACE = 10.0  # seconds stop() waits for a batch being delivered
POISON_LIMIT = 5  # failures of one update while others were stored before it is skipped
MENU_MEMORY = 10_000  # chats whose latest numbered menu is remembered


# --- helpers ---------------------------------------------------------------------------


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


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, limit: int) -> int:
    """How many characters of `text` fit in `limit` UTF-16 units."""
    if len(text) * 2 <= limit:
        return len(text)
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Pieces of at most `limit` UTF-16 units, cut at a line break, else a space, else hard.
    Whitespace-only pieces are dropped (Telegram refuses empty messages)."""
    chunks: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        fit = _prefix_within(rest, limit)
        window = rest[:fit]
        cut = -1
        for sep in ("\n\n", "\n", " "):
            at = window.rfind(sep, fit // 2)
            if at > 0:
                cut = at
                break
        if cut <= 0:
            cut = fit
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ")
    chunks.append(rest)
    return [c for c in chunks if c.strip()]


def _truncate(text: str, limit: int = MAX_TEXT) -> str:
    if utf16_len(text) <= limit:
        return text
    return text[: _prefix_within(text, limit - 1)] + "…"


def _chat_id(chat: str) -> int | str:
    try:
        return int(chat)
    except ValueError:
        return chat  # "@channelname"


def _message_id(ref: str | None) -> int:
    try:
        return int(ref or "")
    except ValueError:
        raise Rejected("bad_ref") from None


def _seconds(err: RetryAfter) -> float:
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
        return RetryLater("flood", _seconds(err))
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


def _backoff(attempt: int) -> float:
    return min(MAX_BACKOFF, 1.0 * 2 ** max(0, attempt - 1))


# --- the transport ---------------------------------------------------------------------


class TelegramTransport(Transport):
    name = "telegram"
    # 16 concurrent requests: each holds its slot until its "sent" mark is committed, so this
    # sets reply throughput (bench/throughput.py: ~1.5x the bare bot at 8, ~1.75x at 16) and
    # bounds what a crash can duplicate (16 messages, about half a second at 30/s).
    limits = Limits(per_second=30, per_chat_per_second=1, chat_burst=3, in_flight=16)
    can_edit = True  # editMessageText exists; the dispatcher edits in place

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.telegram_webhook_secret and not _SECRET_RE.match(
            settings.telegram_webhook_secret
        ):
            raise ConfigError(
                "VIGIL_TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and -."
            )
        self._webhook = settings.telegram_webhook_url
        self._listen: tuple[str, int] | None = None
        if self._webhook:
            self._listen = _parse_listen(settings.telegram_webhook_listen)
        # Room for the dispatcher's in-flight sends plus callback answers and downloads.
        self.bot = make_bot(settings, pool=self.limits.in_flight + 4)
        self.username: str | None = None
        self._deliver: Deliver | None = None
        self._task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._secret = settings.telegram_webhook_secret or secrets.token_urlsafe(32)
        self._stopping = False
        # True while the poll loop waits (long poll, back-off), never while it delivers.
        self._cancellable = False
        self._offset: int | None = None
        self._confirmed: int | None = None
        self._poison: dict[int, int] = {}
        self._menus: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._partial: dict[int, int] = {}  # outbox id -> chunks of a long text already sent
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def _request(self) -> AiohttpRequest:
        request = self.bot.request
        assert isinstance(request, AiohttpRequest)
        return request

    async def start(self, deliver: Deliver) -> None:
        if self._deliver is not None:
            raise RuntimeError("the Telegram transport is already started")
        self._deliver = deliver
        try:
            await self._connect()
            if self._webhook:
                await self._start_webhook()
            else:
                await self._retrying(lambda: self.bot.delete_webhook(drop_pending_updates=False))
        except BaseException:
            # The app does not stop a transport whose start failed: release what we opened.
            await self.close()
            raise
        # Close the HTTP sessions when the event loop winds down: the core has no close hook
        # and keeps sending (draining the outbox) after stop().
        self._keeper = asyncio.create_task(self._close_at_exit())
        if self._webhook:
            log.info("telegram: receiving by webhook")
        else:
            self._task = asyncio.create_task(self._poll_loop())
            log.info("telegram: receiving by long polling")

    async def _connect(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                await self.bot.initialize()  # getMe
            except InvalidToken:
                # PTB's message quotes the token: replace it, never chain it.
                raise ConfigError(
                    "Telegram rejected the bot token (VIGIL_TELEGRAM_TOKEN)."
                ) from None
            except TelegramError as exc:
                if attempt == START_ATTEMPTS:
                    raise ConfigError(
                        "Cannot reach the Telegram Bot API at "
                        f"{_host(self.settings.telegram_api_url)} ({type(exc).__name__})."
                    ) from None
                log.warning("telegram: Bot API not reachable at start (%s)", type(exc).__name__)
                await asyncio.sleep(_backoff(attempt))
            else:
                self.username = self.bot.username
                return

    async def _retrying(self, call: Any) -> Any:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return await call()
            except RetryAfter as err:
                await asyncio.sleep(_seconds(err))
            except TelegramError as exc:
                if isinstance(exc, BadRequest | Forbidden | InvalidToken) or (
                    attempt == START_ATTEMPTS
                ):
                    raise ConfigError(
                        f"The Telegram Bot API refused a start-up call ({type(exc).__name__})."
                    ) from None
                await asyncio.sleep(_backoff(attempt))
        return None

    async def stop(self) -> None:
        """Stop intake. Sending keeps working: the dispatcher drains the outbox afterwards."""
        self._stopping = True
        if self._task is not None:
            if self._cancellable:
                self._task.cancel()
            done, _ = await asyncio.wait([self._task], timeout=STOP_GRACE)
            if not done:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            await self._confirm()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        """Release the HTTP sessions (after the outbox was drained). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if not self._stopping:
            await self.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._keeper is not None and self._keeper is not asyncio.current_task():
            self._keeper.cancel()
        await self.bot.shutdown()

    async def _close_at_exit(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            if not self._closed:
                self._keeper = None
                await self.close()

    # -- long polling ---------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        failures = 0
        while not self._stopping:
            self._cancellable = True
            try:
                updates = await self._call(
                    "getUpdates",
                    {
                        "offset": self._offset,
                        "timeout": POLL_TIMEOUT,
                        "allowed_updates": list(ALLOWED_UPDATES),
                    },
                    read_timeout=POLL_TIMEOUT + POLL_READ_MARGIN,
                )
            except Exception as exc:
                failures += 1
                await self._poll_failed(exc, failures)
                continue
            finally:
                self._cancellable = False
            if not isinstance(updates, list):
                failures += 1
                await self._poll_failed(TelegramError("Invalid server response"), failures)
                continue
            failures = 0
            self._confirmed = self._offset
            batch = [u for u in updates if isinstance(u, dict) and type(u.get("update_id")) is int]
            if not batch:
                continue
            complete = False
            try:
                self._offset, complete = await self._deliver_batch(batch)
            except Exception as exc:  # a bug here must not end intake for good
                log.error("telegram: a batch of updates failed (%s)", type(exc).__name__)
            if not complete and not self._stopping:
                # The store refused something: give it a moment, then fetch the rest again.
                failures += 1
                await self._sleep(_backoff(failures))

    async def _poll_failed(self, exc: Exception, failures: int) -> None:
        delay = _backoff(failures)
        if isinstance(exc, RetryAfter):
            delay = max(_seconds(exc), 1.0)
            log.warning("telegram: getUpdates flood control; waiting %.0f s", delay)
        elif isinstance(exc, Conflict):
            delay = max(delay, CONFLICT_BACKOFF)
            log.warning(
                "telegram: getUpdates conflict: another instance is polling with this token, "
                "or a webhook is set; retrying in %.0f s",
                delay,
            )
        elif isinstance(exc, TimedOut):
            delay = min(delay, 1.0)  # a lost long poll; ask again soon
            log.info("telegram: getUpdates timed out")
        elif isinstance(exc, InvalidToken):
            log.error("telegram: the bot token was rejected; retrying in %.0f s", delay)
        else:
            log.warning("telegram: getUpdates failed (%s); retrying in %.0f s",
                        type(exc).__name__, delay)  # fmt: skip
        await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        self._cancellable = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self._cancellable = False

    async def _deliver_batch(self, updates: Sequence[Json]) -> tuple[int, bool]:
        """Deliver a batch; return the offset to confirm next and whether all were delivered.
        Chats run concurrently, one chat's updates in order; after a failure in a chat its
        later updates wait for the re-fetch, keeping that order."""
        by_chat: dict[str, list[tuple[int, Incoming | None, Json]]] = {}
        for update in updates:
            incoming = self._incoming_safely(update)
            key = incoming.chat if incoming is not None else ""
            by_chat.setdefault(key, []).append((int(update["update_id"]), incoming, update))
        delivered = 0

        async def run(items: list[tuple[int, Incoming | None, Json]]) -> int | None:
            nonlocal delivered
            for update_id, incoming, update in items:
                if incoming is not None:
                    try:
                        await self._deliver_one(incoming)
                    except Exception as exc:
                        log.warning("telegram: delivery failed (%s)", type(exc).__name__)
                        return update_id
                    delivered += 1
                self._after_delivery(update)
            return None

        results = await asyncio.gather(*(run(items) for items in by_chat.values()))
        failed = sorted(r for r in results if r is not None)
        if not failed:
            self._poison.clear()
            return max(int(u["update_id"]) for u in updates) + 1, True
        first = failed[0]
        if delivered:
            # Others were stored, so the store works: an update that keeps failing is poison
            # and would block everyone behind it. Later updates of its chat are re-fetched.
            self._poison[first] = self._poison.get(first, 0) + 1
            if self._poison[first] >= POISON_LIMIT:
                log.error("telegram: an update failed %d times while others were stored; "
                          "skipping it", POISON_LIMIT)  # fmt: skip
                del self._poison[first]
                return first + 1, True
        return first, False

    async def _deliver_one(self, incoming: Incoming) -> None:
        assert self._deliver is not None
        await self._deliver(incoming)

    def _after_delivery(self, update: Json) -> None:
        """Acknowledge a button press (stops the spinner); not a message, not paced."""
        query = update.get("callback_query")
        if isinstance(query, dict) and query.get("id"):
            self._spawn(self._answer(str(query["id"])))

    async def _answer(self, query_id: str) -> None:
        # A replay after a restart finds the query expired; that is expected.
        with contextlib.suppress(TelegramError):
            await self.bot.answer_callback_query(query_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _confirm(self) -> None:
        """Tell Telegram what was delivered since the last poll, so a restart replays less."""
        if self._offset is None or self._offset == self._confirmed:
            return
        with contextlib.suppress(Exception):
            params = {"offset": self._offset, "limit": 1, "timeout": 0}
            await self._call("getUpdates", params, read_timeout=5)
            self._confirmed = self._offset

    # -- webhook --------------------------------------------------------------------------

    async def _start_webhook(self) -> None:
        assert self._webhook and self._listen
        path = urllib.parse.urlsplit(self._webhook).path or "/"
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(path, self._on_webhook)
        # No access log: it records client addresses and paths.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_GRACE)
        await self._runner.setup()
        host, port = self._listen
        await web.TCPSite(self._runner, host, port).start()
        await self._retrying(
            lambda: self.bot.set_webhook(
                url=self._webhook,
                secret_token=self._secret,
                allowed_updates=list(ALLOWED_UPDATES),
            )
        )

    async def _on_webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            return web.Response(status=403)
        if self._stopping:
            return web.Response(status=503)  # Telegram retries later
        try:
            update = await request.json()
        except ValueError:
            return web.Response(status=400)
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return web.Response(status=400)
        incoming = self._incoming_safely(update)
        if incoming is not None:
            try:
                await self._deliver_one(incoming)
            except Exception as exc:
                log.warning("telegram: delivery failed (%s); Telegram will retry",
                            type(exc).__name__)  # fmt: skip
                return web.Response(status=500)
        self._after_delivery(update)
        return web.Response(status=200)

    # -- updates -> Incoming ---------------------------------------------------------------

    def _incoming_safely(self, update: Json) -> Incoming | None:
        try:
            return self.to_incoming(update)
        except Exception as exc:
            log.warning("telegram: unreadable update skipped (%s)", type(exc).__name__)
            return None

    def to_incoming(self, update: Json) -> Incoming | None:
        """The neutral message for an update (Bot API JSON), or None for updates we do not
        handle (see the module docstring)."""
        query = update.get("callback_query")
        if isinstance(query, dict):
            return self._from_callback(int(update["update_id"]), query)
        msg = update.get("message")
        if not isinstance(msg, dict):
            return None  # edits, channel posts and the like
        user = msg.get("from")
        if not isinstance(user, dict) or user.get("is_bot") or "sender_chat" in msg:
            return None
        if msg.get("is_automatic_forward"):
            return None
        private = msg["chat"].get("type") == "private"
        text = msg.get("text") or msg.get("caption") or ""
        attachments = _attachments(msg)
        chat = str(msg["chat"]["id"])
        is_choice = False
        if not private:
            if not self._addressed_to_us(text):
                return None
        elif not text and not attachments and not any(k in msg for k in _CONTENT_KEYS):
            return None  # service messages (pins and the like) carry nothing for us
        elif text.strip().isascii() and text.strip().isdigit():
            menu = self._menus.get(chat)
            n = int(text.strip())
            if menu and 1 <= n <= len(menu):
                text, is_choice = menu[n - 1], True
        return Incoming(
            transport=self.name,
            sender=str(user["id"]),
            chat=chat,
            key=str(update["update_id"]),
            text=text,
            attachments=attachments,
            private=private,
            language_hint=user.get("language_code"),
            message_ref=str(msg["message_id"]),
            is_choice=is_choice,
        )

    def _from_callback(self, update_id: int, query: Json) -> Incoming | None:
        user = query["from"]
        data = query.get("data")
        if not isinstance(data, str):
            return None  # games and the like: acknowledged after "delivery", nothing else
        message = query.get("message")  # absent for inline messages; may be inaccessible
        chat = message.get("chat") if isinstance(message, dict) else None
        return Incoming(
            transport=self.name,
            sender=str(user["id"]),
            chat=str(chat["id"] if chat else user["id"]),
            key=str(update_id),
            text=data,
            private=chat is None or chat.get("type") == "private",
            language_hint=user.get("language_code"),
            message_ref=str(message["message_id"]) if isinstance(message, dict) else None,
            is_choice=True,
        )

    def _addressed_to_us(self, text: str) -> bool:
        """In groups only commands count, and `/cmd@otherbot` belongs to another bot."""
        if not text.startswith("/"):
            return False
        head = text.split(maxsplit=1)[0] if text.split() else text
        _, at, bot_name = head.partition("@")
        return not at or (self.username is not None and bot_name.lower() == self.username.lower())

    # -- sending --------------------------------------------------------------------------

    def chat_interval(self, chat: str) -> float | None:
        return 3.0 if chat.startswith("-") else None  # groups: 20 messages per minute

    async def send(self, out: Outgoing) -> str | None:
        chat_id = _chat_id(out.chat)
        try:
            if out.kind == "delete":
                return await self._delete(chat_id, out.ref)
            if out.kind == "edit":
                return await self._edit(chat_id, out)
            return await self._send_message(chat_id, out)
        except TelegramError as err:
            mapped = map_error(err)
            if not isinstance(mapped, RetryLater) and out.outbox_id is not None:
                self._partial.pop(out.outbox_id, None)
            raise mapped from None

    async def _call(self, method: str, params: Json, *, read_timeout: float | None = None) -> Any:
        """A Bot API call with the raw JSON result (no PTB objects built)."""
        if read_timeout is None:
            return await self.bot.do_api_request(method, api_kwargs=params)
        return await self.bot.do_api_request(method, api_kwargs=params, read_timeout=read_timeout)

    def _compose(self, out: Outgoing) -> tuple[str, Json | None]:
        """Text and keyboard for a message; a numbered menu when buttons cannot carry a value."""
        text = out.text
        if not out.choices:
            return text, None
        if all(0 < len(c.value.encode("utf-8")) <= MAX_CALLBACK_DATA for c in out.choices):
            rows = [[{"text": _label(c), "callback_data": c.value}] for c in out.choices]
            return text, {"inline_keyboard": rows}
        self._remember_menu(out.chat, out.choices)
        lines = [f"{i}) {c.label}" for i, c in enumerate(out.choices, 1)]
        return f"{text}\n\n" + "\n".join(lines), None

    def _remember_menu(self, chat: str, choices: tuple[Choice, ...]) -> None:
        self._menus[chat] = tuple(c.value for c in choices)
        self._menus.move_to_end(chat)
        while len(self._menus) > MENU_MEMORY:
            self._menus.popitem(last=False)

    async def _send_message(self, chat_id: int | str, out: Outgoing) -> str | None:
        text, markup = self._compose(out)
        chunks = split_text(text)
        if not chunks:
            raise Rejected("empty")
        # A retry of a long text resumes after the pieces that already went out.
        start = self._partial.get(out.outbox_id, 0) if out.outbox_id is not None else 0
        start = min(start, len(chunks) - 1)
        spacing = self.chat_interval(out.chat) or 1.0 / self.limits.per_chat_per_second
        sent: Json = {}
        for i in range(start, len(chunks)):
            if i > start:
                # The dispatcher paced the first piece; space the rest like separate messages.
                await asyncio.sleep(spacing)
            last = i == len(chunks) - 1
            params: Json = {"chat_id": chat_id, "text": chunks[i]}
            if last and markup is not None:
                params["reply_markup"] = markup
            sent = await self._call("sendMessage", params)
            if out.outbox_id is not None and not last:
                self._partial[out.outbox_id] = i + 1
        if out.outbox_id is not None:
            self._partial.pop(out.outbox_id, None)
        return str(sent["message_id"]) if "message_id" in sent else None

    async def _edit(self, chat_id: int | str, out: Outgoing) -> str | None:
        message_id = _message_id(out.ref)
        text, markup = self._compose(out)
        text = _truncate(text)  # an edit cannot be split into two messages
        if not text.strip():
            raise Rejected("empty")
        params: Json = {"chat_id": chat_id, "message_id": message_id, "text": text}
        if markup is not None:
            params["reply_markup"] = markup
        try:
            result = await self._call("editMessageText", params)
        except BadRequest as err:
            message = err.message.lower()
            if "message is not modified" in message:
                return out.ref  # already shows this text: the edit's goal is met
            if "message to edit not found" in message:
                raise Rejected("edit_target_gone") from None
            raise
        return str(result["message_id"]) if isinstance(result, dict) else out.ref

    async def _delete(self, chat_id: int | str, ref: str | None) -> None:
        """Delete a message. Already gone counts as done; Telegram lets bots delete incoming
        private messages for 48 hours only, so an older one is Rejected("cannot_delete")."""
        message_id = _message_id(ref)
        try:
            await self.bot.delete_message(chat_id=chat_id, message_id=message_id)
        except BadRequest as err:
            message = err.message.lower()
            if "message to delete not found" in message:
                return None
            if "can't be deleted" in message or "cannot be deleted" in message:
                raise Rejected("cannot_delete") from None
            raise
        return None

    async def delete_incoming(self, chat: str, message_ref: str) -> None:
        with contextlib.suppress(TelegramError, Rejected):
            await self._delete(_chat_id(chat), message_ref)

    # -- attachments ----------------------------------------------------------------------

    async def fetch_attachment(self, attachment: Attachment, max_bytes: int) -> bytes | None:
        """Download via getFile, never reading more than `max_bytes`; None when too large or
        unavailable (Telegram serves bots files up to 20 MB)."""
        if attachment.size and attachment.size > max_bytes:
            return None
        try:
            file = await self.bot.get_file(attachment.ref)
        except BadRequest:
            return None  # "file is too big" or an expired file id
        if file.file_size and file.file_size > max_bytes:
            return None
        if not file.file_path:
            return None
        try:
            return await self._request.download(_encoded_url(file.file_path), max_bytes)
        except DownloadTooLarge:
            return None

    # -- menus, links, health ---------------------------------------------------------------

    async def announce_commands(self, menus: dict[str, list[tuple[str, str]]]) -> None:
        """setMyCommands: the network's default language for everyone, then one menu per other
        language for clients set to it."""
        default = self.settings.language if self.settings.language in menus else "en"
        for language, entries in sorted(menus.items(), key=lambda kv: kv[0] != default):
            if language != default and not _LANGUAGE_RE.match(language):
                continue  # Telegram takes two-letter ISO 639-1 codes only
            commands = [
                BotCommand(name, _truncate((summary or name).strip() or name, 256))
                for name, summary in entries
                if _COMMAND_RE.match(name)
            ][:MAX_COMMANDS]
            if not commands:
                continue
            await self.bot.set_my_commands(
                commands, language_code=None if language == default else language
            )

    def invite_link_prefix(self) -> str | None:
        return f"https://t.me/{self.username}?start=" if self.username else None

    async def probe(self) -> str:
        bot = make_bot(self.settings, pool=1)
        try:
            await bot.initialize()
            return f"reachable as @{bot.username}"
        except InvalidToken:
            raise RuntimeError("token rejected") from None
        except TelegramError as exc:
            raise RuntimeError(type(exc).__name__) from None
        finally:
            await bot.shutdown()


# --- small pieces ----------------------------------------------------------------------


def _label(choice: Choice) -> str:
    return choice.label.strip() or choice.value


def _attachments(msg: Json) -> tuple[Attachment, ...]:
    """Photos (largest size), documents, and voice/audio/video as documents."""
    found: list[Attachment] = []
    photo = msg.get("photo")
    if isinstance(photo, list) and photo:
        best = photo[-1]  # Telegram lists sizes smallest first
        found.append(Attachment("photo", best["file_id"], "image/jpeg", best.get("file_size", 0)))
    for key, default_mime in (
        ("document", "application/octet-stream"),
        ("voice", "audio/ogg"),
        ("audio", "audio/mpeg"),
        ("video", "video/mp4"),
        ("video_note", "video/mp4"),
    ):
        media = msg.get(key)
        if isinstance(media, dict):
            found.append(
                Attachment(
                    "document",
                    media["file_id"],
                    media.get("mime_type") or default_mime,
                    media.get("file_size", 0),
                    media.get("file_name", ""),
                )
            )
    return tuple(found)


def _encoded_url(file_path: str) -> str:
    """PTB's own encoding of a download URL (the token's ':' is percent-encoded)."""
    parts = urllib.parse.urlsplit(file_path)
    return urllib.parse.urlunsplit(parts._replace(path=urllib.parse.quote(parts.path)))


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 < number < 65536:
        raise ConfigError("VIGIL_TELEGRAM_WEBHOOK_LISTEN must be HOST:PORT, e.g. 127.0.0.1:8443.")
    return host.strip("[]"), number


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '-'}" + (f":{parts.port}" if parts.port else "")
