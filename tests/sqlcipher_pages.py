"""Decrypt every page of a SQLCipher 4 database file and every frame of its `-wal`, the way
someone holding the data dir and the raw database key would (THREATS rule 12: "tests decrypt
WAL frames and pages with the key and search them").

SQLCipher 4 defaults, as Vigil uses them (a raw 32-byte key, storage/db.py `connect_keyed`):

* page size 4096; each page ends in a reserve of 80 bytes: a 16-byte IV, then a 64-byte
  HMAC-SHA512;
* the raw key is the AES-256 key itself (no PBKDF2 for it); the HMAC key is
  PBKDF2-HMAC-SHA512(key, salt XOR 0x3a, 2 iterations, 32 bytes), where the salt is the first
  16 bytes of the database file;
* page 1's first 16 bytes *are* that salt (in clear; SQLite's "SQLite format 3\\0" header is
  put back only in memory); its ciphertext starts at offset 16, every other page's at 0;
* ciphertext is AES-256-CBC without padding up to the IV; the HMAC covers ciphertext || IV ||
  page number (4 bytes, little-endian);
* the WAL holds whole encrypted pages, each after a 24-byte frame header whose first field
  is the page number (big-endian); the WAL file starts with a 32-byte header.

Every page's HMAC is checked, so a wrong key or a misread layout fails loudly instead of
yielding noise that would "contain no sentinel". `check_header` verifies the decrypted page 1
against the fields SQLite requires there.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PAGE_SIZE = 4096
SALT_BYTES = 16
IV_BYTES = 16
HMAC_BYTES = 64
RESERVE = IV_BYTES + HMAC_BYTES  # 80, a multiple of the AES block
HMAC_SALT_MASK = 0x3A
FAST_KDF_ITER = 2
WAL_HEADER = 32
FRAME_HEADER = 24


class PageError(AssertionError):
    """A page did not authenticate under the key: wrong key, or the layout is misread."""


@dataclass(frozen=True)
class Page:
    source: str  # "db" or "wal"
    index: int  # page number in the db file, frame number in the WAL
    pgno: int
    plaintext: bytes  # the page as SQLite sees it (page 1 from offset 16)


def hmac_key(key: bytes, salt: bytes) -> bytes:
    mask = bytes(b ^ HMAC_SALT_MASK for b in salt)
    return hashlib.pbkdf2_hmac("sha512", key, mask, FAST_KDF_ITER, len(key))


def decrypt_page(data: bytes, pgno: int, key: bytes, mac_key: bytes) -> bytes:
    if len(data) != PAGE_SIZE:
        raise PageError(f"page {pgno}: {len(data)} bytes")
    offset = SALT_BYTES if pgno == 1 else 0
    end = PAGE_SIZE - RESERVE
    ciphertext = data[offset:end]
    iv = data[end : end + IV_BYTES]
    tag = data[end + IV_BYTES :]
    expected = hmac.new(mac_key, ciphertext + iv + struct.pack("<I", pgno), hashlib.sha512).digest()
    if not hmac.compare_digest(expected, tag):
        raise PageError(f"page {pgno}: HMAC mismatch")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def check_header(page1: bytes) -> None:
    """Page 1 decrypted (from file offset 16): SQLite's header fields at offsets 16..23."""
    page_size, write_v, read_v, reserve, max_frac, min_frac, leaf_frac = struct.unpack(
        ">HBBBBBB", page1[:8]
    )
    assert page_size == PAGE_SIZE, page_size
    assert write_v in (1, 2) and read_v in (1, 2), (write_v, read_v)
    assert reserve == RESERVE, reserve
    assert (max_frac, min_frac, leaf_frac) == (64, 32, 32)


def database_salt(db_path: Path) -> bytes:
    with db_path.open("rb") as f:
        return f.read(SALT_BYTES)


def db_pages(db_path: Path, key: bytes) -> Iterator[Page]:
    raw = db_path.read_bytes()
    if len(raw) % PAGE_SIZE:
        raise PageError("database file is not whole pages")
    mac_key = hmac_key(key, raw[:SALT_BYTES])
    for i in range(len(raw) // PAGE_SIZE):
        pgno = i + 1
        plain = decrypt_page(raw[i * PAGE_SIZE : (i + 1) * PAGE_SIZE], pgno, key, mac_key)
        if pgno == 1:
            check_header(plain)
        yield Page("db", pgno, pgno, plain)


def wal_frames(db_path: Path, key: bytes) -> Iterator[Page]:
    """Every whole frame in the -wal file, current generation or stale: an attacker reads them
    all. Frames that do not authenticate (torn, never-written space) raise."""
    wal = Path(str(db_path) + "-wal")
    if not wal.exists():
        return
    raw = wal.read_bytes()
    if len(raw) < WAL_HEADER:
        return
    (wal_page_size,) = struct.unpack(">I", raw[8:12])
    assert wal_page_size == PAGE_SIZE, wal_page_size
    mac_key = hmac_key(key, database_salt(db_path))
    frame = FRAME_HEADER + PAGE_SIZE
    for n in range((len(raw) - WAL_HEADER) // frame):
        start = WAL_HEADER + n * frame
        (pgno,) = struct.unpack(">I", raw[start : start + 4])
        plain = decrypt_page(raw[start + FRAME_HEADER : start + frame], pgno, key, mac_key)
        yield Page("wal", n, pgno, plain)


def all_pages(data_dir: Path, key: bytes, db_name: str = "vigil.db") -> list[Page]:
    db_path = data_dir / db_name
    return [*db_pages(db_path, key), *wal_frames(db_path, key)]


def find(data_dir: Path, key: bytes, *needles: str) -> list[tuple[str, int, str]]:
    """(source, index, needle) for every decrypted page that holds a needle (UTF-8 or
    UTF-16)."""
    hits = []
    for page in all_pages(data_dir, key):
        for needle in needles:
            for encoded in (
                needle.encode(),
                needle.encode("utf-16-le"),
                needle.encode("utf-16-be"),
            ):
                if encoded in page.plaintext:
                    hits.append((page.source, page.index, needle))
                    break
    return hits
