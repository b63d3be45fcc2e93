"""The Telegram transport: starts intake (polling or webhook), sends, edits, deletes, downloads.

Sending. User text always goes without a parse mode (no Markdown/HTML injection). Texts over
4096 characters (UTF-16 units, the stricter count) are split at line, then word boundaries.
Choices become an inline keyboard, one button per row, whose callback data is the choice
value; if a value exceeds Telegram's 64-byte callback limit the transport falls back to a
numbered text menu (bot/transports/menus.py) and maps a typed number back to its value.
Pacing is the dispatcher's job (`limits`, `chat_interval`); PTB's AIORateLimiter is not used.
The bot lives in private chats only: a send to a group, supergroup or channel (a negative
chat id) is refused here whatever asked for it, and the bot leaves any group it is added to
(`leaveChat`), telling nobody there anything.

Speed: the hot calls (getUpdates, sendMessage, editMessageText) go through PTB's public
`Bot.do_api_request`, which returns the raw JSON instead of building `Update`/`Message`
objects; in profiles that construction was the largest CPU cost per update, and holding the
GIL it also slowed the database writer thread (bench/throughput.py). PTB still prepares the
parameters and maps error answers to exceptions, `AiohttpRequest` does the HTTP.

Attachments are downloaded only when the core calls `fetch_attachment`; nothing else ever
reads a file, so `discard_attachment` has nothing to do on Telegram.

Logs and exception messages carry event kinds only: no text, no ids, no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from typing import Any

from telegram import BotCommand
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError

from bot.config import ConfigError, Settings
from bot.messages import Attachment, Incoming, Outgoing, Priority
from bot.transports.aiohttp_request import AiohttpRequest, DownloadTooLarge
from bot.transports.base import (
    Capabilities,
    Deliver,
    Limits,
    Rejected,
    RetryLater,
    Transport,
)
from bot.transports.menus import NumberedMenus, render
from bot.transports.telegram import api
from bot.transports.telegram.polling import Poller
from bot.transports.telegram.text import split_text, truncate
from bot.transports.telegram.updates import (
    ALLOWED_UPDATES,
    JoinedGroup,
    UpdateReader,
    is_private_query,
)
from bot.transports.telegram.webhook import SECRET_RE, WebhookServer, parse_listen

log = logging.getLogger(__name__)

Json = dict[str, Any]

MAX_CALLBACK_DATA = 64  # bytes
MAX_COMMANDS = 100
START_ATTEMPTS = 6  # getMe tries at start: ~30 s of back-off before giving up
LEAVE_ATTEMPTS = 3
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2}$")


def _chat_id(chat: str) -> int | str:
    try:
        return int(chat)
    except ValueError:
        return chat  # "@channelname"


def _is_private_chat_id(chat: str) -> bool:
    """Private chats have the user's (positive) id; groups and channels are negative or @name."""
    return chat.isascii() and chat.isdigit()


def _message_id(ref: str | None) -> int:
    try:
        return int(ref or "")
    except ValueError:
        raise Rejected("bad_ref") from None


class TelegramTransport(Transport):
    name = "telegram"
    # 16 concurrent requests: each holds its slot until its "sent" mark is committed, so this
    # sets reply throughput (bench/throughput.py: ~1.5x the bare bot at 8, ~1.75x at 16) and
    # bounds what a crash can duplicate (16 messages, about half a second at 30/s).
    limits = Limits(per_second=30, per_chat_per_second=1, chat_burst=3, in_flight=16)
    capabilities = Capabilities(edits=True, buttons=True, deletes_incoming=True, end_to_end=False)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.telegram_webhook_secret and not SECRET_RE.match(
            settings.telegram_webhook_secret
        ):
            raise ConfigError(
                "VIGIL_TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and -."
            )
        self._webhook_url = settings.telegram_webhook_url
        self._listen: tuple[str, int] | None = None
        if self._webhook_url:
            self._listen = parse_listen(settings.telegram_webhook_listen)
        # Room for the dispatcher's in-flight sends plus callback answers and downloads.
        self.bot = api.make_bot(settings, pool=self.limits.in_flight + 4)
        self.menus = NumberedMenus()
        self.reader = UpdateReader(self.menus)
        self.poller = Poller(self._call, self.reader, self._handle, self._after)
        self._secret = settings.telegram_webhook_secret or secrets.token_urlsafe(32)
        self._webhook: WebhookServer | None = None
        self._deliver: Deliver | None = None
        self._task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._stopping = False
        self._partial: dict[int, int] = {}  # outbox id -> chunks of a long text already sent
        self._left: set[str] = set()  # groups left in this run (each is left once)
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def username(self) -> str | None:
        return self.reader.username

    @property
    def _request(self) -> AiohttpRequest:
        request = self.bot.request
        assert isinstance(request, AiohttpRequest)
        return request

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        if self._deliver is not None:
            raise RuntimeError("the Telegram transport is already started")
        self._deliver = deliver
        try:
            await self._connect()
            if self._webhook_url:
                await self._start_webhook()
            else:
                await self._retrying(lambda: self.bot.delete_webhook(drop_pending_updates=False))
        except BaseException:
            # The app does not stop a transport whose start failed: release what we opened.
            await self.close()
            raise
        # Close the HTTP sessions when the event loop winds down, should nobody call close().
        self._keeper = asyncio.create_task(self._close_at_exit())
        if self._webhook_url:
            log.info("telegram: receiving by webhook")
        else:
            self._task = self.spawn("telegram.receive", self.poller.run)
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
                        f"{api.host_of(self.settings.telegram_api_url)} ({type(exc).__name__})."
                    ) from None
                log.warning("telegram: Bot API not reachable at start (%s)", type(exc).__name__)
                await asyncio.sleep(api.backoff(attempt))
            else:
                self.reader.username = self.bot.username
                return

    async def _retrying(self, call: Any) -> Any:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return await call()
            except RetryAfter as err:
                await asyncio.sleep(api.retry_seconds(err))
            except TelegramError as exc:
                if isinstance(exc, BadRequest | Forbidden | InvalidToken) or (
                    attempt == START_ATTEMPTS
                ):
                    raise ConfigError(
                        f"The Telegram Bot API refused a start-up call ({type(exc).__name__})."
                    ) from None
                await asyncio.sleep(api.backoff(attempt))
        return None

    async def _start_webhook(self) -> None:
        assert self._webhook_url and self._listen
        self._webhook = WebhookServer(
            self._webhook_url,
            self._listen,
            self._secret,
            self.poller.read_safely,
            self._handle,
            self._after,
        )
        await self._webhook.start()
        await self._retrying(
            lambda: self.bot.set_webhook(
                url=self._webhook_url,
                secret_token=self._secret,
                allowed_updates=list(ALLOWED_UPDATES),
            )
        )

    async def stop(self) -> None:
        """Stop intake. Sending keeps working: the dispatcher drains the outbox afterwards."""
        self._stopping = True
        if self._task is not None:
            task, self._task = self._task, None
            await self.poller.stop(task)
        if self._webhook is not None:
            await self._webhook.stop()
            self._webhook = None

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

    # -- what updates mean ----------------------------------------------------------------

    def to_incoming(self, update: Json) -> Incoming | None:
        """The neutral message for an update (Bot API JSON), or None (updates.py)."""
        item = self.reader.read(update)
        return item if isinstance(item, Incoming) else None

    async def _handle(self, item: Incoming | JoinedGroup) -> None:
        """Store one update's meaning; raises when it could not be (it is then fetched again)."""
        if isinstance(item, JoinedGroup):
            await self._leave(item.chat)
            return
        assert self._deliver is not None
        await self._deliver(item)
        if not item.private and _chat_id(item.chat) != _chat_id(item.sender):
            # A group the bot was in before it learned to leave: leave it now, in the background.
            self._spawn(self._leave_quietly(item.chat))

    def _after(self, update: Json) -> None:
        """Acknowledge a button press in a private chat (stops the spinner); a group's press is
        never answered."""
        query = update.get("callback_query")
        if isinstance(query, dict) and query.get("id") and is_private_query(update):
            self._spawn(self._answer(str(query["id"])))

    async def _answer(self, query_id: str) -> None:
        # A replay after a restart finds the query expired; that is expected.
        with contextlib.suppress(TelegramError):
            await self.bot.answer_callback_query(query_id)

    async def _leave(self, chat: str) -> None:
        """leaveChat; raises on a temporary failure so the update is fetched again. Already
        gone (kicked, chat deleted) counts as left."""
        if chat in self._left:
            return
        self._left.add(chat)  # before the call: several updates of one group leave it once
        try:
            await self._call("leaveChat", {"chat_id": _chat_id(chat)})
        except (BadRequest, Forbidden):
            pass  # "not a member any more" or "no such chat": nothing is left to leave
        except BaseException:
            self._left.discard(chat)
            raise
        log.info("telegram: added to a group or channel; left it without a word")

    async def _leave_quietly(self, chat: str) -> None:
        for attempt in range(1, LEAVE_ATTEMPTS + 1):
            try:
                await self._leave(chat)
                return
            except TelegramError as exc:
                if attempt == LEAVE_ATTEMPTS:
                    log.warning("telegram: could not leave a group (%s)", type(exc).__name__)
                    return
                await asyncio.sleep(api.backoff(attempt))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- sending --------------------------------------------------------------------------

    def chat_interval(self, chat: str) -> float | None:
        return 3.0 if chat.startswith("-") else None  # groups: 20 messages per minute

    async def send(self, out: Outgoing) -> str | None:
        if not _is_private_chat_id(out.chat):
            # The bot never writes into a group or channel, whatever asked it to.
            raise Rejected("not_private")
        chat_id = _chat_id(out.chat)
        try:
            if out.kind == "delete":
                return await self._delete(chat_id, out.ref)
            if out.kind == "edit":
                return await self._edit(chat_id, out)
            return await self._send_message(chat_id, out)
        except TelegramError as err:
            mapped = api.map_error(err)
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
        if not out.choices:
            if out.priority <= Priority.REPLY:
                self.menus.forget(out.chat)
            return out.text, None
        if all(0 < len(c.value.encode("utf-8")) <= MAX_CALLBACK_DATA for c in out.choices):
            self.menus.forget(out.chat)  # buttons now; an older numbered menu no longer counts
            rows = [[{"text": _label(c.label, c.value), "callback_data": c.value}]
                    for c in out.choices]  # fmt: skip
            return out.text, {"inline_keyboard": rows}
        self.menus.remember(out.chat, out.choices)
        return render(out.text, out.choices), None

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
        text = truncate(text)  # an edit cannot be split into two messages
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
        if not _is_private_chat_id(chat):
            return
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
            return await self._request.download(api.encoded_url(file.file_path), max_bytes)
        except DownloadTooLarge:
            return None

    async def discard_attachment(self, attachment: Attachment) -> None:
        """Nothing to delete: a Telegram file is never downloaded unless fetched."""
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
                BotCommand(name, truncate((summary or name).strip() or name, 256))
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
        bot = api.make_bot(self.settings, pool=1)
        try:
            await bot.initialize()
            return f"reachable as @{bot.username}"
        except InvalidToken:
            raise RuntimeError("token rejected") from None
        except TelegramError as exc:
            raise RuntimeError(type(exc).__name__) from None
        finally:
            await bot.shutdown()


def _label(label: str, value: str) -> str:
    return label.strip() or value
