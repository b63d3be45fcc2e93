"""Transfers between facilities ("etap"): open and past transits of a case (migration 071)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.db import Connection


@dataclass(frozen=True)
class Transit:
    id: int
    case_id: int
    started_on: str
    started_at: float
    prev_status: str
    from_facility: str | None
    ended_at: float | None
    to_facility: str | None
    reminded_at: float | None
    alert_id: int | None


_COLS = (
    "id, case_id, started_on, started_at, prev_status, from_facility, ended_at, to_facility, "
    "reminded_at, alert_id"
)


def _t(row: tuple[Any, ...]) -> Transit:
    return Transit(*row)


def open_transit(conn: Connection, case_id: int) -> Transit | None:
    row = conn.execute(
        f"SELECT {_COLS} FROM case_transits WHERE case_id = ? AND ended_at IS NULL", (case_id,)
    ).fetchone()
    return _t(row) if row else None


def start(
    conn: Connection,
    case_id: int,
    started_on: str,
    now: float,
    prev_status: str,
    from_facility: str | None,
) -> int:
    cur = conn.execute(
        "INSERT INTO case_transits (case_id, started_on, started_at, prev_status, "
        "from_facility, reminded_at) VALUES (?, ?, ?, ?, ?, ?)",
        (case_id, started_on, now, prev_status, from_facility, now),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def set_start(conn: Connection, transit_id: int, started_on: str) -> None:
    conn.execute("UPDATE case_transits SET started_on = ? WHERE id = ?", (started_on, transit_id))


def end(conn: Connection, transit_id: int, now: float, to_facility: str | None) -> None:
    conn.execute(
        "UPDATE case_transits SET ended_at = ?, to_facility = ? WHERE id = ?",
        (now, to_facility, transit_id),
    )


def all_open(conn: Connection) -> list[Transit]:
    rows = conn.execute(
        f"SELECT {_COLS} FROM case_transits WHERE ended_at IS NULL ORDER BY id"
    ).fetchall()
    return [_t(r) for r in rows]


def mark_reminded(conn: Connection, transit_id: int, now: float) -> None:
    conn.execute("UPDATE case_transits SET reminded_at = ? WHERE id = ?", (now, transit_id))


def set_alert(conn: Connection, transit_id: int, alert_id: int) -> None:
    conn.execute("UPDATE case_transits SET alert_id = ? WHERE id = ?", (alert_id, transit_id))


def history(conn: Connection, case_id: int, limit: int = 5) -> list[Transit]:
    """Past transits, newest first."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM case_transits WHERE case_id = ? AND ended_at IS NOT NULL "
        "ORDER BY ended_at DESC LIMIT ?",
        (case_id, limit),
    ).fetchall()
    return [_t(r) for r in rows]
