"""One-time codes that join a second platform identity to a member (/link), as keyed hashes."""

from __future__ import annotations

from storage import crypto, invites
from storage.db import Connection

TTL = 10 * 60.0


def _hash(index_key: bytes, code: str) -> str:
    return crypto.keyed_hash(index_key, "link:" + invites.normalize(code))


def create(conn: Connection, index_key: bytes, member_id: int, transport: str, now: float) -> str:
    """A new code for `member_id`, asked for on `transport`; it replaces the member's last."""
    conn.execute("DELETE FROM link_codes WHERE member_id = ?", (member_id,))
    code = invites.new_code()
    conn.execute(
        "INSERT INTO link_codes (code_hash, member_id, transport, expires_at) VALUES (?, ?, ?, ?)",
        (_hash(index_key, code), member_id, transport, now + TTL),
    )
    return code


def peek(conn: Connection, index_key: bytes, code: str, now: float) -> tuple[int, str] | None:
    """(member id, transport it was asked on) of a live code, without using it up."""
    row = conn.execute(
        "SELECT member_id, transport, expires_at FROM link_codes WHERE code_hash = ?",
        (_hash(index_key, code),),
    ).fetchone()
    if row is None or row[2] <= now:
        return None
    return row[0], row[1]


def use(conn: Connection, index_key: bytes, code: str) -> None:
    conn.execute("DELETE FROM link_codes WHERE code_hash = ?", (_hash(index_key, code),))


def purge_dead(conn: Connection, now: float) -> int:
    return conn.execute("DELETE FROM link_codes WHERE expires_at <= ?", (now,)).rowcount
