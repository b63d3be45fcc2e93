"""Solidarity actions, their occurrences and RSVPs (migration 004); reminders in action_reminders.

Repository functions only: SQL and row mapping. When things happen (materialising occurrences
from a rule, firing reminders, the missed-while-down policy) is decided in handlers/actions/.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from storage import members
from storage.action_reminders import (  # noqa: F401 - re-exported for callers
    Reminder,
    add_reminder,
    drop_pending_reminders,
    next_wakeup,
    reminder_stats,
    reminders_due,
    reminders_of,
    save_progress,
    set_reminder,
    skip_reminder,
    upcoming_reminders,
)
from storage.db import Connection

KINDS = ("vigil", "protest", "hearing", "letters", "callin", "online", "other")
ACTIVE, ENDED, CANCELLED = "active", "ended", "cancelled"


@dataclass(frozen=True)
class Action:
    id: int
    kind: str
    title: str | None
    case_id: int | None
    rule: str
    timezone: str
    once_at: float | None
    all_day: bool
    place: str | None
    exact_place: str | None
    reveal_before: int | None
    audience: str
    reminders: tuple[int, ...]
    state: str
    origin: str
    created_by: int | None
    created_at: float
    last_start: float | None
    horizon_at: float | None
    until_date: str | None = None  # the series' last local date (migration 070)


_COLS = (
    "id, kind, title, case_id, rule, timezone, once_at, all_day, place, exact_place, "
    "reveal_before, audience, reminders, state, origin, created_by, created_at, last_start, "
    "horizon_at, until_date"
)
_A_COLS = ", ".join("a." + c.strip() for c in _COLS.split(","))


def parse_offsets(text: str | None) -> tuple[int, ...]:
    return tuple(sorted({int(x) for x in (text or "").split(",") if x.strip()}, reverse=True))


def _action(row: tuple[Any, ...]) -> Action:
    values = list(row)
    values[7] = bool(values[7])
    values[12] = parse_offsets(values[12])
    return Action(*values)


def create(
    conn: Connection,
    *,
    kind: str,
    title: str | None,
    case_id: int | None,
    rule: str,
    timezone: str,
    once_at: float | None,
    audience: str,
    reminders: Iterable[int],
    now: float,
    place: str | None = None,
    all_day: bool = False,
    origin: str = "manual",
    created_by: int | None = None,
) -> int:
    cur = conn.execute(
        "INSERT INTO actions (kind, title, case_id, rule, timezone, once_at, all_day, place, "
        "audience, reminders, origin, created_by, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            kind, title, case_id, rule, timezone, once_at, int(all_day), place, audience,
            ",".join(str(o) for o in sorted(set(reminders), reverse=True)), origin, created_by,
            now,
        ),
    )  # fmt: skip
    assert cur.lastrowid is not None
    return cur.lastrowid


def get(conn: Connection, action_id: int) -> Action | None:
    row = conn.execute(f"SELECT {_COLS} FROM actions WHERE id = ?", (action_id,)).fetchone()
    return _action(row) if row else None


def by_origin(conn: Connection, origin: str, case_id: int | None = None) -> Action | None:
    """The live action of a built-in origin ('hearing' per case, 'template:<name>')."""
    if case_id is None:
        row = conn.execute(
            f"SELECT {_COLS} FROM actions WHERE origin = ? AND state = 'active'", (origin,)
        ).fetchone()
    else:
        row = conn.execute(
            f"SELECT {_COLS} FROM actions WHERE origin = ? AND case_id = ? AND state = 'active'",
            (origin, case_id),
        ).fetchone()
    return _action(row) if row else None


# Columns `update` may set (never interpolated from input).
_UPDATABLE = frozenset(
    {
        "kind", "title", "rule", "timezone", "once_at", "all_day", "place", "exact_place",
        "reveal_before", "audience", "reminders", "state", "last_start", "horizon_at",
        "until_date",
    }
)  # fmt: skip


def update(conn: Connection, action_id: int, **fields: Any) -> None:
    if not fields:
        return
    if not _UPDATABLE.issuperset(fields):
        raise ValueError("not an updatable action column")
    if "reminders" in fields and not isinstance(fields["reminders"], str):
        fields["reminders"] = ",".join(
            str(o) for o in sorted(set(fields["reminders"]), reverse=True)
        )
    if "all_day" in fields:
        fields["all_day"] = int(fields["all_day"])
    sets = ", ".join(f"{k} = ?" for k in fields)
    conn.execute(f"UPDATE actions SET {sets} WHERE id = ?", (*fields.values(), action_id))


def needing_materialisation(conn: Connection, now: float, limit: int) -> list[Action]:
    rows = conn.execute(
        f"SELECT {_COLS} FROM actions WHERE horizon_at <= ? AND state = 'active' "
        "ORDER BY horizon_at LIMIT ?",
        (now, limit),
    ).fetchall()
    return [_action(r) for r in rows]


# -- occurrences --------------------------------------------------------------------------


@dataclass(frozen=True)
class Occurrence:
    id: int
    action_id: int
    start_at: float
    state: str
    reveal_at: float | None
    revealed_at: float | None
    skipped: int
    going: int | None


_O_COLS = "id, action_id, start_at, state, reveal_at, revealed_at, skipped, going"


def _occ(row: tuple[Any, ...]) -> Occurrence:
    return Occurrence(*row)


def add_occurrence(
    conn: Connection, action_id: int, start_at: float, reveal_at: float | None
) -> int | None:
    """A new occurrence; None when this action already has one at that instant. A cancelled
    one at the same instant (an edit that came back to the old time) is replaced."""
    conn.execute(
        "DELETE FROM occurrences WHERE action_id = ? AND start_at = ? AND state = 'cancelled'",
        (action_id, start_at),
    )
    cur = conn.execute(
        "INSERT OR IGNORE INTO occurrences (action_id, start_at, reveal_at) VALUES (?, ?, ?)",
        (action_id, start_at, reveal_at),
    )
    return cur.lastrowid if cur.rowcount == 1 else None


def get_occurrence(conn: Connection, occurrence_id: int) -> Occurrence | None:
    row = conn.execute(
        f"SELECT {_O_COLS} FROM occurrences WHERE id = ?", (occurrence_id,)
    ).fetchone()
    return _occ(row) if row else None


def next_occurrence(conn: Connection, action_id: int, now: float) -> Occurrence | None:
    """The first scheduled occurrence that has not started."""
    row = conn.execute(
        f"SELECT {_O_COLS} FROM occurrences WHERE action_id = ? AND state = 'scheduled' "
        "AND start_at > ? ORDER BY start_at LIMIT 1",
        (action_id, now),
    ).fetchone()
    return _occ(row) if row else None


def future_occurrences(conn: Connection, action_id: int, now: float) -> list[Occurrence]:
    rows = conn.execute(
        f"SELECT {_O_COLS} FROM occurrences WHERE action_id = ? AND state = 'scheduled' "
        "AND start_at > ? ORDER BY start_at",
        (action_id, now),
    ).fetchall()
    return [_occ(r) for r in rows]


def recent_occurrences(
    conn: Connection, action_id: int, now: float, limit: int
) -> list[Occurrence]:
    rows = conn.execute(
        f"SELECT {_O_COLS} FROM occurrences WHERE action_id = ? AND start_at <= ? "
        "ORDER BY start_at DESC LIMIT ?",
        (action_id, now, limit),
    ).fetchall()
    return [_occ(r) for r in rows]


def cancel_occurrence(conn: Connection, occurrence_id: int) -> None:
    conn.execute("UPDATE occurrences SET state = 'cancelled' WHERE id = ?", (occurrence_id,))
    conn.execute(
        "UPDATE reminders SET state = 'cancelled' WHERE occurrence_id = ? "
        "AND state IN ('pending', 'sending')",
        (occurrence_id,),
    )


def move_occurrence(
    conn: Connection, occurrence_id: int, start_at: float, reveal_at: float | None
) -> None:
    """A one-off moved to another time: its RSVPs stay; its reminders are planned again from
    scratch (their outbox keys carry the start, so an invitation already sent for the old
    time does not stop the one for the new time)."""
    conn.execute(
        "DELETE FROM occurrences WHERE action_id = (SELECT action_id FROM occurrences "
        "WHERE id = ?) AND start_at = ? AND state = 'cancelled'",
        (occurrence_id, start_at),
    )
    conn.execute(
        "UPDATE occurrences SET start_at = ?, reveal_at = ?, revealed_at = NULL WHERE id = ?",
        (start_at, reveal_at, occurrence_id),
    )
    conn.execute("DELETE FROM reminders WHERE occurrence_id = ?", (occurrence_id,))


def set_reveal(conn: Connection, occurrence_id: int, reveal_at: float | None) -> None:
    conn.execute(
        "UPDATE occurrences SET reveal_at = ?, revealed_at = NULL WHERE id = ?",
        (reveal_at, occurrence_id),
    )


def reveals_due(conn: Connection, now: float, limit: int) -> list[Occurrence]:
    rows = conn.execute(
        f"SELECT {_O_COLS} FROM occurrences WHERE reveal_at <= ? AND revealed_at IS NULL "
        "ORDER BY reveal_at LIMIT ?",
        (now, limit),
    ).fetchall()
    return [_occ(r) for r in rows]


def mark_revealed(conn: Connection, occurrence_id: int, now: float, missed: bool) -> None:
    conn.execute(
        "UPDATE occurrences SET revealed_at = ?, skipped = skipped + ? WHERE id = ?",
        (now, int(missed), occurrence_id),
    )


# -- RSVPs --------------------------------------------------------------------------------


def join(conn: Connection, occurrence_id: int, member_id: int, now: float) -> bool:
    cur = conn.execute(
        "INSERT OR IGNORE INTO rsvps (occurrence_id, member_id, created_at) VALUES (?, ?, ?)",
        (occurrence_id, member_id, now),
    )
    return cur.rowcount == 1


def leave(conn: Connection, occurrence_id: int, member_id: int) -> bool:
    cur = conn.execute(
        "DELETE FROM rsvps WHERE occurrence_id = ? AND member_id = ?", (occurrence_id, member_id)
    )
    return cur.rowcount == 1


def is_going(conn: Connection, occurrence_id: int, member_id: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM rsvps WHERE occurrence_id = ? AND member_id = ?", (occurrence_id, member_id)
    ).fetchone()
    return row is not None


def going_among(conn: Connection, occurrence_id: int, member_ids: list[int]) -> set[int]:
    if not member_ids:
        return set()
    marks = ",".join("?" * len(member_ids))
    rows = conn.execute(
        f"SELECT member_id FROM rsvps WHERE occurrence_id = ? AND member_id IN ({marks})",
        (occurrence_id, *member_ids),
    ).fetchall()
    return {r[0] for r in rows}


def headcount(conn: Connection, occurrence_id: int) -> int:
    row = conn.execute(
        "SELECT coalesce((SELECT going FROM occurrences WHERE id = ?), "
        "(SELECT count(*) FROM rsvps WHERE occurrence_id = ?))",
        (occurrence_id, occurrence_id),
    ).fetchone()
    return row[0]


def rsvp_ids(conn: Connection, occurrence_id: int, cursor: int, limit: int) -> list[int]:
    rows = conn.execute(
        "SELECT member_id FROM rsvps WHERE occurrence_id = ? AND member_id > ? "
        "ORDER BY member_id LIMIT ?",
        (occurrence_id, cursor, limit),
    ).fetchall()
    return [r[0] for r in rows]


def member_rows(
    conn: Connection, ids: list[int]
) -> list[tuple[int, str, str | None, str | None, str | None, str | None, str | None]]:
    """(id, role, language, timezone, quiet hours, transport, chat) per member, on the one
    identity a message goes to (chat None for a member who has none, or whose only one is
    quarantined: reminders are not worth holding)."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    return conn.execute(
        "SELECT m.id, m.role, m.language, m.timezone, m.quiet_hours, i.transport, "
        "CASE WHEN i.quarantined THEN NULL ELSE i.chat END "
        f"FROM members m {members.ROUTE_JOIN}"
        f"WHERE m.id IN ({marks}) ORDER BY m.id",
        ids,
    ).fetchall()


def tied_among(conn: Connection, case_id: int, ids: list[int]) -> set[int]:
    """Those of `ids` tied to the case (relatives, assigned coordinators)."""
    if not ids:
        return set()
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT member_id FROM case_members WHERE case_id = ? AND member_id IN ({marks})",
        (case_id, *ids),
    ).fetchall()
    return {r[0] for r in rows}


def settle_past(conn: Connection, before: float) -> int:
    """Occurrences that took place before `before`: keep the headcount, drop who came."""
    rows = conn.execute(
        "SELECT id FROM occurrences WHERE start_at < ? AND going IS NULL LIMIT 500", (before,)
    ).fetchall()
    for (occ_id,) in rows:
        conn.execute(
            "UPDATE occurrences SET going = (SELECT count(*) FROM rsvps WHERE occurrence_id = ?) "
            "WHERE id = ?",
            (occ_id, occ_id),
        )
        conn.execute("DELETE FROM rsvps WHERE occurrence_id = ?", (occ_id,))
    return len(rows)


def end_past_one_offs(conn: Connection, now: float) -> int:
    """One-off actions whose time has passed end; the exact meeting point is forgotten."""
    return conn.execute(
        "UPDATE actions SET state = 'ended', exact_place = NULL, horizon_at = NULL "
        "WHERE state = 'active' AND once_at IS NOT NULL AND once_at <= ?",
        (now,),
    ).rowcount


# -- listing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    action: Action
    occurrence: Occurrence


def upcoming_for(
    conn: Connection,
    now: float,
    *,
    member_id: int,
    role: str,
    coordinator: bool,
    limit: int,
    before: float | None = None,
) -> list[Listed]:
    """The next occurrences of actions this member may see, soonest first (with `before`,
    only those starting before it).

    Visible: the action's case (if any) is public or the member is tied to it, and the member
    is in the audience ('all', 'case', or their role). Coordinators and admins see every one.
    """
    where = ""
    args: list[Any] = [now]
    if not coordinator:
        where = (
            "AND (a.case_id IS NULL OR c.visibility = 'public' OR EXISTS (SELECT 1 FROM "
            "case_members cm WHERE cm.case_id = a.case_id AND cm.member_id = ?)) "
            "AND (a.audience IN ('all', 'case') OR a.audience = ?)"
        )
        args += [member_id, f"role:{role}"]
    if before is not None:
        where += " AND o.start_at < ?"
        args.append(before)
    rows = conn.execute(
        f"SELECT {_A_COLS}, o.id, o.action_id, o.start_at, o.state, o.reveal_at, o.revealed_at, "
        "o.skipped, o.going FROM occurrences o JOIN actions a ON a.id = o.action_id "
        "LEFT JOIN cases c ON c.id = a.case_id "
        f"WHERE o.state = 'scheduled' AND o.start_at > ? AND a.state = 'active' {where} "
        "ORDER BY o.start_at, o.id",
        args,
    )
    out: list[Listed] = []
    seen: set[int] = set()
    n = len(_COLS.split(","))
    for r in rows:
        action = _action(r[:n])
        if action.id in seen:  # the next occurrence of each action only
            continue
        seen.add(action.id)
        out.append(Listed(action, _occ(r[n:])))
        if len(out) == limit:
            break
    rows.close()
    return out
