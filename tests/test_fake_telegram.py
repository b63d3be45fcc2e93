"""Tests of the fake Bot API itself, driven by the real python-telegram-bot over loopback HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, Conflict, Forbidden, NetworkError, RetryAfter

from tests.fakes.telegram_api import (
    DEFAULT_TOKEN,
    ControlClient,
    FakeTelegram,
    parse_formatted_text,
)

REPO = Path(__file__).resolve().parents[1]
ANA = 4242
BEN = 4343
GROUP = -100777


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as f:
        f.register_user(ANA, "Ana", username="ana_k", language_code="uk")
        f.register_user(BEN, "Ben", language_code="en")
        yield f


def make_bot(fake: FakeTelegram) -> Bot:
    return Bot(DEFAULT_TOKEN, base_url=fake.base_url, base_file_url=fake.file_base_url)


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with make_bot(fake) as b:
        yield b


# PTB 22.8 itself warns while building RetryAfter (int vs timedelta); not the fake's concern.
ptb_retry_after_warning = pytest.mark.filterwarnings(
    "ignore:Deprecated since version v22.2:telegram.warnings.PTBDeprecationWarning"
)


def retry_seconds(exc: RetryAfter) -> float:
    value = exc.retry_after  # int in PTB 22.8, timedelta with PTB_TIMEDELTA=1
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(d.title(), callback_data=d) for d in data]])


async def test_get_me_and_urls(fake: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()
    assert me.id == 123456789 and me.is_bot and me.username == "vigil_test_bot"
    assert fake.base_url == f"http://127.0.0.1:{fake.port}/bot"
    assert fake.file_base_url == f"http://127.0.0.1:{fake.port}/file/bot"
    assert fake.stats.calls["getMe"] == 2  # Bot.initialize() already asked once
    fake.assert_no_violations()


async def test_send_edit_delete_are_inspectable(fake: FakeTelegram, bot: Bot) -> None:
    m1 = await bot.send_message(
        ANA, "<b>Hearing</b> on 1 Dec &amp; vigil", parse_mode="HTML", reply_markup=keyboard("join")
    )
    m2 = await bot.send_message(ANA, "second")
    assert (m1.message_id, m2.message_id) == (1, 2)
    assert m1.text == "Hearing on 1 Dec & vigil"
    assert m1.entities[0].type == "bold" and m1.entities[0].length == len("Hearing")

    sent = fake.sent(ANA)
    assert [m.text for m in sent] == ["Hearing on 1 Dec & vigil", "second"]
    assert sent[0].raw_text.startswith("<b>Hearing</b>")
    assert sent[0].parse_mode == "HTML"
    assert sent[0].button_data("Join") == "join"

    edited = await bot.edit_message_text(
        "Hearing moved", chat_id=ANA, message_id=m1.message_id, reply_markup=keyboard("join")
    )
    assert edited.text == "Hearing moved" and edited.edit_date is not None
    assert [v["text"] for v in fake.get_message(ANA, 1).versions] == [
        "Hearing on 1 Dec & vigil",
        "Hearing moved",
    ]
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text(
            "Hearing moved", chat_id=ANA, message_id=1, reply_markup=keyboard("join")
        )
    await bot.edit_message_reply_markup(chat_id=ANA, message_id=1, reply_markup=None)
    assert fake.get_message(ANA, 1).reply_markup is None

    assert await bot.delete_message(ANA, m2.message_id)
    assert fake.get_message(ANA, 2).deleted
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(ANA, m2.message_id)

    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(999, "nobody")
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(ANA, "x" * 4097)
    assert fake.clear_violations() == ["sendMessage: text is 4097 characters (spec limit 4096)"]
    fake.assert_no_violations()


async def test_commands_actions_and_callbacks(fake: FakeTelegram, bot: Bot) -> None:
    await bot.set_my_commands([("start", "Start"), ("help", "Help")])
    await bot.set_my_commands([("start", "Почати")], language_code="uk")
    assert [c.command for c in await bot.get_my_commands()] == ["start", "help"]
    assert fake.commands(language_code="uk") == [{"command": "start", "description": "Почати"}]
    await bot.delete_my_commands(language_code="uk")
    assert await bot.get_my_commands(language_code="uk") == ()

    await bot.send_chat_action(ANA, "typing")
    assert fake.chat_actions(ANA) == ["typing"]

    msg = await bot.send_message(ANA, "Come?", reply_markup=keyboard("yes", "no"))
    qid = fake.user_presses(ANA, msg.message_id, "yes")
    (update,) = await bot.get_updates(timeout=1)
    assert update.callback_query.data == "yes" and update.callback_query.from_user.id == ANA
    await update.callback_query.answer("Thanks")
    assert fake.callback_answer(qid)["text"] == "Thanks"
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await update.callback_query.answer("again")
    with pytest.raises(ValueError, match=r"(?i)no button"):
        fake.user_presses(ANA, msg.message_id, "maybe")
    fake.assert_no_violations()


async def test_long_poll_returns_as_soon_as_an_update_arrives(fake: FakeTelegram, bot: Bot) -> None:
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await fake.wait_for("polling", timeout=2)
    sent = fake.user_sends(ANA, "/start invite-123")
    updates = await poll
    assert time.monotonic() - started < 1.5
    assert [u.update_id for u in updates] == [sent.update_id]
    message = updates[0].message
    assert message.text == "/start invite-123" and message.from_user.language_code == "uk"
    assert message.entities[0].type == "bot_command" and message.entities[0].length == 6


async def test_long_poll_times_out_empty(fake: FakeTelegram, bot: Bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == ()
    assert 0.9 <= time.monotonic() - started < 2.5


async def test_offset_confirms_earlier_updates(fake: FakeTelegram, bot: Bot) -> None:
    fake.user_sends(ANA, "one")
    fake.user_sends(BEN, "two")
    first = await bot.get_updates(timeout=0)
    assert [u.message.text for u in first] == ["one", "two"]
    # Without an offset nothing is confirmed: the same updates come again.
    assert [u.update_id for u in await bot.get_updates(timeout=0)] == [u.update_id for u in first]
    fake.user_sends(ANA, "three")
    rest = await bot.get_updates(offset=first[-1].update_id + 1, timeout=0)
    assert [u.message.text for u in rest] == ["three"]
    assert [u["message"]["text"] for u in fake.pending_updates()] == ["three"]
    assert await bot.get_updates(offset=rest[-1].update_id + 1, timeout=0) == ()
    assert fake.pending_updates() == []
    assert await fake.wait_for("updates_confirmed", timeout=1)


async def test_second_get_updates_terminates_the_first_with_409(fake: FakeTelegram) -> None:
    async with make_bot(fake) as first, make_bot(fake) as second:
        poll = asyncio.create_task(first.get_updates(timeout=5))
        await fake.wait_for("polling", timeout=2)
        assert await second.get_updates(timeout=0) == ()
        with pytest.raises(Conflict, match=r"(?i)terminated by other getUpdates request"):
            await poll
    assert fake.stats.conflicts == 1


async def test_webhook_delivers_and_blocks_get_updates(fake: FakeTelegram, bot: Bot) -> None:
    received: list[tuple[str | None, dict]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        assert await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="s3cret")
        with pytest.raises(Conflict, match=r"(?i)webhook is active"):
            await bot.get_updates(timeout=0)
        fake.user_sends(BEN, "/help")
        await fake.wait_for(lambda f: len(received) == 1 and not f.pending_updates(), 3)
        assert received[0][0] == "s3cret"
        assert received[0][1]["message"]["text"] == "/help"
        info = await bot.get_webhook_info()
        assert info.url.endswith("/hook") and info.pending_update_count == 0
        assert await bot.delete_webhook()
        assert await bot.get_updates(timeout=0) == ()
    finally:
        await runner.cleanup()
    fake.assert_no_violations()


async def test_spec_violations_are_recorded(fake: FakeTelegram) -> None:
    async with httpx.AsyncClient(base_url=fake.api_url + "/") as http:
        r = await http.post("sendMessage", data={"chat_id": ANA, "text": "hi", "colour": "red"})
        assert r.status_code == 400
        assert r.json() == {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: unknown parameter 'colour'",
        }
        r = await http.post("sendMessage", json={"chat_id": ANA})
        assert (r.status_code, r.json()["description"]) == (
            400,
            "Bad Request: message text is empty",
        )
        r = await http.post("sendMessage", data={"chat_id": "not-a-chat", "text": "x"})
        assert r.status_code == 400
        r = await http.post("getUpdates", params={"limit": "ten"})
        assert r.status_code == 400
        bad_markup = '{"inline_keyboard": [[{"text": "x", "callback_data": "' + "d" * 65 + '"}]]}'
        r = await http.post(
            "sendMessage", data={"chat_id": ANA, "text": "x", "reply_markup": bad_markup}
        )
        assert r.json()["description"] == "Bad Request: BUTTON_DATA_INVALID"
        r = await http.post("sendMessagez", data={"chat_id": ANA, "text": "x"})
        assert (r.status_code, r.json()["description"]) == (404, "Not Found")
        # Method names are case-insensitive, as on the real server.
        r = await http.get("GETME")
        assert r.status_code == 200 and r.json()["result"]["is_bot"] is True
        r = await http.post("sendmessage", json={"chat_id": ANA, "text": "ok"})
        assert r.status_code == 200 and r.json()["result"]["text"] == "ok"

    async with httpx.AsyncClient() as http:
        r = await http.get(f"{fake.base_url}999:WRONG/getMe")
        assert r.status_code == 401 and r.json()["description"] == "Unauthorized"

    assert fake.violations == [
        "sendMessage: unknown parameter 'colour'",
        "sendMessage: missing required parameter 'text'",
        "sendMessage: chat_id: expected Integer or '@username', got 'not-a-chat'",
        "getUpdates: limit: expected Integer, got 'ten'",
        "sendMessage: reply_markup.inline_keyboard[0][0].callback_data: must be 1-64 bytes, is 65",
        "sendMessagez: unknown method (not in the Bot API spec)",
    ]
    with pytest.raises(AssertionError, match=r"(?i)6 Bot API contract violation"):
        fake.assert_no_violations()


async def test_markup_is_parsed_like_the_server(fake: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(ANA, "a < b", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)Character '.' is reserved"):
        await bot.send_message(ANA, "Court at 10.00", parse_mode="MarkdownV2")
    assert len(fake.clear_violations()) == 2
    m = await bot.send_message(ANA, r"*Court* at 10\.00 [map](https://example.org/m)", "MarkdownV2")
    assert m.text == "Court at 10.00 map"
    assert [(e.type, e.offset, e.length) for e in m.entities] == [
        ("bold", 0, 5),
        ("text_link", 15, 3),
    ]
    assert parse_formatted_text("<i>é😀</i>x", "HTML") == (
        "é😀x",
        [{"type": "italic", "offset": 0, "length": 3}],
    )
    fake.assert_no_violations()


@ptb_retry_after_warning
async def test_flood_limit_answers_429_and_ptb_raises_retry_after(
    fake: FakeTelegram, bot: Bot
) -> None:
    # A slow refill (one message per 5 s) keeps the retry window wide even on a loaded machine.
    fake.set_flood_limits(private_burst=3, private_per_second=0.2)
    for i in range(3):
        await bot.send_message(ANA, f"burst {i}")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(ANA, "one too many")
    assert retry_seconds(caught.value) == 5
    # Other chats are not affected by one chat's limit.
    await bot.send_message(BEN, "hello Ben")

    async with httpx.AsyncClient() as http:
        r = await http.post(f"{fake.api_url}/sendMessage", data={"chat_id": ANA, "text": "again"})
    body = r.json()
    assert r.status_code == 429 and body["error_code"] == 429
    assert (
        body["description"] == f"Too Many Requests: retry after {body['parameters']['retry_after']}"
    )
    assert r.headers["Retry-After"] == str(body["parameters"]["retry_after"])
    assert fake.stats.flood_429 == 2 and fake.stats.early_retries == 1
    assert len(fake.sent(ANA)) == 3

    # Groups: 20 per minute after the burst; paid broadcasts use their own global bucket.
    fake.add_group(GROUP, "Vigil coordinators", type="supergroup", members=[ANA])
    fake.set_flood_limits(group_burst=2, global_burst=1000)
    await bot.send_message(GROUP, "g1")
    await bot.send_message(GROUP, "g2")
    with pytest.raises(RetryAfter):
        await bot.send_message(GROUP, "g3")
    fake.set_flood_limits(enabled=False)
    await bot.send_message(GROUP, "g3")
    fake.assert_no_violations()


@ptb_retry_after_warning
async def test_injected_faults(fake: FakeTelegram, bot: Bot) -> None:
    fake.inject_fault("sendMessage", 429, retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(ANA, "x")
    assert retry_seconds(caught.value) == 7
    fake.inject_fault("sendMessage", 502)
    with pytest.raises(NetworkError, match=r"(?i)Bad Gateway"):
        await bot.send_message(ANA, "x")
    fake.inject_fault("*", 500, count=2)
    for _ in range(2):
        with pytest.raises(NetworkError, match=r"(?i)Internal Server Error"):
            await bot.get_me()
    fake.inject_delay("getMe", 0.3)
    started = time.monotonic()
    await bot.get_me()
    assert time.monotonic() - started >= 0.3
    await bot.send_message(ANA, "finally")
    assert [m.text for m in fake.sent(ANA)] == ["finally"]
    assert fake.stats.injected == 4  # the delay-only fault answered normally


async def test_blocked_user_gets_403(fake: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(BEN, "welcome")
    fake.user_blocks_bot(BEN)
    with pytest.raises(Forbidden, match=r"(?i)bot was blocked by the user"):
        await bot.send_message(BEN, "still there?")
    (update,) = await bot.get_updates(timeout=0)
    assert update.my_chat_member.new_chat_member.status == "kicked"
    fake.register_user(777, "Never started", started=False)
    with pytest.raises(Forbidden, match=r"(?i)can't initiate conversation"):
        await bot.send_message(777, "hi")
    fake.assert_no_violations()


async def test_file_upload_and_download_roundtrip(fake: FakeTelegram, bot: Bot) -> None:
    payload = b"court papers \x00\x01\x02" * 100
    doc = await bot.send_document(ANA, payload, filename="papers.pdf", caption="Papers")
    assert doc.document.file_name == "papers.pdf" and doc.caption == "Papers"
    assert fake.last_sent(ANA).kind == "document"
    f = await bot.get_file(doc.document.file_id)
    assert f.file_size == len(payload)
    assert bytes(await f.download_as_bytearray()) == payload

    photo = b"\xff\xd8\xff\xe0 fake jpeg"
    fake.user_sends_photo(ANA, photo, caption="after the visit")
    (update,) = await bot.get_updates(timeout=0)
    assert update.message.caption == "after the visit"
    pf = await update.message.photo[-1].get_file()
    assert bytes(await pf.download_as_bytearray()) == photo

    # A file_id the server has stored can be re-sent without uploading again.
    again = await bot.send_photo(BEN, update.message.photo[-1].file_id)
    assert again.photo[-1].file_id == update.message.photo[-1].file_id
    with pytest.raises(BadRequest, match=r"(?i)wrong file"):
        await bot.get_file("nope")
    assert fake.stats.downloads == 2  # what the fakes count as "downloaded"
    fake.assert_no_violations()


async def test_group_messages_respect_privacy_mode(fake: FakeTelegram, bot: Bot) -> None:
    fake.add_group(GROUP, "Supporters", type="supergroup", members=[ANA, BEN])
    fake.user_sends(ANA, "just chatting", chat_id=GROUP)
    cmd = fake.user_sends(BEN, "/cases@vigil_test_bot", chat_id=GROUP)
    (update,) = await bot.get_updates(timeout=0)
    assert update.update_id == cmd.update_id and update.message.chat.type == "supergroup"
    reply = await bot.send_message(GROUP, "Cases: …")
    assert reply.chat.id == GROUP and reply.message_id == 3


async def test_added_to_a_group_and_leaving_it(fake: FakeTelegram, bot: Bot) -> None:
    fake.add_group(GROUP, "Supporters", type="supergroup")
    fake.add_group(-1001234, "News", type="channel")
    uid = fake.bot_added_to(GROUP, ANA)
    fake.bot_added_to(-1001234, BEN, status="administrator")
    added, as_admin = await bot.get_updates(
        timeout=0, allowed_updates=["message", "my_chat_member"]
    )
    assert added.update_id == uid and added.my_chat_member.chat.id == GROUP
    assert added.my_chat_member.from_user.id == ANA
    assert added.my_chat_member.new_chat_member.status == "member"
    assert as_admin.my_chat_member.new_chat_member.status == "administrator"
    assert await bot.leave_chat(GROUP) is True
    assert fake.left_chats == [GROUP] and fake.chat(GROUP).bot_removed
    with pytest.raises(Forbidden, match="not a member"):
        await bot.leave_chat(GROUP)
    with pytest.raises(Forbidden, match="kicked"):
        await bot.send_message(GROUP, "still here?")
    with pytest.raises(BadRequest, match="private chats"):
        await bot.leave_chat(ANA)
    # Leaving is itself a my_chat_member update, from the bot.
    (left,) = await bot.get_updates(offset=as_admin.update_id + 1, timeout=0)
    assert left.my_chat_member.new_chat_member.status == "left"
    assert left.my_chat_member.from_user.id == fake.bot_id
    fake.assert_no_violations()


def test_threaded_mode_serves_sync_code() -> None:
    with FakeTelegram.in_thread() as fake:
        fake.register_user(ANA, "Ana")
        r = httpx.post(f"{fake.api_url}/sendMessage", data={"chat_id": ANA, "text": "sync"})
        assert r.status_code == 200
        assert [m.text for m in fake.sent(ANA)] == ["sync"]
        fake.user_sends(ANA, "/start")
        updates = httpx.post(f"{fake.api_url}/getUpdates", json={"timeout": 0}).json()["result"]
        assert updates[0]["message"]["text"] == "/start"
        assert fake.stats.calls["sendMessage"] == 1
        fake.assert_no_violations()


async def test_process_mode_with_control_api() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.telegram_api", "--port", "0", "--token", DEFAULT_TOKEN],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)
        url = line.strip()
        assert url.startswith("http://127.0.0.1:")
        with ControlClient(url) as control:
            assert control.info()["base_url"] == f"{url}/bot"
            control.register_user(ANA, "Ana", language_code="uk")
            sent = control.user_sends(ANA, "/start")
            async with Bot(
                DEFAULT_TOKEN, base_url=f"{url}/bot", base_file_url=f"{url}/file/bot"
            ) as bot:
                (update,) = await bot.get_updates(timeout=1)
                assert update.update_id == sent["update_id"]
                await bot.send_message(ANA, "Welcome", reply_markup=keyboard("ok"))
                reply = await asyncio.to_thread(control.next_sent, ANA, 2.0, sent["message_id"])
                assert reply["text"] == "Welcome"
                qid = control.user_presses(ANA, reply["message_id"], "ok")
                (update,) = await bot.get_updates(offset=update.update_id + 1, timeout=1)
                assert update.callback_query.id == qid
            assert [m["text"] for m in control.sent(ANA)] == ["Welcome"]
            assert control.stats()["calls"]["getUpdates"] == 2
            assert control.violations() == []
            control.shutdown()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
