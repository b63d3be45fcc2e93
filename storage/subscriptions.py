"""Subscriptions to cases and alert preferences (migration 003).

A member follows single cases (`case_id` = the case) or every case they may see (`case_id` =
ALL = 0). The row for a single case wins over the "all" row: its mode says instant alerts, a
daily digest, or 'off' (not this case, although following all). Restricted cases reach only
members who may see them at the time of sending.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Recipient:
    member_id: int
    role: str
    language: str | None
    timezone: str | None
    quiet_hours: str | None
    mode: str  # instant | digest
    optouts: frozenset[str]
    transport: str | None  # None: no reachable identity
    chat: str | None


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
    return Prefs(_split(row[0]), row[1], row[2], row[3])


def _split(optouts: str | None) -> frozenset[str]:
    return frozenset(x for x in (optouts or "").split(",") if x)


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


# -- who gets an alert --------------------------------------------------------------------


def _merged_ids(queries: list[Iterator[int]], limit: int) -> list[int]:
    out: list[int] = []
    for member_id in heapq.merge(*queries):
        if not out or out[-1] != member_id:
            out.append(member_id)
            if len(out) == limit:
                break
    return out


def _ids(conn: Connection, sql: str, args: tuple[object, ...]) -> Iterator[int]:
    return (r[0] for r in conn.execute(sql, args))


def follower_ids(
    conn: Connection, case_id: int, cursor: int, limit: int, *, with_family: bool = False
) -> list[int]:
    """The next `limit` member ids above `cursor` that follow the case, directly or through
    "all" (and, with `with_family`, its relatives and coordinators), in id order. Each source
    is one index range scan, merged here, so a chunk costs O(limit) whatever the network size.
    Filtering ('off', visibility) happens in `recipients`."""
    sources = [
        _ids(
            conn,
            "SELECT member_id FROM subscriptions WHERE case_id = ? AND member_id > ? "
            "ORDER BY member_id LIMIT ?",
            (cid, cursor, limit),
        )
        for cid in (case_id, ALL)
    ]
    if with_family:
        sources.append(
            _ids(
                conn,
                "SELECT DISTINCT member_id FROM case_members WHERE case_id = ? AND member_id > ? "
                "ORDER BY member_id LIMIT ?",
                (case_id, cursor, limit),
            )
        )
    return _merged_ids(sources, limit)


def recipients(
    conn: Connection, case_id: int, ids: list[int], *, restricted: bool, with_family: bool = False
) -> list[Recipient]:
    """Delivery details for the members `ids` who should hear about this case: one row per
    reachable identity (transport None when there is none). Members with mode 'off' for the
    case, and members who may not see a restricted case, are left out."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        "SELECT m.id, m.role, m.language, m.timezone, m.quiet_hours, s.mode, a.mode, "
        "coalesce(p.optouts, ''), i.transport, i.chat, "
        "EXISTS (SELECT 1 FROM case_members cm WHERE cm.case_id = ? AND cm.member_id = m.id) "
        "FROM members m "
        "LEFT JOIN subscriptions s ON s.case_id = ? AND s.member_id = m.id "
        "LEFT JOIN subscriptions a ON a.case_id = 0 AND a.member_id = m.id "
        "LEFT JOIN subscriber_prefs p ON p.member_id = m.id "
        "LEFT JOIN identities i ON i.member_id = m.id AND i.reachable = 1 "
        f"WHERE m.id IN ({marks}) ORDER BY m.id",
        (case_id, case_id, *ids),
    ).fetchall()
    out = []
    for mid, role, lang, tz, quiet, own, every, optouts, transport, chat, tied in rows:
        mode = own or every
        if mode == "off" or (mode is None and not (with_family and tied)):
            continue
        if restricted and role not in ("coordinator", "admin") and not tied:
            continue
        out.append(
            Recipient(
                mid, role, lang, tz, quiet, mode or "instant", _split(optouts), transport, chat
            )
        )
    return out


def count_followers(conn: Connection, case_id: int, *, restricted: bool) -> int:
    """People who would get an alert about this case now (for the coordinator's answer)."""
    visible = (
        "AND (m.role IN ('coordinator', 'admin') OR EXISTS (SELECT 1 FROM case_members cm "
        "WHERE cm.case_id = :case AND cm.member_id = m.id))"
        if restricted
        else ""
    )
    row = conn.execute(
        "SELECT count(*) FROM members m "
        "LEFT JOIN subscriptions s ON s.case_id = :case AND s.member_id = m.id "
        "LEFT JOIN subscriptions a ON a.case_id = 0 AND a.member_id = m.id "
        "WHERE coalesce(s.mode, a.mode) IN ('instant', 'digest') "
        "AND m.id IN (SELECT member_id FROM subscriptions WHERE case_id IN (:case, 0)) "
        f"{visible}",
        {"case": case_id},
    ).fetchone()
    return row[0]
