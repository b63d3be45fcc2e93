"""The real signal-cli-rest-api for tests and benches: `../shared/signal-cli-rest-api/run.sh`.

That directory holds the upstream REST layer (a Go binary built from bbernhard's source) in
front of a scripted signal-cli daemon (`fake_signal_cli.py`, JSON-RPC over TCP with signal-cli
0.14's shapes and error codes). `RealSignal.start()` runs it on free loopback ports; the
daemon's control API (port+2) injects incoming envelopes, scripts failures and records every
JSON-RPC request the REST layer made, and the REST layer's own access log (`rest.log` in its
run directory) shows every HTTP request it served, so a test can count attachment downloads.

Where `../shared` is absent the fixtures skip with that reason (CI has it); where it is
present but the layer does not start, they fail.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
LAYER = REPO.parent / "shared" / "signal-cli-rest-api"
NUMBER = "+15550000001"
STARTS = 3  # attempts with fresh ports (another process may take one meanwhile)


def unavailable() -> str | None:
    """Why the real layer cannot run here, or None."""
    if not LAYER.is_dir():
        return f"{LAYER} is not next to this checkout (CI has it)"
    for tool in ("python3", "curl"):
        if shutil.which(tool) is None:
            return f"run.sh needs {tool}, which is not installed"
    return None


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports() -> int:
    """A port P with P, P+1 and P+2 free on loopback (REST, daemon, daemon control)."""
    for _ in range(200):
        port = random.randrange(20_000, 60_000)
        if all(_free(port + i) for i in range(3)):
            return port
    raise RuntimeError("no three free loopback ports in a row")


def sender_uuid(seed: str) -> str:
    return str(uuid_mod.uuid5(uuid_mod.NAMESPACE_URL, "vigil-test:" + seed))


def group_id(label: str) -> str:
    """A signal-cli group id (base64 of 32 bytes) for a label."""
    import hashlib

    return base64.b64encode(hashlib.sha256(label.encode()).digest()).decode()


class RealSignal:
    """One running REST layer + scripted daemon, and the test's hands on it."""

    def __init__(self, port: int, run_dir: Path, number: str = NUMBER) -> None:
        self.port = port
        self.run_dir = run_dir
        self.number = number
        self.url = f"http://127.0.0.1:{port}"
        self.control = httpx.Client(base_url=f"http://127.0.0.1:{port + 2}", timeout=120)

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def start(cls, *, reply_delay_ms: float | None = None) -> RealSignal:
        last = ""
        for _ in range(STARTS):
            port = free_ports()
            run_dir, output = _run(port, reply_delay_ms)
            if run_dir is not None:
                layer = cls(port, run_dir)
                layer.reply_delay_ms = reply_delay_ms
                return layer
            last = output
        raise RuntimeError(f"signal-cli-rest-api did not start:\n{last}")

    reply_delay_ms: float | None = None

    def restart(self) -> None:
        """Stop both processes and start them again on the same ports, as a container
        restart would (the daemon's records start empty)."""
        subprocess.run(
            [str(LAYER / "stop.sh"), str(self.port)], capture_output=True, timeout=30, check=False
        )
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for _ in range(50):
            run_dir, output = _run(self.port, self.reply_delay_ms)
            if run_dir is not None:
                self.run_dir = run_dir
                return
            time.sleep(0.2)  # the old sockets may linger for a moment
        raise RuntimeError(f"signal-cli-rest-api did not start again:\n{output}")

    def stop(self) -> None:
        self.control.close()
        subprocess.run(
            [str(LAYER / "stop.sh"), str(self.port)], capture_output=True, timeout=30, check=False
        )
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- the daemon's control API ------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = self.control.post(path, json=body or {})
        resp.raise_for_status()
        return resp.json()

    def reset(self) -> None:
        """Forget recorded requests, scripted failures, canned results and delays."""
        self._post("/reset")

    def health(self) -> dict[str, Any]:
        return self.control.get("/health").json()

    def push(self, params: dict[str, Any]) -> dict[str, Any]:
        """Write one `receive` notification with these params, verbatim."""
        return self._post("/inject", {"account": self.number, "params": params})["params"]

    def user_sends(
        self,
        uuid: str,
        text: str | None,
        *,
        number: str | None = None,
        timestamp: int | None = None,
        attachments: Iterable[tuple[str, bytes]] = (),
        group: str | None = None,
    ) -> dict[str, Any]:
        """A person's message reaches the bot; returns the frame's params. attachments:
        (content type, bytes); the daemon writes each file where the REST API serves it."""
        return self._post("/inject", self.envelope_body(uuid, text, number, timestamp,
                                                        attachments, group))["params"]  # fmt: skip

    def envelope_body(
        self,
        uuid: str,
        text: str | None,
        number: str | None = None,
        timestamp: int | None = None,
        attachments: Iterable[tuple[str, bytes]] = (),
        group: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "account": self.number,
            "source": number or uuid,
            "source_uuid": uuid,
            "message": text,
            "attachments": [
                {"base64": base64.b64encode(data).decode(), "contentType": ctype}
                for ctype, data in attachments
            ],
        }
        if timestamp is not None:
            body["timestamp"] = timestamp
        if group is not None:
            body["group_id"] = group
        return body

    def inject_batch(self, bodies: list[dict[str, Any]], gap_ms: float = 0.0) -> None:
        """Several notifications, written back to back (gap_ms between them)."""
        self._post("/inject_batch", {"items": bodies, "gap_ms": gap_ms})

    def untrusted_message(self, uuid: str, timestamp: int | None = None) -> dict[str, Any]:
        """What signal-cli 0.14 emits for a message from a changed, untrusted key: the sender,
        no content, and the exception (JsonReceiveMessageHandler, JsonMessageEnvelope)."""
        ts = timestamp or int(time.time() * 1000)
        return self.push(
            {
                "envelope": {
                    "source": uuid,
                    "sourceNumber": None,
                    "sourceUuid": uuid,
                    "sourceName": None,
                    "sourceDevice": 1,
                    "timestamp": ts,
                    "serverReceivedTimestamp": ts + 3,
                    "serverDeliveredTimestamp": ts + 7,
                },
                "exception": {
                    "message": f"Untrusted identity: {uuid}",
                    "type": "UntrustedIdentityException",
                },
                "account": self.number,
            }
        )

    def fail(self, method: str, kind: str, count: int = 1, **extra: Any) -> None:
        """The next `count` calls of `method` answer with signal-cli's error `kind`."""
        self._post("/fail", {"method": method, "kind": kind, "count": count, **extra})

    def canned(self, method: str, result: Any) -> None:
        """`method` answers `result` until cleared with None."""
        self._post("/result", {"method": method, "result": result})

    def delay(self, method: str, seconds: float) -> None:
        """Calls of `method` that start from now on wait `seconds` before the daemon answers."""
        self._post("/delay", {"method": method, "seconds": seconds})

    def drop_daemon(self) -> int:
        """Cut the REST layer's connection to the daemon (it reconnects in about 0.25 s)."""
        return int(self._post("/disconnect")["closed"])

    def requests(self, method: str | None = None) -> list[dict[str, Any]]:
        params = {"method": method} if method else None
        return self.control.get("/requests", params=params).json()

    def sent(self) -> list[dict[str, Any]]:
        """The params of every `send` the REST layer made, oldest first."""
        return [r["params"] for r in self.requests("send")]

    def sent_to(self, recipient: str) -> list[str]:
        return [p.get("message") or "" for p in self.sent() if recipient in p.get("recipient", [])]

    # -- what the REST layer itself did -----------------------------------------------------

    def attachment_files(self) -> list[str]:
        folder = self.run_dir / "signal-cli-config" / "attachments"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def served(self, method: str, path_prefix: str) -> int:
        """How many `method path…` requests the REST layer answered (its gin access log)."""
        log = (self.run_dir / "rest.log").read_text("utf-8", errors="replace")
        pattern = re.compile(rf'\|\s+{method}\s+"{re.escape(path_prefix)}')
        return len(pattern.findall(log))

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            time.sleep(0.02)

    def settle(self, check: Callable[[], bool], frame: dict[str, Any], timeout: float = 10) -> None:
        """Push `frame` until `check()` holds: the first frames after a connect can be lost
        (the REST layer subscribes a new socket a moment after the upgrade), and resending
        the same envelope is harmless (the inbox drops a replay)."""
        deadline = time.monotonic() + timeout
        while True:
            self.push(frame)
            wait_until = time.monotonic() + 1.0
            while time.monotonic() < wait_until:
                if check():
                    return
                time.sleep(0.02)
            if time.monotonic() > deadline:
                raise TimeoutError("the first frame never arrived")


def _run(port: int, reply_delay_ms: float | None) -> tuple[Path | None, str]:
    """run.sh PORT --detach; (its run directory, or None when it did not start; output)."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"vigil-scra-{port}-"))
    env = {**os.environ, "RUN_DIR": str(run_dir)}
    if reply_delay_ms is not None:
        env["FAKE_REPLY_DELAY_MS"] = str(reply_delay_ms)
    done = subprocess.run(
        [str(LAYER / "run.sh"), str(port), "--detach"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode == 0 and "READY" in done.stdout:
        return run_dir, done.stdout
    subprocess.run([str(LAYER / "stop.sh"), str(port)], capture_output=True, check=False)
    shutil.rmtree(run_dir, ignore_errors=True)
    return None, (done.stdout + done.stderr)[-2000:]


@contextlib.contextmanager
def real_signal_layer(**kw: Any) -> Iterator[RealSignal]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    layer = RealSignal.start(**kw)
    try:
        yield layer
    finally:
        layer.stop()


def json_frames(raw: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines() if line.strip()]
