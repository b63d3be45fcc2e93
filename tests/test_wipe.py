"""Panic wipe: afterwards no file from which the network could be opened remains."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlcipher3

from bot import panic
from storage import backup, keys, wipe
from storage.db import DB_FILE
from storage.store import Store, init_network
from tests.cli_helpers import one_line_error, snapshot, vigil
from tests.harness import PASSPHRASE, ChatHarness

SENTINEL = "SENTINEL-WIPE-cell-14"


def populate(chat: ChatHarness) -> None:
    chat.case("nasrin", f"Nasrin {SENTINEL}")
    chat.member("ann", "activist")
    chat.say("ann", f"/timezone {SENTINEL}")
    chat.run(lambda c: c.execute("INSERT INTO settings VALUES ('probe', ?)", (SENTINEL,)))


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def opens(path: Path, store_keys: tuple[bytes, ...]) -> str | None:
    """How this file could give the network away, or None."""
    raw = path.read_bytes()
    for secret in store_keys:
        if secret in raw or secret.hex().encode() in raw:
            return "holds key material"
    if SENTINEL.encode() in raw:
        return "holds plaintext"
    try:
        keys.KeySlots.from_document(path, json.loads(raw)).unlock(PASSPHRASE)
        return "key slots that open"
    except Exception:  # anything else means "does not open"
        pass
    if raw[:8] == backup.MAGIC:
        return "a backup"
    for key in store_keys:
        conn = sqlcipher3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
        try:
            conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return "a database that opens"
        except sqlcipher3.DatabaseError:
            pass
        finally:
            conn.close()
    return None


@pytest.fixture
def network(chat: ChatHarness, tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    populate(chat)
    store = chat.store
    data = store.data_dir
    backup.create_backup(data, PASSPHRASE, data / "inside.vigilbak")
    (data / f"{keys.SLOTS_FILE}.next").write_bytes((data / keys.SLOTS_FILE).read_bytes())
    (data / ".vigil-backup-abc.tmp").write_bytes(b"x" * 100)
    (data / "keyslots.json.bak").write_bytes((data / keys.SLOTS_FILE).read_bytes())
    yield store, data


def test_nothing_that_opens_remains(network: tuple[Store, Path], tmp_path: Path) -> None:
    store, data = network
    secrets = (store.master, store.subkeys.database, store.subkeys.backup)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    backup.create_backup(data, PASSPHRASE, outside / "offsite.vigilbak")
    assert any(opens(p, secrets) for p in files_under(data))  # the scan does find things
    report = wipe.wipe(data, store.db)
    assert {keys.SLOTS_FILE, f"{keys.SLOTS_FILE}.next", "keyslots.json.bak"} <= set(report.erased)
    assert report.directory_removed and not data.exists()
    found = {str(p): opens(p, secrets) for p in files_under(tmp_path)}
    found = {p: why for p, why in found.items() if why}
    # A backup kept elsewhere is out of a wipe's reach, as the docs say.
    assert found == {str(outside / "offsite.vigilbak"): "a backup"}


def test_key_slots_are_overwritten_in_place_before_deletion(
    network: tuple[Store, Path], tmp_path: Path
) -> None:
    store, data = network
    store.close()
    linked = tmp_path / "another-name-for-the-slot-file"
    os.link(data / keys.SLOTS_FILE, linked)  # a second directory entry: the same blocks
    wipe.wipe(data)
    content = linked.read_bytes()
    assert b"wrapped" not in content and b"salt" not in content
    with pytest.raises(ValueError):
        json.loads(content)


def test_foreign_files_are_kept_and_named(chat: ChatHarness) -> None:
    data = chat.store.data_dir
    (data / "notes.txt").write_text("operator's own file")
    report = wipe.wipe(data, chat.store.db)
    assert report.leftovers == ["notes.txt"] and not report.directory_removed
    assert sorted(p.name for p in data.iterdir()) == ["notes.txt"]


def test_wipe_is_idempotent(chat: ChatHarness) -> None:
    data = chat.store.data_dir
    wipe.wipe(data, chat.store.db)
    assert wipe.wipe(data) == wipe.WipeReport()


def test_cli_wipe(chat: ChatHarness) -> None:
    populate(chat)
    chat.store.close()
    data = chat.store.data_dir
    before = snapshot(data)
    assert "add --yes" in one_line_error(vigil("wipe", data_dir=data, passphrase=None))
    assert snapshot(data) == before
    done = vigil("wipe", "--yes", data_dir=data, passphrase=None)  # no passphrase needed
    assert done.returncode == 0, done.stderr
    assert "Key slots erased" in done.stdout and not data.exists()
    again = vigil("wipe", "--yes", data_dir=data, passphrase=None)
    assert again.returncode == 0 and "Nothing to wipe" in again.stdout
    status = vigil("status", data_dir=data)
    assert "run `vigil init` first" in one_line_error(status)


# --- a running bot ---------------------------------------------------------------------------


class StopMe:
    name = "fake"

    def __init__(self) -> None:
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True


def test_panic_from_chat_wipes_a_running_store(chat: ChatHarness) -> None:
    """/panic's callable only schedules; panic_wipe stops intake, does not drain, erases."""

    populate(chat)
    chat.member("ada", "admin")
    data = chat.store.data_dir
    transport = StopMe()
    stopped_scheduler: list[bool] = []

    async def scenario() -> wipe.WipeReport | None:
        switch = panic.PanicSwitch(data)
        switch.bind(asyncio.get_running_loop())
        chat.services.panic = switch.request
        stop = asyncio.Event()
        # The message is handled on the writer thread, as in the App.
        reply = await asyncio.to_thread(chat.say, "ada", "/panic wipe everything")
        assert "Wiping now" in reply
        await asyncio.wait_for(switch.wait_or(stop), 5)
        assert switch.triggered and not stop.is_set()
        app = SimpleNamespace(
            transports=[transport],
            scheduler=SimpleNamespace(stop=lambda: stopped_scheduler.append(True)),
            _tasks=[asyncio.create_task(asyncio.sleep(3600))],
            store=chat.store,
        )
        return await panic.panic_wipe(app)

    report = asyncio.run(scenario())
    assert report is not None and keys.SLOTS_FILE in report.erased
    assert transport.stopped and stopped_scheduler == [True]
    assert not data.exists()


def test_the_watcher_notices_slots_erased_from_a_shell(
    chat: ChatHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(panic, "WATCH_EVERY", 0.01)
    data = chat.store.data_dir

    async def scenario() -> bool:
        switch = panic.PanicSwitch(data)
        switch.bind(asyncio.get_running_loop())
        watcher = asyncio.create_task(switch.watch())
        await asyncio.sleep(0.05)
        assert not switch.triggered
        await asyncio.to_thread(wipe.crypto_erase, data / keys.SLOTS_FILE)
        await asyncio.wait_for(switch.wait_or(asyncio.Event()), 5)
        watcher.cancel()
        return switch.triggered

    assert asyncio.run(scenario())


def test_request_is_safe_from_another_thread(tmp_path: Path) -> None:
    async def scenario() -> None:
        switch = panic.PanicSwitch(tmp_path)
        switch.bind(asyncio.get_running_loop())
        threading.Thread(target=switch.request).start()
        await asyncio.wait_for(switch.wait_or(asyncio.Event()), 5)

    asyncio.run(scenario())


def test_run_lock_and_in_use(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = init_network(data, PASSPHRASE)
    key = store.subkeys.database.hex()
    store.close()
    assert not wipe.in_use(data)
    with wipe.RunLock(data):
        assert wipe.in_use(data)
        with pytest.raises(wipe.AlreadyRunning):
            wipe.RunLock(data).acquire()
    assert not wipe.in_use(data)
    # Without the lock file, a process that has the database open is still seen (SQLite's
    # WAL lock on the -shm file).
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(data / DB_FILE), key],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert wipe.in_use(data)
    finally:
        holder.kill()
        holder.wait(10)
    time.sleep(0.05)
    assert not wipe.in_use(data)


HOLD_OPEN = """
import sqlcipher3, sys, time
conn = sqlcipher3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA key = \\"x'" + sys.argv[2] + "'\\"")
conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
print("open", flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(120)
def test_a_running_bot_stops_when_wiped_from_a_shell(tmp_path: Path) -> None:
    from tests.e2e import vigil_process
    from tests.fakes.telegram_api import ThreadedFakeTelegram

    with ThreadedFakeTelegram() as tg:
        env = {"VIGIL_TELEGRAM_TOKEN": tg.token, "VIGIL_TELEGRAM_API_URL": tg.base_url}
        with vigil_process(tmp_path, env) as v:
            done = v.cli("wipe", "--yes")
            assert done.returncode == 0
            assert v.proc is not None
            try:
                v.proc.wait(15)
            except subprocess.TimeoutExpired:
                pytest.fail("vigil run kept running after its key slots were erased")
            assert v.proc.returncode == 0
            assert not v.data_dir.exists() or not any(v.data_dir.iterdir())


@pytest.mark.timeout(120)
def test_panic_from_chat_on_a_running_bot(tmp_path: Path) -> None:
    from tests.e2e import vigil_process
    from tests.fakes.telegram_api import ThreadedFakeTelegram

    admin = 700_000_001
    with ThreadedFakeTelegram() as tg:
        tg.register_user(admin, "Ada")
        env = {"VIGIL_TELEGRAM_TOKEN": tg.token, "VIGIL_TELEGRAM_API_URL": tg.base_url}
        with vigil_process(tmp_path, env) as v:
            last = tg.user_sends(admin, f"/start {v.admin_code}")
            tg.next_sent(admin, timeout=15, after=last.message_id)
            tg.user_sends(admin, "/panic wipe everything")
            assert v.proc is not None
            try:
                v.proc.wait(20)
            except subprocess.TimeoutExpired:
                pytest.fail("vigil run kept running after /panic")
            assert v.proc.returncode == 0
            assert not v.data_dir.exists() or not any(v.data_dir.iterdir())
    v.assert_no_tracebacks()
