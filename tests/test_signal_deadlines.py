"""Every request of the Signal transport has a deadline: against a server that accepts every
request and never answers (what upstream's lost `getRaw` answer and a dropped daemon look
like), each call ends by itself, and a send that ended so is *maybe sent*."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

import bot.transports.signal.attachments as attachments_mod
import bot.transports.signal.rest as rest_mod
from bot.config import Settings
from bot.messages import Attachment, Outgoing
from bot.transports.base import RetryLater
from bot.transports.signal import ChallengeOutcome, SignalApiError, SignalTransport

ALICE = "3f2a9c1e-7b4d-4e8a-9c6f-1a2b3c4d5e6f"
SHORT = 0.3
GUARD = 10.0  # a hang detector only: every call below ends after about SHORT seconds


@pytest.fixture
async def silent_api() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def never(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path.split('/')[2]}")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", never)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.fixture(autouse=True)
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in dir(rest_mod):
        if name.endswith("_TIMEOUT") and name != "CONNECT_TIMEOUT":
            monkeypatch.setattr(rest_mod, name, SHORT)
    monkeypatch.setattr(attachments_mod, "SWEEP_DEADLINE", SHORT)


async def test_every_call_ends_by_itself(silent_api: tuple[str, list[str]]) -> None:
    url, seen = silent_api
    settings = Settings(data_dir=Path("/nonexistent"), signal_api_url=url, signal_number="+1555")
    t = SignalTransport(settings, send_timeout=SHORT)
    t.mode = "json-rpc"
    rest = t.rest
    async with asyncio.timeout(GUARD):
        with pytest.raises(RetryLater) as sent:
            await t.send(Outgoing(transport="signal", chat=ALICE, text="hello"))
        assert sent.value.kind == "timeout" and sent.value.maybe_sent
        with pytest.raises(TimeoutError):
            await rest.about(SHORT)
        assert await t.fetch_attachment(Attachment("photo", "abc.jpg"), 1024) is None
        assert not await t.janitor.delete_now("abc.jpg")
        assert await t.janitor.sweep() == 0
        with pytest.raises(SignalApiError):
            await t.identities()
        with pytest.raises(SignalApiError):
            await rest.trust(ALICE, "1" * 60)
        assert not await t.set_disappearing(ALICE, 60)
        await rest.typing(ALICE, True)  # best effort: ends quietly
        t.suspension.begin(None, ["token-1"])
        assert await t.solve_challenge("signalcaptcha://x") is ChallengeOutcome.UNAVAILABLE
        with pytest.raises(TimeoutError):
            await rest.receive({"timeout": "1"}, SHORT)
    await t.close()
    assert {s.split()[1] for s in seen} >= {
        "send", "about", "attachments", "identities", "contacts", "typing-indicator",
        "accounts", "receive",
    }  # fmt: skip
