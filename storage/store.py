"""Opening a network: key slots + database, for `init` and for every unlock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage import keys
from storage.db import DB_FILE, Database, StoreError
from storage.files import ensure_private_dir


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
    """Create key slots and an empty encrypted database; never overwrite an existing network."""
    if (data_dir / keys.SLOTS_FILE).exists() or (data_dir / DB_FILE).exists():
        raise NetworkExists(
            f"A network already exists in {data_dir}; refusing to overwrite it "
            "(use `vigil wipe` first if you really mean to start over)."
        )
    ensure_private_dir(data_dir)
    slots, master = keys.create(data_dir, passphrase)
    sub = keys.Subkeys.derive(master)
    db = Database.open(data_dir, sub.database, create=True)
    return Store(data_dir, db, slots, sub, master)


def unlock(data_dir: Path, passphrase: str) -> Store:
    """Unlock read-write. Opening changes no file unless the key is right."""
    from storage import keyadmin

    if (data_dir / keys.SLOTS_FILE).exists():
        keyadmin.recover(data_dir, passphrase)  # a key change a crash interrupted
    slots = keys.KeySlots.load(data_dir)
    if not (data_dir / DB_FILE).exists():
        raise StoreError(f"No database in {data_dir}: the key slots have no network beside them.")
    master = slots.unlock(passphrase)
    sub = keys.Subkeys.derive(master)
    db = Database.open(data_dir, sub.database)
    return Store(data_dir, db, slots, sub, master)
