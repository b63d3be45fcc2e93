"""Store errors and what a failure means: one sentence each, never a secret; and telling a
full disk from damage (a full disk is exit 1 and "free some space", never "damaged")."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import sqlcipher3

LOW_SPACE_BYTES = 1 << 20  # below this much free space, an I/O error is a full disk

DAMAGED = "The database is damaged; restore it from a backup (`vigil restore`)."
WRONG_KEY = "The database does not open with this key: it is damaged or belongs to other key slots."
EMPTY = (
    "The database file is empty (0 bytes) beside existing key slots: it was truncated or "
    "replaced; restore it from a backup (`vigil restore`)."
)
WAL_DAMAGED = (
    "The database's write-ahead log is damaged, so committed changes would be lost; nothing "
    "was changed: restore from a backup (`vigil restore`) or ask for help."
)


class StoreError(Exception):
    """The store cannot be opened or used; the message is one sentence without secrets."""


class DiskFull(StoreError):
    """The filesystem holding the store (or an output file) has no room left. Exit code 1: it
    is a runtime condition the operator can fix, not bad usage."""

    def __init__(self, where: Path | None = None) -> None:
        place = f"holding {where} " if where is not None else ""
        super().__init__(
            f"The disk {place}is full; free some space and run the command again "
            "(nothing was changed)."
        )
        self.where = where


def _low_on_space(path: Path | None) -> bool:
    if path is None:
        return False
    probe = path if path.is_dir() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < LOW_SPACE_BYTES


def is_disk_full(exc: BaseException, path: Path | None = None) -> bool:
    """Whether an error means "no space left". SQLite reports a full disk as SQLITE_FULL when
    a write to the database or log fails, but as a plain I/O error when growing the -shm file
    fails; for those, free space on the filesystem decides."""
    if isinstance(exc, DiskFull):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlcipher3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == 13:  # SQLITE_FULL
            return True
        if code is not None and code & 0xFF == 10:  # SQLITE_IOERR
            return _low_on_space(path)
        return "disk is full" in str(exc)
    return False
