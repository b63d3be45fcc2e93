"""Audit log of privileged acts: actor id, action name, target id. Never content."""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Connection


@dataclass(frozen=True)
class Entry:
    id: int
    at: float
    actor_id: int | None
    action: str
    target: str | None


def record(
    conn: Connection, actor_id: int | None, action: str, target: str | None, now: float
) -> None:
    conn.execute(
        "INSERT INTO audit (at, actor_id, action, target) VALUES (?, ?, ?, ?)",
        (now, actor_id, action, target),
    )


def recent(conn: Connection, limit: int = 20) -> list[Entry]:
    rows = conn.execute(
        "SELECT id, at, actor_id, action, target FROM audit ORDER BY id DESC LIMIT ?", (limit,)
    ).fetchall()
    return [Entry(*r) for r in rows]
