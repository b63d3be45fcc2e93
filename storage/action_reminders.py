"""Action reminders: when each fires, its progress through the recipients, what is due next.

Split from storage/actions.py (one table, one job); re-exported there for its callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.db import Connection


@dataclass(frozen=True)
class Reminder:
    occurrence_id: int
    offset_s: int
    due_at: float
    scope: str
    state: str
    phase: str
    cursor: int
    late: bool
    fired_at: float | None
    messages: int


_R_COLS = "occurrence_id, offset_s, due_at, scope, state, phase, cursor, late, fired_at, messages"


def _rem(row: tuple[Any, ...]) -> Reminder:
    values = list(row)
    values[7] = bool(values[7])
    return Reminder(*values)


def add_reminder(
    conn: Connection, occurrence_id: int, offset_s: int, due_at: float, scope: str
) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO reminders (occurrence_id, offset_s, due_at, scope, phase) "
        "VALUES (?, ?, ?, ?, ?)",
        (occurrence_id, offset_s, due_at, scope, scope),
    )


def reminders_due(conn: Connection, now: float, limit: int) -> list[Reminder]:
    rows = conn.execute(
        f"SELECT {_R_COLS} FROM reminders WHERE state IN ('pending', 'sending') AND due_at <= ? "
        "ORDER BY due_at, occurrence_id, offset_s LIMIT ?",
        (now, limit),
    ).fetchall()
    return [_rem(r) for r in rows]


def reminders_of(conn: Connection, occurrence_id: int) -> list[Reminder]:
    rows = conn.execute(
        f"SELECT {_R_COLS} FROM reminders WHERE occurrence_id = ? ORDER BY offset_s DESC",
        (occurrence_id,),
    ).fetchall()
    return [_rem(r) for r in rows]


def set_reminder(conn: Connection, occurrence_id: int, offset_s: int, **fields: Any) -> None:
    allowed = {"state", "phase", "cursor", "late", "fired_at", "done_at"}
    if not allowed.issuperset(fields):
        raise ValueError("not an updatable reminder column")
    sets = ", ".join(f"{k} = ?" for k in fields)
    conn.execute(
        f"UPDATE reminders SET {sets} WHERE occurrence_id = ? AND offset_s = ?",
        (*fields.values(), occurrence_id, offset_s),
    )


def save_progress(
    conn: Connection,
    occurrence_id: int,
    offset_s: int,
    *,
    state: str,
    phase: str,
    cursor: int,
    fired_at: float | None,
    late: bool,
    done_at: float | None,
    added: int,
) -> None:
    """One step of a reminder's fan-out: where it stands and how many messages it wrote."""
    conn.execute(
        "UPDATE reminders SET state = ?, phase = ?, cursor = ?, fired_at = ?, late = ?, "
        "done_at = ?, messages = messages + ? WHERE occurrence_id = ? AND offset_s = ?",
        (state, phase, cursor, fired_at, int(late), done_at, added, occurrence_id, offset_s),
    )


def skip_reminder(conn: Connection, occurrence_id: int, offset_s: int, now: float) -> None:
    conn.execute(
        "UPDATE reminders SET state = 'skipped', done_at = ? WHERE occurrence_id = ? "
        "AND offset_s = ?",
        (now, occurrence_id, offset_s),
    )
    conn.execute("UPDATE occurrences SET skipped = skipped + 1 WHERE id = ?", (occurrence_id,))


def drop_pending_reminders(conn: Connection, occurrence_id: int) -> None:
    conn.execute(
        "DELETE FROM reminders WHERE occurrence_id = ? AND state = 'pending'", (occurrence_id,)
    )


def reminder_stats(conn: Connection, action_id: int) -> dict[str, int]:
    """Reminders of an action by outcome; 'late' counts those sent with a delay note."""
    out: dict[str, int] = {}
    for state, late, n in conn.execute(
        "SELECT r.state, r.late, count(*) FROM reminders r "
        "JOIN occurrences o ON o.id = r.occurrence_id WHERE o.action_id = ? "
        "GROUP BY r.state, r.late",
        (action_id,),
    ):
        out[state] = out.get(state, 0) + n
        if late and state == "sent":
            out["late"] = out.get("late", 0) + n
    return out


# -- the next wake-up ---------------------------------------------------------------------


def next_wakeup(conn: Connection) -> float | None:
    """The earliest instant anything is due: a reminder, a reveal, a materialisation.
    Three index probes, whatever the number of actions."""
    found = [
        conn.execute(
            "SELECT min(due_at) FROM reminders WHERE state IN ('pending', 'sending')"
        ).fetchone()[0],
        conn.execute(
            "SELECT min(reveal_at) FROM occurrences WHERE reveal_at IS NOT NULL "
            "AND revealed_at IS NULL"
        ).fetchone()[0],
        conn.execute("SELECT min(horizon_at) FROM actions WHERE horizon_at IS NOT NULL").fetchone()[
            0
        ],
    ]
    due = [f for f in found if f is not None]
    return min(due) if due else None


def upcoming_reminders(conn: Connection, limit: int) -> list[tuple[float, int]]:
    """(due time, action id) of the next reminders, for `vigil status`."""
    rows = conn.execute(
        "SELECT r.due_at, o.action_id FROM reminders r "
        "JOIN occurrences o ON o.id = r.occurrence_id "
        "WHERE r.state IN ('pending', 'sending') ORDER BY r.due_at LIMIT ?",
        (limit,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]
