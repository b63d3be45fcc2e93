"""Invite codes: stored as keyed hashes, with expiry and use counts."""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass

from storage import crypto
from storage.db import Connection

# No 0/O, 1/I/L: codes are read aloud and typed on phones.
_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_GROUPS = 3
_GROUP_LEN = 4


def new_code() -> str:
    groups = ["".join(secrets.choice(_ALPHABET) for _ in range(_GROUP_LEN)) for _ in range(_GROUPS)]
    return "-".join(groups)


# Letters that look like Latin ones on a phone keyboard set to another script: a code read over
# the phone and typed in Cyrillic or Greek still opens (`/start хг9ф` is not meant, `ХЕ9С` is).
_LOOKALIKES = str.maketrans(
    "АВЕЗКМНОРСТУХЅІЈΑΒΕΖΗΚΜΝΟΡΤΥΧ",
    "ABE3KMHOPCTYXSIJABEZHKMNOPTYX",
)


def normalize(code: str) -> str:
    """Forgiving of case, spaces and dashes, full-width forms, look-alike Cyrillic and Greek
    letters and digits of other scripts (Persian, Arabic-Indic); nothing else gets through."""
    text = unicodedata.normalize("NFKC", code).upper().translate(_LOOKALIKES)
    text = "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in text)
    kept = "".join(ch for ch in text if ch.isascii() and ch.isalnum())
    return kept[: _GROUPS * _GROUP_LEN + 8]


def _hash(index_key: bytes, code: str) -> str:
    return crypto.keyed_hash(index_key, "invite:" + normalize(code))


@dataclass(frozen=True)
class Invite:
    id: int
    role: str
    case_id: int | None
    uses_left: int
    expires_at: float


def create(
    conn: Connection,
    index_key: bytes,
    *,
    role: str,
    case_id: int | None,
    uses: int,
    expires_at: float,
    created_by: int | None,
    now: float,
) -> str:
    code = new_code()
    conn.execute(
        "INSERT INTO invites (code_hash, role, case_id, uses_left, expires_at, created_by, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (_hash(index_key, code), role, case_id, uses, expires_at, created_by, now),
    )
    return code


def redeem(conn: Connection, index_key: bytes, code: str, now: float) -> Invite | None:
    """Consume one use. Unknown, expired and used-up codes are indistinguishable to the caller."""
    invite = peek(conn, index_key, code, now)
    if invite is not None:
        use(conn, invite.id)
    return invite


def peek(conn: Connection, index_key: bytes, code: str, now: float) -> Invite | None:
    """The live invite behind a code, without using it up."""
    row = conn.execute(
        "SELECT id, role, case_id, uses_left, expires_at FROM invites WHERE code_hash = ?",
        (_hash(index_key, code),),
    ).fetchone()
    if row is None:
        return None
    invite = Invite(*row)
    if invite.uses_left <= 0 or invite.expires_at <= now:
        return None
    return invite


def use(conn: Connection, invite_id: int) -> None:
    conn.execute("UPDATE invites SET uses_left = uses_left - 1 WHERE id = ?", (invite_id,))


def purge_dead(conn: Connection, now: float) -> int:
    cur = conn.execute("DELETE FROM invites WHERE uses_left <= 0 OR expires_at <= ?", (now,))
    return cur.rowcount
