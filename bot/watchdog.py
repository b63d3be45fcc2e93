"""systemd's notify protocol: READY=1 once started, WATCHDOG=1 only while every loop is alive.

The unit (`deploy/vigil.service`, `Type=notify`, `WatchdogSec=`) restarts a bot that stops
pinging. So the ping is sent only while the supervisor says every loop is alive: a wedged
dispatcher (awaiting a database or an HTTP answer that never comes) stops the pings and
systemd restarts the process, and so does a blocked event loop, because the pings come from
that loop.

The protocol is written here by hand (sd_notify(3): one datagram of `KEY=value` lines to the
AF_UNIX socket named by $NOTIFY_SOCKET, where a leading '@' means the abstract namespace).
It is a dozen lines; the libraries on PyPI add nothing we need. `systemd-python` needs
libsystemd headers to build. `sdnotify` (0.3.2, last released 2017) silently swallows every
error, which would hide a misconfigured unit whose watchdog then kills the bot. `vsock:`
addresses (systemd 254 VMs) are not supported: we log that once and do not ping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from bot.supervisor import Supervisor

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams; without $NOTIFY_SOCKET every call is a no-op."""

    def __init__(self, address: str | None) -> None:
        self.address: str | None = None
        self.sent = 0
        if not address:
            return
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        else:
            log.warning("NOTIFY_SOCKET is not an AF_UNIX address; systemd is not notified")

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        if self.address is None:
            return False
        data = "\n".join(fields).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(data, self.address)
        except OSError as exc:
            log.warning("systemd notification not sent (%s)", type(exc).__name__)
            return False
        self.sent += 1
        return True


def watchdog_interval() -> float | None:
    """WatchdogSec= in seconds, when systemd asks this process to ping (sd_watchdog_enabled)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were started by one that got it)
    return int(usec) / 1e6


class Watchdog:
    """Pings at half the watchdog interval while `supervisor.alive()`; when it is not, sends a
    STATUS= line naming the wedged loops instead (shown by `systemctl status`)."""

    def __init__(self, notifier: Notifier, supervisor: Supervisor, interval: float | None) -> None:
        self.notifier = notifier
        self.supervisor = supervisor
        self.interval = interval
        self.pings = 0
        self.withheld = 0  # checks at which the ping was held back
        self._status = ""

    @classmethod
    def from_env(cls, supervisor: Supervisor) -> Watchdog:
        return cls(Notifier.from_env(), supervisor, watchdog_interval())

    def ready(self) -> None:
        self.notifier.send("READY=1", "STATUS=running")
        self._status = "running"

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=stopping: draining the outbox")

    def check(self) -> bool:
        """One watchdog round: ping if every loop is alive. True when it pinged."""
        wedged = self.supervisor.unhealthy()
        if wedged:
            self.withheld += 1
            status = "not pinging the watchdog: wedged " + ", ".join(wedged)
            if status != self._status:
                log.error("loops wedged (%s); systemd's watchdog will restart the bot",
                          ", ".join(wedged))  # fmt: skip
                self.notifier.send(f"STATUS={status}")
                self._status = status
            return False
        fields = ["WATCHDOG=1"]
        if self._status != "running":
            fields.append("STATUS=running")
            self._status = "running"
        if self.notifier.send(*fields):
            self.pings += 1
        return True

    async def run(self) -> None:
        if self.interval is None or not self.notifier.enabled:
            return
        while True:
            self.check()
            await asyncio.sleep(self.interval / 2)
