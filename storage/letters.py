"""The letters tally (migration 004): letters written to each prisoner, per case and month.

Only counts are kept, never who wrote or when within the month, so the table cannot say
which supporter writes to which prisoner.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Connection


def record(conn: Connection, case_id: int, month: str, n: int = 1) -> None:
    conn.execute(
        "INSERT INTO letter_tally (case_id, month, letters) VALUES (?, ?, ?) "
        "ON CONFLICT (case_id, month) DO UPDATE SET letters = letters + excluded.letters",
        (case_id, month, n),
    )


def count_since(conn: Connection, case_id: int, first_month: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(letters), 0) FROM letter_tally WHERE case_id = ? AND month >= ?",
        (case_id, first_month),
    ).fetchone()
    return row[0]


def total(conn: Connection, case_id: int) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(letters), 0) FROM letter_tally WHERE case_id = ?", (case_id,)
    ).fetchone()
    return row[0]


@dataclass(frozen=True)
class Ranked:
    case_id: int
    letters: int


def fewest(conn: Connection, case_ids: list[int], first_month: str, limit: int) -> list[Ranked]:
    """Of `case_ids`, those with the fewest letters since `first_month`, fewest first (ties:
    the oldest case first, as it has waited longest)."""
    if not case_ids:
        return []
    marks = ",".join("?" * len(case_ids))
    rows = conn.execute(
        "SELECT c.id, coalesce(sum(t.letters), 0) AS n FROM cases c "
        "LEFT JOIN letter_tally t ON t.case_id = c.id AND t.month >= ? "
        f"WHERE c.id IN ({marks}) GROUP BY c.id ORDER BY n, c.created_at, c.id LIMIT ?",
        (first_month, *case_ids, limit),
    ).fetchall()
    return [Ranked(r[0], r[1]) for r in rows]
