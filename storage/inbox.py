"""Inbox: the platform keys of messages already handled, so a replay changes nothing twice.

A key is stored only as a keyed hash (a Signal key is `sourceUuid:timestamp`: in the clear it
would name the sender and the exact moment), with the hour it arrived, not the second, and only
as long as a platform can deliver the same message again (retention `inbox_keys`, 2 days).
"""

from __future__ import annotations

from typing import Protocol

from storage import crypto
from storage.db import Connection

HOUR = 3600.0


class Keyed(Protocol):
    transport: str
    key: str


def _hash(index_key: bytes, msg: Keyed) -> str:
    return crypto.keyed_hash(index_key, f"inbox:{msg.transport}:{msg.key}")


def claim(conn: Connection, index_key: bytes, msg: Keyed, now: float) -> bool:
    """True the first time a key is seen. Call inside the transaction that applies its effects."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO inbox (transport, key, received_at) VALUES (?, ?, ?)",
        (msg.transport, _hash(index_key, msg), now // HOUR * HOUR),
    )
    return cur.rowcount == 1


def seen(conn: Connection, index_key: bytes, msg: Keyed) -> bool:
    row = conn.execute(
        "SELECT 1 FROM inbox WHERE transport = ? AND key = ?",
        (msg.transport, _hash(index_key, msg)),
    ).fetchone()
    return row is not None


def purge_older_than(conn: Connection, cutoff: float) -> int:
    return conn.execute("DELETE FROM inbox WHERE received_at < ?", (cutoff,)).rowcount
