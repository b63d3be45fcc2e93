"""Subscriptions to cases and alert preferences (migration 003).

A member follows single cases (`case_id` = the case) or every case they may see (`case_id` =
ALL = 0). The row for a single case wins over the "all" row: its mode says instant alerts, a
daily digest, or 'off' (not this case, although following all). Who an alert reaches is
`storage.audience` (segment `subs:ID`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from storage.audience import split_optouts
from storage.db import Connection

ALL = 0
MODES = ("instant", "digest")
# Distressing categories a member may opt out of; updates in them carry a content note.
DISTRESSING = ("health", "torture")


@dataclass(frozen=True)
class Subscription:
    case_id: int  # ALL for "every case"
    mode: str


@dataclass(frozen=True)
class Prefs:
    optouts: frozenset[str]
    digest_hour: int
    next_digest_at: float | None
    last_digest_at: float | None


def subscribe(conn: Connection, member_id: int, case_id: int, mode: str, now: float) -> bool:
    """Follow a case (or ALL); True when this changed anything."""
    before = conn.total_changes
    conn.execute(
        "INSERT INTO subscriptions (case_id, member_id, mode, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (case_id, member_id) DO UPDATE SET mode = excluded.mode "
        "WHERE mode != excluded.mode",
        (case_id, member_id, mode, now),
    )
    return conn.total_changes > before


def get(conn: Connection, member_id: int, case_id: int) -> str | None:
    row = conn.execute(
        "SELECT mode FROM subscriptions WHERE case_id = ? AND member_id = ?", (case_id, member_id)
    ).fetchone()
    return row[0] if row else None


def remove(conn: Connection, member_id: int, case_id: int) -> bool:
    return (
        conn.execute(
            "DELETE FROM subscriptions WHERE case_id = ? AND member_id = ?", (case_id, member_id)
        ).rowcount
        > 0
    )


def remove_all(conn: Connection, member_id: int) -> int:
    return conn.execute("DELETE FROM subscriptions WHERE member_id = ?", (member_id,)).rowcount


def of_member(conn: Connection, member_id: int) -> list[Subscription]:
    rows = conn.execute(
        "SELECT case_id, mode FROM subscriptions WHERE member_id = ? ORDER BY case_id",
        (member_id,),
    ).fetchall()
    return [Subscription(c, m) for c, m in rows]


def set_mode_everywhere(conn: Connection, member_id: int, mode: str) -> int:
    return conn.execute(
        "UPDATE subscriptions SET mode = ? WHERE member_id = ? AND mode != 'off'",
        (mode, member_id),
    ).rowcount


def has_digest(conn: Connection, member_id: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM subscriptions WHERE member_id = ? AND mode = 'digest' LIMIT 1",
        (member_id,),
    ).fetchone()
    return row is not None


# -- preferences --------------------------------------------------------------------------


def prefs(conn: Connection, member_id: int) -> Prefs:
    row = conn.execute(
        "SELECT optouts, digest_hour, next_digest_at, last_digest_at FROM subscriber_prefs "
        "WHERE member_id = ?",
        (member_id,),
    ).fetchone()
    if row is None:
        return Prefs(frozenset(), 9, None, None)
    return Prefs(split_optouts(row[0]), row[1], row[2], row[3])


def _ensure_prefs(conn: Connection, member_id: int) -> None:
    conn.execute("INSERT OR IGNORE INTO subscriber_prefs (member_id) VALUES (?)", (member_id,))


def set_optouts(conn: Connection, member_id: int, optouts: Iterable[str]) -> None:
    _ensure_prefs(conn, member_id)
    conn.execute(
        "UPDATE subscriber_prefs SET optouts = ? WHERE member_id = ?",
        (",".join(sorted(set(optouts))), member_id),
    )


def set_digest_schedule(
    conn: Connection, member_id: int, next_at: float | None, last_at: float | None
) -> None:
    _ensure_prefs(conn, member_id)
    conn.execute(
        "UPDATE subscriber_prefs SET next_digest_at = ?, last_digest_at = ? WHERE member_id = ?",
        (next_at, last_at, member_id),
    )


def digests_due(conn: Connection, now: float, limit: int) -> list[int]:
    rows = conn.execute(
        "SELECT member_id FROM subscriber_prefs WHERE next_digest_at <= ? "
        "ORDER BY next_digest_at LIMIT ?",
        (now, limit),
    ).fetchall()
    return [r[0] for r in rows]
