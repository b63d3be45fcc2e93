"""Changing the key slots: add, remove, rotate; and mending a change a crash interrupted.

Slots wrap the master key, LUKS-style (storage/keys.py). Adding or removing a slot rewrites
only the slot file; rotating makes a new master key, so the database is re-encrypted and
every slot that should survive must be re-wrapped.

Rotate semantics (decided): **rotation needs one passphrase and keeps only the slots whose
passphrases are given.** A slot wraps the master key under its own passphrase; without that
passphrase nobody can wrap the new master key for it, and a rotation is most often done
because a slot can no longer be trusted (a holder arrested or coerced, a passphrase seen). So
`vigil keys rotate` re-wraps the slot that unlocked it, asks on a terminal for each other
slot's passphrase (Enter drops that slot), and in a script keeps only the unlocking slot and
prints the dropped ones; their holders re-enrol with `vigil keys add`. New slots get new ids.

What rotation changes besides the slots: the database is copied under the new key (SQLite's
backup API, with progress) and the old file is replaced; every subkey changes, so unredeemed
invite codes (stored as keyed hashes) stop working; old backups keep their own slots and still
open with the passphrases of their time. Rotation refuses to run while a bot has the database
open (storage/wipe.py `in_use`).

Crash safety. Every change writes the complete new slot file to `keyslots.json.next` first
(fsync), then makes the change, then overwrites `keyslots.json` **in place** with the new
content (so the bytes of a removed slot or an old master key do not stay in a freed block of a
replaced file; best effort, see storage/wipe.py) and deletes `.next`. If a crash interrupts
this, `recover(data_dir, passphrase)` finds which slot file actually opens the database with
the given passphrase and finishes or undoes the change. The CLI runs it before every key
command; store.unlock should run it too (see the hand-over notes).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlcipher3

from storage import backup, crypto, keys, wipe
from storage.db import DB_FILE, WRONG_KEY, DiskFull, StoreError, connect_keyed, is_disk_full, verify
from storage.files import fsync_dir

NEXT_FILE = keys.SLOTS_FILE + ".next"
DB_NEXT = DB_FILE + ".next"

Progress = Callable[[str, int, int], None]


class KeyChangeError(keys.KeyError_):
    pass


@dataclass(frozen=True)
class SlotInfo:
    slot_id: str
    label: str
    memory_mib: int


def list_slots(data_dir: Path) -> list[SlotInfo]:
    ks = keys.KeySlots.load(data_dir)
    return [SlotInfo(s.slot_id, s.label, s.params.memory_kib // 1024) for s in ks.slots]


def pending_change(data_dir: Path) -> bool:
    return (data_dir / NEXT_FILE).exists()


# --- helpers ---------------------------------------------------------------------------------


def _matching_slot(ks: keys.KeySlots, passphrase: str) -> tuple[keys.Slot, bytes]:
    """The slot this passphrase opens and the master key, once the file's MAC checked out."""
    slot, master = ks.open_slot(passphrase)
    ks.check(master)
    return slot, master


def _opens_database(data_dir: Path, master: bytes) -> bool:
    try:
        verify(data_dir / DB_FILE, keys.Subkeys.derive(master).database)
    except StoreError:
        return False
    return True


def overwrite_in_place(path: Path, data: bytes) -> None:
    """Replace a file's content by writing over its old bytes (padded with spaces, which JSON
    ignores, up to the old length), so the old content is not left in a freed block."""
    old = path.stat().st_size if path.exists() else 0
    payload = data + b" " * max(0, old - len(data))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(data_dir: Path) -> None:
    """`.next` becomes the slot file: overwrite in place, then drop `.next`."""
    nxt = data_dir / NEXT_FILE
    overwrite_in_place(data_dir / keys.SLOTS_FILE, nxt.read_bytes())
    nxt.unlink()
    fsync_dir(data_dir)


def _audit(data_dir: Path, master: bytes, action: str, target: str | None) -> None:
    """An audit row straight into the database (works beside a running bot: WAL + busy wait)."""
    path = data_dir / DB_FILE
    if not path.exists():
        return
    try:
        # mode=rw: never create a database file as a side effect of auditing.
        conn = connect_keyed(
            f"{path.resolve().as_uri()}?mode=rw",
            keys.Subkeys.derive(master).database,
            uri=True,
            busy_ms=10000,
        )
    except sqlcipher3.Error:
        return
    try:
        conn.execute(
            "INSERT INTO audit (at, actor_id, action, target) VALUES (?, NULL, ?, ?)",
            (time.time(), action, target),
        )
    except sqlcipher3.Error:
        pass  # the audit row is best effort; the key change itself is done
    finally:
        conn.close()


# --- recovery --------------------------------------------------------------------------------


def recover(data_dir: Path, passphrase: str) -> str | None:
    """Finish or undo a key change a crash interrupted. Returns "finished", "undone" or None
    (nothing pending). Needs a passphrase that opens the surviving slot file."""
    nxt = data_dir / NEXT_FILE
    if not nxt.exists():
        (data_dir / DB_NEXT).unlink(missing_ok=True)
        return None
    if (data_dir / DB_NEXT).exists():
        # A rotation died before the new database replaced the old one: nothing happened yet.
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(data_dir / DB_NEXT) + suffix).unlink(missing_ok=True)
        wipe.crypto_erase(nxt)
        return "undone"
    for candidate in (data_dir / keys.SLOTS_FILE, nxt):
        try:
            doc = keys.KeySlots.read(candidate)
        except keys.KeyError_:
            continue  # a half-written file: the other candidate decides
        try:
            master = doc.unlock(passphrase)
        except keys.WrongPassphrase:
            continue
        if not _opens_database(data_dir, master):
            continue
        if candidate == nxt:
            _commit(data_dir)
            return "finished"
        wipe.crypto_erase(nxt)
        return "undone"
    raise KeyChangeError(
        "A key change was interrupted and cannot be completed with this passphrase; try the "
        "passphrase that started it."
    )


# --- add and remove --------------------------------------------------------------------------


def add_slot(data_dir: Path, passphrase: str, new_passphrase: str, label: str = "") -> str:
    """A new slot for `new_passphrase`; returns its id."""
    recover(data_dir, passphrase)
    ks = keys.KeySlots.load(data_dir)
    _slot, master = _matching_slot(ks, passphrase)
    keys.check_passphrase_strength(new_passphrase)
    with contextlib.suppress(keys.WrongPassphrase):
        ks.unlock(new_passphrase)
        raise KeyChangeError("That passphrase already opens a key slot; choose another one.")
    staged = keys.KeySlots(data_dir / NEXT_FILE, list(ks.slots), ks.sealing_public)
    slot = staged.add(master, new_passphrase, label)  # writes keyslots.json.next
    _commit(data_dir)
    _audit(data_dir, master, "keys.slot_added", f"slot:{slot.slot_id}")
    return slot.slot_id


def remove_slot(data_dir: Path, passphrase: str, slot_id: str) -> None:
    """Remove a slot (any holder's passphrase authorises it; never the last slot)."""
    recover(data_dir, passphrase)
    ks = keys.KeySlots.load(data_dir)
    _slot, master = _matching_slot(ks, passphrase)
    staged = keys.KeySlots(data_dir / NEXT_FILE, list(ks.slots), ks.sealing_public)
    staged.remove(slot_id, master)  # KeyError_ for an unknown or the last slot; writes .next
    _commit(data_dir)
    _audit(data_dir, master, "keys.slot_removed", f"slot:{slot_id}")


# --- rotate ----------------------------------------------------------------------------------


@dataclass
class Rotated:
    kept: list[tuple[str, str]] = field(default_factory=list)  # (new slot id, label)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (old slot id, label)


AskPassphrase = Callable[[keys.Slot], str | None]


def rotate(
    data_dir: Path,
    passphrase: str,
    *,
    ask: AskPassphrase | None = None,
    progress: Progress | None = None,
) -> Rotated:
    """New master key, database copied under its subkey, chosen slots re-wrapped (module
    docstring). `ask(slot)` returns the passphrase of another slot to keep, or None to drop
    it; a wrong answer raises (nothing changed)."""
    recover(data_dir, passphrase)
    if wipe.in_use(data_dir):
        raise wipe.AlreadyRunning(
            f"Vigil is running on {data_dir}; stop it before rotating the key."
        )
    ks = keys.KeySlots.load(data_dir)
    used, old_master = _matching_slot(ks, passphrase)
    keep: list[tuple[keys.Slot, str]] = [(used, passphrase)]
    result = Rotated()
    for slot in ks.slots:
        if slot.slot_id == used.slot_id:
            continue
        other = ask(slot) if ask is not None else None
        if not other:
            result.dropped.append((slot.slot_id, slot.label))
            continue
        try:
            keys.KeySlots(ks.path, [slot]).open_slot(other)
        except keys.WrongPassphrase:
            raise KeyChangeError(
                f"That is not the passphrase of slot {slot.slot_id}; nothing was changed."
            ) from None
        keep.append((slot, other))
    old_db = keys.Subkeys.derive(old_master).database
    verify(data_dir / DB_FILE, old_db)  # damaged: say so, and change no file
    new_master = crypto.random_bytes()
    new_db = keys.Subkeys.derive(new_master).database
    db_path, db_next = data_dir / DB_FILE, data_dir / DB_NEXT
    staged = keys.KeySlots(data_dir / NEXT_FILE, [], ks.sealing_public)
    for slot, pp in keep:
        staged.add(new_master, pp, slot.label)  # each add rewrites keyslots.json.next
    backup.remove_database_files(db_next)
    try:
        _checkpoint(db_path, old_db)
        backup.copy_database(db_path, old_db, db_next, new_db, progress, "rotate")
        verify(db_next, new_db)
    except BaseException:
        backup.remove_database_files(db_next)
        wipe.crypto_erase(data_dir / NEXT_FILE)
        raise
    # Commit point: the database under the new key takes the old one's name.
    for suffix in ("-wal", "-shm", "-journal"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    os.replace(db_next, db_path)
    fsync_dir(data_dir)
    _commit(data_dir)
    _audit(data_dir, new_master, "keys.rotated", f"slots:{len(staged.slots)}")
    result.kept = [(s.slot_id, s.label) for s in staged.slots]
    return result


def _checkpoint(path: Path, key: bytes) -> None:
    """Fold the WAL into the database and let SQLite remove -wal/-shm (last connection)."""
    conn = connect_keyed(path, key)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlcipher3.DatabaseError as exc:
        if is_disk_full(exc, path.parent):
            raise DiskFull(path.parent) from None
        raise StoreError(WRONG_KEY) from None
    finally:
        conn.close()
