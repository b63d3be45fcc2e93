"""Pending approvals of the two-person rule (migration 072): create, read, decide, expire."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.db import Connection

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
VOID = "void"  # what it would act on is gone (the member left, the draft was dropped)


@dataclass(frozen=True)
class Approval:
    id: int
    kind: str
    subject: str
    payload: dict[str, Any]
    initiator_id: int | None
    case_id: int | None
    state: str
    created_at: float
    expires_at: float
    decided_by: int | None
    decided_at: float | None


_COLS = (
    "id, kind, subject, payload, initiator_id, case_id, state, created_at, expires_at, "
    "decided_by, decided_at"
)


def _row(r: tuple[Any, ...]) -> Approval:
    values = list(r)
    values[3] = json.loads(values[3])
    return Approval(*values)


def create(
    conn: Connection,
    *,
    kind: str,
    subject: str,
    payload: dict[str, Any],
    initiator_id: int,
    case_id: int | None,
    now: float,
    ttl: float,
) -> int:
    cur = conn.execute(
        "INSERT INTO approvals (kind, subject, payload, initiator_id, case_id, created_at, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (kind, subject, json.dumps(payload), initiator_id, case_id, now, now + ttl),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def get(conn: Connection, approval_id: int) -> Approval | None:
    row = conn.execute(f"SELECT {_COLS} FROM approvals WHERE id = ?", (approval_id,)).fetchone()
    return _row(row) if row else None


def pending_for_subject(conn: Connection, subject: str) -> Approval | None:
    row = conn.execute(
        f"SELECT {_COLS} FROM approvals WHERE subject = ? AND state = 'pending' "
        "ORDER BY id DESC LIMIT 1",
        (subject,),
    ).fetchone()
    return _row(row) if row else None


def pending(conn: Connection) -> list[Approval]:
    rows = conn.execute(
        f"SELECT {_COLS} FROM approvals WHERE state = 'pending' ORDER BY id"
    ).fetchall()
    return [_row(r) for r in rows]


def decide(conn: Connection, approval_id: int, state: str, by: int | None, now: float) -> bool:
    """Move a pending, unexpired approval to `state`; False when it was no longer pending (a
    second /approve, a race with expiry): the act then runs at most once."""
    cond = "AND expires_at <= ?" if state == EXPIRED else "AND expires_at > ?"
    return (
        conn.execute(
            "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ? "
            f"WHERE id = ? AND state = 'pending' {cond}",
            (state, by, now, approval_id, now),
        ).rowcount
        == 1
    )


def void(conn: Connection, approval_id: int, now: float) -> bool:
    """Pending or just approved, but what it acts on is gone: nothing was done."""
    return (
        conn.execute(
            "UPDATE approvals SET state = 'void', decided_at = ? "
            "WHERE id = ? AND state IN ('pending', 'approved')",
            (now, approval_id),
        ).rowcount
        == 1
    )


def due_to_expire(conn: Connection, now: float) -> list[Approval]:
    rows = conn.execute(
        f"SELECT {_COLS} FROM approvals WHERE state = 'pending' AND expires_at <= ? ORDER BY id",
        (now,),
    ).fetchall()
    return [_row(r) for r in rows]


def count_pending(conn: Connection) -> int:
    return conn.execute("SELECT count(*) FROM approvals WHERE state = 'pending'").fetchone()[0]
