"""The store refuses what it cannot trust (issue 13 item 4), each with exit 2, one sentence and
no file changed: an empty or missing database beside key slots, a WAL whose damage would
silently drop commits, absurd KDF costs in key slots, backups and key files, an edited
keyslots.json; and the passphrase is not kept after unlock. Old formats still open."""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import sqlcipher3

from bot import config
from bot.cli import common
from storage import backup, crypto, keys, sealkey
from storage import store as store_mod
from storage.db import DB_FILE, connect_keyed
from storage.store import init_network, unlock
from tests.cli_helpers import one_line_error, snapshot, vigil
from tests.harness import PASSPHRASE

REPO = Path(__file__).resolve().parent.parent
COMMANDS = [("status",), ("invite", "--role", "activist"), ("backup", "out.vigilbak"),
            ("retention",), ("keys", "rotate")]  # fmt: skip


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    init_network(d, PASSPHRASE).close()
    return d


def slots_doc(d: Path) -> dict:
    return json.loads((d / keys.SLOTS_FILE).read_text())


def write_slots(d: Path, doc: dict) -> None:
    (d / keys.SLOTS_FILE).write_text(json.dumps(doc))


# --- the database file -----------------------------------------------------------------------


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_an_empty_database_is_never_a_fresh_network(data: Path, args: tuple[str, ...]) -> None:
    (data / DB_FILE).write_bytes(b"")
    before = snapshot(data)
    line = one_line_error(vigil(*args, data_dir=data))
    assert "empty" in line and "restore" in line
    assert snapshot(data) == before


def test_a_missing_database_beside_key_slots_is_an_error(data: Path) -> None:
    (data / DB_FILE).unlink()
    before = snapshot(data)
    for args in COMMANDS:
        line = one_line_error(vigil(*args, data_dir=data))
        assert "No database" in line
    assert snapshot(data) == before


# --- a damaged write-ahead log ---------------------------------------------------------------

WRITER = """
import os, sys
os.environ["VIGIL_INSECURE_FAST_KDF"] = "1"
from pathlib import Path
from storage.store import unlock
store = unlock(Path(sys.argv[1]), sys.argv[2])
for i in range(int(sys.argv[3])):
    store.db.run_sync(lambda c, i=i: c.execute(
        "INSERT INTO settings (key, value) VALUES (?, 'committed')", (f"row{i}",)))
os._exit(0)  # a crash: no checkpoint, the WAL stays with every commit in it
"""


def crash_with_commits(d: Path, n: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WRITER, str(d), PASSPHRASE, str(n)], cwd=REPO, check=False
    )
    assert result.returncode == 0
    assert (d / (DB_FILE + "-wal")).stat().st_size > 0


def committed_rows(d: Path, *, check: bool = True) -> int:
    if check:
        store = unlock(d, PASSPHRASE)
        try:
            return store.db.run_sync(
                lambda c: c.execute("SELECT count(*) FROM settings WHERE value = 'committed'")
            ).fetchone()[0]
        finally:
            store.close()
    key = keys.Subkeys.derive(keys.KeySlots.load(d).unlock(PASSPHRASE)).database
    conn = connect_keyed(d / DB_FILE, key)  # SQLite alone, as before the check existed
    try:
        return conn.execute("SELECT count(*) FROM settings WHERE value = 'committed'").fetchone()[0]
    finally:
        conn.close()


def flip_bit_in_frame(d: Path, frame: int, offset_in_page: int = 1000) -> None:
    wal = d / (DB_FILE + "-wal")
    raw = bytearray(wal.read_bytes())
    page_size = int.from_bytes(raw[8:12], "big")
    at = 32 + frame * (24 + page_size) + 24 + offset_in_page
    raw[at] ^= 0x10
    wal.write_bytes(bytes(raw))


def test_an_intact_wal_after_a_crash_recovers_every_commit(data: Path) -> None:
    crash_with_commits(data, 6)
    assert committed_rows(data) == 6


def test_a_flipped_bit_in_the_wal_is_refused_not_rolled_back(data: Path, tmp_path: Path) -> None:
    crash_with_commits(data, 6)
    flip_bit_in_frame(data, 0)
    # What SQLite alone would do with it: silently drop every commit from the damage on.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    assert committed_rows(copy, check=False) < 6
    before = snapshot(data)
    for args in (("status",), ("backup", "x.vigilbak"), ("run",)):
        extra = {"VIGIL_TELEGRAM_TOKEN": "1:x"} if args == ("run",) else None
        line = one_line_error(vigil(*args, data_dir=data, extra=extra))
        assert "write-ahead log is damaged" in line
    assert snapshot(data) == before


def test_damage_in_the_last_transaction_is_left_to_sqlite(data: Path) -> None:
    """Documented residual: a torn final write (power cut) looks the same as damage in the
    last transaction; only that transaction is lost, never an earlier commit."""
    crash_with_commits(data, 3)
    wal = data / (DB_FILE + "-wal")
    page_size = int.from_bytes(wal.read_bytes()[8:12], "big")
    frames = (wal.stat().st_size - 32) // (24 + page_size)
    flip_bit_in_frame(data, frames - 1)
    assert committed_rows(data) == 2


# --- KDF costs read from files ---------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"memory_kib": 1 << 40, "iterations": 3, "lanes": 4},
        {"memory_kib": 262_144, "iterations": 100_000, "lanes": 4},
        {"memory_kib": 262_144, "iterations": 3, "lanes": 4096},
        {"memory_kib": 2 * 1024 * 1024, "iterations": 16, "lanes": 4},
        {"memory_kib": "262144", "iterations": 3, "lanes": 4},
    ],
    ids=["memory", "time", "lanes", "work", "type"],
)
def test_absurd_kdf_costs_in_key_slots_are_refused(data: Path, params: dict) -> None:
    doc = slots_doc(data)
    doc["slots"][0]["kdf_params"] = params
    write_slots(data, doc)
    before = snapshot(data)
    line = one_line_error(vigil("status", data_dir=data))
    assert "implausible Argon2id cost" in line or "damaged" in line
    assert snapshot(data) == before


def test_absurd_kdf_costs_in_a_backup_header_are_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.vigilbak"
    backup.create_backup(data, PASSPHRASE, out)
    raw = out.read_bytes()
    length = int.from_bytes(raw[8:12], "big")
    header = json.loads(raw[12 : 12 + length])
    header["keyslots"]["slots"][0]["kdf_params"]["memory_kib"] = 1 << 40
    body = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    out.write_bytes(raw[:8] + len(body).to_bytes(4, "big") + body + raw[12 + length :])
    target = tmp_path / "restored"
    line = one_line_error(vigil("restore", str(out), data_dir=target))
    assert "implausible Argon2id cost" in line
    assert not target.exists()


def test_absurd_kdf_costs_in_a_sealing_key_file_are_refused(tmp_path: Path) -> None:
    pair = crypto.sealing_keypair()
    doc = sealkey.private_document(pair, "a sealing key passphrase")
    doc["kdf_params"]["memory_kib"] = 1 << 40
    path = tmp_path / "k.key"
    path.write_text(json.dumps(doc))
    with pytest.raises(sealkey.SealingKeyError, match="implausible"):
        sealkey.load_private(path, "a sealing key passphrase")


# --- keyslots.json is authenticated ------------------------------------------------------------


@pytest.mark.parametrize("edit", ["sealing key", "label", "slot dropped", "auth"])
def test_an_edited_slot_file_is_refused(data: Path, edit: str) -> None:
    store = unlock(data, PASSPHRASE)
    store.slots.add(store.master, "the second holder's passphrase", "second")
    store.slots.sealing_public = crypto.sealing_keypair().public
    store.slots.save(store.master)
    store.close()
    doc = slots_doc(data)
    if edit == "sealing key":  # someone wants new reports sealed to a key they hold
        doc["sealing_public"] = base64.b64encode(crypto.sealing_keypair().public).decode()
    elif edit == "label":
        doc["slots"][1]["label"] = "the lawyer (trusted)"
    elif edit == "slot dropped":
        doc["slots"] = doc["slots"][:1]
    else:
        doc["auth"] = base64.b64encode(os.urandom(32)).decode()
    write_slots(data, doc)
    before = snapshot(data)
    line = one_line_error(vigil("status", data_dir=data))
    assert "was altered" in line
    assert snapshot(data) == before


def make_legacy(data: Path) -> None:
    """Data at rest from before the MAC: wraps bound by the legacy AAD, no pin in the db."""
    store = unlock(data, PASSPHRASE)
    master = store.master
    store.db.run_sync(
        lambda c: c.execute("DELETE FROM settings WHERE key = ?", (store_mod.FORMAT_PIN,))
    )
    store.close()
    params = keys.kdf_params_from_env()
    salt, wrapped = crypto.wrap_with_passphrase(
        master, PASSPHRASE, params, crypto.legacy_keyslot_aad("0ld51071")
    )
    legacy = {
        "version": 1,
        "slots": [{"id": "0ld51071", "label": "first", "kdf": "argon2id",
                   "kdf_params": params.as_dict(), "salt": base64.b64encode(salt).decode(),
                   "cipher": "aes-256-gcm", "wrapped": base64.b64encode(wrapped).decode()}],
        "sealing_public": None,
    }  # fmt: skip
    write_slots(data, legacy)


def test_a_genuine_format_1_slot_file_opens_and_is_upgraded(data: Path) -> None:
    make_legacy(data)
    store = unlock(data, PASSPHRASE)
    try:
        pin = store.db.run_sync(
            lambda c: c.execute(
                "SELECT value FROM settings WHERE key = ?", (store_mod.FORMAT_PIN,)
            ).fetchone()
        )
    finally:
        store.close()
    assert pin == (str(keys.FORMAT_VERSION),)
    upgraded = slots_doc(data)
    assert upgraded["version"] == 2 and upgraded["auth"]
    assert upgraded["slots"][0]["wrap_aad"] == 1  # the old wrap, now covered by the MAC
    unlock(data, PASSPHRASE).close()


def test_a_slot_file_turned_back_into_format_1_is_refused(data: Path) -> None:
    make_legacy(data)
    unlock(data, PASSPHRASE).close()  # upgraded, and the upgrade pinned in the database
    doc = slots_doc(data)
    doc["version"] = 1  # shed the MAC to swap the sealing key unnoticed
    del doc["auth"]
    del doc["slots"][0]["wrap_aad"]
    doc["sealing_public"] = base64.b64encode(crypto.sealing_keypair().public).decode()
    write_slots(data, doc)
    before = snapshot(data)
    line = one_line_error(vigil("status", data_dir=data))
    assert "old format" in line
    assert snapshot(data) == before


def test_a_version_1_sealing_key_file_still_opens(tmp_path: Path) -> None:
    pair = crypto.sealing_keypair()
    key_id = crypto.key_fingerprint(pair.public)
    params = keys.kdf_params_from_env()
    salt, wrapped = crypto.wrap_with_passphrase(
        pair.private, "a sealing passphrase", params, crypto.legacy_sealing_key_aad(key_id)
    )
    doc = sealkey.private_document(pair, "unused")
    doc.update(version=1, salt=base64.b64encode(salt).decode(),
               wrapped=base64.b64encode(wrapped).decode())  # fmt: skip
    path = tmp_path / "old.key"
    path.write_text(json.dumps(doc))
    private, public, _ = sealkey.load_private(path, "a sealing passphrase")
    assert (private, public) == (pair.private, pair.public)


def test_a_version_1_backup_still_restores(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup, "VERSION", 1)
    out = tmp_path / "old.vigilbak"
    backup.create_backup(data, PASSPHRASE, out)
    monkeypatch.undo()
    assert backup.read_archive(out, tmp_path / "x").version == 1
    target = tmp_path / "restored"
    backup.restore_backup(out, target, PASSPHRASE)
    unlock(target, PASSPHRASE).close()


# --- the passphrase after unlock ---------------------------------------------------------------


def _holders(digest: bytes, length: int) -> list[str]:
    """Objects the garbage collector can reach that hold the secret (as text or as bytes,
    the way os.environ keeps it) in an item or an attribute."""

    def matches(item: object) -> bool:
        if isinstance(item, str) and len(item) == length:
            item = item.encode()
        return (
            isinstance(item, bytes)
            and len(item) == length
            and hashlib.sha256(item).digest() == digest
        )

    def items_of(obj: object) -> list[object]:
        if type(obj) is dict or isinstance(obj, dict):
            return [*obj.values(), *obj.keys()]
        if isinstance(obj, list | tuple | set | frozenset):
            return list(obj)
        if not isinstance(obj, type) and hasattr(obj, "__dict__"):
            return list(vars(obj).values())
        return []

    found = []
    for obj in gc.get_objects():
        try:  # dead weak proxies and odd objects raise on any touch: they hold nothing
            if any(matches(item) for item in items_of(obj)):
                found.append(type(obj).__name__)
        except Exception:
            continue
    return found


def test_the_passphrase_is_not_kept_after_unlock(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = unlock(data, PASSPHRASE)
    fresh = "unlock-" + secrets.token_hex(12)
    store.slots.add(store.master, fresh, "probe")
    store.close()
    digest, length = hashlib.sha256(fresh.encode()).digest(), len(fresh)
    monkeypatch.setenv("VIGIL_DATA_DIR", str(data))
    monkeypatch.setenv("VIGIL_PASSPHRASE", fresh)
    del fresh
    settings = config.load(None)
    assert _holders(digest, length)  # positive control: the environment and settings hold it
    opened = common.unlock_store(settings)
    try:
        assert settings.passphrase is None
        assert "VIGIL_PASSPHRASE" not in os.environ
        gc.collect()
        assert _holders(digest, length) == []
    finally:
        opened.close()


def test_a_wrong_key_is_never_written_with(data: Path) -> None:
    """The keyed-open helper refuses keys that are not 32 bytes (a hex string by mistake)."""
    with pytest.raises(ValueError):
        connect_keyed(data / DB_FILE, b"x" * 64)
    with pytest.raises(sqlcipher3.DatabaseError):
        connect_keyed(data / DB_FILE, os.urandom(32)).execute("SELECT * FROM sqlite_master")
