"""A court date on a case sheet is a solidarity action too: one kept in step per case."""

from __future__ import annotations

from datetime import datetime, time

from bot import recurrence as rec
from bot.context import Context
from handlers.actions.engine import cancel_action, create_action, replan, tell_joined
from handlers.actions.model import DEFAULT_REMINDERS, DEFAULT_TZ_KEY
from handlers.actions.render import fmt_offsets
from handlers.broadcasts import remember_defaults
from handlers.common import valid_zone, zone
from storage import actions, cases, settings
from storage.db import Connection


def _hearing(
    conn: Connection, case_id: int, hearing_utc: float | None, now: float, timezone: str | None
) -> tuple[int | None, str]:
    """(action id, what happened: created | moved | unchanged | cancelled | none)."""
    case = cases.get(conn, case_id)
    existing = actions.by_origin(conn, "hearing", case_id)
    stale = existing is not None and existing.once_at != hearing_utc
    if case is None or hearing_utc is None or case.status == "released" or hearing_utc <= now:
        # No hearing ahead (cleared, released, or a date that has just passed): nothing to
        # remind; a live action for another date no longer matches the sheet.
        if existing is not None and stale:
            cancel_action(conn, existing, now, tell_joined(conn, existing, now))
            return None, "cancelled"
        return (existing.id if existing else None), "none"
    all_day = bool(case.next_hearing_all_day and case.next_hearing == hearing_utc)
    tz = (
        valid_zone(timezone or "")
        or (existing.timezone if existing else None)
        or valid_zone(settings.get(conn, DEFAULT_TZ_KEY) or "")
        or "UTC"
    )
    local = datetime.fromtimestamp(hearing_utc, zone(tz))
    rule = rec.Rule("once", time(local.hour, local.minute), on_date=local.date())
    if existing is not None:
        if not stale and existing.all_day == all_day:
            return existing.id, "unchanged"
        actions.update(
            conn, existing.id, once_at=hearing_utc, all_day=all_day, rule=rec.format_rule(rule),
            timezone=tz,
        )  # fmt: skip
        replan(conn, existing, now, tell_joined(conn, existing, now))
        return existing.id, "moved"
    action = create_action(
        conn, kind="hearing", title=None, case_id=case_id, rule=rule, tz=tz, once_at=hearing_utc,
        audience="case", reminders=DEFAULT_REMINDERS, now=now, all_day=all_day, origin="hearing",
    )  # fmt: skip
    return action.id, "created"


def ensure_hearing_action(
    conn: Connection,
    case_id: int,
    hearing_utc: float | None,
    now: float,
    *,
    timezone: str | None = None,
) -> int | None:
    """Keep the case's court-hearing action in step with its next hearing (idempotent).
    None (or a released case) cancels it; a past time leaves things as they are. Returns the
    action id, or None when there is no live hearing action."""
    return _hearing(conn, case_id, hearing_utc, now, timezone)[0]


def on_case_hearing_set(ctx: Context, case_id: int, hearing_utc_epoch: float | None) -> None:
    """Called by /editcase after next_hearing changed."""
    ctx.services.poke_alarm()  # a schedule may change: re-arm after this commits
    remember_defaults(ctx)
    action_id, what = _hearing(
        ctx.conn, case_id, hearing_utc_epoch, ctx.now, ctx.services.default_timezone
    )
    if what in ("none", "unchanged"):
        return
    ctx.audit(f"action.hearing_{what}", f"case:{case_id}")
    if what == "created":
        ctx.reply(
            ctx._(
                "Court-hearing action #{id} scheduled: the case's followers will be reminded "
                "{offsets}. Headcount: /headcount {id}",
                id=action_id,
                offsets=fmt_offsets(ctx._, DEFAULT_REMINDERS),
            )
        )
    elif what == "moved":
        ctx.reply(
            ctx._(
                "Court-hearing action #{id} moved to the new date; those who joined were told.",
                id=action_id,
            )
        )
    elif what == "cancelled":
        ctx.reply(ctx._("The court-hearing action for this case was called off."))
