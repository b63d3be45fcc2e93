"""Opening a network: key slots + database, for `init` and for every unlock.

Unlock order, each step before anything is written:

1. finish or undo a key change a crash interrupted (storage/keyadmin.py `recover`);
2. read keyslots.json (KDF costs bounded) and find the slot the passphrase opens (Argon2id);
3. check the slot file's MAC under the master key (a swapped sealing key or label: exit 2);
4. verify the database read-only: not 0 bytes, the WAL without silent losses, every page's
   HMAC (storage/db.py `verify`), and read the slot-format pin from it;
5. only then: upgrade a format-1 slot file, open read-write, migrate.

Start-up at scale (issue 15 item 5). Argon2id (≈1 s at 256 MiB) and the integrity check
(proportional to the database) are the unlock's cost. `begin_unlock` runs the whole unlock on
a worker thread — Argon2id and SQLite both release the GIL — while the caller imports and
builds the rest of the bot, and asks the kernel to read the database ahead meanwhile, so the
integrity check that follows Argon2id finds its pages in memory. Nothing about the guarantee
changes: the database is opened read-write only after it verified.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from storage import keyadmin, keys, settings, wipe
from storage.db import DB_FILE, WAL_SUFFIX, Database, DiskFull, StoreError, is_disk_full, verify
from storage.files import ensure_private_dir, remove_database_files

FORMAT_PIN = "keyslots.format"  # settings key: the slot file has been authenticated since


class NetworkExists(StoreError):
    pass


@dataclass
class Store:
    data_dir: Path
    db: Database
    slots: keys.KeySlots
    subkeys: keys.Subkeys
    master: bytes

    def close(self) -> None:
        self.db.close()


def init_network(data_dir: Path, passphrase: str) -> Store:
    """Create key slots and an empty encrypted database; never overwrite an existing network.
    A failure part-way (a full disk) removes what it made: no half network is left behind."""
    if (data_dir / keys.SLOTS_FILE).exists() or (data_dir / DB_FILE).exists():
        raise NetworkExists(
            f"A network already exists in {data_dir}; refusing to overwrite it "
            "(use `vigil wipe` first if you really mean to start over)."
        )
    keys.check_passphrase_strength(passphrase)
    made_dir = not data_dir.exists()
    db: Database | None = None
    try:
        ensure_private_dir(data_dir)
        slots, master = keys.create(data_dir, passphrase)
        sub = keys.Subkeys.derive(master)
        db = Database.open(data_dir, sub.database, create=True)
        db.run_sync(settings.put, FORMAT_PIN, str(keys.FORMAT_VERSION))
    except BaseException as exc:
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()
        _undo_init(data_dir, made_dir)
        if is_disk_full(exc, data_dir):
            raise DiskFull(data_dir) from None
        raise
    return Store(data_dir, db, slots, sub, master)


def _undo_init(data_dir: Path, made_dir: bool) -> None:
    for name in wipe.SLOT_FILES:
        with contextlib.suppress(OSError):
            wipe.crypto_erase(data_dir / name)
    remove_database_files(data_dir / DB_FILE)
    if made_dir:
        with contextlib.suppress(OSError):
            data_dir.rmdir()


def unlock(data_dir: Path, passphrase: str) -> Store:
    """Unlock read-write (module docstring). Opening changes no file unless the key is right
    and the store checked out."""
    if (data_dir / keys.SLOTS_FILE).exists():
        keyadmin.recover(data_dir, passphrase)  # a key change a crash interrupted
    slots = keys.KeySlots.load(data_dir)
    db_path = data_dir / DB_FILE
    if not db_path.exists():
        raise StoreError(
            f"No database in {data_dir}: the key slots have no network beside them; restore "
            "it from a backup (`vigil restore`)."
        )
    _read_ahead(db_path)
    master = slots.unlock(passphrase)  # Argon2id, then the slot file's MAC
    sub = keys.Subkeys.derive(master)
    pins = verify(db_path, sub.database, peek=(FORMAT_PIN,))
    if slots.version < keys.FORMAT_VERSION:
        if pins.get(FORMAT_PIN):
            raise keys.AlteredKeySlots(
                f"The key slot file {slots.path} was turned back into an old format without "
                "authentication, so it was not used."
            )
        slots.save(master)  # format 1 -> 2, now that the key is known to be right
    db = Database.open(data_dir, sub.database, verified=True)
    if not pins.get(FORMAT_PIN):
        try:
            db.run_sync(settings.put, FORMAT_PIN, str(keys.FORMAT_VERSION))
        except BaseException:
            db.close()
            raise
    return Store(data_dir, db, slots, sub, master)


def _read_ahead(db_path: Path) -> None:
    """Ask the kernel to start reading the database (and its log) into the page cache while
    Argon2id runs; the integrity check then reads from memory. A hint only: never writes."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for path in (db_path, Path(str(db_path) + WAL_SUFFIX)):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def begin_unlock(data_dir: Path, passphrase: str) -> concurrent.futures.Future[Store]:
    """`unlock` on a worker thread; `.result()` gives the Store or raises what unlock raised.
    The caller does its own start-up work meanwhile (module docstring)."""
    future: concurrent.futures.Future[Store] = concurrent.futures.Future()

    def work(secret: str) -> None:
        try:
            future.set_result(unlock(data_dir, secret))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=work, args=(passphrase,), name="vigil-unlock", daemon=True).start()
    return future
