"""What the real REST layer does, handled on purpose: each behaviour against the real
signal-cli-rest-api (`../shared/signal-cli-rest-api`, via tests/signal_rest.py) and against our
fake of it (tests/fakes/signal_api.py), with the same assertions.

Covered: the 201 array with a string timestamp and per-recipient errors inside a 201; the 429
with challenge tokens and the whole captcha workflow (alert, `solve_challenge`, the daemon
receiving `submitRateLimitChallenge` with the token, sends resuming at once, or a rejected
captcha leaving them paused); the untrusted-identity 400 and the same on receive; identities
(list, trust, the 500 of a failing daemon); a call that hangs for ever (a deadline, *maybe
sent*, and neither other sends nor the receive stream wait for it); group messages and a
stranger's 5 × 10 MB attachments (never downloaded, deleted unread); a store that fails for a
while (every message stored once, in order); a full queue (reading pauses, nothing is lost).
No log line of the transport carries a number, UUID, text, token or captcha.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.messages import Incoming, Outgoing, Priority
from bot.transports.base import IdentityUntrusted, MaybeSent, RecipientGone, RetryLater
from bot.transports.signal import (
    CAPTCHA_PAGE,
    ChallengeOutcome,
    SignalApiError,
    SignalTransport,
    Suspended,
)
from tests.fakes.signal_api import FakeSignal
from tests.signal_rest import RealSignal, group_id, real_signal_layer, sender_uuid

pytestmark = pytest.mark.timeout(120)

ALICE = sender_uuid("alice")  # a relative who hides her number
BOB = sender_uuid("bob")
STRANGER = sender_uuid("stranger")
PROBE = sender_uuid("probe")
SECRET = "sentinel-text K4Q7: the lawyer was turned away"
TOKEN = "c0ffee00-challenge-token-5f1c"
CAPTCHA = "signalcaptcha://signal-hcaptcha.5fad97ac-7d06-4e44-b18a-b950b20148ff.challenge.P1_eyJ0"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
TEN_MB = 10 * 1024 * 1024


# -- the two layers behind one face --------------------------------------------------------------


class Layer:
    """What a test does to signal-cli-rest-api, whichever one runs."""

    name: str
    url: str
    number: str

    def user_sends(self, uuid: str, text: str | None, **kw: Any) -> dict[str, Any]:
        raise NotImplementedError

    def changed_key_message(self, uuid: str) -> dict[str, Any]:
        raise NotImplementedError

    def script_send(self, kind: str, **kw: Any) -> None:
        raise NotImplementedError

    def release_hangs(self) -> None:
        """Sends from now on are answered (the hung one stays hung)."""

    def reject_captcha(self) -> None:
        raise NotImplementedError

    def challenges(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def knows(self, uuid: str) -> dict[str, Any]:
        """signal-cli holds a key for `uuid`; returns the listed entry."""
        raise NotImplementedError

    def fail_identities(self) -> None:
        raise NotImplementedError

    def trusts(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def sent_to(self, uuid: str) -> list[str]:
        raise NotImplementedError

    def attachment_files(self) -> list[str]:
        raise NotImplementedError

    def downloads(self) -> int:
        raise NotImplementedError


class FakeLayer(Layer):
    name = "fake"

    def __init__(self, fake: FakeSignal) -> None:
        self.fake = fake
        self.url, self.number = fake.url, fake.number

    def user_sends(self, uuid: str, text: str | None, **kw: Any) -> dict[str, Any]:
        if "group" in kw:
            kw["group_id"] = kw.pop("group")
        return self.fake.user_sends(uuid, text, **kw)

    def changed_key_message(self, uuid: str) -> dict[str, Any]:
        self.fake.change_identity(uuid)
        return self.fake.user_sends(uuid, SECRET)

    def script_send(self, kind: str, **kw: Any) -> None:
        if kind == "rate_limit":
            self.fake.inject_send_fault("rate_limit", challenge_tokens=[kw["token"]])
        elif kind == "recipient_error":
            self.fake.inject_send_fault("recipient_error", error=kw["reason"])
        else:
            self.fake.inject_send_fault(kind)  # type: ignore[arg-type]

    def reject_captcha(self) -> None:
        self.fake.reject_captcha()

    def challenges(self) -> list[tuple[str, str]]:
        return [(c["challenge_token"], c["captcha"]) for c in self.fake.rate_limit_challenges]

    def knows(self, uuid: str) -> dict[str, Any]:
        return self.fake.add_identity(uuid)

    def fail_identities(self) -> None:
        self.fake.fail_identities()

    def trusts(self) -> list[tuple[str, str]]:
        return [(t["recipient"], t["verified_safety_number"]) for t in self.fake.trusts]

    def sent_to(self, uuid: str) -> list[str]:
        return [m.message or "" for m in self.fake.sent_to(uuid)]

    def attachment_files(self) -> list[str]:
        return self.fake.attachment_ids

    def downloads(self) -> int:
        return len(self.fake.fetched_attachments)


class RealLayer(Layer):
    name = "real"

    def __init__(self, real: RealSignal) -> None:
        self.real = real
        self.url, self.number = real.url, real.number
        self._identities: list[dict[str, Any]] = []

    def user_sends(self, uuid: str, text: str | None, **kw: Any) -> dict[str, Any]:
        if "group" in kw:
            kw["group"] = group_id(kw["group"])
        return self.real.user_sends(uuid, text, **kw)

    def changed_key_message(self, uuid: str) -> dict[str, Any]:
        return self.real.untrusted_message(uuid)

    def script_send(self, kind: str, **kw: Any) -> None:
        if kind == "rate_limit":
            self.real.fail("send", "rate_limit", token=kw["token"])
        elif kind == "hang":
            self.real.delay("send", 3600)
        elif kind == "recipient_error":
            result = {
                "timestamp": 1_796_000_000_000,
                "results": [
                    {"recipientAddress": {"uuid": ALICE, "number": None}, "type": kw["reason"]}
                ],
            }
            self.real.canned("send", result)
        else:
            self.real.fail("send", kind)

    def release_hangs(self) -> None:
        self.real.delay("send", 0)

    def reject_captcha(self) -> None:
        self.real.fail("submitRateLimitChallenge", "captcha_rejected")

    def challenges(self) -> list[tuple[str, str]]:
        found = self.real.requests("submitRateLimitChallenge")
        return [(r["params"]["challenge"], r["params"]["captcha"]) for r in found]

    def knows(self, uuid: str) -> dict[str, Any]:
        entry = {
            "number": "",
            "uuid": uuid,
            "fingerprint": "05 aa bb",
            "safetyNumber": "".join(str(int(c, 16) % 10) for c in uuid.replace("-", ""))[:30] * 2,
            "scannableSafetyNumber": "",
            "trustLevel": "UNTRUSTED",
            "addedTimestamp": 1_700_000_000_000,
        }
        self._identities.append(entry)
        self.real.canned("listIdentities", self._identities)
        return {"uuid": uuid, "safety_number": entry["safetyNumber"], "status": "UNTRUSTED"}

    def fail_identities(self) -> None:
        self.real.fail("listIdentities", "io_error")

    def trusts(self) -> list[tuple[str, str]]:
        found = self.real.requests("trust")
        return [(r["params"]["recipient"], r["params"]["verified-safety-number"]) for r in found]

    def sent_to(self, uuid: str) -> list[str]:
        return self.real.sent_to(uuid)

    def attachment_files(self) -> list[str]:
        return self.real.attachment_files()

    def downloads(self) -> int:
        return self.real.served("GET", "/v1/attachments/")


@pytest.fixture(scope="module")
def real_layer() -> Iterator[RealSignal]:
    with real_signal_layer() as real:
        yield real


@pytest.fixture(params=["fake", "real"])
async def layer(request: pytest.FixtureRequest) -> AsyncIterator[Layer]:
    if request.param == "fake":
        async with FakeSignal() as fake:
            yield FakeLayer(fake)
            fake.assert_no_violations()
    else:
        real: RealSignal = request.getfixturevalue("real_layer")
        real.reset()
        real.canned("send", None)
        real.canned("listIdentities", None)
        yield RealLayer(real)
        real.delay("send", 0)


@pytest.fixture(autouse=True)
def clean_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        if not record.name.startswith("bot."):
            continue
        line = record.getMessage()
        assert not UUID_RE.search(line), line
        assert not re.search(r"\+\d{6,}", line), line
        for secret in (SECRET, TOKEN, CAPTCHA, "signalcaptcha://"):
            assert secret not in line, line


# -- helpers -------------------------------------------------------------------------------------


class Inbox:
    """Plays App.deliver: records what arrives, can fail or block; never fetches anything."""

    def __init__(self) -> None:
        self.items: list[Incoming] = []
        self.attempts = 0
        self.fail_first = 0
        self.gate: asyncio.Event | None = None
        self.changed = asyncio.Event()

    async def __call__(self, msg: Incoming) -> None:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_first > 0:
            self.fail_first -= 1
            raise OSError("database or disk is full")
        self.items.append(msg)
        self.changed.set()

    def texts(self, sender: str | None = None) -> list[str]:
        return [m.text for m in self.items if sender is None or m.sender == sender]

    async def wait(self, check: Callable[[], bool], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def make(layer: Layer, **kw: Any) -> SignalTransport:
    settings = Settings(
        data_dir=Path("/nonexistent"), signal_api_url=layer.url, signal_number=layer.number
    )
    options: dict[str, Any] = {"backoff_base": 0.05, "backoff_max": 0.2, "start_wait": 5.0}
    options.update(kw)
    return SignalTransport(settings, **options)


@contextlib.asynccontextmanager
async def running(layer: Layer, inbox: Inbox, **kw: Any) -> AsyncIterator[SignalTransport]:
    """A started transport whose receive stream is proven live (a probe message arrived)."""
    t = make(layer, **kw)
    alerts: list[str] = []

    async def alert(text: str) -> None:
        alerts.append(text)

    t.on_alert = alert
    t.alerts = alerts  # type: ignore[attr-defined]
    await t.start(inbox)
    try:
        frame = layer.user_sends(PROBE, "probe", timestamp=1_700_000_000_000)
        # The first frames after a connect can be lost upstream; the same envelope again is
        # harmless (it has the same key).
        async with asyncio.timeout(15):
            while not any(m.sender == PROBE for m in inbox.items):
                with contextlib.suppress(TimeoutError):
                    await inbox.wait(lambda: any(m.sender == PROBE for m in inbox.items), 1.0)
                if not any(m.sender == PROBE for m in inbox.items):
                    resend(layer, frame)
        inbox.items.clear()
        yield t
    finally:
        await t.stop()
        await t.close()


def resend(layer: Layer, frame: dict[str, Any]) -> None:
    if isinstance(layer, FakeLayer):
        layer.fake.replay(frame)
    else:
        assert isinstance(layer, RealLayer)
        layer.real.push(frame)


def out(text: str, chat: str = ALICE, **kw: Any) -> Outgoing:
    return Outgoing(transport="signal", chat=chat, text=text, **kw)


async def flushed(t: SignalTransport) -> None:
    """Background alerts have run."""
    await asyncio.gather(*list(t._background), return_exceptions=True)


# -- sending -------------------------------------------------------------------------------------


async def test_a_201_array_gives_the_timestamp(layer: Layer) -> None:
    async with running(layer, Inbox()) as t:
        ref = await t.send(out(SECRET))
    assert ref is not None and ref.isdigit()
    assert layer.sent_to(ALICE) == [SECRET]


@pytest.mark.parametrize(
    ("reason", "error", "kind"),
    [
        ("UNREGISTERED_FAILURE", RecipientGone, "unregistered"),
        ("IDENTITY_FAILURE", IdentityUntrusted, "untrusted_identity"),
        ("NETWORK_FAILURE", RetryLater, "network_failure"),
    ],
)
async def test_a_per_recipient_error_inside_a_201(
    layer: Layer, reason: str, error: type[Exception], kind: str
) -> None:
    async with running(layer, Inbox()) as t:
        layer.script_send("recipient_error", reason=reason)
        with pytest.raises(error) as raised:
            await t.send(out("hello"))
    assert raised.value.kind == kind  # type: ignore[attr-defined]


async def test_untrusted_and_unregistered_400s(layer: Layer) -> None:
    async with running(layer, Inbox()) as t:
        layer.script_send("untrusted")
        with pytest.raises(IdentityUntrusted):
            await t.send(out(SECRET))
        layer.script_send("unregistered")
        with pytest.raises(RecipientGone) as gone:
            await t.send(out(SECRET))
        assert gone.value.kind == "unregistered"
        assert await t.send(out("next one goes"))


# -- the rate-limit challenge ---------------------------------------------------------------------


async def test_challenge_alert_captcha_and_resume_at_once(layer: Layer) -> None:
    resumed: list[bool] = []
    async with running(layer, Inbox()) as t:
        t.on_resume = lambda: resumed.append(True)
        layer.script_send("rate_limit", token=TOKEN)
        with pytest.raises(MaybeSent) as limited:
            await t.send(out("alert text", priority=Priority.ALERT))
        assert limited.value.kind == "rate_limited" and t.suspended and t.challenge_pending
        with pytest.raises(Suspended):
            await t.send(out("broadcast", priority=Priority.BULK))
        await flushed(t)
        (alert,) = t.alerts  # type: ignore[attr-defined]
        assert CAPTCHA_PAGE in alert
        assert "/captcha signalcaptcha://" in alert and "vigil signal captcha" in alert
        assert TOKEN not in alert

        outcome = await t.solve_challenge(f'  "{CAPTCHA}"  ')  # pasted with quotes and spaces
        assert outcome is ChallengeOutcome.SOLVED and outcome.ok
        assert layer.challenges() == [(TOKEN, CAPTCHA)]
        assert not t.suspended and resumed == [True]
        assert await t.send(out("broadcast", priority=Priority.BULK))  # at once, no waiting
        await flushed(t)
        assert "resumed" in t.alerts[-1]  # type: ignore[attr-defined]
        assert await t.solve_challenge(CAPTCHA) is ChallengeOutcome.NOT_PENDING
    assert layer.sent_to(ALICE)[-1] == "broadcast"


async def test_a_rejected_captcha_keeps_sending_paused(layer: Layer) -> None:
    async with running(layer, Inbox()) as t:
        layer.script_send("rate_limit", token=TOKEN)
        with pytest.raises(MaybeSent):
            await t.send(out("x", priority=Priority.BULK))
        assert await t.solve_challenge("I solved it!") is ChallengeOutcome.MALFORMED
        layer.reject_captcha()
        outcome = await t.solve_challenge(CAPTCHA)
        assert outcome is ChallengeOutcome.REJECTED and "rejected" in outcome.text
        assert layer.challenges() == [(TOKEN, CAPTCHA)]
        assert t.suspended and t.challenge_pending
        with pytest.raises(Suspended):
            await t.send(out("still held", priority=Priority.BULK))
        # A fresh captcha then works with the same pending token.
        assert await t.solve_challenge(CAPTCHA + "2") is ChallengeOutcome.SOLVED
        assert layer.challenges()[-1] == (TOKEN, CAPTCHA + "2")


# -- identities ---------------------------------------------------------------------------------


async def test_identities_listed_trusted_and_a_failing_daemon(layer: Layer) -> None:
    async with running(layer, Inbox()) as t:
        entry = layer.knows(BOB)
        ident = await t.identity(BOB)
        assert ident is not None and ident.address == BOB
        assert ident.safety_number == entry["safety_number"]
        assert await t.identity(STRANGER) is None
        assert await t.trust_identity(BOB, safety_number="0" * 60) is False  # not what it holds
        assert await t.trust_identity(BOB)
        assert layer.trusts() == [(BOB, entry["safety_number"])]
        layer.fail_identities()
        with pytest.raises(SignalApiError):  # upstream answers 500 when signal-cli fails
            await t.identities()


async def test_a_changed_safety_number_on_receive(layer: Layer) -> None:
    inbox = Inbox()
    async with running(layer, inbox):
        frame = layer.changed_key_message(ALICE)
        await inbox.wait(lambda: len(inbox.items) == 1)
    (msg,) = inbox.items
    ts = frame["envelope"]["timestamp"]
    assert msg.untrusted_identity and msg.sender == ALICE and msg.chat == ALICE
    assert msg.key == f"{ALICE}:{ts}:untrusted" and msg.text == ""


# -- a call that hangs ---------------------------------------------------------------------------


async def test_a_hung_send_is_maybe_sent_and_blocks_nothing(layer: Layer) -> None:
    inbox = Inbox()
    async with running(layer, inbox, send_timeout=3.0) as t:
        layer.script_send("hang")
        hung = asyncio.create_task(t.send(out("hangs")))
        await until(lambda: len(layer.sent_to(ALICE)) == 1)  # the request reached signal-cli
        layer.release_hangs()
        assert await t.send(out("goes meanwhile", chat=BOB))
        layer.user_sends(BOB, "arrives meanwhile")
        await inbox.wait(lambda: inbox.texts(BOB) == ["arrives meanwhile"])
        assert not hung.done()
        with pytest.raises(RetryLater) as late:
            await hung
    assert late.value.kind == "timeout" and late.value.maybe_sent


# -- receiving: groups, attachments, a failing store, a full queue --------------------------------


async def test_group_messages_arrive_not_private_and_their_files_are_deleted(
    layer: Layer,
) -> None:
    inbox = Inbox()
    async with running(layer, inbox):
        layer.user_sends(ALICE, "/help@vigil", group="team", attachments=[("image/png", b"x")])
        await inbox.wait(lambda: len(inbox.items) == 1)
        await until(lambda: layer.attachment_files() == [])
    (msg,) = inbox.items
    assert (msg.private, msg.attachments, msg.sender) == (False, (), ALICE)
    assert msg.chat.startswith("group.") and msg.chat != ALICE
    assert layer.downloads() == 0


async def test_a_strangers_five_10mb_attachments_are_never_downloaded(layer: Layer) -> None:
    inbox = Inbox()  # the core's checks fail for a stranger: it never calls fetch_attachment
    files = [("application/pdf", bytes([i]) * TEN_MB) for i in range(5)]
    async with running(layer, inbox):
        layer.user_sends(STRANGER, "take these", attachments=files)
        await inbox.wait(lambda: len(inbox.items) == 1)
        await until(lambda: layer.attachment_files() == [], timeout=30)
    (msg,) = inbox.items
    assert len(msg.attachments) == 5 and all(a.size == TEN_MB for a in msg.attachments)
    assert layer.downloads() == 0


async def test_fetch_reads_only_when_asked_and_every_file_is_deleted(layer: Layer) -> None:
    inbox = Inbox()
    got: list[bytes | None] = []
    transport: list[SignalTransport] = []

    async def deliver(msg: Incoming) -> None:
        if msg.attachments:  # the core's checks passed for the first file only
            first, second = msg.attachments
            got.append(await transport[0].fetch_attachment(first, 1024))
            await transport[0].discard_attachment(second)
        await inbox(msg)

    async with running(layer, inbox) as t:
        transport.append(t)
        t.intake.deliver = deliver
        layer.user_sends(ALICE, "two files", attachments=[("image/png", b"A"), ("image/png", b"B")])
        await inbox.wait(lambda: len(inbox.items) == 1)
        await until(lambda: layer.attachment_files() == [])
    assert got == [b"A"] and layer.downloads() == 1


async def test_a_store_failing_for_a_while_loses_nothing(layer: Layer) -> None:
    inbox = Inbox()
    async with running(layer, inbox, deliver_backoff=(0.05, 0.2)) as t:
        inbox.fail_first = 12  # "disk full" for a dozen attempts
        for i in range(6):
            layer.user_sends(ALICE, f"report part {i}")
            await asyncio.sleep(0.02)  # upstream drops frames written back to back (#834)
        await inbox.wait(lambda: len(inbox.items) == 6, timeout=30)
        assert t.intake.store_failures == 12
    assert inbox.texts(ALICE) == [f"report part {i}" for i in range(6)]  # once each, in order
    assert len({m.key for m in inbox.items}) == 6


async def test_a_full_queue_pauses_reading_and_loses_nothing(layer: Layer) -> None:
    inbox = Inbox()
    async with running(layer, inbox, queue_frames=3) as t:
        inbox.gate = asyncio.Event()  # the store hangs
        for i in range(8):
            layer.user_sends(BOB, f"m{i}")
            await asyncio.sleep(0.02)
        await until(lambda: t.receiver.paused)
        assert t.receiver.queue.qsize() == 3 and inbox.items == []
        inbox.gate.set()
        await inbox.wait(lambda: len(inbox.items) == 8, timeout=30)
        assert not t.receiver.paused and t.receiver.pauses >= 1
    assert inbox.texts(BOB) == [f"m{i}" for i in range(8)]
