"""End to end: `vigil run` as a subprocess against the fake Bot API, played by simulated users."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.transports.telegram import TelegramTransport, utf16_len
from handlers.cases import MAX_LISTED
from storage import cases
from storage.store import unlock
from tests.e2e import VigilProcess, vigil_process
from tests.fakes.telegram_api import FakeTelegram, FloodLimits, ThreadedFakeTelegram

WELCOME = "Welcome to Vigil."
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8 + b"\xff\xd9"


@pytest.fixture
def fake() -> Iterator[ThreadedFakeTelegram]:
    # Telegram's flood limits are enforced throughout: normal use must never provoke a 429.
    with FakeTelegram.in_thread(flood=FloodLimits()) as f:
        yield f


def env_for(fake: ThreadedFakeTelegram) -> dict[str, str]:
    return {"VIGIL_TELEGRAM_TOKEN": fake.token, "VIGIL_TELEGRAM_API_URL": fake.base_url}


def say(fake: ThreadedFakeTelegram, user: int, text: str, timeout: float = 15) -> Any:
    """A user writes; returns the bot's first answer after it."""
    msg = fake.user_sends(user, text)
    return fake.next_sent(user, timeout, after=msg.message_id)


def secrets_of(fake: ThreadedFakeTelegram) -> list[str]:
    token = fake.token
    return [token, token.split(":", 1)[1]]


def check_fake(fake: ThreadedFakeTelegram) -> None:
    fake.assert_no_violations()
    stats = fake.stats
    assert stats.flood_429 == 0, "Vigil provoked Telegram's flood control"
    assert stats.early_retries == 0, "Vigil came back before retry_after ran out"


def seed_cases(v: VigilProcess, n: int, name_length: int) -> list[str]:
    """Cases written straight into the store before `vigil run` starts (no CLI for them yet)."""
    store = unlock(v.data_dir, v.passphrase)
    words = "of a person held for their beliefs, not forgotten " * (name_length // 40 + 1)
    names = [f"Case {i:03d} {words}"[:name_length].strip() for i in range(n)]
    try:
        for i, name in enumerate(names):
            store.db.run_sync(cases.create, f"case-{i:03d}", name, "public", time.time())
    finally:
        store.close()
    return names


def test_member_journey(fake: ThreadedFakeTelegram, tmp_path: Path) -> None:
    """Invite redeemed, /help, an inline button pressed, a photo, a reply split over 4096."""
    ann = 5_100_200_301
    caption = "sentinel caption 7QX: my brother's cell"
    with vigil_process(tmp_path, env_for(fake), start=False) as v:
        # /cases lists up to MAX_LISTED cases: enough long names to need two messages.
        count = min(40, MAX_LISTED)
        names = seed_cases(v, count, name_length=7000 // count)
        v.start()
        code, links = v.invite("activist")
        assert links == [f"https://t.me/{fake.bot_username}?start={code.replace('-', '')}"]

        fake.register_user(ann, "Ann", language_code="en")
        assert "You joined as supporter" in say(fake, ann, f"/start {code}").content
        assert "/language" in say(fake, ann, "/help").content

        menu = say(fake, ann, "/language")
        assert menu.parse_mode is None and menu.buttons
        query = fake.user_presses(ann, menu.message_id, menu.button_data("English"))
        answer = fake.next_sent(ann, 15, after=menu.message_id)
        assert answer.content == "Language set: English."
        fake.wait_for(lambda f: f.callback_answer(query) is not None, 10)

        photo = fake.user_sends_photo(ann, JPEG, caption=caption)
        reply = fake.next_sent(ann, 15, after=photo.message_id)
        assert "start with /report" in reply.content
        assert fake.calls_to("getFile"), "the photo was not fetched"

        asked = fake.user_sends(ann, "/cases")

        def whole_listing(f: FakeTelegram) -> list[Any] | None:
            parts = [m for m in f.sent(ann) if m.message_id > asked.message_id]
            text = " ".join(" ".join(m.raw_text for m in parts).split())
            return parts if all(" ".join(n.split()) in text for n in names) else None

        parts = fake.wait_for(whole_listing, 30)  # pieces go out a second apart
        assert len(parts) >= 2
        assert all(utf16_len(m.raw_text) <= 4096 and m.parse_mode is None for m in parts)

        assert {"start", "help"} <= {c["command"] for c in fake.commands()}
        assert v.stop() == 0

    check_fake(fake)
    v.assert_no_tracebacks()
    v.assert_log_free_of([*secrets_of(fake), ann, code, code.replace("-", ""), caption, "Ann"])


def test_429_is_honoured_and_the_message_still_arrives(
    fake: ThreadedFakeTelegram, tmp_path: Path
) -> None:
    bea = 5_100_200_302
    fake.register_user(bea, "Bea")
    with vigil_process(tmp_path, env_for(fake)) as v:
        assert WELCOME in say(fake, bea, "/start").content
        fake.inject_fault("sendMessage", 429, retry_after=2, chat_id=bea)
        asked = fake.user_sends(bea, "/help")
        reply = fake.next_sent(bea, 20, after=asked.message_id)
        assert "What you can do" in reply.content
        assert v.stop() == 0
    calls = [c for c in fake.calls_to("sendMessage") if c.params.get("chat_id") == bea]
    statuses = [c.status for c in calls]
    assert statuses == [200, 429, 200], statuses
    waited = calls[2].at - calls[1].at
    print(f"429 retry_after=2 s; the retry came {waited:.2f} s later")
    assert waited >= 2.0 - 0.05
    assert fake.stats.injected == 1
    check_fake(fake)
    v.assert_log_free_of([*secrets_of(fake), bea])


def test_blocked_user_is_not_retried(fake: ThreadedFakeTelegram, tmp_path: Path) -> None:
    cid, dan = 5_100_200_303, 5_100_200_304
    fake.register_user(cid, "Cid")
    fake.register_user(dan, "Dan")
    with vigil_process(tmp_path, env_for(fake)) as v:
        assert WELCOME in say(fake, cid, "/start").content
        fake.user_sends(cid, "/help")
        fake.user_blocks_bot(cid, notify=False)  # before the reply can go out
        assert WELCOME in say(fake, dan, "/start").content
        fake.wait_for(
            lambda f: any(
                c.params.get("chat_id") == cid and c.status == 403
                for c in f.calls_to("sendMessage")
            ),
            15,
        )
        assert "What you can do" in say(fake, dan, "/help").content
        # Coming back makes them reachable again.
        fake.user_unblocks_bot(cid, notify=False)
        assert "What you can do" in say(fake, cid, "/help").content
        assert v.stop() == 0
    refused = [
        c
        for c in fake.calls_to("sendMessage")
        if c.params.get("chat_id") == cid and c.status == 403
    ]
    assert len(refused) == 1, [c.status for c in fake.calls_to("sendMessage")]
    # And none could follow: the refused reply's row ended as failed, which is never retried.
    store = unlock(v.data_dir, v.passphrase)
    try:
        rows = store.db.run_sync(
            lambda conn: conn.execute(
                "SELECT state, error FROM outbox WHERE transport = 'telegram' AND chat = ? "
                "ORDER BY id",
                (str(cid),),
            ).fetchall()
        )
    finally:
        store.close()
    assert [tuple(r) for r in rows] == [("sent", None), ("failed", "blocked"), ("sent", None)]
    check_fake(fake)
    v.assert_log_free_of([*secrets_of(fake), cid, dan])


def test_a_wrong_token_exits_2_with_one_clear_line(
    fake: ThreadedFakeTelegram, tmp_path: Path
) -> None:
    wrong = "123456789:WRONG-token-for-this-fake_xyz"
    env = {**env_for(fake), "VIGIL_TELEGRAM_TOKEN": wrong}
    with vigil_process(tmp_path, env, start=False) as v:
        v.start(wait=False)
        assert v.proc is not None
        assert v.proc.wait(30) == 2
        v.stop()
    assert "vigil: Telegram rejected the bot token (VIGIL_TELEGRAM_TOKEN)." in v.log()
    v.assert_no_tracebacks()
    v.assert_log_free_of([wrong, wrong.split(":", 1)[1]])
    assert "Unclosed" not in v.log()


def test_webhook_mode(fake: ThreadedFakeTelegram, tmp_path: Path) -> None:
    """VIGIL_TELEGRAM_WEBHOOK_URL: Telegram pushes updates; the secret is checked; the webhook
    stays set across a stop so Telegram keeps queueing."""
    eve = 5_100_200_305
    fake.register_user(eve, "Eve")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/vigil/telegram"
    secret = "e2e-webhook-secret_5Zr8"
    env = {
        **env_for(fake),
        "VIGIL_TELEGRAM_WEBHOOK_URL": url,
        "VIGIL_TELEGRAM_WEBHOOK_LISTEN": f"127.0.0.1:{port}",
        "VIGIL_TELEGRAM_WEBHOOK_SECRET": secret,
    }
    with vigil_process(tmp_path, env) as v:
        assert fake.webhook_info()["url"] == url
        assert WELCOME in say(fake, eve, "/start").content
        assert "What you can do" in say(fake, eve, "/help").content
        assert v.stop() == 0
    assert fake.webhook_info()["url"] == url
    assert not fake.calls_to("getUpdates")
    check_fake(fake)
    v.assert_log_free_of([*secrets_of(fake), secret, eve])


def test_kill_while_updates_are_in_flight(fake: ThreadedFakeTelegram, tmp_path: Path) -> None:
    """200 people send /start; `vigil run` is SIGKILLed mid-stream and restarted. Everyone
    becomes a member exactly once and gets an answer; duplicates stay within the in-flight
    window.

    The kill is timed to hit both halves of the pipeline: replies still queued in the outbox,
    and updates handled but not yet confirmed to Telegram. For the latter, getUpdates answers
    are held back after the first half; our loop polls again only once a batch is stored, so
    a held poll proves its `offset - 1` updates were handled, and they are still unconfirmed
    when the process dies."""
    n = 200
    users = [6_200_000_000 + i for i in range(n)]
    first, second = users[: n // 2], users[n // 2 :]
    for i, user in enumerate(users):
        fake.register_user(user, f"P{i}")

    def push(group: list[int], pause: float) -> None:
        for user in group:
            fake.user_sends(user, "/start")
            time.sleep(pause)

    def held_poll(f: FakeTelegram) -> Any:
        polls = [c for c in f.calls_to("getUpdates") if c.status == 0 and c.at >= held_since]
        return polls[-1] if polls else None

    with vigil_process(tmp_path, env_for(fake)) as v:
        push(first, 0)  # at once: their answers queue up behind the 30/s limit
        fake.wait_for(lambda f: len(f.sent()) >= 10, 30)
        held_since = time.time()
        fake.inject_delay("getUpdates", 60, count=None)  # the confirming poll never returns
        pusher = threading.Thread(target=push, args=(second, 0.01))
        pusher.start()
        poll = fake.wait_for(held_poll, 30)
        v.kill()
        replied = {m.chat_id for m in fake.sent()}
        unconfirmed = [u["update_id"] for u in fake.pending_updates()]
        replayed = [u for u in unconfirmed if u < int(poll.params["offset"])]
        pusher.join()
        fake.clear_faults()
        v.start()
        fake.wait_for(lambda f: all(f.sent(u) for u in users), 45)
        assert v.stop() == 0  # drains: whatever was in flight has arrived when it returns

    per_chat = Counter(m.chat_id for m in fake.sent())
    texts = Counter(m.raw_text.split("\n")[0] for m in fake.sent())
    duplicates = sum(c - 1 for c in per_chat.values())
    print(
        f"\nkill test: at the kill {len(replied)}/{n} people had their answer, "
        f"{len(unconfirmed)} updates were unconfirmed, {len(replayed)} of them already handled "
        f"(replayed after the restart); afterwards every chat was answered, with "
        f"{duplicates} duplicate answers (bound: {TelegramTransport.limits.in_flight})"
    )
    assert replayed, "the kill did not catch a handled-but-unconfirmed update"
    assert len(replied) < n // 2, "the kill did not catch answers waiting in the outbox"
    assert set(per_chat) == set(users)
    assert all(text.startswith(WELCOME) for text in texts), texts  # none "already a member"
    assert duplicates <= TelegramTransport.limits.in_flight

    store = unlock(v.data_dir, v.passphrase)
    try:
        members = store.db.run_sync(lambda c: c.execute("SELECT count(*) FROM members").fetchone())
        ids = store.db.run_sync(
            lambda c: c.execute(
                "SELECT count(*), count(DISTINCT address) FROM identities WHERE transport = ?",
                ("telegram",),
            ).fetchone()
        )
        inbox = store.db.run_sync(
            lambda c: c.execute(
                "SELECT count(*) FROM inbox WHERE transport = 'telegram'"
            ).fetchone()
        )
    finally:
        store.close()
    assert members[0] == n and tuple(ids) == (n, n) and inbox[0] == n
    check_fake(fake)
    v.assert_log_free_of([*secrets_of(fake), *users[:20]])
