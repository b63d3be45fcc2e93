"""Series of a recurring action: /join ID all, /leave ID all|DATE, its end, per-date counts."""

from __future__ import annotations

from datetime import datetime

from bot import recurrence as rec
from bot.context import Context, UserError
from handlers.actions.engine import tell_joined
from handlers.actions.model import DAY, MAX_AHEAD_DAYS, utc
from handlers.actions.parse import parse_until
from handlers.actions.plan import ensure_materialised, materialise, until_of
from handlers.actions.render import fmt_when
from handlers.common import zone
from storage import actions, series
from storage.actions import Action

SHOWN_DATES = 6  # dates /headcount lists for a series


def _repeating(ctx: Context, action: Action) -> None:
    if action.once_at is not None:
        raise UserError(ctx._("Action #{id} happens once; it has no series.", id=action.id))


def join_all(ctx: Context, action: Action, tz: str) -> None:
    member = ctx.require_member()
    _repeating(ctx, action)
    ensure_materialised(ctx.conn, action, ctx.now)
    if not series.join(ctx.conn, action.id, member.id, ctx.now):
        ctx.reply(ctx._("You have already joined every date of #{id}.", id=action.id))
        return
    lines = [
        ctx._(
            "You are going to every date of #{id}, and to the dates added later. Thank you!",
            id=action.id,
        )
    ]
    if action.until_date:
        lines.append(ctx._("Last date: {date}", date=action.until_date))
    lines.append(
        ctx._(
            "To miss one date: /leave {id} (the next one) or /leave {id} 2027-01-31. "
            "To leave the series: /leave {id} all",
            id=action.id,
        )
    )
    ctx.reply("\n".join(lines))


def leave_all(ctx: Context, action: Action) -> None:
    member = ctx.require_member()
    was, dates = series.leave(ctx.conn, action.id, member.id, ctx.now)
    if not was and not dates:
        ctx.reply(ctx._("You had not joined #{id}.", id=action.id))
        return
    ctx.reply(ctx._("Noted: you are no longer going to any date of #{id}.", id=action.id))


def leave_date(ctx: Context, action: Action, value: str, tz: str) -> None:
    """Leave the one date of the series that falls on a local date (in the member's zone),
    whether or not that date is materialised yet."""
    member = ctx.require_member()
    _repeating(ctx, action)
    day = parse_until(ctx, value, tz)
    if day is None:
        raise UserError(ctx._("Give the date like 2027-01-31."))
    ensure_materialised(ctx.conn, action, ctx.now)
    start = _start_on(action, day, tz, ctx.now)
    if start is None:
        raise UserError(ctx._("Action #{id} has no date then.", id=action.id))
    left = False
    for occ in actions.future_occurrences(ctx.conn, action.id, ctx.now):
        if occ.start_at == start:
            left = actions.leave(ctx.conn, occ.id, member.id)
    if series.in_series(ctx.conn, action.id, member.id):
        series.skip(ctx.conn, action.id, member.id, start)
        left = True
    if not left:
        ctx.reply(ctx._("You had not joined #{id}.", id=action.id))
        return
    ctx.reply(
        ctx._(
            "Noted: you are not going on {when}. Your other dates stay.",
            when=fmt_when(ctx._, start, tz, action.all_day),
        )
    )


def _start_on(action: Action, day: str, tz: str, now: float) -> float | None:
    """The series' start whose date, in the member's zone `tz`, is `day`."""
    rule = rec.parse_when(action.rule)
    for instant in rec.occurrences(
        rule, zone(action.timezone), utc(now), utc(now + MAX_AHEAD_DAYS * DAY),
        until=until_of(action),
    ):  # fmt: skip
        local = instant.astimezone(zone(tz)).date().isoformat()
        if local == day:
            return instant.timestamp()
        if local > day:
            return None
    return None


def note_series(ctx: Context, action: Action) -> str | None:
    """After leaving one date: a reminder that the series continues for this member."""
    member = ctx.member
    if member is not None and series.in_series(ctx.conn, action.id, member.id):
        return ctx._(
            "You are still going to the other dates; /leave {id} all leaves the series.",
            id=action.id,
        )
    return None


def headcount_lines(ctx: Context, action: Action, tz: str) -> list[str]:
    """Per date and for the series; empty for a one-off."""
    if action.once_at is not None:
        return []
    lines = [
        ctx._.plural(
            "Every date: {n} person joined the whole series.",
            "Every date: {n} people joined the whole series.",
            series.count(ctx.conn, action.id),
        )
    ]
    for _occ_id, start, n in series.upcoming_counts(ctx.conn, action.id, ctx.now, SHOWN_DATES):
        lines.append(
            "  "
            + ctx._.plural(
                "{when}: {n} going", "{when}: {n} going", n,
                when=fmt_when(ctx._, start, tz, action.all_day),
            )
        )  # fmt: skip
    if action.until_date:
        lines.append(ctx._("Last date: {date}", date=action.until_date))
    return lines


def edit_until(ctx: Context, action: Action, value: str) -> None:
    """/editaction ID until DATE|-: dates after the new end are called off (those who joined
    are told); a later or no end lets the series grow again."""
    _repeating(ctx, action)
    conn, now = ctx.conn, ctx.now
    until = parse_until(ctx, value, action.timezone)
    actions.update(conn, action.id, until_date=until)
    fresh = actions.get(conn, action.id)
    assert fresh is not None
    if until is not None:
        beyond = [
            occ
            for occ in actions.future_occurrences(conn, action.id, now)
            if datetime.fromtimestamp(occ.start_at, zone(action.timezone)).date().isoformat()
            > until
        ]
        tell = tell_joined(conn, fresh, now)
        for occ in beyond:
            tell(occ, "cancelled")
        series.drop_after(conn, action.id, [o.start_at for o in beyond])
    latest = series.latest_start(conn, action.id)
    actions.update(conn, action.id, last_start=latest if latest is not None else now)
    again = actions.get(conn, action.id)
    assert again is not None
    materialise(conn, again, now)
