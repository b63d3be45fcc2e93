"""A full disk loses nothing: `vigil run` on a small filesystem that is filled while it runs.

The data dir sits on its own tmpfs (a few MB). The test fills it to the last byte, then 20
people write on Telegram and 20 on Signal. The store cannot take their messages, so the bot
confirms none of them to the platform (it keeps Telegram's offset where it was; the Signal
frames wait in memory) and keeps running. Once the filler is deleted, every message is handled
exactly once and every reply is sent, without a restart. A second test kills the bot while the
disk is full and starts it again after space returns: Telegram hands the same updates over
again, which proves the offset never moved past them.

Mounting a tmpfs needs root (or CAP_SYS_ADMIN); without it the tests skip and say so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import members
from storage.store import unlock
from tests.e2e import VigilProcess
from tests.fakes.signal_api import FakeSignal
from tests.fakes.telegram_api import FakeTelegram, FloodLimits, ThreadedFakeTelegram

pytestmark = pytest.mark.timeout(180)

PEOPLE = 20
FIRST_USER = 5_300_100_000
WELCOME = "Welcome to Vigil."
FAULT_LINE = "loop intake: "  # the supervisor's first note of a refused write
WAITED = "intake waits for the store (attempt 6)"  # ~4 s of back-off later, still full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("no `mount` command: cannot make a small filesystem")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip()[:80]})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=20, check=False)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem has not one byte left."""
    filler = disk / "filler"
    chunk = 1 << 20
    with open(filler, "wb", buffering=0) as f:
        while chunk:
            try:
                f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                chunk //= 2
    assert os.statvfs(disk).f_bavail == 0
    return filler


@pytest.fixture
def telegram() -> Iterator[ThreadedFakeTelegram]:
    with FakeTelegram.in_thread(flood=FloodLimits()) as fake:
        for i in range(PEOPLE):
            fake.register_user(FIRST_USER + i, f"Person {i}")
        yield fake
        fake.assert_no_violations()
        assert fake.stats.flood_429 == 0


@pytest.fixture
def signal() -> Iterator[FakeSignal]:
    with FakeSignal.in_thread() as fake:
        yield fake


def bot_on(
    tmp_path: Path, disk: Path, telegram: ThreadedFakeTelegram, signal: FakeSignal | None
) -> VigilProcess:
    env = {"VIGIL_TELEGRAM_TOKEN": telegram.token, "VIGIL_TELEGRAM_API_URL": telegram.base_url}
    if signal is not None:
        env |= {"VIGIL_SIGNAL_API_URL": signal.url, "VIGIL_SIGNAL_NUMBER": signal.number}
    v = VigilProcess(tmp_path / "work", env)
    v.data_dir = disk / "data"
    v.env["VIGIL_DATA_DIR"] = str(v.data_dir)
    v.init()
    return v


def replies(telegram: ThreadedFakeTelegram, user: int) -> list[str]:
    return [m.content or "" for m in telegram.sent(user)]


def check_store(v: VigilProcess, expected_members: int) -> None:
    store = unlock(v.data_dir, v.passphrase)
    try:
        assert store.db.run_sync(members.count) == expected_members
    finally:
        store.close()


def test_full_disk_delays_but_loses_nothing(
    tmp_path: Path, small_disk: Path, telegram: ThreadedFakeTelegram, signal: FakeSignal
) -> None:
    v = bot_on(tmp_path, small_disk, telegram, signal)
    people = [str(uuid.UUID(int=0x5EED0000 + i)) for i in range(PEOPLE)]
    try:
        v.start()
        signal.wait_for_clients_blocking(1, timeout=10)
        offsets_before = len(telegram.calls_to("getUpdates"))
        filler = fill(small_disk)
        for i in range(PEOPLE):
            telegram.user_sends(FIRST_USER + i, "/start")
            signal.user_sends(people[i], "/start")
        v.wait_for_log(FAULT_LINE, timeout=30)
        v.wait_for_log(WAITED, timeout=30)  # several rounds of the intake's back-off
        # Nothing unstored is confirmed: no later poll moved the offset past these updates
        # (the poller waits for the store instead of asking again).
        later = telegram.calls_to("getUpdates")[offsets_before:]
        offsets = {c.params.get("offset") for c in later}
        assert len(offsets) <= 1, f"the offset moved while the disk was full: {offsets}"
        assert v.running, "the bot stopped on a full disk"

        filler.unlink()  # space returns; nobody restarts anything
        telegram.wait_for(lambda f: all(f.sent(FIRST_USER + i) for i in range(PEOPLE)), timeout=60)
        signal.wait_until_blocking(lambda: all(signal.sent_to(p) for p in people), timeout=60)
        assert v.stop() == 0
    finally:
        with contextlib.suppress(Exception):
            v.stop()
    for i in range(PEOPLE):
        answers = replies(telegram, FIRST_USER + i)
        assert len(answers) == 1 and WELCOME in answers[0], answers
    for p in people:
        answers = [m.message or "" for m in signal.sent_to(p)]
        assert len([a for a in answers if WELCOME in a]) == 1, answers
    check_store(v, 2 * PEOPLE)  # each /start made exactly one member
    v.assert_no_tracebacks()
    v.assert_log_free_of([telegram.token, *people, str(FIRST_USER)])


def test_killed_while_the_disk_is_full_the_updates_come_again(
    tmp_path: Path, small_disk: Path, telegram: ThreadedFakeTelegram
) -> None:
    v = bot_on(tmp_path, small_disk, telegram, None)
    try:
        v.start()
        filler = fill(small_disk)
        for i in range(PEOPLE):
            telegram.user_sends(FIRST_USER + i, "/start")
        v.wait_for_log(FAULT_LINE, timeout=30)
        v.kill()  # what systemd's watchdog or an operator might do
        filler.unlink()
        v.start()
        telegram.wait_for(lambda f: all(f.sent(FIRST_USER + i) for i in range(PEOPLE)), timeout=60)
        assert v.stop() == 0
    finally:
        with contextlib.suppress(Exception):
            v.stop()
    for i in range(PEOPLE):
        answers = replies(telegram, FIRST_USER + i)
        assert len(answers) == 1 and WELCOME in answers[0], answers
    check_store(v, PEOPLE)
