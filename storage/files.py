"""Private files and directories: 0700 dirs, 0600 files, atomic replacement; and the few file
facts several storage modules share (kept here so that backup.py and wipe.py need not import
each other)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

BACKUP_MAGIC = b"VIGILBK1"  # the first bytes of every Vigil backup (storage/backup.py)
DATABASE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_database_files(path: Path) -> None:
    """A SQLite database and its companions, whichever exist."""
    for suffix in DATABASE_SUFFIXES:
        Path(str(path) + suffix).unlink(missing_ok=True)


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def write_private_file(path: Path, data: bytes) -> None:
    """Write via a sibling temp file and rename, so a crash leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
