"""Outbox: every message the bot sends is first a row here, written with the change behind it.

States: pending -> sending -> sent | failed | maybe_sent; pending -> cancelled. Rows left in
`sending` by a crash go back to `pending` at start: the platform may already have the message,
so that is the one place a duplicate can arise, bounded by the dispatcher's in-flight window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.db import Connection


@dataclass(frozen=True)
class Item:
    id: int
    transport: str
    chat: str
    member_id: int | None
    priority: int
    body: dict[str, Any]
    attempts: int
    broadcast_id: int | None


def enqueue(
    conn: Connection,
    *,
    transport: str,
    chat: str,
    body: dict[str, Any],
    priority: int,
    now: float,
    member_id: int | None = None,
    idem_key: str | None = None,
    broadcast_id: int | None = None,
    not_before: float = 0,
) -> int | None:
    """Insert a row; with an idempotency key a second insert of the same message is a no-op."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO outbox (transport, chat, member_id, priority, body, idem_key, "
        "broadcast_id, not_before, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            transport,
            chat,
            member_id,
            priority,
            json.dumps(body, ensure_ascii=False),
            idem_key,
            broadcast_id,
            not_before,
            now,
        ),
    )
    return cur.lastrowid if cur.rowcount == 1 else None


def claim(conn: Connection, transport: str, limit: int, now: float) -> list[Item]:
    rows = conn.execute(
        "SELECT id, transport, chat, member_id, priority, body, attempts, broadcast_id "
        "FROM outbox WHERE transport = ? AND state = 'pending' AND not_before <= ? "
        "ORDER BY priority, id LIMIT ?",
        (transport, now, limit),
    ).fetchall()
    if rows:
        conn.executemany(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1 WHERE id = ?",
            [(r[0],) for r in rows],
        )
    return [Item(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6] + 1, r[7]) for r in rows]


def mark_sent(conn: Connection, item_id: int, platform_ref: str | None, now: float) -> None:
    conn.execute(
        "UPDATE outbox SET state = 'sent', platform_ref = ?, done_at = ?, error = NULL "
        "WHERE id = ?",
        (platform_ref, now, item_id),
    )


def retry_later(conn: Connection, item_id: int, not_before: float, error: str) -> None:
    conn.execute(
        "UPDATE outbox SET state = 'pending', not_before = ?, error = ? WHERE id = ?",
        (not_before, error, item_id),
    )


def finish(conn: Connection, item_id: int, state: str, error: str, now: float) -> None:
    """Terminal states other than sent: failed, maybe_sent, cancelled."""
    conn.execute(
        "UPDATE outbox SET state = ?, error = ?, done_at = ? WHERE id = ?",
        (state, error, now, item_id),
    )


def recover_in_flight(conn: Connection) -> int:
    return conn.execute("UPDATE outbox SET state = 'pending' WHERE state = 'sending'").rowcount


def next_due(conn: Connection, transport: str) -> float | None:
    row = conn.execute(
        "SELECT min(not_before) FROM outbox WHERE transport = ? AND state = 'pending'",
        (transport,),
    ).fetchone()
    return row[0]


def depth(conn: Connection) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for transport, state, n in conn.execute(
        "SELECT transport, state, count(*) FROM outbox GROUP BY transport, state"
    ):
        out.setdefault(transport, {})[state] = n
    return out


def platform_ref(conn: Connection, item_id: int) -> str | None:
    row = conn.execute("SELECT platform_ref FROM outbox WHERE id = ?", (item_id,)).fetchone()
    return row[0] if row else None


def purge_done(conn: Connection, cutoff: float) -> int:
    return conn.execute(
        "DELETE FROM outbox WHERE state IN ('sent', 'failed', 'maybe_sent', 'cancelled') "
        "AND done_at < ?",
        (cutoff,),
    ).rowcount
