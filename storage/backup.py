"""Encrypted backups: one authenticated archive that opens only with a key-slot passphrase.

Archive layout (all integers big-endian)::

    MAGIC "VIGILBK1" | u32 header length | header (JSON) | chunk* (the last one flagged final)
    chunk = u32 length | AES-256-GCM(chunk key, plaintext <= 1 MiB,
              aad = aad("backup/v2/chunk", header=SHA-256(MAGIC | header), index=i, final=0|1))

(Version 1 archives bound the same facts in a binary AAD, `crypto.legacy_backup_chunk_aad`;
they are still restored, never written.)

The header carries the network's key slots exactly as keyslots.json holds them (Argon2id
salts, costs, the wrapped master key; labels) and the sealing public key, plus a random
archive key wrapped under the master key's `backup` subkey (HKDF). So restoring asks for any
passphrase that was valid when the backup was made, and nothing else:
passphrase -> slot -> master key -> backup subkey -> archive key -> chunks.

Every chunk's AAD binds the whole header, its position and whether it is the last one, so
changing any byte of the header (say, swapping in key slots of one's own), reordering,
dropping or appending chunks, or cutting the file short is detected; a restore verifies the
whole archive before it writes anything in the data directory.

The snapshot. The chunks carry a copy of the database made with SQLite's online backup API
from a separate read connection inside one read transaction: a consistent snapshot even while
`vigil run` keeps writing (WAL readers do not block the writer). The copy is itself a
SQLCipher database keyed with a subkey of the archive key, so the temporary file it sits in
during backup and restore is encrypted too. No plaintext touches the disk at any step.

What a backup means for security (README, operator guide):

* A backup opens with every passphrase whose slot existed when it was made. After removing a
  slot (a holder lost or coerced) or rotating the key, make a new backup and destroy the old
  ones: `vigil keys remove` cannot reach into copies.
* Reports inside stay sealed to the off-server key; the backup does not contain that key.
* `vigil wipe` deletes backups kept inside the data directory, not copies elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import sqlcipher3

from storage import crypto, keys, wipe
from storage.db import (
    DAMAGED as DB_DAMAGED,
)
from storage.db import (
    DB_FILE,
    WRONG_KEY,
    DiskFull,
    StoreError,
    check_files,
    connect_keyed,
    create_database_file,
    is_disk_full,
    missing_companions,
    remove_leftover_companions,
    verify,
)
from storage.files import BACKUP_MAGIC, ensure_private_dir, fsync_dir, remove_database_files

MAGIC = BACKUP_MAGIC
KIND = "vigil-backup"
VERSION = 2
READABLE_VERSIONS = (1, 2)
CHUNK = 1 << 20
_SEAL_OVERHEAD = crypto.NONCE_BYTES + 16
MAX_HEADER = 1 << 20
STEP_PAGES = 256  # pages per backup step (1 MiB at 4 KiB pages): the progress granularity

Progress = Callable[[str, int, int], None]  # (phase, done, total)


class BackupError(StoreError):
    """The archive cannot be used; one sentence, no secrets."""


class NetworkExists(StoreError):
    pass


DAMAGED = "The backup is damaged or was altered; nothing was restored."


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    size: int
    slots: int
    backup_id: str


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: object) -> bytes:
    return base64.b64decode(str(s), validate=True)


def archive_key_aad(backup_id: str, version: int) -> bytes:
    if version == 1:
        return crypto.legacy_backup_key_aad(backup_id)
    return crypto.aad("backup/v2/archive-key", backup=backup_id)


def chunk_aad(header_hash: bytes, index: int, final: bool, version: int) -> bytes:
    if version == 1:
        return crypto.legacy_backup_chunk_aad(header_hash, index, final)
    return crypto.aad("backup/v2/chunk", header=header_hash, index=index, final=int(final))


def _connect(path: Path, key: bytes) -> sqlcipher3.Connection:
    return connect_keyed(path, key, busy_ms=5000)


def _refusal(exc: BaseException, where: Path) -> StoreError:
    """What a failed SQLite call during a copy means: a full disk is never "damaged"."""
    if is_disk_full(exc, where):
        return DiskFull(where)
    return StoreError(WRONG_KEY)


def copy_database(
    src: Path, src_key: bytes, dst: Path, dst_key: bytes, progress: Progress | None, phase: str
) -> None:
    """Online backup of `src` into a new file `dst` (keyed `dst_key`), from one read
    transaction so the copy is a consistent snapshot; `dst` ends in rollback-journal mode
    with no -wal beside it."""
    check_files(src)  # an empty file or a WAL that would drop commits is not copied
    created = missing_companions(src)
    try:
        _copy(src, src_key, dst, dst_key, progress, phase)
    finally:
        remove_leftover_companions(src, created)


def _copy(
    src: Path, src_key: bytes, dst: Path, dst_key: bytes, progress: Progress | None, phase: str
) -> None:
    try:
        source = _connect(src, src_key)
    except sqlcipher3.DatabaseError as exc:
        raise _refusal(exc, src.parent) from None
    try:
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts
        # A damaged page would be copied as garbage under a fresh, valid HMAC: check every
        # page of the source first, so a backup or rotation never launders damage.
        damaged = source.execute("PRAGMA cipher_integrity_check").fetchall()
    except sqlcipher3.DatabaseError as exc:
        source.close()
        raise _refusal(exc, src.parent) from None
    if damaged:
        source.close()
        raise StoreError(DB_DAMAGED)
    try:
        create_database_file(dst)
        target = _connect(dst, dst_key)
    except (OSError, sqlcipher3.DatabaseError) as exc:
        source.close()
        if is_disk_full(exc, dst.parent):
            raise DiskFull(dst.parent) from None
        raise
    try:

        def step(status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress(phase, total - remaining, total)

        source.backup(target, pages=STEP_PAGES, progress=step)
        source.execute("COMMIT")
        target.execute("PRAGMA journal_mode = DELETE")
    except sqlcipher3.DatabaseError as exc:
        # The source passed its integrity check above: a failure now is the target's disk.
        raise _refusal(exc, dst.parent) from None
    finally:
        source.close()
        target.close()


# --- writing ---------------------------------------------------------------------------------


def _write_chunks(
    out: BinaryIO, source: BinaryIO, key: bytes, header_hash: bytes, total: int, progress: Progress
) -> None:
    """Seal `source` in CHUNK-sized pieces; the last one is flagged final."""
    index, done = 0, 0
    block = source.read(CHUNK)
    while True:
        following = source.read(CHUNK) if len(block) == CHUNK else b""
        final = not following
        sealed = crypto.aead_seal(key, block, chunk_aad(header_hash, index, final, VERSION))
        out.write(struct.pack(">I", len(sealed)))
        out.write(sealed)
        done += len(block)
        progress("encrypt", done, total)
        if final:
            return
        block, index = following, index + 1


def create_backup(
    data_dir: Path, passphrase: str, out: Path, *, progress: Progress | None = None
) -> BackupInfo:
    """Write an encrypted, authenticated backup of the network in `data_dir` to `out`
    (0600, via a temporary file and rename). Works on a stopped or a running bot."""
    report: Progress = progress or (lambda phase, done, total: None)
    slots = keys.KeySlots.load(data_dir)
    db_path = data_dir / DB_FILE
    if not db_path.exists():
        raise StoreError(f"No database in {data_dir}: nothing to back up.")
    master = slots.unlock(passphrase)  # also checks keyslots.json's authentication
    sub = keys.Subkeys.derive(master)
    archive_key = crypto.random_bytes()
    inner_key = crypto.subkey(archive_key, "backup/database")
    chunk_key = crypto.subkey(archive_key, "backup/chunks")
    backup_id = secrets.token_hex(16)
    header = {
        "kind": KIND,
        "version": VERSION,
        "backup_id": backup_id,
        "created": datetime.now(UTC).strftime("%Y-%m-%d"),
        "chunk_size": CHUNK,
        "cipher": "aes-256-gcm",
        "keyslots": slots.document(),  # exactly as on disk, its MAC included
        "archive_key": _b64(
            crypto.aead_seal(sub.backup, archive_key, archive_key_aad(backup_id, VERSION))
        ),
    }
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    header_hash = hashlib.sha256(MAGIC + header_bytes).digest()
    snapshot = data_dir / f".vigil-backup-{secrets.token_hex(6)}.tmp"
    tmp_out = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        copy_database(db_path, sub.database, snapshot, inner_key, report, "snapshot")
        total = snapshot.stat().st_size
        fd = os.open(tmp_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f, snapshot.open("rb") as src:
            f.write(MAGIC + struct.pack(">I", len(header_bytes)) + header_bytes)
            _write_chunks(f, src, chunk_key, header_hash, total, report)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_out, out)
        fsync_dir(out.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(out.parent if not tmp_out.exists() else tmp_out.parent) from None
        raise
    finally:
        remove_database_files(snapshot)
        tmp_out.unlink(missing_ok=True)
    return BackupInfo(out, out.stat().st_size, len(slots.slots), backup_id)


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    header: dict[str, Any]
    header_hash: bytes
    body_offset: int
    slots: keys.KeySlots

    @property
    def backup_id(self) -> str:
        return str(self.header["backup_id"])

    @property
    def version(self) -> int:
        return int(self.header["version"])


def read_archive(path: Path, data_dir: Path) -> Archive:
    """Parse the header; BackupError for anything that is not a Vigil backup."""
    try:
        with path.open("rb") as f:
            head = f.read(len(MAGIC) + 4)
            if len(head) < len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
                raise BackupError(f"{path} is not a Vigil backup.")
            (length,) = struct.unpack(">I", head[len(MAGIC) :])
            if length > MAX_HEADER:
                raise BackupError(DAMAGED)
            header_bytes = f.read(length)
    except OSError:
        raise BackupError(f"Cannot read the backup {path}.") from None
    if len(header_bytes) != length:
        raise BackupError(DAMAGED)
    try:
        header = json.loads(header_bytes)
        if header.get("kind") != KIND or header.get("version") not in READABLE_VERSIONS:
            raise BackupError(f"{path} is not a backup this version of Vigil can read.")
        slots = keys.KeySlots.from_document(data_dir / keys.SLOTS_FILE, header["keyslots"])
        backup_id = header["backup_id"]
        if not isinstance(backup_id, str) or not backup_id.isalnum():
            raise ValueError("backup id")
        _unb64(header["archive_key"])
        if int(header["chunk_size"]) != CHUNK:
            raise ValueError("chunk size")
    except BackupError:
        raise
    except keys.ImplausibleKdfCost:
        raise BackupError(
            "The backup's key slots ask for an implausible Argon2id cost; it is damaged or was "
            "altered, and nothing was restored."
        ) from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, keys.KeyError_):
        raise BackupError(DAMAGED) from None
    return Archive(
        header, hashlib.sha256(MAGIC + header_bytes).digest(), len(MAGIC) + 4 + length, slots
    )


def _chunks(f: BinaryIO, key: bytes, header_hash: bytes, version: int) -> Iterator[bytes]:
    """Authenticated plaintext chunks; BackupError on any tampering or truncation."""
    index = 0
    while True:
        raw = f.read(4)
        if len(raw) != 4:
            raise BackupError(DAMAGED)  # cut short before the final chunk
        (length,) = struct.unpack(">I", raw)
        if length > CHUNK + _SEAL_OVERHEAD:
            raise BackupError(DAMAGED)
        sealed = f.read(length)
        if len(sealed) != length:
            raise BackupError(DAMAGED)
        for final in (False, True):
            try:
                plain = crypto.aead_open(key, sealed, chunk_aad(header_hash, index, final, version))
            except crypto.CryptoError:
                continue
            yield plain
            if final:
                if f.read(1):
                    raise BackupError(DAMAGED)  # bytes after the final chunk
                return
            break
        else:
            raise BackupError(DAMAGED)
        index += 1


def network_exists(data_dir: Path) -> bool:
    return (data_dir / keys.SLOTS_FILE).exists() or (data_dir / DB_FILE).exists()


def restore_backup(
    path: Path,
    data_dir: Path,
    passphrase: str,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> Archive:
    """Verify the whole archive, then install its database and key slots in `data_dir`.

    Refuses to replace an existing network unless `force`, and never while a process has it
    open. Nothing in `data_dir` changes before the archive is fully authenticated. With
    `force`, the old key slots are crypto-erased (storage/wipe.py) before the new ones are
    written, so the replaced network's master key does not linger in the old file's blocks."""
    report: Progress = progress or (lambda phase, done, total: None)
    archive = read_archive(path, data_dir)
    try:
        master = archive.slots.unlock(passphrase)
    except keys.WrongPassphrase:
        raise keys.WrongPassphrase(
            "Wrong passphrase: no key slot in this backup opens with it."
        ) from None
    sub = keys.Subkeys.derive(master)
    try:
        archive_key = crypto.aead_open(
            sub.backup,
            _unb64(archive.header["archive_key"]),
            archive_key_aad(archive.backup_id, archive.version),
        )
    except crypto.CryptoError:
        raise BackupError(DAMAGED) from None
    if network_exists(data_dir):
        if not force:
            raise NetworkExists(
                f"A network already exists in {data_dir}; refusing to overwrite it "
                "(use --force to replace it with the backup)."
            )
        if wipe.in_use(data_dir):
            raise wipe.AlreadyRunning(
                f"Vigil is running on {data_dir}; stop it before restoring over it."
            )
    made_dir = not data_dir.exists()
    try:
        ensure_private_dir(data_dir)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(data_dir) from None
        raise
    inner_key = crypto.subkey(archive_key, "backup/database")
    chunk_key = crypto.subkey(archive_key, "backup/chunks")
    unpacked = data_dir / f".vigil-restore-{secrets.token_hex(6)}.tmp"
    staging = data_dir / f"{DB_FILE}.restore"
    total = max(1, path.stat().st_size - archive.body_offset)
    try:
        fd = os.open(unpacked, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out, path.open("rb") as f:
            f.seek(archive.body_offset)
            for plain in _chunks(f, chunk_key, archive.header_hash, archive.version):
                out.write(plain)
                report("verify", min(total, f.tell() - archive.body_offset), total)
            out.flush()
            os.fsync(out.fileno())
        try:
            verify(unpacked, inner_key)
        except StoreError:
            raise BackupError(DAMAGED) from None
        remove_database_files(staging)
        copy_database(unpacked, inner_key, staging, sub.database, report, "restore")
        # The commit: the old database and its WAL go, the restored one takes its name, then
        # the key slots that open it. A crash in between is mended by running restore again.
        for suffix in ("-wal", "-shm", "-journal"):
            Path(str(data_dir / DB_FILE) + suffix).unlink(missing_ok=True)
        os.replace(staging, data_dir / DB_FILE)
        for name in wipe.SLOT_FILES:
            wipe.crypto_erase(data_dir / name)
        archive.slots.save(master)  # authenticated anew (a version-1 backup's slots upgrade)
    except BaseException as exc:
        remove_database_files(staging)
        remove_database_files(unpacked)
        if made_dir:
            with contextlib.suppress(OSError):
                data_dir.rmdir()  # only if it is empty: nothing of ours is left in it
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise DiskFull(data_dir) from None
        raise
    finally:
        remove_database_files(unpacked)
    return archive
