"""systemd's notify protocol against a real datagram socket set as NOTIFY_SOCKET: READY=1 after
start, WATCHDOG=1 while every loop is alive and none while one is wedged, STOPPING=1 at stop."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.supervisor import Supervisor
from bot.watchdog import Notifier, Watchdog, watchdog_interval
from tests.e2e import vigil_process
from tests.fakes.telegram_api import FakeTelegram, FloodLimits


class SystemdSocket:
    """The receiving end systemd holds: an AF_UNIX datagram socket (a path or abstract)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.received: list[list[str]] = []

    def drain(self) -> list[list[str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.received
            self.received.append(data.decode().split("\n"))

    def fields(self) -> list[str]:
        return [f for message in self.drain() for f in message]

    async def wait_for(self, field: str, timeout: float = 10.0, after: int = 0) -> int:
        """Index of the first datagram from `after` on that carries `field`."""
        async with asyncio.timeout(timeout):
            while True:
                for i, message in enumerate(self.drain()[after:], after):
                    if any(f.startswith(field) for f in message):
                        return i
                await asyncio.sleep(0.01)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SystemdSocket]:
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
    else:
        address = f"@vigil-test-{uuid.uuid4().hex}"
    s = SystemdSocket(address)
    yield s
    s.close()


def test_notifier_reaches_the_socket(
    systemd: SystemdSocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.address)
    assert Notifier.from_env().send("READY=1", "STATUS=running")
    assert systemd.drain() == [["READY=1", "STATUS=running"]]


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier.from_env().send("READY=1")


def test_watchdog_interval_is_only_for_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert watchdog_interval() is None


async def test_pings_stop_while_a_loop_is_wedged_and_resume_after(systemd: SystemdSocket) -> None:
    sup = Supervisor()
    beating = asyncio.Event()
    beating.set()

    async def loop() -> None:
        while True:
            await beating.wait()  # cleared: the loop waits for something that never comes
            sup.beat("dispatcher:fake")
            await asyncio.sleep(0.01)

    sup.spawn("dispatcher:fake", loop, period=0.2)
    watchdog = Watchdog(Notifier(systemd.address), sup, interval=0.05)
    watchdog.ready()
    pinger = asyncio.create_task(watchdog.run())
    try:
        assert await systemd.wait_for("READY=1") == 0
        await systemd.wait_for("WATCHDOG=1")
        beating.clear()
        wedged = await systemd.wait_for("STATUS=not pinging the watchdog: wedged dispatcher:fake")
        assert sup.unhealthy() == ["dispatcher:fake"]
        async with asyncio.timeout(10):
            while watchdog.withheld < 5:  # five rounds of the watchdog, each without a ping
                await asyncio.sleep(0.01)
        after = systemd.drain()[wedged + 1 :]
        assert not [m for m in after if "WATCHDOG=1" in m]
        beating.set()
        resumed = await systemd.wait_for("WATCHDOG=1", after=wedged + 1)
        assert "STATUS=running" in systemd.drain()[resumed]
    finally:
        pinger.cancel()
        await sup.stop()


async def test_vigil_run_tells_systemd_it_is_ready_alive_and_stopping(
    tmp_path: Path, systemd: SystemdSocket
) -> None:
    with FakeTelegram.in_thread(flood=FloodLimits()) as fake:
        env = {
            "VIGIL_TELEGRAM_TOKEN": fake.token,
            "VIGIL_TELEGRAM_API_URL": fake.base_url,
            "NOTIFY_SOCKET": systemd.address,
            "WATCHDOG_USEC": "400000",  # a ping every 0.2 s
        }
        with vigil_process(tmp_path, env) as v:
            await systemd.wait_for("READY=1", timeout=30)
            first = await systemd.wait_for("WATCHDOG=1", timeout=10)
            await systemd.wait_for("WATCHDOG=1", after=first + 1, timeout=10)
            assert v.stop() == 0
        fields = systemd.fields()
    assert "STOPPING=1" in fields
    assert fields.index("READY=1") < fields.index("WATCHDOG=1") < fields.index("STOPPING=1")
