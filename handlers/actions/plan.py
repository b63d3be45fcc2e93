"""Occurrences and reminders materialised from an action's rule, ahead of time."""

from __future__ import annotations

from datetime import date, datetime, time

from bot import recurrence as rec
from handlers.actions.model import DEFAULT_REVEAL, LOOKAHEAD, MAX_CATCHUP, rule_of, utc
from handlers.common import zone
from storage import actions, series
from storage.actions import Action
from storage.db import Connection


def _next_start(action: Action, after: float) -> float | None:
    if action.once_at is not None:
        return action.once_at if action.once_at > after else None
    nxt = rec.next_occurrence(
        rule_of(action), zone(action.timezone), utc(after), until=until_of(action)
    )
    return nxt.timestamp() if nxt is not None else None


def until_of(action: Action) -> date | None:
    """The series' last local date, or None when it has no end."""
    return date.fromisoformat(action.until_date) if action.until_date else None


def _reminder_start(action: Action, start: float) -> float:
    """The instant reminders count back from: a date-only hearing counts as 09:00."""
    if not action.all_day:
        return start
    local = datetime.fromtimestamp(start, zone(action.timezone)).date()
    nine = datetime.combine(local, time(9, 0)).replace(tzinfo=zone(action.timezone), fold=0)
    return nine.timestamp()


def reveal_at(action: Action, start: float, ref: float) -> float | None:
    if not action.exact_place:
        return None
    return max(ref, start - (action.reveal_before or DEFAULT_REVEAL))


def plan_reminders(conn: Connection, action: Action, occ_id: int, start: float, ref: float) -> None:
    """Reminder rows of one occurrence: each offset due at or after `ref` (the instant this
    planning was due); the invitation moves up to `ref` when its time has passed."""
    offsets = action.reminders
    if not offsets:
        return
    invite = max(offsets)
    anchor = _reminder_start(action, start)
    for offset in offsets:
        due = anchor - offset
        scope = "audience" if offset == invite else "rsvp"
        if due < ref:
            if scope != "audience" or anchor <= ref:
                continue
            due = ref
        actions.add_reminder(conn, occ_id, offset, due, scope)


def materialise(conn: Connection, action: Action, now: float, ref: float | None = None) -> int:
    """Create the occurrences the action needs by `now`: every one starting within the
    longest reminder + LOOKAHEAD, and at least the next one. `ref` is when this was due (the
    action's horizon after a downtime), so reminders that fell due meanwhile are planned, found
    late and handled by the missed-while-down policy rather than never existing."""
    ref = now if ref is None else min(ref, now)
    if action.state != actions.ACTIVE:
        actions.update(conn, action.id, horizon_at=None)
        return 0
    cursor = action.last_start if action.last_start is not None else action.created_at - 1
    reach = max(action.reminders, default=0) + LOOKAHEAD
    created = 0
    horizon: float | None = None
    while True:
        start = _next_start(action, cursor)
        if start is None:
            break
        if created >= MAX_CATCHUP:
            horizon = now  # a long downtime: the rest in the next call
            break
        if start > now + reach:
            ahead = actions.next_occurrence(conn, action.id, now)
            if ahead is not None:
                # Come back when the next one is within reach, or when the one ahead starts.
                horizon = min(start - reach, ahead.start_at)
                break
        occ_id = actions.add_occurrence(conn, action.id, start, reveal_at(action, start, ref))
        if occ_id is not None:
            plan_reminders(conn, action, occ_id, start, ref)
            series.fill_occurrence(conn, action.id, occ_id, now)
            created += 1
        cursor = start
    actions.update(conn, action.id, last_start=cursor, horizon_at=horizon)
    return created


def ensure_materialised(conn: Connection, action: Action, now: float) -> None:
    if action.horizon_at is not None and action.horizon_at <= now:
        materialise(conn, action, now, ref=action.horizon_at)
