"""End-to-end helpers: `vigil init` a data dir, run `vigil run` as a subprocess, stop or kill it.

Transport-neutral: callers pass the environment that points Vigil at their fakes
(`VIGIL_TELEGRAM_*`, `VIGIL_SIGNAL_*`). Typical use::

    with vigil_process(tmp_path, {"VIGIL_TELEGRAM_TOKEN": fake.token, ...}) as v:
        v.wait_ready()
        code = v.cli("invite", "--role", "activist").stdout.split()[0]
        ...
        v.kill()          # SIGKILL, as a crash would
        v.start()         # same data dir, same log file
    # leaving the block stops it with SIGTERM (SIGKILL after a grace period)

stderr of every run is appended to one file (`v.log_path`), so a test can search the whole
history for secrets (`v.assert_log_free_of(token, user_id, text)`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

from tests.harness import PASSPHRASE

REPO = Path(__file__).resolve().parent.parent
READY_LINE = "running with"  # App.run logs this once every transport has started
STOP_GRACE = 20.0  # vigil drains its outbox for up to 10 s at SIGTERM


def vigil_command() -> list[str]:
    """`.venv/bin/vigil` next to this interpreter, else `python -m bot.cli`."""
    script = Path(sys.executable).parent / "vigil"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def base_env(data_dir: Path, passphrase_file: Path, log_level: str) -> dict[str, str]:
    """The caller's environment without any VIGIL_* setting of the developer's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(
        VIGIL_DATA_DIR=str(data_dir),
        VIGIL_PASSPHRASE_FILE=str(passphrase_file),
        VIGIL_INSECURE_FAST_KDF="1",  # tests: cheap Argon2id, recorded in the key slot
        VIGIL_LOG_LEVEL=log_level,
        PYTHONUNBUFFERED="1",
    )
    return env


class VigilError(AssertionError):
    """`vigil` did not do what the test needed; the message includes the log's tail."""


class VigilProcess:
    """One data dir and the `vigil run` process on it (at most one at a time)."""

    def __init__(self, workdir: Path, env: Mapping[str, str], *, log_level: str = "DEBUG"):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.passphrase = PASSPHRASE
        passphrase_file = workdir / "passphrase"
        passphrase_file.write_text(PASSPHRASE, "utf-8")
        passphrase_file.chmod(0o600)
        self.env = base_env(self.data_dir, passphrase_file, log_level)
        self.env.update(env)
        self.log_path = workdir / "vigil-run.log"
        self.admin_code: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self._log_file: IO[bytes] | None = None

    # -- commands ------------------------------------------------------------------------

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run one `vigil` command (not `run`) with this environment; text output."""
        result = subprocess.run(
            [*vigil_command(), *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise VigilError(
                f"vigil {' '.join(args[:1])} exited {result.returncode}: {result.stderr[-2000:]}"
            )
        return result

    def init(self) -> str:
        """`vigil init`; returns the one-time admin invite code (the line after "Admin invite")."""
        out = self.cli("init").stdout
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        at = next(i for i, line in enumerate(lines) if line.startswith("Admin invite"))
        self.admin_code = lines[at + 1]
        return self.admin_code

    def invite(self, role: str, *extra: str) -> tuple[str, list[str]]:
        """`vigil invite --role ROLE ...`: the code and any further lines (deep links)."""
        lines = [x for x in self.cli("invite", "--role", role, *extra).stdout.splitlines() if x]
        return lines[0].strip(), [x.strip() for x in lines[1:]]

    # -- the running process -------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = 30) -> None:
        if self.running:
            raise VigilError("vigil run is already running")
        ready_before = self.log().count(READY_LINE)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child)
        self.proc = subprocess.Popen(
            [*vigil_command(), "run"],
            env=self.env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
        )
        self.runs += 1
        if wait:
            self.wait_ready(ready_before + 1, timeout)

    def wait_ready(self, count: int | None = None, timeout: float = 30) -> None:
        """Wait until this run logged that it is receiving (the READY_LINE)."""
        want = count if count is not None else self.runs
        self.wait_for_log(READY_LINE, timeout, count=want)

    def wait_for_log(self, text: str, timeout: float = 10, *, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.proc is not None and self.proc.poll() is not None:
                raise VigilError(
                    f"vigil run exited with {self.proc.returncode} before logging {text!r}:\n"
                    + self.tail()
                )
            if time.monotonic() > deadline:
                raise VigilError(f"no {text!r} in the log after {timeout} s:\n" + self.tail())
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = STOP_GRACE) -> int:
        """SIGTERM, wait for the drain, SIGKILL if it hangs; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self._reap()

    def kill(self) -> int:
        """SIGKILL: no drain, no clean-up, exactly what a crash or power cut leaves behind."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        return self._reap()

    def _reap(self) -> int:
        assert self.proc is not None
        code = self.proc.returncode
        self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    # -- the log -------------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def assert_log_free_of(self, values: Iterable[str | int]) -> None:
        """No value (token, ids, texts, codes) appears anywhere in the runs' stderr."""
        log = self.log()
        leaked = [str(v) for v in values if str(v) and str(v) in log]
        if leaked:
            where = {v: log.index(v) for v in leaked}
            excerpts = "\n".join(
                f"  {_mask(v)}: ...{_mask(log[max(0, i - 80) : i + 20], v)}..."
                for v, i in where.items()
            )
            raise AssertionError(f"{len(leaked)} secret value(s) in the log:\n{excerpts}")

    def assert_no_tracebacks(self) -> None:
        if "Traceback (most recent call last)" in self.log():
            raise AssertionError("a traceback in the log:\n" + self.tail(60))


def _mask(text: str, value: str | None = None) -> str:
    # Failure output is itself printed: show where a secret leaked, not the secret.
    if value is None:
        return f"<{len(text)} chars>"
    return text.replace(value, "<LEAKED>")


@contextlib.contextmanager
def vigil_process(
    workdir: Path,
    env: Mapping[str, str],
    *,
    log_level: str = "DEBUG",
    start: bool = True,
    init: bool = True,
) -> Iterator[VigilProcess]:
    """A fresh network (`vigil init`) and, unless start=False, a running `vigil run`."""
    v = VigilProcess(workdir, env, log_level=log_level)
    try:
        if init:
            v.init()
        if start:
            v.start()
        yield v
    finally:
        v.stop()
