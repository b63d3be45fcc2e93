"""Creating, moving and cancelling actions, and telling those who joined."""

from __future__ import annotations

from collections.abc import Callable

from bot import recurrence as rec
from bot.i18n import Translator
from bot.messages import Priority
from bot.notify import notify_member
from handlers.actions.model import CHUNK, RSVP_KEEP, utc
from handlers.actions.plan import materialise, plan_reminders, reveal_at
from handlers.actions.render import action_title, fmt_when
from handlers.common import safe_zone
from storage import actions, cases, members, series
from storage.actions import Action, Occurrence
from storage.db import Connection


def housekeeping(conn: Connection, now: float) -> int:
    """Forget who joined past occurrences (keep the count) and end past one-offs."""
    actions.settle_past(conn, now - RSVP_KEEP)
    series.forget_skips(conn, now - RSVP_KEEP)
    actions.end_past_one_offs(conn, now)
    return 0


def upcoming(conn: Connection) -> list[tuple[str, str]]:
    """Next reminders for `vigil status`: time and action number, no titles."""
    return [
        (utc(due).strftime("%Y-%m-%dT%H:%M:%SZ"), f"reminder for action #{action_id}")
        for due, action_id in actions.upcoming_reminders(conn, 5)
    ]


def create_action(
    conn: Connection,
    *,
    kind: str,
    title: str | None,
    case_id: int | None,
    rule: rec.Rule,
    tz: str,
    once_at: float | None,
    audience: str,
    reminders: tuple[int, ...],
    now: float,
    place: str | None = None,
    all_day: bool = False,
    origin: str = "manual",
    created_by: int | None = None,
    until_date: str | None = None,
) -> Action:
    action_id = actions.create(
        conn, kind=kind, title=title, case_id=case_id, rule=rec.format_rule(rule), timezone=tz,
        once_at=once_at, audience=audience, reminders=reminders, now=now, place=place,
        all_day=all_day, origin=origin, created_by=created_by,
    )  # fmt: skip
    if until_date is not None and once_at is None:
        actions.update(conn, action_id, until_date=until_date)
    action = actions.get(conn, action_id)
    assert action is not None
    materialise(conn, action, now)
    fresh = actions.get(conn, action_id)
    assert fresh is not None
    return fresh


def replan(conn: Connection, action: Action, now: float, tell: Callable[..., None] | None) -> None:
    """The action's time changed: move a one-off (RSVPs kept), or drop a recurring action's
    future occurrences (their RSVPs end) and materialise them again."""
    fresh = actions.get(conn, action.id)
    assert fresh is not None
    if fresh.once_at is not None:
        occ = actions.next_occurrence(conn, fresh.id, now) or _latest(conn, fresh.id)
        if occ is not None and occ.start_at > now:
            actions.move_occurrence(
                conn, occ.id, fresh.once_at, reveal_at(fresh, fresh.once_at, now)
            )
            plan_reminders(conn, fresh, occ.id, fresh.once_at, now)
            actions.update(conn, fresh.id, last_start=fresh.once_at, horizon_at=None)
            if tell is not None:
                tell(occ, "moved")
            return
        actions.update(conn, fresh.id, last_start=None)
    else:
        for occ in actions.future_occurrences(conn, fresh.id, now):
            actions.cancel_occurrence(conn, occ.id)
            if tell is not None:
                tell(occ, "changed")
        actions.update(conn, fresh.id, last_start=now)
    again = actions.get(conn, fresh.id)
    assert again is not None
    materialise(conn, again, now)


def _latest(conn: Connection, action_id: int) -> Occurrence | None:
    found = actions.recent_occurrences(conn, action_id, float("inf"), 1)
    return found[0] if found else None


def replan_reminders(conn: Connection, action: Action, now: float) -> None:
    fresh = actions.get(conn, action.id)
    assert fresh is not None
    for occ in actions.future_occurrences(conn, fresh.id, now):
        actions.drop_pending_reminders(conn, occ.id)
        plan_reminders(conn, fresh, occ.id, occ.start_at, now)


def replan_reveals(conn: Connection, action: Action, now: float) -> None:
    fresh = actions.get(conn, action.id)
    assert fresh is not None
    for occ in actions.future_occurrences(conn, fresh.id, now):
        actions.set_reveal(conn, occ.id, reveal_at(fresh, occ.start_at, now))


def cancel_action(
    conn: Connection, action: Action, now: float, tell: Callable[..., None] | None
) -> int:
    """Cancel an action and its future occurrences; returns how many occurrences were called off."""
    future = actions.future_occurrences(conn, action.id, now)
    for occ in future:
        actions.cancel_occurrence(conn, occ.id)
        if tell is not None:
            tell(occ, "cancelled")
    actions.update(conn, action.id, state=actions.CANCELLED, horizon_at=None, exact_place=None)
    return len(future)


def tell_joined(conn: Connection, action: Action, now: float) -> Callable[[Occurrence, str], None]:
    """A function that tells everyone who joined an occurrence that it moved, changed or was
    cancelled (streamed over the RSVPs in chunks)."""

    def tell(occ: Occurrence, what: str) -> None:
        fresh = actions.get(conn, action.id) or action
        case = cases.get(conn, fresh.case_id) if fresh.case_id else None
        moved = actions.get_occurrence(conn, occ.id) or occ
        cursor = 0
        while True:
            ids = actions.rsvp_ids(conn, occ.id, cursor, CHUNK)
            for member_id in ids:
                member = members.get(conn, member_id)
                tz = safe_zone((member.timezone if member else None) or fresh.timezone)

                def render(tr: Translator, tz: str = tz) -> str:
                    title = action_title(tr, fresh, case)
                    old = fmt_when(tr, occ.start_at, tz, fresh.all_day)
                    if what == "moved":
                        return tr(
                            "{title} has moved from {old} to {new}. You are still down as "
                            "coming; /leave {id} if you cannot make it.",
                            title=title, old=old, id=fresh.id,
                            new=fmt_when(tr, moved.start_at, tz, fresh.all_day),
                        )  # fmt: skip
                    if what == "changed":
                        return tr(
                            "{title} on {old} has been rescheduled. Please see /actions and "
                            "join again: /join {id}",
                            title=title, old=old, id=fresh.id,
                        )  # fmt: skip
                    return tr("{title} on {old} has been called off.", title=title, old=old)

                notify_member(
                    conn, member_id, render, now=now, priority=Priority.ALERT,
                    idem_key=f"a{fresh.id}:{int(occ.start_at)}:{what}{int(moved.start_at)}:{member_id}",
                )  # fmt: skip
            if len(ids) < CHUNK:
                return
            cursor = ids[-1]

    return tell
