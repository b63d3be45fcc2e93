"""The Telegram transport keeps to private chats and never confirms what was not stored.

* Added to a group, supergroup or channel: it calls leaveChat and sends nothing there; the log
  says only that it happened.
* Commands and button presses from a group arrive with private=False (the router drops them);
  a group's press is never answered; a group message's file is never downloaded; a send to a
  group or channel is refused before any request.
* A stranger's 5 × 10 MB files: nothing downloads them unless the core asks.
* While `deliver` fails (the store cannot write), the offset does not move: the updates are
  fetched again with a growing back-off, and each is handled exactly once when it works again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import bot.transports.telegram.api as tg_api
import bot.transports.telegram.polling as tg_polling
from bot.messages import Outgoing
from bot.transports.base import Rejected
from bot.transports.telegram import TelegramTransport
from tests.fakes.telegram_api import FakeTelegram
from tests.test_telegram_transport import ANN, BEA, Inbox, settings_for

pytestmark = [
    pytest.mark.filterwarnings("ignore:Please use 'Bot.:telegram.warnings.PTBUserWarning"),
    pytest.mark.filterwarnings("ignore:.*retry_after:telegram.warnings.PTBDeprecationWarning"),
]

GROUP = -1_002_233_445_566
CHANNEL = -1_009_988_776_655
TEN_MB = 10 * 1024 * 1024


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    asked: list[int] = []

    def backoff(attempt: int) -> float:
        asked.append(attempt)
        return 0.05

    monkeypatch.setattr(tg_api, "backoff", backoff)
    monkeypatch.setattr(tg_polling, "CONFLICT_BACKOFF", 0.3)
    return asked


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(privacy_mode=False) as f:
        f.register_user(ANN, "Ann")
        f.register_user(BEA, "Bea")
        f.add_group(GROUP, "Support circle", type="supergroup", members=[ANN])
        f.add_group(CHANNEL, "News", type="channel")
        yield f
        f.assert_no_violations()


@pytest.fixture
async def transport(fake: FakeTelegram, tmp_path: Path) -> AsyncIterator[TelegramTransport]:
    t = TelegramTransport(settings_for(fake, tmp_path))
    yield t
    await t.close()


def calls_naming(fake: FakeTelegram, chat: int) -> list[str]:
    return [c.method for c in fake.calls if c.params.get("chat_id") == chat]


async def test_added_to_a_group_or_channel_it_leaves_without_a_word(
    fake: FakeTelegram, transport: TelegramTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    inbox = Inbox()
    await transport.start(inbox)
    fake.bot_added_to(GROUP, ANN)
    fake.bot_added_to(CHANNEL, BEA, status="administrator")
    await fake.wait_for(lambda f: len(f.left_chats) == 2, timeout=10)
    fake.user_sends(ANN, "/help")  # private traffic goes on as before
    await inbox.wait(1)
    await fake.wait_for("updates_confirmed")
    assert sorted(fake.left_chats) == sorted([GROUP, CHANNEL])
    assert calls_naming(fake, GROUP) == ["leaveChat"]  # nothing else ever names the group
    assert calls_naming(fake, CHANNEL) == ["leaveChat"]
    assert [m.text for m in inbox.got] == ["/help"]  # the core never heard of the groups
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("bot.")]
    assert any("left it without a word" in line for line in lines)
    assert not any(str(GROUP) in line or str(abs(GROUP)) in line for line in lines)


async def test_group_commands_and_presses_arrive_not_private_and_are_never_answered(
    fake: FakeTelegram, transport: TelegramTransport
) -> None:
    inbox = Inbox()
    await transport.start(inbox)
    fake.user_sends(ANN, "/cases", chat_id=GROUP)  # the bot was in the group already
    fake.push_update(
        {
            "callback_query": {
                "id": "4242",
                "from": {"id": ANN, "is_bot": False, "first_name": "Ann"},
                "message": {
                    "message_id": 7,
                    "date": 1,
                    "chat": {"id": GROUP, "type": "supergroup", "title": "Support circle"},
                },
                "chat_instance": "1",
                "data": "/help",
            }
        }
    )
    doc = fake.user_sends_document(ANN, b"%PDF-1.4 x", caption="/report", chat_id=GROUP)
    got = await inbox.wait(3)
    await fake.wait_for(lambda f: f.left_chats == [GROUP], timeout=10)
    await fake.wait_for("updates_confirmed")
    assert [(m.text, m.private, m.chat) for m in got] == [
        ("/cases", False, str(GROUP)),
        ("/help", False, str(GROUP)),
        ("/report", False, str(GROUP)),
    ]
    assert got[2].attachments == () and doc.file_id  # the file was there; never listed
    assert fake.calls_to("answerCallbackQuery") == []
    assert fake.calls_to("getFile") == [] and fake.stats.downloads == 0
    assert calls_naming(fake, GROUP) == ["leaveChat"]


async def test_a_send_to_a_group_or_channel_is_refused_before_any_request(
    fake: FakeTelegram, transport: TelegramTransport
) -> None:
    inbox = Inbox()
    await transport.start(inbox)
    fake.user_sends(ANN, "/start")
    await inbox.wait(1)
    for chat in (str(GROUP), str(CHANNEL), "@news_channel"):
        with pytest.raises(Rejected) as refused:
            await transport.send(Outgoing(transport="telegram", chat=chat, text="hello group"))
        assert refused.value.kind == "not_private"
    assert fake.calls_to("sendMessage") == []
    assert await transport.send(Outgoing(transport="telegram", chat=str(ANN), text="hi"))


async def test_a_strangers_five_10mb_files_are_never_downloaded(
    fake: FakeTelegram, transport: TelegramTransport
) -> None:
    stranger = 7_300_100_999
    fake.register_user(stranger, "Stranger")
    inbox = Inbox()  # the core's checks fail for a stranger: it never calls fetch_attachment
    await transport.start(inbox)
    for i in range(5):
        fake.user_sends_document(stranger, bytes([i]) * TEN_MB, file_name=f"f{i}.pdf")
    got = await inbox.wait(5)
    await fake.wait_for("updates_confirmed")
    assert all(len(m.attachments) == 1 and m.attachments[0].size == TEN_MB for m in got)
    for msg in got:
        await transport.discard_attachment(msg.attachments[0])  # what the core does: nothing
    assert fake.calls_to("getFile") == [] and fake.stats.downloads == 0


async def test_a_store_failing_for_a_while_is_never_confirmed_and_loses_nothing(
    fake: FakeTelegram, transport: TelegramTransport, fast_backoff: list[int]
) -> None:
    inbox = Inbox()
    inbox.fail_times = 6  # "database or disk is full", six attempts in a row
    sent = [fake.user_sends(ANN if i % 2 else BEA, f"message {i}") for i in range(4)]
    await transport.start(inbox)
    await fake.wait_for(lambda f: inbox.attempts >= 3, timeout=10)
    assert len(fake.pending_updates()) == 4  # nothing confirmed while nothing is stored
    got = await inbox.wait(4, timeout=20)
    await fake.wait_for("updates_confirmed")
    assert sorted(m.key for m in got) == sorted(str(s.update_id) for s in sent)  # each once
    assert [m.text for m in got if m.sender == str(ANN)] == ["message 1", "message 3"]
    assert [m.text for m in got if m.sender == str(BEA)] == ["message 0", "message 2"]
    # The pause between re-fetches grew with each batch that could not be stored.
    stalls = [a for a in fast_backoff if a > 0]
    assert stalls[:3] == [1, 2, 3]


async def test_the_poll_loop_runs_under_the_supervisor(
    fake: FakeTelegram, transport: TelegramTransport
) -> None:
    from bot.supervisor import Supervisor

    supervisor = Supervisor()
    transport.spawn = supervisor.spawn
    inbox = Inbox()
    await transport.start(inbox)
    assert set(supervisor.loops) == {"telegram.receive"}
    fake.user_sends(ANN, "/help")
    await inbox.wait(1)
    assert supervisor.alive()
    await transport.stop()
    await supervisor.stop()


async def test_a_failed_leave_is_tried_again_before_the_update_is_confirmed(
    fake: FakeTelegram, transport: TelegramTransport
) -> None:
    fake.inject_fault("leaveChat", 500, count=2)  # Telegram has a bad moment
    uid = fake.bot_added_to(GROUP, ANN)
    inbox = Inbox()
    await transport.start(inbox)
    await fake.wait_for(lambda f: f.left_chats == [GROUP], timeout=10)
    await fake.wait_for("updates_confirmed")
    assert [c.status for c in fake.calls_to("leaveChat")] == [500, 500, 200]
    assert all(u["update_id"] != uid for u in fake.pending_updates())
