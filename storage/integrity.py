"""Checks of a store that need no key and write nothing: the database file is there and not
empty, its WAL would not silently lose commits (storage/db.py explains both); and tidying the
-wal/-shm companions a refused command brought into being."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from storage.errors import EMPTY, WAL_DAMAGED, StoreError

WAL_SUFFIX = "-wal"

_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_FRAME_HEADER = 24


def _wal_checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum (wal.c walChecksumBytes) over 8-byte steps."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def check_wal(db_path: Path) -> None:
    """Refuse a -wal file whose damage SQLite would silently turn into lost commits (module
    docstring). Reads only; needs no key (the checksums cover the encrypted frames)."""
    wal = Path(str(db_path) + WAL_SUFFIX)
    try:
        size = wal.stat().st_size
    except FileNotFoundError:
        return
    if size < _WAL_HEADER:
        return  # SQLite ignores a log without a whole header; nothing committed lives there
    with wal.open("rb") as f:
        header = f.read(_WAL_HEADER)
        magic, _version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", header)
        frame_size = _FRAME_HEADER + page_size
        if magic not in _WAL_MAGIC or page_size < 512 or page_size & (page_size - 1):
            if size >= _WAL_HEADER + _FRAME_HEADER + 512:
                raise StoreError(WAL_DAMAGED)  # frames are there, but SQLite would read none
            return
        big = magic & 1 == 1
        s0, s1 = _wal_checksum(header[:24], 0, 0, big)
        if (s0, s1) != (c0, c1):
            if size >= _WAL_HEADER + frame_size:
                raise StoreError(WAL_DAMAGED)
            return
        valid = True
        while True:
            frame = f.read(frame_size)
            if len(frame) < frame_size:
                return
            _pgno, commit, f_salt1, f_salt2, f0, f1 = struct.unpack(">6I", frame[:_FRAME_HEADER])
            current = (f_salt1, f_salt2) == (salt1, salt2)
            if valid:
                if not current:
                    valid = False  # the end of this generation; older frames may follow
                    continue
                s0, s1 = _wal_checksum(frame[:8], s0, s1, big)
                s0, s1 = _wal_checksum(frame[_FRAME_HEADER:], s0, s1, big)
                if (s0, s1) != (f0, f1):
                    valid = False
                    # A torn last transaction ends the log here too; only a commit of this
                    # generation further on proves that committed work would be dropped.
                continue
            if current and commit:
                raise StoreError(WAL_DAMAGED)


def check_files(path: Path) -> None:
    """What can be checked without the key: the file is there and not empty, and its WAL
    would not silently lose commits."""
    try:
        if path.stat().st_size == 0:
            raise StoreError(EMPTY)
    except FileNotFoundError:
        raise StoreError(f"No database in {path.parent}.") from None
    check_wal(path)


_DMS_OFFSET = 128  # SQLite's "dead man switch" byte in -shm: shared-locked while a db is open
COMPANIONS = (WAL_SUFFIX, "-shm")


def _open_elsewhere(shm: Path) -> bool:
    """Whether another connection holds the database open (its lock on the -shm file). Call
    only with no connection of this process open on it: closing the probe drops our locks."""
    import fcntl

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


def remove_leftover_companions(path: Path, created: set[str]) -> None:
    """After a failed open or write (a full disk), SQLite can leave an empty -wal and a torn
    -shm it created; take away those this process created, unless another one uses them, so a
    refused command leaves the data dir exactly as it found it."""
    wal = Path(str(path) + WAL_SUFFIX)
    shm = Path(str(path) + "-shm")
    if "-shm" in created and shm.exists() and _open_elsewhere(shm):
        return
    if WAL_SUFFIX in created and wal.exists() and wal.stat().st_size == 0:
        wal.unlink(missing_ok=True)
    if "-shm" in created and shm.exists() and not wal.exists():
        shm.unlink(missing_ok=True)


def missing_companions(path: Path) -> set[str]:
    return {s for s in COMPANIONS if not Path(str(path) + s).exists()}
