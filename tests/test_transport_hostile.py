"""Malformed platform traffic: junk updates from the Telegram fake and junk WebSocket frames
from the Signal fake never crash a transport, and the next real message still gets through."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.signal_api import FakeSignal
from tests.fakes.telegram_api import FakeTelegram
from tests.test_signal_transport import ALICE, Collector, make, running
from tests.test_telegram_transport import ANN, BEA, Inbox, settings_for

# The Telegram transport silences these two PTB notices at import; pytest resets warning filters.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Please use 'Bot.:telegram.warnings.PTBUserWarning"),
    pytest.mark.filterwarnings("ignore:.*retry_after:telegram.warnings.PTBDeprecationWarning"),
]

JUNK_UPDATES: list[dict[str, Any]] = [
    {"message": {}},  # no content at all
    {"message": None},
    {"message": "not an object"},
    {"message": {"message_id": 1, "date": 0, "chat": {"id": ANN, "type": "private"}}},  # no user
    {"message": {"message_id": 2, "date": 0, "text": 5, "from": {"id": ANN, "is_bot": False,
                 "first_name": "A"}, "chat": {"id": ANN, "type": "private"}}},  # text not a str
    {"message": {"message_id": 3, "date": 0, "text": "x", "from": {"id": "nan"},
                 "chat": {"id": None, "type": "private"}}},
    {"callback_query": {"id": "q1", "from": {"id": ANN, "is_bot": False, "first_name": "A"},
                        "chat_instance": "c"}},  # a press without data or message
    {"edited_message": {"message_id": 4, "date": 0, "text": "edit"}},
    {"channel_post": {"message_id": 5, "date": 0, "chat": {"id": -100, "type": "channel"}}},
    {"some_future_update_type": {"x": 1}},
]  # fmt: skip


async def test_telegram_junk_updates_are_skipped_and_the_next_message_arrives(tmp_path) -> None:
    from bot.transports.telegram import TelegramTransport

    async with FakeTelegram(reject_violations=False) as fake:
        fake.register_user(ANN, "Ann")
        fake.register_user(BEA, "Bea")
        transport = TelegramTransport(settings_for(fake, tmp_path))
        inbox = Inbox()
        await transport.start(inbox)
        try:
            for junk in JUNK_UPDATES:
                fake.push_update(junk)
            fake.user_sends(BEA, "x" * 100_000)  # far over Telegram's own 4096 limit
            fake.user_sends(ANN, "/help")
            got = await inbox.wait(2, timeout=15)
            texts = [m.text for m in got]
            assert "/help" in texts
            assert all(isinstance(m.text, str) and isinstance(m.sender, str) for m in got)
            await fake.wait_for(lambda f: not f.pending_updates(), timeout=10)  # all confirmed
        finally:
            await transport.stop()
            await transport.close()


JUNK_FRAMES: list[dict[str, Any]] = [
    {"envelope": None, "account": "+15550000001"},
    {"envelope": "not an object", "account": "+15550000001"},
    {"envelope": {"sourceUuid": 5, "timestamp": "soon", "dataMessage": {"message": 7}}},
    {"envelope": {"sourceUuid": ALICE, "timestamp": 1, "dataMessage": "text"}},
    {"envelope": {"sourceUuid": ALICE, "timestamp": 2, "dataMessage": {"attachments": "x"}}},
    {"envelope": {"sourceUuid": None, "dataMessage": {"message": "no sender"}}},
    {"envelope": {"timestamp": 3}},
    {"unexpected": [1, 2, 3]},
]


async def test_signal_junk_frames_are_skipped_and_the_next_message_arrives() -> None:
    async with FakeSignal() as fake:
        inbox = Collector()
        async with running(make(fake), inbox):
            for frame in JUNK_FRAMES:
                fake.push(frame)
            fake.error_frame("internal error from signal-cli")
            fake.user_sends(ALICE, "z" * 100_000)
            fake.user_sends(ALICE, "/help", timestamp=1_790_000_000_123)
            got = await inbox.wait(2, timeout=15)
            assert got[-1].text == "/help" and got[-1].sender == ALICE
            assert all(isinstance(m.text, str) for m in got)
            assert fake.client_count == 1  # one consumer throughout, no crash-reconnect loop
