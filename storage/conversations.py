"""Conversation (flow) state per member, kept in the encrypted store, never in pickles.

The payload is opaque here: the flow engine (bot/flows.py) serialises it, and seals it for flows
whose answers must not outlive the process (report drafts)."""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Connection


@dataclass
class Conversation:
    flow: str
    step: str
    data: str
    updated_at: float = 0.0


def get(conn: Connection, member_id: int) -> Conversation | None:
    row = conn.execute(
        "SELECT flow, step, data, updated_at FROM conversations WHERE member_id = ?", (member_id,)
    ).fetchone()
    return Conversation(row[0], row[1], row[2], row[3]) if row else None


def put(conn: Connection, member_id: int, conv: Conversation, now: float) -> None:
    conn.execute(
        "INSERT INTO conversations (member_id, flow, step, data, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(member_id) DO UPDATE SET flow = excluded.flow, step = excluded.step,"
        " data = excluded.data, updated_at = excluded.updated_at",
        (member_id, conv.flow, conv.step, conv.data, now),
    )


def clear(conn: Connection, member_id: int) -> None:
    conn.execute("DELETE FROM conversations WHERE member_id = ?", (member_id,))


def purge_stale(conn: Connection, cutoff: float) -> int:
    return conn.execute("DELETE FROM conversations WHERE updated_at < ?", (cutoff,)).rowcount
