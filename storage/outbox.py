"""Outbox: every message the bot sends is first a row here, written with the change behind it.

States:
    pending  -> sending  (claimed by the dispatcher; attempts + 1)
    sending  -> sent | failed | maybe_sent     (the transport's answer)
    sending  -> pending  (retry later, or handed back unsent: `unclaim`)
    pending  -> cancelled                      (/cancel of a broadcast)

Rows left in `sending` by a crash go back to `pending` at start (`recover_in_flight`). The
platform may already have some of them, so that is the one place a duplicate can arise. The
dispatcher hands a claimed row to the transport only inside its in-flight window, and a row
leaves `sending` only after the transport answered, so such duplicates are bounded by the
window (`Limits.in_flight`), not by how many rows were claimed.

Priorities (lower first): 0 emergency, 1 interactive reply, 2 alert, 3 bulk. Within a priority
rows go in `not_before` then id order; rows held back (quiet hours, retry back-off) have a
future `not_before` and are never scanned by a claim (index `outbox_due`, migration 003).

Rows of a fan-out (`broadcast_id`) move that fan-out's counters (broadcasts.materialised,
sent_count, failed_count, maybe_count, cancelled_count) in the same transaction as their own
state change, so progress is read without counting rows. Change fan-out rows' states only
through the functions here (e.g. `cancel_broadcast`), or the counters drift.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, cast

from storage.db import Connection, scrubbed

PRIORITIES = (0, 1, 2, 3)
TERMINAL = ("sent", "failed", "maybe_sent", "cancelled")


OutboxKind = Literal["message", "edit", "delete", "disappearing"]


class OutboxBody(TypedDict, total=False):
    """What a row asks the transport to do; stored as JSON in `outbox.body`."""

    text: str  # what the member reads ("" for a delete)
    choices: list[list[str]]  # [label, value] pairs: buttons, or a numbered menu on Signal
    kind: OutboxKind  # absent: "message"
    ref: str  # platform id of an incoming message (the carrier of a report, deleted)
    target: int  # outbox id of an earlier row of ours that this edits or deletes


@dataclass(frozen=True)
class Item:
    id: int
    transport: str
    chat: str
    member_id: int | None
    priority: int
    body: OutboxBody
    attempts: int
    broadcast_id: int | None
    error: str | None = None  # the previous attempt's error kind, if any
    created_at: float = 0.0


_INSERT = (
    "INSERT OR IGNORE INTO outbox (transport, chat, member_id, priority, body, idem_key, "
    "broadcast_id, not_before, created_at, sensitivity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Sensitivity classes (bot/notify.py decides where each may go). Every class but ORDINARY is
# deleted once its row is final (`scrub_final`).
ORDINARY, REPORT, URGENT, CODE, PLACE = "ordinary", "report", "urgent", "code", "place"
SENSITIVITIES = (ORDINARY, REPORT, URGENT, CODE, PLACE)
HELD = 9.0e15  # not_before of a row held until its recipient is trusted again (or linked)
WAITING_CHAT = ""  # chat of content waiting for the member to link a private transport


def dump_body(body: OutboxBody) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def enqueue(
    conn: Connection,
    *,
    transport: str,
    chat: str,
    body: OutboxBody,
    priority: int,
    now: float,
    member_id: int | None = None,
    idem_key: str | None = None,
    broadcast_id: int | None = None,
    not_before: float = 0,
    sensitivity: str = ORDINARY,
) -> int | None:
    """Insert a row; with an idempotency key a second insert of the same message is a no-op."""
    assert sensitivity in SENSITIVITIES
    cur = conn.execute(
        _INSERT,
        (
            transport,
            chat,
            member_id,
            priority,
            dump_body(body),
            idem_key,
            broadcast_id,
            not_before,
            now,
            sensitivity,
        ),
    )
    if cur.rowcount != 1:
        return None
    if broadcast_id is not None:
        bump(conn, broadcast_id, "materialised", 1)
    return cur.lastrowid


Row = tuple[str, str, int | None, int, str, str | None, int | None, float, float]


def enqueue_many(
    conn: Connection,
    rows: Iterable[Row],
    broadcast_id: int | None = None,
    sensitivity: str = ORDINARY,
) -> int:
    """Bulk insert of pre-serialised rows: (transport, chat, member_id, priority, body_json,
    idem_key, broadcast_id, not_before, created_at), all of fan-out `broadcast_id` if given and
    all of one sensitivity class. Returns how many were new."""
    assert sensitivity in SENSITIVITIES
    before = conn.total_changes
    conn.executemany(_INSERT, ((*row, sensitivity) for row in rows))
    new = conn.total_changes - before
    if broadcast_id is not None and new:
        bump(conn, broadcast_id, "materialised", new)
    return new


# Fan-out counters (broadcasts table, migration 003), moved in the same transaction as the
# state change they count, so a fan-out's progress is read without counting outbox rows.
_COUNTERS = {
    "materialised": "materialised",
    "sent": "sent_count",
    "failed": "failed_count",
    "maybe_sent": "maybe_count",
    "cancelled": "cancelled_count",
}


def bump(conn: Connection, broadcast_id: int, counter: str, n: int) -> None:
    column = _COUNTERS[counter]
    conn.execute(f"UPDATE broadcasts SET {column} = {column} + ? WHERE id = ?", (n, broadcast_id))


_CLAIM_COLS = (
    "id, transport, chat, member_id, priority, body, attempts, broadcast_id, error, created_at"
)


def claim(
    conn: Connection, transport: str, limit: int, now: float, max_priority: int = 3
) -> list[Item]:
    """Move up to `limit` due rows to `sending`, most urgent first."""
    rows: list[tuple[Any, ...]] = []
    for priority in PRIORITIES:
        if priority > max_priority or len(rows) >= limit:
            break
        rows += conn.execute(
            f"SELECT {_CLAIM_COLS} FROM outbox WHERE transport = ? AND state = 'pending' "
            "AND priority = ? AND not_before <= ? ORDER BY not_before, id LIMIT ?",
            (transport, priority, now, limit - len(rows)),
        ).fetchall()
    if rows:
        conn.executemany(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1 WHERE id = ?",
            [(r[0],) for r in rows],
        )
    return [
        Item(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            cast(OutboxBody, json.loads(r[5])),
            r[6] + 1,
            r[7],
            r[8],
            r[9],
        )
        for r in rows
    ]


def mark_sent(conn: Connection, item_id: int, platform_ref: str | None, now: float) -> None:
    row = conn.execute(
        "UPDATE outbox SET state = 'sent', platform_ref = ?, done_at = ?, error = NULL "
        "WHERE id = ? AND state NOT IN ('sent', 'failed', 'maybe_sent', 'cancelled') "
        "RETURNING broadcast_id",
        (platform_ref, now, item_id),
    ).fetchone()
    if row is not None and row[0] is not None:
        bump(conn, row[0], "sent", 1)


def mark_sent_many(conn: Connection, done: Sequence[tuple[int, str | None]], now: float) -> None:
    """Mark many rows sent in one go (the dispatcher batches the answers of concurrent sends)."""
    if not done:
        return
    refs = dict(done)
    marks = ",".join("?" * len(refs))
    moving = conn.execute(
        f"SELECT id, broadcast_id FROM outbox WHERE id IN ({marks}) "
        "AND state NOT IN ('sent', 'failed', 'maybe_sent', 'cancelled')",
        tuple(refs),
    ).fetchall()
    conn.executemany(
        "UPDATE outbox SET state = 'sent', platform_ref = ?, done_at = ?, error = NULL "
        "WHERE id = ?",
        [(refs[item_id], now, item_id) for item_id, _ in moving],
    )
    per_fanout: dict[int, int] = {}
    for _, broadcast_id in moving:
        if broadcast_id is not None:
            per_fanout[broadcast_id] = per_fanout.get(broadcast_id, 0) + 1
    for broadcast_id, n in per_fanout.items():
        bump(conn, broadcast_id, "sent", n)


def retry_later(conn: Connection, item_id: int, not_before: float, error: str) -> None:
    conn.execute(
        "UPDATE outbox SET state = 'pending', not_before = ?, error = ? WHERE id = ?",
        (not_before, error, item_id),
    )


def unclaim(conn: Connection, item_id: int, not_before: float, error: str | None = None) -> None:
    """Hand a claimed row back unsent (bulk paused, transport down): the attempt does not count."""
    conn.execute(
        "UPDATE outbox SET state = 'pending', not_before = ?, attempts = max(0, attempts - 1), "
        "error = coalesce(?, error) WHERE id = ? AND state = 'sending'",
        (not_before, error, item_id),
    )


def finish(conn: Connection, item_id: int, state: str, error: str, now: float) -> None:
    """Terminal states other than sent: failed, maybe_sent, cancelled."""
    row = conn.execute(
        "UPDATE outbox SET state = ?, error = ?, done_at = ? "
        "WHERE id = ? AND state NOT IN ('sent', 'failed', 'maybe_sent', 'cancelled') "
        "RETURNING broadcast_id",
        (state, error, now, item_id),
    ).fetchone()
    if row is not None and row[0] is not None:
        bump(conn, row[0], state, 1)


def recover_in_flight(conn: Connection) -> int:
    return conn.execute("UPDATE outbox SET state = 'pending' WHERE state = 'sending'").rowcount


def next_due(conn: Connection, transport: str, max_priority: int = 3) -> float | None:
    """The earliest not_before of a pending row (one index probe per priority)."""
    found: list[float] = []
    for priority in PRIORITIES:
        if priority > max_priority:
            break
        row = conn.execute(
            "SELECT min(not_before) FROM outbox WHERE transport = ? AND state = 'pending' "
            "AND priority = ?",
            (transport, priority),
        ).fetchone()
        if row[0] is not None:
            found.append(row[0])
    return min(found) if found else None


def depth(conn: Connection) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for transport, state, n in conn.execute(
        "SELECT transport, state, count(*) FROM outbox GROUP BY transport, state"
    ):
        out.setdefault(transport, {})[state] = n
    return out


def due_count(conn: Connection, now: float) -> int:
    """Rows a dispatcher would send now or is sending (held rows excluded)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM outbox WHERE state = 'sending') + "
        "(SELECT count(*) FROM outbox WHERE state = 'pending' AND not_before <= ?)",
        (now,),
    ).fetchone()
    return row[0]


def replace_pending_body(conn: Connection, item_id: int, body: OutboxBody) -> bool:
    """Rewrite a message that has not been claimed yet (coalescing progress edits)."""
    return (
        conn.execute(
            "UPDATE outbox SET body = ? WHERE id = ? AND state = 'pending'",
            (dump_body(body), item_id),
        ).rowcount
        == 1
    )


def platform_ref(conn: Connection, item_id: int) -> str | None:
    row = conn.execute("SELECT platform_ref FROM outbox WHERE id = ?", (item_id,)).fetchone()
    return row[0] if row else None


def target_state(conn: Connection, item_id: int) -> tuple[str, str | None] | None:
    """(state, platform_ref) of a row an edit refers to, or None when it is gone."""
    row = conn.execute("SELECT state, platform_ref FROM outbox WHERE id = ?", (item_id,)).fetchone()
    return (row[0], row[1]) if row else None


def fanout_pending(conn: Connection, broadcast_id: int, now: float) -> tuple[int, int]:
    """(pending, held) rows of a fan-out, held = waiting for a later time (quiet hours,
    back-off); from the fan-out's partial index, so it costs what is left, not what was sent."""
    row = conn.execute(
        "SELECT count(*), coalesce(sum(not_before > ?), 0) FROM outbox "
        "WHERE broadcast_id = ? AND state = 'pending'",
        (now, broadcast_id),
    ).fetchone()
    return row[0], row[1]


def due_backlog(conn: Connection, transport: str, priority: int, now: float, cap: int) -> int:
    """Due rows of one priority for a transport, counted up to `cap` (an index range)."""
    return conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE transport = ? AND state = 'pending' "
        "AND priority = ? AND not_before <= ? LIMIT ?)",
        (transport, priority, now, cap),
    ).fetchone()[0]


def cancel_broadcast(conn: Connection, broadcast_id: int, now: float) -> int:
    n = conn.execute(
        "UPDATE outbox SET state = 'cancelled', error = 'cancelled', done_at = ? "
        "WHERE broadcast_id = ? AND state = 'pending'",
        (now, broadcast_id),
    ).rowcount
    if n:
        bump(conn, broadcast_id, "cancelled", n)
    return n


WAIT_LIMIT = 3 * 86400.0  # held or waiting sensitive content older than this is dropped


def scrub_final(conn: Connection, now: float | None = None) -> int:
    """Delete every sensitive row whose delivery is over (sent, failed, maybe sent, cancelled):
    its words and the chat it went to are then gone, from the WAL too. The live copy of a
    report must be plaintext here until the transport has it; not a minute longer than the
    job's period. With `now`, sensitive rows held or waiting (for a /trust or a /link) longer
    than WAIT_LIMIT go too."""
    n = conn.execute(
        "DELETE FROM outbox WHERE sensitivity != 'ordinary' "
        "AND state IN ('sent', 'failed', 'maybe_sent', 'cancelled')"
    ).rowcount
    if now is not None:
        n += conn.execute(
            "DELETE FROM outbox WHERE sensitivity != 'ordinary' AND state = 'pending' "
            "AND not_before = ? AND created_at < ?",
            (HELD, now - WAIT_LIMIT),
        ).rowcount
    if n:
        scrubbed(conn)
    return n


def hold_chat(conn: Connection, transport: str, chat: str) -> int:
    """Keep every pending row to this chat back (its identity is quarantined)."""
    return conn.execute(
        "UPDATE outbox SET not_before = ? WHERE transport = ? AND chat = ? AND state = 'pending'",
        (HELD, transport, chat),
    ).rowcount


def release_chat(conn: Connection, transport: str, chat: str, now: float) -> int:
    return conn.execute(
        "UPDATE outbox SET not_before = ? WHERE transport = ? AND chat = ? AND state = 'pending' "
        "AND not_before = ?",
        (now, transport, chat, HELD),
    ).rowcount


def deliver_waiting(conn: Connection, member_id: int, transport: str, chat: str, now: float) -> int:
    """The member linked `transport`: content kept for it goes to this chat now."""
    return conn.execute(
        "UPDATE outbox SET chat = ?, not_before = ? WHERE member_id = ? AND transport = ? "
        "AND chat = ? AND state = 'pending'",
        (chat, now, member_id, transport, WAITING_CHAT),
    ).rowcount


def purge_done(conn: Connection, cutoff: float) -> int:
    return conn.execute(
        "DELETE FROM outbox WHERE state IN ('sent', 'failed', 'maybe_sent', 'cancelled') "
        "AND done_at < ?",
        (cutoff,),
    ).rowcount
