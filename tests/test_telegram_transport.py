"""The Telegram transport in-process against the fake Bot API, with a stand-in for `deliver`."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from telegram.error import TimedOut

import bot.transports.telegram as tg
import bot.transports.telegram.api as tg_api
import bot.transports.telegram.polling as tg_polling
from bot.config import ConfigError, Settings
from bot.messages import Choice, Incoming, Outgoing
from bot.transports.aiohttp_request import ConnectTimedOut
from bot.transports.base import Limits, RecipientGone, Rejected, RetryLater
from bot.transports.telegram import TelegramTransport, split_text, utf16_len
from storage.db import StoreError
from tests.fakes.telegram_api import FakeTelegram

ANN, BEA = 7_300_100_201, 7_300_100_202

# The transport silences these two PTB notices at import; pytest resets warning filters.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Please use 'Bot.:telegram.warnings.PTBUserWarning"),
    pytest.mark.filterwarnings("ignore:.*retry_after:telegram.warnings.PTBDeprecationWarning"),
]


class Inbox:
    """Stands in for App.deliver: records messages once per key (a redelivery is a no-op, as
    with the real inbox table); can be told to fail."""

    def __init__(self) -> None:
        self.got: list[Incoming] = []
        self.fail_times = 0  # the next N deliveries raise, as with the store down
        self.fail_if: Callable[[Incoming], bool] = lambda m: False
        self.delay = 0.0
        self.active = 0
        self.max_active = 0
        self.attempts = 0
        self.replays = 0
        self._changed = asyncio.Event()

    async def __call__(self, msg: Incoming) -> None:
        self.attempts += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_times > 0 or self.fail_if(msg):
                self.fail_times = max(0, self.fail_times - 1)
                raise StoreError("database unavailable: test")
            if any(m.key == msg.key for m in self.got):
                self.replays += 1
            else:
                self.got.append(msg)
        finally:
            self.active -= 1
            self._changed.set()

    async def wait(self, n: int, timeout: float = 10) -> list[Incoming]:
        async def until() -> None:
            while len(self.got) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)
        return self.got


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tg_api, "backoff", lambda attempt: 0.05)
    monkeypatch.setattr(tg_polling, "CONFLICT_BACKOFF", 0.3)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(webhook_retry_delay=0.1) as f:
        f.register_user(ANN, "Ann", language_code="de")
        f.register_user(BEA, "Bea")
        yield f
        f.assert_no_violations()


def settings_for(fake: FakeTelegram, tmp_path: Path, **kw: Any) -> Settings:
    return Settings(
        data_dir=tmp_path, telegram_token=fake.token, telegram_api_url=fake.base_url, **kw
    )


@pytest.fixture
async def transport(fake: FakeTelegram, tmp_path: Path) -> AsyncIterator[TelegramTransport]:
    t = TelegramTransport(settings_for(fake, tmp_path))
    yield t
    await t.close()


@pytest.fixture
async def inbox(transport: TelegramTransport) -> Inbox:
    box = Inbox()
    await transport.start(box)
    return box


def out(chat: int | str, text: str, **kw: Any) -> Outgoing:
    return Outgoing(transport="telegram", chat=str(chat), text=text, **kw)


# -- receiving ------------------------------------------------------------------------------


async def test_message_becomes_incoming_and_is_confirmed_after_delivery(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    sent = fake.user_sends(ANN, "/start")
    (msg,) = await inbox.wait(1)
    assert msg == Incoming(
        transport="telegram",
        sender=str(ANN),
        chat=str(ANN),
        key=str(sent.update_id),
        text="/start",
        private=True,
        language_hint="de",
        message_ref=str(sent.message_id),
    )
    await fake.wait_for("updates_confirmed")
    call = fake.calls_to("getUpdates")[0]
    assert call.params["allowed_updates"] == ["message", "callback_query", "my_chat_member"]


async def test_failed_delivery_is_fetched_again_never_confirmed_before(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    inbox.fail_times = 3
    fake.user_sends(ANN, "/help")
    await fake.wait_for(lambda f: inbox.attempts >= 2)
    assert len(fake.pending_updates()) == 1  # still Telegram's to redeliver
    (msg,) = await inbox.wait(1)
    assert msg.text == "/help" and inbox.attempts == 4
    await fake.wait_for("updates_confirmed")


async def test_one_chat_in_order_different_chats_concurrently(
    fake: FakeTelegram, transport: TelegramTransport
) -> None:
    box = Inbox()
    box.delay = 0.02
    for i in range(5):
        fake.user_sends(ANN, f"a{i}")
        fake.user_sends(BEA, f"b{i}")
    await transport.start(box)
    await box.wait(10)
    assert [m.text for m in box.got if m.sender == str(ANN)] == [f"a{i}" for i in range(5)]
    assert [m.text for m in box.got if m.sender == str(BEA)] == [f"b{i}" for i in range(5)]
    assert box.max_active == 2


async def test_a_poison_update_is_skipped_once_others_prove_the_store_works(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    inbox.fail_if = lambda m: m.text == "poison"
    fake.user_sends(ANN, "poison")
    fake.user_sends(ANN, "after poison")
    fake.user_sends(BEA, "hello")
    got = await inbox.wait(2)
    await fake.wait_for("updates_confirmed")
    assert [m.text for m in got] == ["hello", "after poison"]
    assert inbox.replays >= tg.POISON_LIMIT - 1  # "hello" came back with each re-fetch


async def test_button_press_is_a_choice_and_is_acknowledged(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    ref = await transport.send(
        out(
            ANN,
            "Choose:",
            choices=(Choice("Deutsch", "/language de"), Choice("English", "/language en")),
        )
    )
    msg = fake.get_message(ANN, int(ref or 0))
    assert [b["callback_data"] for b in msg.buttons] == ["/language de", "/language en"]
    assert msg.reply_markup["inline_keyboard"][1] == [
        {"text": "English", "callback_data": "/language en"}
    ]
    query = fake.user_presses(ANN, msg.message_id, "/language en")
    (got,) = await inbox.wait(1)
    assert got.is_choice and got.text == "/language en" and got.chat == str(ANN)
    assert got.message_ref == ref
    await fake.wait_for(lambda f: f.callback_answer(query) is not None)


async def test_values_too_long_for_buttons_become_a_numbered_menu(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    long_value = "/join " + "x" * 70  # callback_data holds 64 bytes at most
    choices = (Choice("Short", "/a"), Choice("The long one", long_value))
    ref = await transport.send(out(ANN, "Pick one", choices=choices))
    msg = fake.get_message(ANN, int(ref or 0))
    assert msg.reply_markup is None
    assert msg.text == "Pick one\n\n1) Short\n2) The long one"
    fake.user_sends(ANN, "2")
    (got,) = await inbox.wait(1)
    assert got.text == long_value and got.is_choice


async def test_groups_only_commands_addressed_to_us(tmp_path: Path) -> None:
    async with FakeTelegram(privacy_mode=False) as fake:
        fake.register_user(ANN, "Ann")
        fake.add_group(-100500, "Support circle", type="supergroup", members=[ANN])
        t = TelegramTransport(settings_for(fake, tmp_path))
        box = Inbox()
        try:
            await t.start(box)
            fake.user_sends(ANN, "just chatting", chat_id=-100500)
            fake.user_sends(ANN, "/help@other_bot", chat_id=-100500)
            fake.user_sends(ANN, "/help@Vigil_Test_Bot", chat_id=-100500)
            fake.user_sends(ANN, "/cases", chat_id=-100500)
            got = await box.wait(2)
            await fake.wait_for("updates_confirmed")
            assert [m.text for m in got] == ["/help@Vigil_Test_Bot", "/cases"]
            assert all(m.chat == "-100500" and not m.private for m in got)
            assert t.chat_interval("-100500") == 3.0 and t.chat_interval(str(ANN)) is None
        finally:
            await t.close()
        fake.assert_no_violations()


async def test_updates_without_a_person_are_ignored(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    first = fake.user_sends(ANN, "first")
    await inbox.wait(1)
    fake.user_edits(ANN, first.message_id, "edited")  # not even requested: allowed_updates
    chat = {"id": ANN, "type": "private", "first_name": "Ann"}
    bot_user = {"id": 999, "is_bot": True, "first_name": "Other bot"}
    fake.push_update(
        {"message": {"message_id": 90, "date": 1, "chat": chat, "from": bot_user, "text": "x"}}
    )
    fake.push_update({"message": {"message_id": 91, "date": 1, "chat": chat, "text": "no sender"}})
    fake.push_update(
        {"message": {"message_id": 92, "date": 1, "from": bot_user | {"is_bot": False}}}
    )
    fake.user_sends(BEA, "last")
    got = await inbox.wait(2)
    await fake.wait_for("updates_confirmed")
    assert [m.text for m in got] == ["first", "last"]


async def test_attachments_are_fetched_within_the_limit(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    photo = b"\xff\xd8" + b"p" * 5000
    fake.user_sends_photo(ANN, photo, caption="after the visit")
    fake.user_sends_document(ANN, b"%PDF-1.4 letter", "letter.pdf", "application/pdf")
    first, second = await inbox.wait(2)
    (att,) = first.attachments
    assert first.text == "after the visit" and att.kind == "photo" and att.size == len(photo)
    assert await transport.fetch_attachment(att, 10_000) == photo
    assert await transport.fetch_attachment(att, 100) is None
    (doc,) = second.attachments
    assert (doc.kind, doc.mime, doc.name) == ("document", "application/pdf", "letter.pdf")
    assert await transport.fetch_attachment(doc, 10_000) == b"%PDF-1.4 letter"


# -- sending --------------------------------------------------------------------------------


async def test_the_aiohttp_request_uploads_files_as_multipart(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    """Not used by the transport today (exports may need it): PTB's file upload path."""
    data = "Письмо — letter\n".encode() * 100
    sent = await transport.bot.send_document(ANN, document=data, filename="letter.txt")
    assert sent.document is not None
    assert fake.file_bytes(sent.document.file_id) == data
    assert fake.calls_to("sendDocument")[0].status == 200


async def test_plain_text_only_and_long_texts_split(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = await transport.send(out(ANN, "<b>not bold</b> *nor this* [x](y)"))
    msg = fake.get_message(ANN, int(ref or 0))
    assert msg.parse_mode is None and msg.text == "<b>not bold</b> *nor this* [x](y)"
    assert all("parse_mode" not in c.params for c in fake.calls_to("sendMessage"))

    monkeypatch.setattr(transport, "limits", Limits(per_chat_per_second=100.0))
    paragraph = ("Hearing postponed again; the family asks for letters. " * 20).strip()
    text = "\n\n".join(f"{i}. {paragraph}" for i in range(8))  # ~8,800 characters
    before = len(fake.sent(BEA))
    ref = await transport.send(out(BEA, text, choices=(Choice("OK", "/ok"),), outbox_id=1))
    pieces = fake.sent(BEA)[before:]
    assert len(pieces) == 3 and all(utf16_len(m.raw_text) <= 4096 for m in pieces)
    assert all(m.raw_text.split(". ", 1)[0].isdigit() for m in pieces)  # cut at paragraphs
    assert " ".join(m.raw_text for m in pieces).split() == text.split()
    assert [bool(m.buttons) for m in pieces] == [False, False, True]
    assert ref == str(pieces[-1].message_id)


async def test_a_retried_long_text_resumes_after_the_pieces_already_sent(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    text = "\n".join(["line " * 300] * 3)  # three pieces, sent a second apart
    sending = asyncio.create_task(transport.send(out(ANN, text, outbox_id=7)))
    await fake.wait_for(1, chat_id=ANN)
    fake.inject_fault("sendMessage", 502, chat_id=ANN)  # the second piece fails
    with pytest.raises(RetryLater):
        await sending
    assert len(fake.sent(ANN)) == 1 and transport._partial[7] == 1
    await transport.send(out(ANN, text, outbox_id=7))  # the dispatcher's retry
    assert [m.raw_text for m in fake.sent(ANN)] == split_text(text)
    assert 7 not in transport._partial


async def test_edit_and_delete(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    ref = await transport.send(out(ANN, "Vigil at 18:00"))
    assert await transport.send(out(ANN, "Vigil at 19:00", kind="edit", ref=ref)) == ref
    assert fake.get_message(ANN, int(ref or 0)).text == "Vigil at 19:00"
    # Same text again: Telegram says "message is not modified"; the edit's goal is met.
    assert await transport.send(out(ANN, "Vigil at 19:00", kind="edit", ref=ref)) == ref
    assert await transport.send(out(ANN, "", kind="delete", ref=ref)) is None
    assert fake.get_message(ANN, int(ref or 0)).deleted
    assert await transport.send(out(ANN, "", kind="delete", ref=ref)) is None  # already gone
    with pytest.raises(Rejected) as err:
        await transport.send(out(ANN, "x", kind="edit", ref="99999"))
    assert err.value.kind == "edit_target_gone"


@pytest.mark.parametrize(
    ("fault", "expected", "kind"),
    [
        ({"status": 429, "retry_after": 3}, RetryLater, "flood"),
        ({"status": 500}, RetryLater, "network"),
        ({"status": 502}, RetryLater, "network"),
        ({"status": None, "drop": True}, RetryLater, "network"),
        (
            {"status": 403, "description": "Forbidden: bot was blocked by the user"},
            RecipientGone,
            "blocked",
        ),
        (
            {"status": 400, "description": "Bad Request: chat not found"},
            RecipientGone,
            "chat_not_found",
        ),
        ({"status": 400, "migrate_to_chat_id": -1009}, Rejected, "chat_migrated"),
        (
            {"status": 400, "description": "Bad Request: message text is empty"},
            Rejected,
            "bad_request",
        ),
    ],
)
async def test_errors_map_to_delivery_errors(
    fake: FakeTelegram,
    transport: TelegramTransport,
    inbox: Inbox,
    fault: dict[str, Any],
    expected: type[Exception],
    kind: str,
) -> None:
    fake.inject_fault("sendMessage", **fault)
    with pytest.raises(expected) as err:
        await transport.send(out(ANN, "a message with a secret"))
    assert type(err.value) is expected and err.value.kind == kind
    if kind == "flood":
        assert err.value.retry_after == 3
    for leak in (fake.token, str(ANN), "secret"):
        assert leak not in str(err.value) and leak not in repr(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


async def test_a_timeout_may_have_been_sent(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    transport._request._read_timeout = 0.2
    fake.inject_delay("sendMessage", 1.0)
    with pytest.raises(RetryLater) as err:
        await transport.send(out(ANN, "hello"))
    assert err.value.kind == "timeout" and err.value.maybe_sent


async def test_real_refusals(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox
) -> None:
    fake.user_blocks_bot(BEA, notify=False)
    with pytest.raises(RecipientGone):
        await transport.send(out(BEA, "hello"))
    with pytest.raises(RecipientGone) as err:
        await transport.send(out(4_242_424_242, "hello"))
    assert err.value.kind == "chat_not_found"


# -- start-up, menus, health ----------------------------------------------------------------


async def test_menus_links_and_probe(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox, tmp_path: Path
) -> None:
    menus = {
        "en": [("start", "join"), ("help", "what you can do"), ("Bad-Name", "skipped")],
        "ru": [("start", "вступить"), ("help", "что можно")],
        "pt_BR": [("start", "entrar")],  # Telegram wants two-letter codes: not published
    }
    await transport.announce_commands(menus)
    assert [c["command"] for c in fake.commands()] == ["start", "help"]
    assert fake.commands(language_code="ru")[0]["description"] == "вступить"
    assert len(fake.calls_to("setMyCommands")) == 2
    assert transport.invite_link_prefix() == "https://t.me/vigil_test_bot?start="
    assert await transport.probe() == "reachable as @vigil_test_bot"
    assert await tg.fetch_username(settings_for(fake, tmp_path)) == "vigil_test_bot"


async def test_a_wrong_token_is_a_clear_configuration_error(
    fake: FakeTelegram, tmp_path: Path
) -> None:
    wrong = "123456789:WRONG-token-for-this-fake_xyz"
    t = TelegramTransport(Settings(data_dir=tmp_path, telegram_token=wrong,
                                   telegram_api_url=fake.base_url))  # fmt: skip
    with pytest.raises(ConfigError) as err:
        await t.start(Inbox())
    assert "WRONG" not in str(err.value) and err.value.__cause__ is None
    await t.close()
    assert await tg.fetch_username(t.settings) is None


def test_bad_webhook_settings_are_refused(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path, "telegram_token": "1:x"}
    with pytest.raises(ConfigError):
        TelegramTransport(Settings(**base, telegram_webhook_secret="has spaces"))
    with pytest.raises(ConfigError):
        TelegramTransport(
            Settings(**base, telegram_webhook_url="https://x/h", telegram_webhook_listen="8443")
        )


async def test_a_second_poller_is_logged_and_backed_off(
    fake: FakeTelegram, transport: TelegramTransport, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.transports.telegram")
    await fake.wait_for("polling")
    other = tg.make_bot(transport.settings, pool=1)
    async with other:
        await other.get_updates(timeout=0)  # steals the long poll: ours gets 409
    await fake.wait_for(lambda f: "conflict" in caplog.text)
    assert "another instance is polling" in caplog.text
    fake.user_sends(ANN, "still here")
    (got,) = await inbox.wait(1)
    assert got.text == "still here"


async def test_stop_confirms_what_was_delivered(
    fake: FakeTelegram, transport: TelegramTransport
) -> None:
    box = Inbox()
    box.delay = 0.3
    await transport.start(box)
    fake.user_sends(ANN, "one")
    while box.active == 0:
        await asyncio.sleep(0.01)
    await transport.stop()  # waits for the delivery in progress, then confirms it
    assert [m.text for m in box.got] == ["one"]
    assert fake.pending_updates() == []
    # Sending still works after stop: the app drains its outbox then.
    assert await transport.send(out(ANN, "drained")) is not None


# -- webhook --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_webhook_mode(fake: FakeTelegram, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    t = TelegramTransport(
        settings_for(fake, tmp_path, telegram_webhook_url=url,
                     telegram_webhook_listen=f"127.0.0.1:{port}")
    )  # fmt: skip
    box = Inbox()
    try:
        await t.start(box)
        info = fake.webhook_info()
        assert info["url"] == url
        assert info["allowed_updates"] == ["callback_query", "message", "my_chat_member"]
        secret = fake._webhook["secret_token"]
        assert secret and len(secret) >= 32  # generated at start when none is configured

        box.fail_times = 1  # first POST answered 500: Telegram delivers it again
        fake.user_sends(ANN, "/help")
        (got,) = await box.wait(1)
        assert got.text == "/help" and got.sender == str(ANN)
        await fake.wait_for("updates_confirmed")
        assert "500" in (fake.webhook_info().get("last_error_message") or "")

        async with aiohttp.ClientSession() as http:
            update = {"update_id": 1, "message": {"message_id": 1, "date": 1, "text": "forged",
                      "chat": {"id": 1, "type": "private"}, "from": {"id": 1, "is_bot": False,
                      "first_name": "M"}}}  # fmt: skip
            for headers in ({}, {tg.SECRET_HEADER: "wrong"}):
                async with http.post(url, json=update, headers=headers) as r:
                    assert r.status == 403
            async with http.post(url, data=b"{", headers={tg.SECRET_HEADER: secret}) as r:
                assert r.status == 400
        assert [m.text for m in box.got] == ["/help"]
    finally:
        await t.close()


# -- pieces ---------------------------------------------------------------------------------


def test_split_text_boundaries() -> None:
    assert split_text("short") == ["short"]
    assert split_text("   ") == []
    words = "word " * 2000
    pieces = split_text(words, 4096)
    assert all(len(p) <= 4096 and not p.startswith(" ") for p in pieces)
    assert all(not p.endswith(" ") for p in pieces[:-1])
    assert " ".join(pieces).split() == words.split()
    emoji = "🕯" * 3000  # 2 UTF-16 units each: 6000 units
    pieces = split_text(emoji, 4096)
    assert [utf16_len(p) for p in pieces] == [4096, 1904] and "".join(pieces) == emoji
    lines = "\n".join(f"line {i}" for i in range(1000))
    assert all(not p.startswith("\n") for p in split_text(lines, 500))


def test_timeouts_before_sending_cannot_duplicate() -> None:
    mapped = tg.map_error(ConnectTimedOut())
    assert isinstance(mapped, RetryLater) and not mapped.maybe_sent
    mapped = tg.map_error(TimedOut())
    assert isinstance(mapped, RetryLater) and mapped.maybe_sent


def test_file_url_follows_the_api_url() -> None:
    assert tg.file_base_url("https://api.telegram.org/bot") == "https://api.telegram.org/file/bot"
    assert tg.file_base_url("http://127.0.0.1:8081/bot") == "http://127.0.0.1:8081/file/bot"
