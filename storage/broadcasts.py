"""Fan-outs: broadcasts and case alerts, streamed into the outbox in chunks (migration 003).

A fan-out row keeps a cursor (the last member id materialised). Recipients are read in member
id order, a chunk at a time, and written to the outbox in the same transaction that moves the
cursor, so a crash never skips anyone and a re-run never writes a message twice (idempotency
keys). Segments: 'all', 'case:<case id>', 'role:<role>', 'lang:<code>', and 'subs:<case id>'
(an alert: the case's followers only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.db import Connection

DRAFT = "draft"
RUNNING = "running"
DONE = "done"
CANCELLED = "cancelled"
EXPIRED = "expired"


@dataclass(frozen=True)
class Broadcast:
    id: int
    kind: str
    state: str
    segment: str
    body: dict[str, Any]
    priority: int
    author_id: int | None
    case_id: int | None
    update_id: int | None
    expected: int
    cursor: int
    exhausted: bool
    materialised: int
    sent_count: int
    failed_count: int
    maybe_count: int
    cancelled_count: int
    progress_transport: str | None
    progress_chat: str | None
    progress_id: int | None
    progress_edit_id: int | None
    progress_text: str | None
    progress_at: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    # Reaches open supporters too (migration 073): a broadcast marked `public`, or a case alert
    # without relatives' news. False: vetted members only.
    public: bool = False


_COLS = (
    "id, kind, state, segment, body, priority, author_id, case_id, update_id, expected, cursor, "
    "exhausted, materialised, sent_count, failed_count, maybe_count, cancelled_count, "
    "progress_transport, progress_chat, progress_id, progress_edit_id, "
    "progress_text, progress_at, created_at, started_at, finished_at, public"
)


def _row(r: tuple[Any, ...]) -> Broadcast:  # body JSON and the exhausted flag converted
    values = list(r)
    values[4] = json.loads(values[4])
    values[11] = bool(values[11])
    values[26] = bool(values[26])
    return Broadcast(*values)


def create(
    conn: Connection,
    *,
    kind: str,
    segment: str,
    body: dict[str, Any],
    priority: int,
    now: float,
    state: str = DRAFT,
    author_id: int | None = None,
    case_id: int | None = None,
    update_id: int | None = None,
    expected: int = 0,
    public: bool = False,
) -> int | None:
    """A new fan-out; None when one already exists for this case update. `public`: open
    supporters are in its audience too (storage/audience.py)."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO broadcasts (kind, state, segment, body, priority, author_id, "
        "case_id, update_id, expected, created_at, started_at, public) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            kind,
            state,
            segment,
            json.dumps(body, ensure_ascii=False),
            priority,
            author_id,
            case_id,
            update_id,
            expected,
            now,
            now if state == RUNNING else None,
            int(public),
        ),
    )
    return cur.lastrowid if cur.rowcount == 1 else None


def get(conn: Connection, broadcast_id: int) -> Broadcast | None:
    row = conn.execute(f"SELECT {_COLS} FROM broadcasts WHERE id = ?", (broadcast_id,)).fetchone()
    return _row(row) if row else None


def set_translation(conn: Connection, broadcast_id: int, language: str, text: str) -> bool:
    """Add (or replace) a draft's text for one language; False once it is no longer a draft.
    Kept in the body next to the original, so the fan-out and its retries read one row."""
    b = get(conn, broadcast_id)
    if b is None or b.state != DRAFT:
        return False
    body = dict(b.body)
    body["translations"] = {**body.get("translations", {}), language: text}
    conn.execute(
        "UPDATE broadcasts SET body = ? WHERE id = ? AND state = 'draft'",
        (json.dumps(body, ensure_ascii=False), broadcast_id),
    )
    return True


def latest_draft(conn: Connection, author_id: int, since: float) -> Broadcast | None:
    row = conn.execute(
        f"SELECT {_COLS} FROM broadcasts WHERE state = 'draft' AND author_id = ? "
        "AND created_at >= ? AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.state = "
        "'pending' AND a.subject = 'broadcast:' || broadcasts.id) ORDER BY id DESC LIMIT 1",
        (author_id, since),
    ).fetchone()
    return _row(row) if row else None


def drafts_of(conn: Connection, author_id: int, since: float) -> list[Broadcast]:
    rows = conn.execute(
        f"SELECT {_COLS} FROM broadcasts WHERE state = 'draft' AND author_id = ? "
        "AND kind = 'broadcast' AND created_at >= ? ORDER BY id",
        (author_id, since),
    ).fetchall()
    return [_row(r) for r in rows]


def unfinished(conn: Connection) -> list[Broadcast]:
    """Fan-outs not yet finished (for broadcasts: whose author has not had the summary)."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM broadcasts WHERE state IN ('running', 'cancelled') "
        "AND finished_at IS NULL ORDER BY id"
    ).fetchall()
    return [_row(r) for r in rows]


def materialising(conn: Connection) -> list[Broadcast]:
    """Running fan-outs with recipients not yet written to the outbox, most urgent first."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM broadcasts WHERE state = 'running' AND exhausted = 0 "
        "ORDER BY priority, id"
    ).fetchall()
    return [_row(r) for r in rows]


def start(
    conn: Connection,
    broadcast_id: int,
    now: float,
    *,
    expected: int,
    progress_transport: str | None = None,
    progress_chat: str | None = None,
) -> bool:
    return (
        conn.execute(
            "UPDATE broadcasts SET state = 'running', started_at = ?, expected = ?, "
            "progress_transport = ?, progress_chat = ? WHERE id = ? AND state = 'draft'",
            (now, expected, progress_transport, progress_chat, broadcast_id),
        ).rowcount
        == 1
    )


def advance(conn: Connection, broadcast_id: int, cursor: int, exhausted: bool) -> None:
    conn.execute(
        "UPDATE broadcasts SET cursor = ?, exhausted = ? WHERE id = ?",
        (cursor, int(exhausted), broadcast_id),
    )


def set_state(conn: Connection, broadcast_id: int, state: str) -> None:
    conn.execute("UPDATE broadcasts SET state = ? WHERE id = ?", (state, broadcast_id))


def set_progress(
    conn: Connection,
    broadcast_id: int,
    *,
    text: str,
    at: float,
    progress_id: int | None = None,
    edit_id: int | None = None,
) -> None:
    conn.execute(
        "UPDATE broadcasts SET progress_text = ?, progress_at = ?, "
        "progress_id = coalesce(?, progress_id), progress_edit_id = coalesce(?, progress_edit_id) "
        "WHERE id = ?",
        (text, at, progress_id, edit_id, broadcast_id),
    )


def finish(conn: Connection, broadcast_id: int, now: float) -> None:
    conn.execute(
        "UPDATE broadcasts SET finished_at = ?, "
        "state = CASE state WHEN 'running' THEN 'done' ELSE state END WHERE id = ?",
        (now, broadcast_id),
    )


def expire_drafts(conn: Connection, before: float) -> int:
    return conn.execute(
        # A draft waiting for a second person lives as long as its approval (24 h).
        "UPDATE broadcasts SET state = 'expired' WHERE state = 'draft' AND created_at < ? "
        "AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.state = 'pending' "
        "AND a.subject = 'broadcast:' || broadcasts.id)",
        (before,),
    ).rowcount


def alerts_since(
    conn: Connection, case_ids: list[int] | None, since: float, until: float
) -> list[Broadcast]:
    """Alerts published in (since, until], for the given cases (None: every case)."""
    sql = (
        f"SELECT {_COLS} FROM broadcasts WHERE kind = 'alert' AND state IN ('running', 'done') "
        "AND created_at > ? AND created_at <= ?"
    )
    args: list[Any] = [since, until]
    if case_ids is not None:
        if not case_ids:
            return []
        sql += f" AND case_id IN ({','.join('?' * len(case_ids))})"
        args += case_ids
    rows = conn.execute(sql + " ORDER BY id", args).fetchall()
    return [_row(r) for r in rows]
