"""Conversation (flow) state per member, kept in the encrypted store, never in pickles.

The payload is opaque here: the flow engine (bot/flows.py) serialises it, and seals it for flows
whose answers must not outlive the process (report drafts)."""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Connection, scrubbed

SEALED_PREFIX = "sealed:"  # a secret flow's payload (bot/flows.py)


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
    """End the member's flow. A sealed draft is scrubbed: not even its ciphertext stays in
    the WAL once this commits."""
    row = conn.execute(
        "DELETE FROM conversations WHERE member_id = ? RETURNING data", (member_id,)
    ).fetchone()
    if row is not None and row[0].startswith(SEALED_PREFIX):
        scrubbed(conn)


def purge_stale(conn: Connection, cutoff: float) -> int:
    return conn.execute("DELETE FROM conversations WHERE updated_at < ?", (cutoff,)).rowcount
