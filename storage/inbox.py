"""Inbox: the platform keys of messages already handled, so a replay changes nothing twice."""

from __future__ import annotations

from storage.db import Connection


def claim(conn: Connection, transport: str, key: str, now: float) -> bool:
    """True the first time a key is seen. Call inside the transaction that applies its effects."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO inbox (transport, key, received_at) VALUES (?, ?, ?)",
        (transport, key, now),
    )
    return cur.rowcount == 1


def seen(conn: Connection, transport: str, key: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM inbox WHERE transport = ? AND key = ?", (transport, key)
    ).fetchone()
    return row is not None


def purge_older_than(conn: Connection, cutoff: float) -> int:
    return conn.execute("DELETE FROM inbox WHERE received_at < ?", (cutoff,)).rowcount
