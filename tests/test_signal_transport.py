"""The Signal transport against the loopback fake of signal-cli-rest-api, in one event loop.

Short keepalive/watchdog timeouts come through the constructor, so nothing here sleeps long.
Every test checks the fake saw no contract violation and that the transport's own log lines
carry no number, UUID or message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.messages import Choice, Incoming, Outgoing, Priority
from bot.transports.base import IdentityUntrusted, MaybeSent, RecipientGone, RetryLater
from bot.transports.signal import CAPTCHA_PAGE, SignalTransport, Suspended
from tests.fakes.signal_api import FakeSignal

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
ALICE = "3f2a9c1e-7b4d-4e8a-9c6f-1a2b3c4d5e6f"
ALICE_NUMBER = "+4915112345678"
BOB = "0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f"
SECRET_TEXT = "my brother was moved to colony 7"


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Collector:
    """Plays App.deliver: records Incomings, optionally fetching attachments as the app does."""

    def __init__(self, transport: SignalTransport | None = None, max_bytes: int = 1 << 20):
        self.items: list[Incoming] = []
        self.fetched: list[bytes | None] = []
        self.transport = transport
        self.max_bytes = max_bytes
        self.fetch_first = 1

    async def __call__(self, msg: Incoming) -> None:
        if self.transport is not None:
            for att in msg.attachments[: self.fetch_first]:
                self.fetched.append(await self.transport.fetch_attachment(att, self.max_bytes))
        self.items.append(msg)

    async def wait(self, n: int, timeout: float = 5.0) -> list[Incoming]:
        async with asyncio.timeout(timeout):
            while len(self.items) < n:
                await asyncio.sleep(0.01)
        return self.items


def settings(fake: FakeSignal, **kw: Any) -> Settings:
    return Settings(
        data_dir=Path("/nonexistent"), signal_api_url=fake.url, signal_number=fake.number, **kw
    )


def make(fake: FakeSignal, **kw: Any) -> SignalTransport:
    options: dict[str, Any] = {
        "ping_interval": 0.2,
        "ping_timeout": 1.0,
        "silence_timeout": 3.0,
        "backoff_base": 0.05,
        "backoff_max": 0.2,
        "start_wait": 3.0,
    }
    options.update(kw)
    return SignalTransport(settings(fake), **options)


def out(text: str, chat: str = ALICE, **kw: Any) -> Outgoing:
    return Outgoing(transport="signal", chat=chat, text=text, **kw)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSignal]:
    async with FakeSignal() as f:
        yield f
        f.assert_no_violations()


@pytest.fixture(autouse=True)
def clean_logs(caplog: pytest.LogCaptureFixture):
    """Whatever the transport logs: no UUID, no phone number, no message text."""
    caplog.set_level(logging.DEBUG)
    yield
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("bot.")]
    for line in ours:
        assert not UUID_RE.search(line), line
        assert not re.search(r"\+\d{6,}", line), line
        assert SECRET_TEXT not in line and "colony" not in line, line


@contextlib.asynccontextmanager
async def running(t: SignalTransport, deliver: Any) -> AsyncIterator[SignalTransport]:
    await t.start(deliver)
    try:
        yield t
    finally:
        await t.stop()
        await t.close()


# -- receiving -----------------------------------------------------------------------------------


async def test_json_rpc_text_message_becomes_incoming_keyed_by_uuid(fake: FakeSignal) -> None:
    inbox = Collector()
    async with running(make(fake), inbox) as t:
        assert t.mode == "json-rpc" and fake.client_count == 1
        frame = fake.user_sends(ALICE, SECRET_TEXT, number=ALICE_NUMBER)
        (msg,) = await inbox.wait(1)
    ts = frame["envelope"]["timestamp"]
    assert msg == Incoming(
        transport="signal", sender=ALICE, chat=ALICE, key=f"{ALICE}:{ts}", text=SECRET_TEXT
    )
    assert ALICE_NUMBER not in repr(msg)  # the phone number is never used, even when shown


async def test_what_each_frame_becomes(fake: FakeSignal) -> None:
    inbox = Collector()
    async with running(make(fake), inbox):
        first = fake.user_sends(ALICE, "first")
        fake.user_typing(ALICE)
        fake.user_receipt(ALICE, [first["envelope"]["timestamp"]], kind="read")
        fake.sync_sent("from the owner's phone", destination_uuid=BOB)
        fake.user_reacts(ALICE, "👍", fake.account_uuid, first["envelope"]["timestamp"])
        fake.user_deletes(ALICE, first["envelope"]["timestamp"])
        fake.user_edits(ALICE, first["envelope"]["timestamp"], "edited")
        fake.user_sets_expiration(ALICE, 604800)
        group = fake.user_sends(ALICE, "in a group", group_id="family-chat")
        fake.user_sends(BOB, None)  # message null, nothing attached
        untrusted = fake.user_exception(ALICE)  # a changed safety number
        fake.user_exception(BOB, exc_type="InvalidMessageException", message="bad mac")
        fake.error_frame("daemon hiccup")
        fake.push({"envelope": {"sourceUuid": ALICE, "timestamp": 1}, "account": "+15559999999"})
        fake.user_sends(BOB, "last")
        items = await inbox.wait(4)
    assert [m.text for m in items] == ["first", "in a group", "", "last"]
    plain, in_group, changed, last = items
    assert plain.private and last.private and last.sender == BOB
    # A group message is delivered as such, for the core to drop; never with its chat as ours.
    internal = group["envelope"]["dataMessage"]["groupInfo"]["groupId"]
    assert not in_group.private and in_group.sender == ALICE
    assert in_group.chat.startswith("group.") and internal not in in_group.chat
    assert in_group.key == f"{ALICE}:{group['envelope']['timestamp']}"
    # The changed key: the sender, no content, a key of its own (the readable copy comes later).
    ts = untrusted["envelope"]["timestamp"]
    assert changed.untrusted_identity and changed.sender == ALICE and changed.chat == ALICE
    assert changed.key == f"{ALICE}:{ts}:untrusted" and changed.attachments == ()
    assert not any(m.untrusted_identity for m in (plain, in_group, last))


async def test_replayed_envelope_keeps_its_key(fake: FakeSignal) -> None:
    inbox = Collector()
    async with running(make(fake), inbox):
        frame = fake.user_sends(ALICE, "once")
        fake.replay(frame)
        first, again = await inbox.wait(2)
    assert first.key == again.key  # the inbox (same transaction as the effects) drops the replay


async def test_reconnects_at_once_after_the_connection_drops(fake: FakeSignal) -> None:
    inbox = Collector()
    async with running(make(fake), inbox) as t:
        fake.user_sends(ALICE, "before")
        await inbox.wait(1)
        assert fake.drop_connections() == 1
        await fake.wait_until(lambda: fake.connections_total >= 2)
        await fake.wait_for_clients(1)
        fake.user_sends(ALICE, "after")
        await inbox.wait(2)
        fake.drop_connections(clean=True)
        await fake.wait_until(lambda: fake.connections_total >= 3)
        await fake.wait_for_clients(1)
        fake.user_sends(ALICE, "after a clean close")
        items = await inbox.wait(3)
        assert t.connections == fake.connections_total >= 3
    assert [m.text for m in items] == ["before", "after", "after a clean close"]
    assert fake.max_clients_seen == 1  # never two consumers (each would get every message)


async def test_keepalive_replaces_a_silent_half_open_socket(fake: FakeSignal) -> None:
    inbox = Collector()
    async with running(make(fake, ping_interval=0.1, ping_timeout=0.3), inbox):
        fake.go_silent()  # the socket stays open but nothing, not even a pong, comes back
        await fake.wait_until(lambda: fake.connections_total >= 2, timeout=5)
        await fake.wait_until(lambda: any(not s["silent"] for s in fake.ws_stats()))
        fake.user_sends(ALICE, "after the hang")
        (msg,) = await inbox.wait(1)
    assert msg.text == "after the hang"


async def test_watchdog_reconnects_when_nothing_arrives(fake: FakeSignal) -> None:
    inbox = Collector()
    async with running(make(fake, ping_interval=None, silence_timeout=0.3), inbox):
        fake.go_silent()
        await fake.wait_until(lambda: fake.connections_total >= 2, timeout=5)
        await fake.wait_until(lambda: any(not s["silent"] for s in fake.ws_stats()))
        fake.user_sends(ALICE, "after the watchdog")
        (msg,) = await inbox.wait(1)
    assert msg.text == "after the watchdog"


async def test_reconnect_backs_off_while_the_server_refuses(fake: FakeSignal) -> None:
    inbox = Collector()
    async with running(make(fake), inbox) as t:
        fake.refuse_connections(0.5)
        fake.drop_connections()
        await fake.wait_until(lambda: fake.connections_total >= 2, timeout=5)
        await fake.wait_for_clients(1)
        fake.user_sends(ALICE, "back")
        await inbox.wait(1)
        assert t.connections == fake.connections_total


async def test_only_one_consumer_per_transport(fake: FakeSignal) -> None:
    async with running(make(fake), Collector()) as t:
        with pytest.raises(RuntimeError):
            await t.start(Collector())
        assert fake.client_count == 1


async def test_normal_mode_polls_with_a_timeout() -> None:
    async with FakeSignal(mode="normal", time_scale=0.1) as fake:
        inbox = Collector()
        t = SignalTransport(settings(fake, signal_poll_timeout=1), backoff_base=0.05)
        async with running(t, inbox):
            assert t.mode == "normal"
            fake.user_sends(ALICE, "polled", number=ALICE_NUMBER)
            fake.user_typing(BOB)
            fake.user_sends(BOB, "second")
            items = await inbox.wait(2)
            assert await t.send(out("reply")) is not None
        assert [m.text for m in items] == ["polled", "second"]
        polls = [p for m, p in fake.requests if p.startswith("/v1/receive/")]
        assert polls and all("timeout=1" in p for p in polls)
        fake.assert_no_violations()


async def test_follows_the_rest_api_into_another_mode(fake: FakeSignal) -> None:
    inbox = Collector()
    async with running(make(fake, stable_after=0.1), inbox) as t:
        fake.user_sends(ALICE, "over the socket")
        await inbox.wait(1)
        fake.mode = "normal"  # the container restarted with MODE=normal
        fake.drop_connections()
        await fake.wait_until(lambda: t.mode == "normal", timeout=5)
        fake.user_sends(ALICE, "by polling")
        items = await inbox.wait(2)
        fake.mode = "json-rpc"
        await fake.wait_until(lambda: fake.client_count == 1, timeout=8)
        fake.user_sends(ALICE, "over the socket again")
        items = await inbox.wait(3)
    assert [m.text for m in items] == ["over the socket", "by polling", "over the socket again"]
    # Each switch costs one call of the old kind, which the fake flags; nothing else.
    assert len(fake.violations) == 2
    assert "WebSocket attempted in normal mode" in fake.violations[0]
    assert "plain GET in json-rpc mode" in fake.violations[1]
    fake.clear_violations()


# -- attachments ---------------------------------------------------------------------------------


async def test_attachments_fetched_within_limit_and_all_deleted(fake: FakeSignal) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"x" * 500
    big = b"%PDF-1.4 " + b"y" * 5000
    leftover = fake.add_attachment(b"orphan from a dropped frame", "text/plain")
    t = make(fake)
    inbox = Collector(t, max_bytes=1000)
    inbox.fetch_first = 2
    async with running(t, inbox):
        assert leftover in fake.deleted_attachments  # swept at start: plaintext on their disk
        fake.user_sends(
            ALICE,
            None,
            attachments=[
                ("image/jpeg", jpeg, "Nasrin at the prison gate.jpg"),
                ("application/pdf", big, "court-ruling.pdf"),
                ("application/pdf", big, "surplus.pdf"),
            ],
        )
        (msg,) = await inbox.wait(1)
        await fake.wait_until(lambda: not fake.attachment_ids)
    photo, doc, surplus = msg.attachments
    assert (photo.kind, photo.mime, photo.size, photo.name) == ("photo", "image/jpeg", 504, "")
    assert (doc.kind, doc.mime, doc.name) == ("document", "application/pdf", "")
    assert inbox.fetched == [jpeg, None]  # the second is over max_bytes
    assert surplus.ref not in fake.fetched_attachments  # never read, only deleted
    assert {photo.ref, doc.ref, surplus.ref} <= set(fake.deleted_attachments)
    assert "Nasrin" not in repr(msg)


async def test_long_text_comes_whole_from_its_attachment(fake: FakeSignal) -> None:
    full = "Свидание 12 ноября. " * 120  # about 4.5 kB: Signal cuts the body at 2000 bytes
    cut = full.encode()[:2000].decode(errors="ignore")
    inbox = Collector()
    async with running(make(fake), inbox):
        fake.user_sends(ALICE, cut, attachments=[("text/x-signal-plain", full.encode())])
        (msg,) = await inbox.wait(1)
        await fake.wait_until(lambda: not fake.attachment_ids)
    assert msg.text == full and msg.attachments == ()


async def test_attachments_of_group_and_ignored_envelopes_are_deleted_unread(
    fake: FakeSignal,
) -> None:
    t = make(fake)
    inbox = Collector(t)  # would fetch the first attachment of anything it is given
    async with running(t, inbox):
        fake.user_sends(ALICE, "photo", attachments=[b"\x89PNG\r\n\x1a\nabc"], group_id="g")
        fake.sync_sent("mine", BOB)
        fake.user_sends(ALICE, "marker")
        group, marker = await inbox.wait(2)
        await fake.wait_until(lambda: not fake.attachment_ids)
    assert (group.text, group.private, group.attachments) == ("photo", False, ())
    assert marker.text == "marker"
    assert fake.fetched_attachments == [] and len(fake.deleted_attachments) == 1


# -- sending -------------------------------------------------------------------------------------


async def test_send_returns_timestamp_in_either_response_shape(fake: FakeSignal) -> None:
    async with running(make(fake), Collector()) as t:
        ref = await t.send(out("*not bold* ~plain~"))
        fake.set_response_shape("array")
        ref2 = await t.send(out("second", chat=BOB))
    first, second = fake.sent
    assert ref == str(first.timestamp) and ref2 == str(second.timestamp)
    assert first.body == {
        "number": fake.number,
        "recipients": [ALICE],
        "message": "*not bold* ~plain~",
        "text_mode": "normal",
        "notify_self": False,
    }


async def test_edit_is_a_new_message_and_delete_a_no_op(fake: FakeSignal) -> None:
    async with running(make(fake), Collector()) as t:
        assert await t.send(out("", kind="delete", ref="123")) is None
        assert await t.send(out("progress 2/3", kind="edit", ref="123")) is not None
    assert [m.message for m in fake.sent] == ["progress 2/3"]


async def test_400_is_maybe_sent_never_retried(fake: FakeSignal) -> None:
    async with running(make(fake), Collector()) as t:
        fake.inject_send_fault("error", delivered=True)
        with pytest.raises(MaybeSent) as err:
            await t.send(out("hearing moved"))
    assert err.value.kind == "bad_request"


async def test_unregistered_and_untrusted_recipients(fake: FakeSignal) -> None:
    async with running(make(fake), Collector()) as t:
        fake.mark_unregistered(BOB)
        with pytest.raises(RecipientGone) as gone:
            await t.send(out("hi", chat=BOB))
        assert gone.value.kind == "unregistered"
        fake.mark_untrusted(ALICE)
        with pytest.raises(IdentityUntrusted) as untrusted:
            await t.send(out("hi"))
        assert untrusted.value.kind == "untrusted_identity"
    assert fake.sent == []  # nothing reached either of them


async def test_groups_are_never_written_to(fake: FakeSignal) -> None:
    from bot.transports.base import Rejected

    async with running(make(fake), Collector()) as t:
        with pytest.raises(Rejected) as refused:
            await t.send(out("to the whole group", chat="group.ZmFtaWx5"))
    assert refused.value.kind == "not_private" and fake.send_attempts == []


async def test_server_errors_and_timeouts_are_retried(fake: FakeSignal) -> None:
    async with running(make(fake, send_timeout=0.3), Collector()) as t:
        fake.inject_send_fault("server_error")
        with pytest.raises(RetryLater) as err:
            await t.send(out("x"))
        assert err.value.kind == "server_error" and not err.value.maybe_sent
        fake.inject_send_fault("delay", delay=1.0)
        with pytest.raises(RetryLater) as late:
            await t.send(out("y"))
        assert late.value.kind == "timeout" and late.value.maybe_sent
        await asyncio.sleep(0.8)  # let the fake finish the slow request


async def test_connection_refused_is_retry_later() -> None:
    async with FakeSignal() as fake:
        t = make(fake)
    with pytest.raises(RetryLater) as err:
        await t.send(out("x"))  # the fake is gone: connection refused
    assert not err.value.maybe_sent
    await t.close()


async def test_rate_limit_challenge_suspends_bulk_and_keeps_emergencies(fake: FakeSignal) -> None:
    clock = ManualClock()
    alerts: list[str] = []

    async def alert(text: str) -> None:
        alerts.append(text)

    async with running(make(fake, clock=clock, reply_interval=10), Collector()) as t:
        t.on_alert = alert
        fake.inject_send_fault("rate_limit", count=3, challenge_tokens=["tok-5f1c"])
        with pytest.raises(MaybeSent) as err:
            await t.send(out("first"))
        assert err.value.kind == "rate_limited" and err.value.retry_after == 15  # re-check
        assert t.suspended and t.challenge_pending
        calls = len(fake.send_attempts)
        for priority in (Priority.BULK, Priority.ALERT, Priority.REPLY):
            with pytest.raises(Suspended) as held:
                await t.send(out("held", priority=priority))
            assert held.value.retry_after is not None and 0 < held.value.retry_after <= 15
        assert len(fake.send_attempts) == calls  # suspended sends never reach the API
        with pytest.raises(MaybeSent):  # an emergency is always tried
            await t.send(out("urgent", priority=Priority.EMERGENCY))
        clock.advance(10)  # one reply per 10 s gets through
        with pytest.raises(MaybeSent):
            await t.send(out("reply"))
        assert t.suspended and len(fake.send_attempts) == calls + 2
        assert await t.send(out("urgent again", priority=Priority.EMERGENCY))
        assert not t.suspended  # a send that succeeded proves the limit lifted
        assert await t.send(out("broadcast", priority=Priority.BULK))
        await asyncio.gather(*list(t._background))  # the alerts, sent in the background
    assert CAPTCHA_PAGE in alerts[0] and "/captcha signalcaptcha://" in alerts[0]
    assert "vigil signal captcha" in alerts[0]
    assert not any("tok-5f1c" in a for a in alerts)  # the token stays in the transport
    assert "resumed" in alerts[-1]


async def test_suspension_ends_after_its_time_and_escalates(fake: FakeSignal) -> None:
    clock = ManualClock()
    async with running(make(fake, clock=clock, suspend_seconds=600), Collector()) as t:
        fake.inject_send_fault("rate_limit")
        with pytest.raises(MaybeSent):
            await t.send(out("a", priority=Priority.BULK))
        clock.advance(601)
        assert await t.send(out("b", priority=Priority.BULK))
        fake.inject_send_fault("rate_limit")  # trips again within the hour: twice as long
        with pytest.raises(MaybeSent):
            await t.send(out("c", priority=Priority.BULK))
        clock.advance(601)
        with pytest.raises(Suspended):
            await t.send(out("d", priority=Priority.BULK))
        clock.advance(600)
        assert await t.send(out("e", priority=Priority.BULK))


async def test_normal_mode_rate_limit_text_suspends_for_the_given_wait() -> None:
    clock = ManualClock()
    async with FakeSignal(mode="normal", time_scale=0.1) as fake:
        t = SignalTransport(settings(fake), clock=clock, backoff_base=0.05)
        async with running(t, Collector()):
            fake.inject_send_fault("rate_limit")  # 400 "CAPTCHA proof required … wait 86400"
            with pytest.raises(MaybeSent) as err:
                await t.send(out("x", priority=Priority.BULK))
            assert err.value.kind == "rate_limited"
            clock.advance(86_000)
            with pytest.raises(Suspended):
                await t.send(out("y", priority=Priority.BULK))
            clock.advance(401)
            assert await t.send(out("z", priority=Priority.BULK))
        fake.assert_no_violations()


# -- menus, typing, timers, probe ----------------------------------------------------------------


async def test_numbered_menu_round_trip(fake: FakeSignal) -> None:
    inbox = Collector()
    choices = (Choice("English", "/language en"), Choice("Deutsch", "/language de"))
    async with running(make(fake), inbox) as t:
        await t.send(out("Choose your language:", choices=choices))
        assert fake.sent[-1].message == "Choose your language:\n\n1) English\n2) Deutsch"
        fake.user_sends(ALICE, " 2 ")
        fake.user_sends(ALICE, "7")  # not on the menu: stays text
        fake.user_sends(BOB, "1")  # another chat has no menu
        await inbox.wait(3)
        await t.send(out("Network alert", priority=Priority.ALERT))  # leaves the menu be
        fake.user_sends(ALICE, "1")
        await inbox.wait(4)
        await t.send(out("Language set."))  # the conversation moved on
        fake.user_sends(ALICE, "1")
        items = await inbox.wait(5)
    assert [(m.text, m.is_choice) for m in items] == [
        ("/language de", True),
        ("7", False),
        ("1", False),
        ("/language en", True),
        ("1", False),
    ]


async def test_typing_shown_around_a_wizard_question(fake: FakeSignal) -> None:
    async with running(make(fake), Collector()) as t:
        await t.send(out("Which case?", choices=(Choice("Nasrin", "/case nasrin"),)))
        await t.send(out("plain answer"))
        await fake.wait_until(lambda: len(fake.typing) == 2)
    assert [(c.action, c.recipient) for c in fake.typing] == [("start", ALICE), ("stop", ALICE)]


async def test_set_disappearing_timer(fake: FakeSignal) -> None:
    async with running(make(fake), Collector()) as t:
        assert await t.set_disappearing(ALICE, 604800)
        # The same through an outbox row (what the app enqueues when a relative joins).
        timer = out("", kind="disappearing", extra={"seconds": "86400"})
        assert await t.send(timer) is None
        assert await t.send(out("", kind="disappearing")) is None  # setting 0: left alone
    assert fake.contact_updates == [
        {"recipient": ALICE, "expiration_in_seconds": 604800},
        {"recipient": ALICE, "expiration_in_seconds": 86400},
    ]
    assert fake.sent == []  # no message went out


async def test_probe_names_mode_without_the_number(fake: FakeSignal) -> None:
    t = make(fake)
    line = await t.probe()
    assert line == "/v1/about ok, mode json-rpc, version 0.100"
    assert fake.number not in line


async def test_api_down_at_start_then_up(fake: FakeSignal) -> None:
    inbox = Collector()
    fake.refuse_connections(0.6)
    async with running(make(fake, start_wait=0.1), inbox):
        await fake.wait_for_clients(1, timeout=5)
        fake.user_sends(ALICE, "late start")
        (msg,) = await inbox.wait(1)
    assert msg.text == "late start"


async def test_long_lived_loops_run_under_the_supervisor(
    fake: FakeSignal, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.supervisor import Supervisor

    supervisor = Supervisor()
    inbox = Collector()
    t = make(fake)
    t.spawn = supervisor.spawn
    real_loop = t.receiver._ws_loop
    failures = [RuntimeError("a bug in the receive loop")]

    async def failing_once() -> None:
        if failures:
            raise failures.pop()
        await real_loop()

    monkeypatch.setattr(t.receiver, "_ws_loop", failing_once)
    async with running(t, inbox):
        assert set(supervisor.loops) == {"signal.receive", "signal.process", "signal.attachments"}
        await fake.wait_for_clients(1, timeout=10)  # restarted after its back-off
        assert supervisor.loops["signal.receive"].restarts == 1
        assert supervisor.loops["signal.receive"].last_failure == "RuntimeError"
        fake.user_sends(ALICE, "after the restart")
        (msg,) = await inbox.wait(1)
        assert supervisor.alive()
    assert msg.text == "after the restart"
    await supervisor.stop()
