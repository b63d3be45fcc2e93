"""Panic wipe (crypto-erase), and knowing whether a bot is running on a data directory.

The wipe, shared by `vigil wipe` and the admin's `/panic` (through the App):

1. stop intake (the caller: transports stopped, no dispatcher drain);
2. checkpoint and close the database (`Database.close` runs `wal_checkpoint(TRUNCATE)`);
3. **crypto-erase the key slots**: overwrite every key-slot file (and its temporary or
   pending copies) in place with random bytes, fsync, delete, fsync the directory. Without a
   slot the master key cannot be recovered, whatever passphrase is later forced out of anyone,
   and the database is noise (NIST SP 800-88 "cryptographic erase");
4. delete the database, its -wal/-shm/-journal files, unfinished rotation or restore copies,
   and Vigil backups kept in the data directory (recognised by their magic bytes); copies of
   the key slots and sealing key files left there are crypto-erased like the slots;
5. remove the data directory if nothing else is left in it; the caller exits the process, so
   the master key and subkeys leave memory with it.

Limits, stated plainly to operators (docs and `vigil wipe --help`):

* Overwriting in place is reliable on a plain disk with ext4/xfs; on SSDs (wear levelling),
  copy-on-write filesystems (btrfs, ZFS), and VM snapshots the old bytes of the key-slot file
  may survive. That is why the key slots are best kept on a medium you can destroy, and the
  disk itself encrypted (LUKS). The database is not overwritten: once the slots are gone it is
  unreadable, and overwriting gigabytes would make the panic slow.
* Backups outside the data directory, exported reports, signal-cli's own store, and what
  platforms and phones keep are untouched; backups still open with the passphrases that
  were valid when they were made.

A running bot and `vigil wipe` from a shell: the CLI does not need the bot's cooperation, nor a
passphrase. It erases the slots and deletes the files; the running process still holds an open
descriptor of the deleted database and the master key in memory. The App therefore watches
the key-slot file (`slots_present`, every second) and, when it disappears, takes the panic
path itself: stops intake without draining, closes the database and exits. Until the App does
that, `vigil wipe` tells the operator to stop the service.

`RunLock` is taken by `vigil run` for its lifetime; `in_use` tells key rotation and a forced
restore (which must not run under a live bot) that a process has the database open, from the
lock or, failing that, from SQLite's own WAL lock on the -shm file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from storage.db import DB_FILE, Database, StoreError
from storage.files import BACKUP_MAGIC, fsync_dir
from storage.keys import SLOTS_FILE

log = logging.getLogger(__name__)

LOCK_FILE = "vigil.lock"
# Key-slot files: the live one, KeySlots.save's temporary, and a pending key change.
SLOT_FILES = (SLOTS_FILE, f".{SLOTS_FILE}.tmp", f"{SLOTS_FILE}.next", f".{SLOTS_FILE}.next.tmp")
_DMS_OFFSET = 128  # SQLite WAL-index "dead man switch" byte: shared-locked while a db is open


class AlreadyRunning(StoreError):
    pass


@dataclass
class WipeReport:
    erased: list[str] = field(default_factory=list)  # key-slot files overwritten and deleted
    deleted: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # files that are not Vigil's, kept
    directory_removed: bool = False


def overwrite(path: Path, *, passes: int = 1) -> None:
    """Overwrite a file's bytes in place with random data and fsync (best effort on SSD/CoW)."""
    size = max(path.stat().st_size, 4096)
    fd = os.open(path, os.O_WRONLY)
    try:
        for _ in range(passes):
            os.lseek(fd, 0, os.SEEK_SET)
            left = size
            while left:
                chunk = os.urandom(min(left, 1 << 16))
                left -= os.write(fd, chunk)
            os.fsync(fd)
    finally:
        os.close(fd)


def crypto_erase(path: Path) -> bool:
    """Overwrite, fsync and delete one key-material file. False if it was not there."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        overwrite(path)
    finally:
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
    return True


def _is_backup(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(BACKUP_MAGIC)) == BACKUP_MAGIC
    except OSError:
        return False


def _is_key_material(path: Path) -> bool:
    """A copy of the key slots (keyslots.json.bak ...) or a sealing key file left in the data
    directory: these are crypto-erased like the slots themselves."""
    try:
        if path.stat().st_size > 1 << 20:
            return False
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    return doc.get("kind") == "vigil-sealing-key" or isinstance(doc.get("slots"), list)


def _is_vigil_file(path: Path) -> bool:
    name = path.name
    return (
        name.startswith(DB_FILE)  # vigil.db, -wal, -shm, -journal, .next, .restore
        or name.startswith(".vigil-")  # temporary files of backup, restore and rotation
        or name == LOCK_FILE
        or name.startswith("signal-captcha.")  # a captcha handed over by `vigil signal captcha`
        or _is_backup(path)
    )


def wipe(data_dir: Path, db: Database | None = None) -> WipeReport:
    """Crypto-erase the network in `data_dir` (module docstring). Idempotent; never raises for
    a file that is already gone. `db`: the open database of a running bot, closed first."""
    report = WipeReport()
    if db is not None:
        try:
            db.close()  # drains queued writes, wal_checkpoint(TRUNCATE), close
        except Exception as exc:  # the wipe goes on whatever the database says
            log.warning("database close before wipe failed: %s", type(exc).__name__)
    if not data_dir.is_dir():
        return report
    for name in SLOT_FILES:
        try:
            if crypto_erase(data_dir / name):
                report.erased.append(name)
        except OSError as exc:
            log.error("key slot erase failed: %s", type(exc).__name__)
            (data_dir / name).unlink(missing_ok=True)
    for path in sorted(data_dir.iterdir()):
        if not path.is_file() or path.is_symlink():
            if path.is_symlink() or path.exists():
                report.leftovers.append(path.name)
            continue
        if _is_key_material(path):
            crypto_erase(path)
            report.erased.append(path.name)
        elif _is_vigil_file(path):
            path.unlink(missing_ok=True)
            report.deleted.append(path.name)
        else:
            report.leftovers.append(path.name)
    fsync_dir(data_dir)
    if not report.leftovers:
        with contextlib.suppress(OSError):
            data_dir.rmdir()
            report.directory_removed = True
    return report


def slots_present(data_dir: Path) -> bool:
    """For a running bot's watcher: False once the key slots were erased under it."""
    return (data_dir / SLOTS_FILE).is_file()


# --- is a bot running here? ----------------------------------------------------------------


class RunLock:
    """An exclusive flock on data_dir/vigil.lock, held by `vigil run` for its lifetime."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AlreadyRunning(
                f"Vigil is already running on {self.path.parent}; stop it first."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_held(data_dir: Path) -> bool:
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases our probe lock
    return False


def _database_open_elsewhere(data_dir: Path) -> bool:
    """SQLite holds a shared POSIX lock on a byte of the -shm file while a WAL database is
    open. Call only while this process has no connection to that database: closing the probe
    descriptor drops every POSIX lock this process holds on the file."""
    shm = data_dir / (DB_FILE + "-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _DMS_OFFSET, os.SEEK_SET)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _DMS_OFFSET, os.SEEK_SET)
        return False
    finally:
        os.close(fd)


def in_use(data_dir: Path) -> bool:
    """Whether another process runs a bot on (or has open) this data directory."""
    return _lock_held(data_dir) or _database_open_elsewhere(data_dir)
