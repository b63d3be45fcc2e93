"""The encrypted store: key slots, unlocking, file modes, and no plaintext on disk."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from storage import crypto, keys
from storage.db import DB_FILE, StoreError
from storage.store import NetworkExists, init_network, unlock
from tests.harness import PASSPHRASE, ChatHarness

SENTINEL = "SENTINEL-Zx81-hunger-strike-cell-14"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_init_unlock_round_trip(data_dir: Path) -> None:
    store = init_network(data_dir, PASSPHRASE)
    store.db.run_sync(lambda c: c.execute("INSERT INTO settings VALUES ('k', 'v')"))
    store.close()
    again = unlock(data_dir, PASSPHRASE)
    assert again.db.run_sync(lambda c: c.execute("SELECT value FROM settings").fetchone()[0]) == "v"
    again.close()


def test_wrong_passphrase_leaves_files_untouched(data_dir: Path) -> None:
    init_network(data_dir, PASSPHRASE).close()
    before = snapshot(data_dir)
    with pytest.raises(keys.WrongPassphrase):
        unlock(data_dir, "not the passphrase")
    assert snapshot(data_dir) == before


def test_init_refuses_to_overwrite(data_dir: Path) -> None:
    init_network(data_dir, PASSPHRASE).close()
    before = snapshot(data_dir)
    with pytest.raises(NetworkExists):
        init_network(data_dir, PASSPHRASE)
    assert snapshot(data_dir) == before


def test_missing_slots_and_corrupt_database(data_dir: Path) -> None:
    init_network(data_dir, PASSPHRASE).close()
    db = data_dir / DB_FILE
    raw = bytearray(db.read_bytes())
    raw[5000:5100] = os.urandom(100)  # a damaged page
    db.write_bytes(bytes(raw))
    damaged = snapshot(data_dir)
    with pytest.raises(StoreError):
        store = unlock(data_dir, PASSPHRASE)
        store.db.run_sync(lambda c: c.execute("SELECT count(*) FROM members").fetchone())
    assert snapshot(data_dir) == damaged
    (data_dir / keys.SLOTS_FILE).unlink()
    with pytest.raises(keys.NoKeySlots):
        unlock(data_dir, PASSPHRASE)


def test_damaged_slot_file(data_dir: Path) -> None:
    init_network(data_dir, PASSPHRASE).close()
    (data_dir / keys.SLOTS_FILE).write_text("{not json")
    with pytest.raises(keys.DamagedKeySlots):
        unlock(data_dir, PASSPHRASE)


def test_several_slots_each_unlock_and_last_cannot_go(data_dir: Path) -> None:
    store = init_network(data_dir, PASSPHRASE)
    slot = store.slots.add(store.master, "second person's passphrase", "second")
    store.close()
    unlock(data_dir, "second person's passphrase").close()
    slots = keys.KeySlots.load(data_dir)
    slots.remove(slot.slot_id, store.master)
    with pytest.raises(keys.WrongPassphrase):
        unlock(data_dir, "second person's passphrase")
    with pytest.raises(keys.KeyError_):
        slots.remove(slots.slots[0].slot_id, store.master)


def test_master_key_never_on_disk(data_dir: Path) -> None:
    store = init_network(data_dir, PASSPHRASE)
    master, dbkey = store.master, store.subkeys.database
    store.close()
    for content in snapshot(data_dir).values():
        for secret in (master, dbkey, master.hex().encode(), dbkey.hex().encode()):
            assert secret not in content


def test_slot_records_its_kdf_parameters(data_dir: Path) -> None:
    init_network(data_dir, PASSPHRASE).close()
    doc = json.loads((data_dir / keys.SLOTS_FILE).read_text())
    slot = doc["slots"][0]
    assert slot["kdf"] == "argon2id" and slot["cipher"] == "aes-256-gcm"
    assert set(slot["kdf_params"]) == {"memory_kib", "iterations", "lanes"}


def test_production_kdf_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGIL_INSECURE_FAST_KDF", raising=False)
    params = keys.kdf_params_from_env()
    assert params.memory_kib >= 256 * 1024  # THREATS.md: Argon2id with at least 256 MiB
    key = crypto.stretch_passphrase(b"pass", b"s" * 16, params)
    assert len(key) == 32


def test_private_modes(data_dir: Path) -> None:
    store = init_network(data_dir, PASSPHRASE)
    store.db.run_sync(lambda c: c.execute("INSERT INTO settings VALUES ('a', 'b')"))
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for path in data_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    store.close()


def test_short_passphrase_refused(data_dir: Path) -> None:
    with pytest.raises(keys.KeyError_):
        init_network(data_dir, "short")


def test_sentinels_never_in_raw_files(chat: ChatHarness, data_dir: Path) -> None:
    """Text written through handlers is absent from the db, -wal and -shm bytes."""
    chat.member("coo", "coordinator")
    chat.say("coo", f"/timezone {SENTINEL}")  # rejected, but the text passes through
    chat.say("newbie", "/start")
    chat.say("newbie", f"hello {SENTINEL}")  # the reply quotes nothing, but it is stored nowhere
    chat.run(lambda c: c.execute("INSERT INTO settings VALUES ('probe', ?)", (SENTINEL,)))
    files = [p for p in data_dir.iterdir() if p.name.startswith(DB_FILE)]
    assert {p.name for p in files} >= {DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm"}
    for p in files:
        raw = p.read_bytes()
        assert SENTINEL.encode() not in raw, p.name
        assert SENTINEL.encode("utf-16-le") not in raw, p.name
        assert b"SQLite format 3" not in raw


def test_group_commit_batches_concurrent_writers(store) -> None:
    futures = [
        store.db.submit(
            lambda c, i=i: c.execute("INSERT INTO settings VALUES (?, 'x')", (f"k{i}",))
        )
        for i in range(500)
    ]
    for f in futures:
        f.result()
    assert store.db.commits < 500  # one transaction carried many writes


def test_failed_job_rolls_back_alone(store) -> None:
    def bad(c):
        c.execute("INSERT INTO settings VALUES ('bad', 'x')")
        raise ValueError("no")

    ok = store.db.submit(lambda c: c.execute("INSERT INTO settings VALUES ('good', 'x')"))
    failed = store.db.submit(bad)
    ok.result()
    with pytest.raises(ValueError):
        failed.result()
    rows = store.db.run_sync(
        lambda c: c.execute("SELECT key FROM settings WHERE key IN ('good', 'bad')").fetchall()
    )
    assert rows == [("good",)]
