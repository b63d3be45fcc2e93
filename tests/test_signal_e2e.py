"""End-to-end: `vigil run` as a subprocess on Signal and Telegram at once, against both fakes.

The fakes run in threads of the test process; Vigil reaches them over loopback exactly as it
would reach signal-cli-rest-api and the Bot API. People use the bot as they would: redeem an
invite printed by `vigil invite`, ask for /help, answer the /language menu (a typed "1" on
Signal, a button on Telegram). Then the Signal WebSocket is cut mid-conversation: what reached
the bot is answered, the conversation continues after the reconnect, and (as upstream) what
was sent while no socket was connected is gone. stderr never shows a number, UUID or text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import VigilProcess, vigil_process
from tests.fakes.signal_api import FakeSignal
from tests.fakes.telegram_api import DEFAULT_TOKEN, ThreadedFakeTelegram

pytestmark = pytest.mark.timeout(120)

ALICE = "5b7e3c2a-1d4f-4a6b-8c9d-0e1f2a3b4c5d"  # a relative who hides her number
ALICE_NUMBER = "+375291234567"
BOB = "9a8b7c6d-5e4f-4321-9abc-def012345678"
TESS = 700_123_456  # a Telegram user id
WORDS = "my mother saw him on tuesday"


@pytest.fixture
def signal_api() -> Iterator[FakeSignal]:
    with FakeSignal.in_thread() as fake:
        yield fake
        fake.assert_no_violations()


@pytest.fixture
def telegram_api() -> Iterator[ThreadedFakeTelegram]:
    with ThreadedFakeTelegram() as tg:
        tg.register_user(TESS, "Tess")
        yield tg
        tg.assert_no_violations()


@pytest.fixture
def vigil(
    tmp_path: Path, signal_api: FakeSignal, telegram_api: ThreadedFakeTelegram
) -> Iterator[VigilProcess]:
    env = {
        "VIGIL_SIGNAL_API_URL": signal_api.url,
        "VIGIL_SIGNAL_NUMBER": signal_api.number,
        "VIGIL_TELEGRAM_TOKEN": DEFAULT_TOKEN,
        "VIGIL_TELEGRAM_API_URL": telegram_api.base_url,
    }
    with vigil_process(tmp_path, env) as v:
        signal_api.wait_for_clients_blocking(1, timeout=10)
        yield v
        assert v.stop() == 0
        v.assert_no_tracebacks()
        v.assert_log_free_of(
            [ALICE, BOB, ALICE_NUMBER, signal_api.number, str(TESS), DEFAULT_TOKEN, WORDS]
            + ([v.admin_code] if v.admin_code else [])
        )


def say(fake: FakeSignal, who: str, text: str, replies: int = 1, **kw: object) -> str:
    """`who` writes `text` on Signal; returns the bot's next `replies` message(s) to them."""
    before = len(fake.sent_to(who))
    fake.user_sends(who, text, **kw)
    fake.wait_until_blocking(lambda: len(fake.sent_to(who)) >= before + replies, timeout=15)
    return "\n".join(m.message or "" for m in fake.sent_to(who)[before:])


def number_of(menu: str, label: str) -> str:
    """The number a person types to pick `label` from a numbered menu."""
    for line in menu.splitlines():
        number, sep, text = line.partition(") ")
        if sep and number.isdigit() and text == label:
            return number
    raise AssertionError(f"no {label!r} in the menu")


def tg_say(tg: ThreadedFakeTelegram, text: str) -> object:
    last = max((m.message_id for m in tg.sent(TESS)), default=0)
    tg.user_sends(TESS, text)
    return tg.next_sent(TESS, timeout=15, after=last)


def test_same_journeys_on_signal_and_telegram(
    vigil: VigilProcess, signal_api: FakeSignal, telegram_api: ThreadedFakeTelegram
) -> None:
    fake, tg = signal_api, telegram_api
    assert vigil.admin_code

    # Signal: the admin invite from `vigil init`, from a sender whose number is hidden.
    assert "administrator" in say(fake, ALICE, f"/start {vigil.admin_code}")
    assert "/invite" in say(fake, ALICE, "/help")
    menu = say(fake, ALICE, "/language")  # Signal has no buttons: a numbered menu
    assert "Language set" in say(fake, ALICE, number_of(menu, "English"))
    assert all(m.text_mode == "normal" for m in fake.sent)

    # The same envelope delivered twice (Signal redelivery) is handled once.
    frame = fake.user_sends(ALICE, "/help")
    fake.wait_until_blocking(lambda: len(fake.sent_to(ALICE)) == 5, timeout=15)
    fake.replay(frame)
    fake.user_sends(ALICE, WORDS)  # a marker after the replay
    fake.wait_until_blocking(lambda: len(fake.sent_to(ALICE)) == 6, timeout=15)
    assert "did not understand" in fake.sent_to(ALICE)[-1].message

    # Telegram, in the same process: an activist invite printed by `vigil invite`.
    code, _links = vigil.invite("activist")
    assert "Welcome" in tg_say(tg, f"/start {code}").text
    assert "/invite" not in tg_say(tg, "/help").text
    question = tg_say(tg, "/language")
    last = max(m.message_id for m in tg.sent(TESS))
    tg.user_presses(TESS, question.message_id, question.button_data("English"))
    tg.wait_for(lambda f: any(
        "Language set" in (m.content or "") for m in f.sent(TESS) if m.message_id >= last
    ), timeout=15)  # fmt: skip

    # Signal again: a second person, an activist invite, an attachment that never stays on disk.
    code, _ = vigil.invite("activist")
    assert "Welcome" in say(fake, BOB, f"/start {code}")
    say(fake, BOB, "", attachments=[("image/jpeg", b"\xff\xd8\xff\xe0" + b"0" * 64, "me.jpg")])
    fake.wait_until_blocking(lambda: not fake.attachment_ids, timeout=10)
    assert fake.deleted_attachments


def test_dropped_websocket_mid_conversation_loses_nothing_that_arrived(
    vigil: VigilProcess, signal_api: FakeSignal
) -> None:
    fake = signal_api
    assert "Welcome" in say(fake, BOB, "/start")

    # BOB's next message reaches the bot; the socket dies while the bot is answering it.
    fake.set_send_delay(1.0)
    sends = len([r for r in fake.requests if r == ("POST", "/v2/send")])
    fake.user_sends(BOB, "/language")
    fake.wait_until_blocking(
        lambda: len([r for r in fake.requests if r == ("POST", "/v2/send")]) > sends, timeout=15
    )
    fake.refuse_connections(1.0)  # the REST container restarts: a gap of about a second
    assert fake.drop_connections() == 1
    fake.user_sends(BOB, "/cases")  # sent into the gap: upstream drops it, nobody can help
    assert len(fake.dropped_frames) == 1
    fake.wait_until_blocking(lambda: ") English" in (fake.sent_to(BOB)[-1].message or ""), 15)
    menu = fake.sent_to(BOB)[-1].message or ""
    fake.set_send_delay(0.0)

    # Vigil reconnects by itself; the conversation goes on where it was (the menu is kept).
    fake.wait_until_blocking(lambda: fake.connections_total >= 2 and fake.client_count == 1, 15)
    assert "Language set" in say(fake, BOB, number_of(menu, "English"))
    assert "/help" in say(fake, BOB, "/help")
    assert fake.max_clients_seen == 1
    vigil.wait_for_log("signal receive stream reconnected")
    assert "dropped by signal-cli-rest-api" in vigil.log()
