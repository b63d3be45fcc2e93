"""/overview: a coordinator's silent cases, open alerts, next 14 days, fan-outs, approvals."""

from __future__ import annotations

from datetime import datetime

from babel.dates import format_skeleton, format_time

from bot.capability import Capability, Commands
from bot.context import COORDINATORS, Context
from bot.i18n import N_
from handlers.actions.access import may_manage
from handlers.actions.render import action_title
from handlers.approvals.core import eligible
from handlers.broadcasts.commands import may_stop, segment_label
from handlers.broadcasts.progress import counts
from handlers.common import member_timezone, role_label, zone
from storage import actions, approvals, broadcasts, cases, reports
from storage.approvals import Approval
from storage.broadcasts import Broadcast
from storage.members import Member

commands = Commands()

DAY = 86400.0
AHEAD_DAYS = 14
PER_SECTION = 10  # a phone screen per section; the rest is counted, not listed
# Bounds the read of occurrences in the window; far more than PER_SECTION survive the filter.
SCAN_LIMIT = 1000


@commands.command(
    "overview",
    roles=COORDINATORS,
    summary=N_("what needs you: silent cases, alerts, the next 14 days, broadcasts, approvals"),
    order=39,
)
def overview(ctx: Context, args: str) -> None:
    """One reply that changes nothing but its audit row, sections in the order a coordinator acts
    on them. Authority is per case, as for the commands each line points to: the cases they
    coordinate (admins: all) and those cases' alerts; actions they may manage (`/headcount`);
    running fan-outs they may stop (`/cancel`); approvals they may decide now (`/approve`).
    Lines name cases, never relatives, reporters or platform ids; members appear by number only,
    as in the approval requests themselves."""
    member = ctx.require_member()
    mine = cases.coordinated_by(ctx.conn, member.id, member.role)
    sections = [
        _section(ctx, ctx._("Your cases, the longest without news first:"), _case_lines(ctx, mine)),
        _section(ctx, ctx._("Urgent alerts nobody has acknowledged:"), _alert_lines(ctx, mine)),
        _section(
            ctx,
            ctx._.plural(
                "Hearings and actions in the next {n} day:",
                "Hearings and actions in the next {n} days:",
                AHEAD_DAYS,
            ),
            _action_lines(ctx, member),
        ),
        _section(ctx, ctx._("Broadcasts and alerts going out:"), _fanout_lines(ctx)),
        _section(ctx, ctx._("Waiting for your approval:"), _approval_lines(ctx, member)),
    ]
    shown = [s for s in sections if s]  # an empty section is left out, header and all
    # A read of case metadata across cases, like /reports: who looked is recorded, not what.
    ctx.audit("overview.viewed", None)
    if not shown:
        ctx.reply(
            ctx._(
                "Nothing to show: you coordinate no case, and no alert, action, broadcast or "
                "approval is waiting for you."
            )
        )
        return
    head = ctx._("Your overview (times in {tz}):", tz=member_timezone(ctx))
    ctx.reply("\n\n".join([head, *shown]))


def _section(ctx: Context, title: str, lines: list[str]) -> str:
    if not lines:
        return ""
    body = [f"• {line}" for line in lines[:PER_SECTION]]
    if len(lines) > PER_SECTION:
        body.append(ctx._("… and {n} more.", n=len(lines) - PER_SECTION))
    return "\n".join([title, *body])


def _when(ctx: Context, ts: float, all_day: bool = False) -> str:
    """Weekday, day and time in the reader's zone, without the year or the zone: everything
    here is within a fortnight, and the header names the zone once."""
    local = datetime.fromtimestamp(ts, zone(member_timezone(ctx)))
    day = format_skeleton("MMMEd", local.date(), locale=ctx._.locale)
    if all_day:  # a hearing whose date is known but not its time
        return ctx._("{date}, time to be confirmed", date=day)
    return f"{day}, {format_time(local.time(), format='short', locale=ctx._.locale)}"


def _case_lines(ctx: Context, mine: list[cases.Case]) -> list[str]:
    """Silence counted as the check-ins count it (handlers/reports/checkins.py): since the last
    report, or since the case was opened. Released cases need no watching and are left out."""
    rows = []
    for case in mine:
        if case.status == "released":
            continue
        anchor = case.last_report_at or case.created_at
        days = max(0, int((ctx.now - anchor) // DAY))
        silent = case.checkin_days > 0 and ctx.now - anchor >= case.checkin_days * DAY
        rows.append((not silent, -days, case.slug, _case_line(ctx, case, days, silent)))
    return [line for *_key, line in sorted(rows)]


def _case_line(ctx: Context, case: cases.Case, days: int, silent: bool) -> str:
    if silent:
        head = ctx._.plural(
            "{name}: no news for {n} day", "{name}: no news for {n} days", days, name=case.name
        )
    elif case.last_report_at is None:  # counted from the opening: say so, not "last news"
        if days == 0:
            head = ctx._("{name}: no report yet, opened today", name=case.name)
        else:
            head = ctx._.plural(
                "{name}: no report yet, opened {n} day ago",
                "{name}: no report yet, opened {n} days ago", days, name=case.name,
            )  # fmt: skip
    elif days == 0:
        head = ctx._("{name}: news today", name=case.name)
    else:
        head = ctx._.plural(
            "{name}: last news {n} day ago", "{name}: last news {n} days ago", days,
            name=case.name,
        )  # fmt: skip
    if case.checkin_days > 0:
        rule = ctx._.plural("check-in every {n} day", "check-in every {n} days", case.checkin_days)
    else:
        rule = ctx._("check-ins off")
    return f"{head} ({rule}) — /case {case.slug}"


def _alert_lines(ctx: Context, mine: list[cases.Case]) -> list[str]:
    by_id = {c.id: c for c in mine}
    return [
        f"#{a.id} {by_id[a.case_id].name}, {_when(ctx, a.created_at)} — /ack {a.id}"
        for a in reports.open_alerts(ctx.conn, list(by_id))
    ]


def _action_lines(ctx: Context, member: Member) -> list[str]:
    """The next date of each action in the window, with its headcount: what /headcount shows
    first. Court hearings are actions too (one per case, kept in step with the sheet)."""
    listed = actions.upcoming_for(
        ctx.conn, ctx.now, member_id=member.id, role=member.role, coordinator=True,
        limit=SCAN_LIMIT, before=ctx.now + AHEAD_DAYS * DAY,
    )  # fmt: skip
    lines = []
    for item in listed:
        a, occ = item.action, item.occurrence
        if not may_manage(ctx.conn, a, member):
            continue
        case = cases.get(ctx.conn, a.case_id) if a.case_id else None
        when = _when(ctx, occ.start_at, a.all_day)
        going = ctx._.plural("{n} going", "{n} going", actions.headcount(ctx.conn, occ.id))
        lines.append(
            f"#{a.id} {action_title(ctx._, a, case)}, {when} · {going} — /headcount {a.id}"
        )
    return lines


def _fanout_lines(ctx: Context) -> list[str]:
    """Running fan-outs this member may stop: their own, their cases' (admins: all). A draft or
    one waiting for approval is not going out yet, and is its author's to see."""
    lines = []
    for b in broadcasts.unfinished(ctx.conn):
        if b.state != broadcasts.RUNNING or not may_stop(ctx, b):
            continue
        c = counts(ctx.conn, b, ctx.now)
        lines.append(
            ctx._(
                "#{id} to {label}: {sent} sent, {failed} not delivered, {left} to go — "
                "/cancel {id}",
                id=b.id,
                label=_audience(ctx, b),
                sent=c["sent"],
                failed=c["failed"],
                left=c["left"],
            )
        )
    return lines


def _audience(ctx: Context, b: Broadcast) -> str:
    if b.kind == "alert":  # a case update's alert goes to the case's followers
        case = cases.get(ctx.conn, b.case_id) if b.case_id else None
        return ctx._("followers of {name} (case alert)", name=case.name if case else "?")
    return segment_label(ctx.conn, ctx._, b.segment)


def _approval_lines(ctx: Context, member: Member) -> list[str]:
    """Pending requests this member may decide now; eligibility is read now, as /approve does."""
    lines = []
    for a in approvals.pending(ctx.conn):
        if a.expires_at <= ctx.now or a.initiator_id == member.id:
            continue
        if member.id not in eligible(ctx.conn, initiator_id=a.initiator_id, case_id=a.case_id):
            continue
        lines.append(
            ctx._(
                "#{id} {what}, asked by member {member}, expires {when} — /approve {id}",
                id=a.id,
                what=_approval_what(ctx, a),
                member=a.initiator_id,
                when=_when(ctx, a.expires_at),
            )
        )
    return lines


def _approval_what(ctx: Context, a: Approval) -> str:
    target = a.payload.get("target")
    case_id = a.payload.get("case")
    case = cases.get(ctx.conn, case_id) if isinstance(case_id, int) else None
    if a.kind == "broadcast":
        bid = a.subject.partition(":")[2]
        b = broadcasts.get(ctx.conn, int(bid)) if bid.isdigit() else None
        if b is None:
            return ctx._("a broadcast")
        return ctx._("broadcast #{id} to {label}", id=b.id, label=_audience(ctx, b))
    if a.kind == "promote":
        role = role_label(ctx._, str(a.payload.get("role", "")))
        if case is not None:
            return ctx._(
                "member {id} to become {role} for {name}", id=target, role=role, name=case.name
            )
        return ctx._("member {id} to become {role}", id=target, role=role)
    if a.kind == "revoke":
        if a.payload.get("remove"):
            return ctx._("remove administrator {id}", id=target)
        return ctx._("revoke administrator {id}", id=target)
    if a.kind == "assign" and case is not None:
        return ctx._("member {id} to coordinate {name}", id=target, name=case.name)
    return ctx._("a request")


def capability() -> Capability:
    return Capability("overview", commands=tuple(commands))
