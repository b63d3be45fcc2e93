"""The actions commands: /schedule, /actions, /join, /leave, /headcount, /editaction,
/unschedule, /template."""

from __future__ import annotations

import re
from typing import Any

from bot import recurrence as rec
from bot.capability import Commands
from bot.context import COORDINATORS, MEMBERS, Context, UserError
from bot.i18n import N_
from bot.messages import Choice
from handlers.actions.access import may_manage, visible_action
from handlers.actions.engine import (
    cancel_action,
    create_action,
    replan,
    replan_reminders,
    replan_reveals,
    tell_joined,
)
from handlers.actions.flows import (
    ask,
    clean_place,
    clean_title,
    coordinator_zone,
    summary,
    usage,
    zone_of,
)
from handlers.actions.model import DEFAULT_REVEAL, JOIN_FOR_VETTED, MAX_LISTED, TEMPLATES, rule_of
from handlers.actions.parse import (
    parse_audience,
    parse_duration,
    parse_kind,
    parse_offsets,
    parse_start,
    take_options,
    take_when,
    when_error,
)
from handlers.actions.plan import ensure_materialised
from handlers.actions.render import (
    action_title,
    describe_rule,
    fmt_duration,
    fmt_offsets,
    fmt_when,
    kind_label,
)
from handlers.actions.series import (
    edit_until,
    headcount_lines,
    join_all,
    leave_all,
    leave_date,
    note_series,
)
from handlers.broadcasts import remember_defaults
from handlers.common import coordinated_case, valid_zone
from storage import actions, cases
from storage.actions import Action, Occurrence

commands = Commands()


@commands.command(
    "schedule",
    roles=COORDINATORS,
    summary=N_("schedule an action: /schedule SLUG|- WHEN TITLE"),
    order=45,
)
def schedule(ctx: Context, args: str) -> None:
    ctx.require_member()
    remember_defaults(ctx)
    data: dict[str, Any] = {"options": {}}
    tokens = args.split()
    if not tokens:
        ask(ctx, data)
        return
    if tokens[0].lower() in ("help", "?"):
        ctx.reply(usage(ctx))
        return
    slug = tokens[0].lower()
    data["case_id"] = None if slug == "-" else coordinated_case(ctx, slug).id
    tokens = take_options(ctx, tokens[1:], data)
    if tokens:
        taken = take_when(tokens)
        if isinstance(taken, rec.WhenError):
            raise UserError(ctx._(rec.ERROR_MESSAGES[taken.code]) + "\n" + usage(ctx))
        data["when"], n = taken
        tokens = take_options(ctx, tokens[n:], data)
        parse_start(ctx, data["when"], zone_of(ctx, data))  # in the past, too far ahead
        if tokens:
            data["title"] = " ".join(tokens)
            data["place"] = None
    ask(ctx, data)


_member_zone = coordinator_zone


@commands.command("actions", roles=MEMBERS, summary=N_("upcoming solidarity actions"), order=30)
def list_actions(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    coordinator = member.role in COORDINATORS
    listed = actions.upcoming_for(
        ctx.conn, ctx.now, member_id=member.id, role=member.role, coordinator=coordinator,
        limit=MAX_LISTED,
    )  # fmt: skip
    tz = _member_zone(ctx)
    if not listed:
        text = ctx._("No actions are planned right now.")
        if coordinator:
            text += "\n" + ctx._("Plan one with /schedule.")
        ctx.reply(text)
        return
    lines = [ctx._("Upcoming actions (times in {tz}; change with /timezone):", tz=tz)]
    choices: list[Choice] = []
    for item in listed:
        a, occ = item.action, item.occurrence
        case = cases.get(ctx.conn, a.case_id) if a.case_id else None
        going = actions.is_going(ctx.conn, occ.id, member.id)
        lines.append("")
        lines.append(f"#{a.id} {action_title(ctx._, a, case)} — {kind_label(ctx._, a.kind)}")
        details = [fmt_when(ctx._, occ.start_at, tz, a.all_day)]
        repeat = describe_rule(ctx._, rule_of(a)) if a.once_at is None else None
        if repeat:
            details.append(repeat)
        if a.place and member.vetted:
            details.append(a.place)
        if case is not None:
            details.append(case.name)
        lines.append("  " + " · ".join(details))
        if not member.vetted:
            continue  # an open supporter: no place, no RSVP (the note below says why)
        status = (
            ctx._("You are going (/leave {id})", id=a.id)
            if going
            else ctx._("Join: /join {id}", id=a.id)
        )
        if may_manage(ctx.conn, a, member):
            n = actions.headcount(ctx.conn, occ.id)
            status += " · " + ctx._.plural("{n} going", "{n} going", n)
        lines.append("  " + status)
        if not going and len(choices) < 5:
            choices.append(Choice(ctx._("Join #{id}", id=a.id), f"/join {a.id}"))
    if not member.vetted:
        lines += ["", ctx._(JOIN_FOR_VETTED)]
    ctx.reply("\n".join(lines), tuple(choices))


OFFERED = 8  # a menu longer than this is read by nobody; /actions lists them all


def _offer(ctx: Context, command: str, *, manage: bool = False, going: bool | None = None) -> None:
    """A command sent without its ID: the actions it could apply to, as a menu (issue 16 item
    9), rather than "no such id". `going` keeps those the member has (or has not) joined."""
    member = ctx.require_member()
    listed = actions.upcoming_for(
        ctx.conn, ctx.now, member_id=member.id, role=member.role,
        coordinator=member.role in COORDINATORS, limit=MAX_LISTED,
    )  # fmt: skip
    tz = _member_zone(ctx)
    choices: list[Choice] = []
    for item in listed:
        a, occ = item.action, item.occurrence
        if manage and not may_manage(ctx.conn, a, member):
            continue
        if going is not None and actions.is_going(ctx.conn, occ.id, member.id) != going:
            continue
        case = cases.get(ctx.conn, a.case_id) if a.case_id else None
        when = fmt_when(ctx._, occ.start_at, tz, a.all_day)
        label = ctx._.layout(f"{action_title(ctx._, a, case)} · {when} (#{a.id})")
        choices.append(Choice(label, f"/{command} {a.id}"))
    if not choices:
        raise UserError(ctx._("No actions are planned right now."))
    ctx.reply(
        ctx._("Which action? Choose one, or send /{command} ID.", command=command),
        tuple(choices[:OFFERED]),
    )


def _next_occ(ctx: Context, action: Action) -> Occurrence:
    ensure_materialised(ctx.conn, action, ctx.now)
    occ = actions.next_occurrence(ctx.conn, action.id, ctx.now)
    if occ is None:
        raise UserError(ctx._("Action #{id} has no upcoming date.", id=action.id))
    return occ


def _second(args: str) -> str | None:
    parts = args.split()
    return parts[1].lower() if len(parts) > 1 else None


@commands.command(
    "join", roles=MEMBERS, summary=N_("say you will come: /join ID (or /join ID all)"), order=31
)
def join(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    if not args.strip():
        if not member.vetted:
            raise UserError(ctx._(JOIN_FOR_VETTED))
        return _offer(ctx, "join", going=False)
    action = visible_action(ctx, args)
    if not member.vetted:
        raise UserError(ctx._(JOIN_FOR_VETTED))  # an RSVP would earn the place (THREATS 15)
    if _second(args) in ("all", "series"):
        join_all(ctx, action, _member_zone(ctx))
        return
    occ = _next_occ(ctx, action)
    case = cases.get(ctx.conn, action.case_id) if action.case_id else None
    tz = _member_zone(ctx)
    title = action_title(ctx._, action, case)
    when = fmt_when(ctx._, occ.start_at, tz, action.all_day)
    if not actions.join(ctx.conn, occ.id, member.id, ctx.now):
        ctx.reply(ctx._("You are already going to {title} on {when}.", title=title, when=when))
        return
    lines = [ctx._("You are going to {title} on {when}. Thank you!", title=title, when=when)]
    if action.reminders:
        lines.append(
            ctx._("We will remind you {offsets}.", offsets=fmt_offsets(ctx._, action.reminders))
        )
    if action.exact_place:
        if occ.reveal_at is not None and occ.reveal_at <= ctx.now:
            lines.append(
                ctx._(
                    "The exact meeting point: {place}\nPlease do not pass it on.",
                    place=action.exact_place,
                )
            )
        else:
            lines.append(
                ctx._(
                    "The exact meeting point will be sent to you {before} before the start.",
                    before=fmt_duration(ctx._, action.reveal_before or DEFAULT_REVEAL),
                )
            )
    lines.append(ctx._("If your plans change: /leave {id}", id=action.id))
    ctx.reply("\n".join(lines))


@commands.command(
    "leave",
    roles=MEMBERS,
    summary=N_("you can no longer come: /leave ID (or ID all, or ID DATE)"),
    order=32,
)
def leave(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    if not args.strip():
        return _offer(ctx, "leave", going=True)
    action = visible_action(ctx, args)
    second = _second(args)
    if second in ("all", "series"):
        leave_all(ctx, action)
        return
    if second is not None:
        leave_date(ctx, action, second, _member_zone(ctx))
        return
    occ = _next_occ(ctx, action)
    if actions.leave(ctx.conn, occ.id, member.id):
        text = ctx._("Noted: you are no longer going to #{id}.", id=action.id)
        still = note_series(ctx, action)
        ctx.reply(text + ("\n" + still if still else ""))
    else:
        ctx.reply(ctx._("You had not joined #{id}.", id=action.id))


@commands.command(
    "headcount", roles=COORDINATORS, summary=N_("who is coming: /headcount ID"), order=46
)
def headcount(ctx: Context, args: str) -> None:
    if not args.strip():
        return _offer(ctx, "headcount", manage=True)
    action = visible_action(ctx, args, manage=True)
    ensure_materialised(ctx.conn, action, ctx.now)
    case = cases.get(ctx.conn, action.case_id) if action.case_id else None
    tz = _member_zone(ctx)
    lines = [ctx._("#{id}: {title}", id=action.id, title=action_title(ctx._, action, case))]
    occ = actions.next_occurrence(ctx.conn, action.id, ctx.now)
    if occ is not None:
        n = actions.headcount(ctx.conn, occ.id)
        lines.append(
            ctx._.plural(
                "Next, {when}: {n} person going.", "Next, {when}: {n} people going.", n,
                when=fmt_when(ctx._, occ.start_at, tz, action.all_day),
            )
        )  # fmt: skip
    else:
        lines.append(ctx._("No upcoming date."))
    lines.extend(headcount_lines(ctx, action, tz))
    for past in actions.recent_occurrences(ctx.conn, action.id, ctx.now, 3):
        n = actions.headcount(ctx.conn, past.id)
        line = ctx._.plural(
            "{when}: {n} person said they would come.",
            "{when}: {n} people said they would come.",
            n,
            when=fmt_when(ctx._, past.start_at, tz, action.all_day),
        )
        if past.state == "cancelled":
            line += " " + ctx._("(called off)")
        if past.skipped:
            line += " " + ctx._.plural(
                "{n} reminder missed while the bot was offline.",
                "{n} reminders missed while the bot was offline.",
                past.skipped,
            )
        lines.append(line)
    stats = actions.reminder_stats(ctx.conn, action.id)
    lines.append(
        ctx._(
            "Reminders: {sent} sent ({late} late), {skipped} missed while the bot was offline, "
            "{merged} folded into another, {pending} to come.",
            sent=stats.get("sent", 0),
            late=stats.get("late", 0),
            skipped=stats.get("skipped", 0),
            merged=stats.get("merged", 0),
            pending=stats.get("pending", 0) + stats.get("sending", 0),
        )
    )
    ctx.reply("\n".join(lines))


EDIT_FIELDS = {
    "title": "title",
    "kind": "kind",
    "when": "when",
    "time": "when",
    "timezone": "timezone",
    "tz": "timezone",
    "place": "place",
    "secret": "secret",
    "exact_place": "secret",
    "meeting_point": "secret",
    "reveal": "reveal",
    "audience": "audience",
    "to": "audience",
    "reminders": "reminders",
    "remind": "reminders",
    "until": "until",
    "end": "until",
}


@commands.command(
    "editaction",
    roles=COORDINATORS,
    summary=N_("change an action: /editaction ID FIELD VALUE"),
    order=47,
)
def edit_action(ctx: Context, args: str) -> None:
    ctx.services.poke_alarm()  # a schedule may change: re-arm after this commits
    parts = args.split(None, 2)
    usage = ctx._(
        "Send /editaction ID FIELD VALUE. Fields: title, kind, when, timezone, place, secret "
        "(the exact meeting point, sent only to those who joined), reveal (how long before the "
        "start it is sent, e.g. 2h), audience (all, case, role:ROLE), reminders (e.g. 24h,1h or "
        "off). A dash clears place and secret."
    )
    usage += "\n" + ctx._("until DATE (or -) sets the last date of a repeating action.")
    if len(parts) < 3:
        if parts:
            visible_action(ctx, parts[0], manage=True)
        raise UserError(usage)
    action = visible_action(ctx, parts[0], manage=True)
    if action.state != actions.ACTIVE:
        raise UserError(ctx._("Action #{id} has already taken place.", id=action.id))
    fld = EDIT_FIELDS.get(parts[1].lower().replace("-", "_")[:20])
    if fld is None:
        raise UserError(usage)
    value = parts[2].strip()
    conn, now = ctx.conn, ctx.now
    case = cases.get(conn, action.case_id) if action.case_id else None
    if fld == "title":
        title = None if value == "-" and action.origin != "manual" else clean_title(ctx, value)
        actions.update(conn, action.id, title=title)
    elif fld == "kind":
        actions.update(conn, action.id, kind=parse_kind(ctx, value))
    elif fld in ("when", "timezone"):
        tz = action.timezone
        when = value
        if fld == "timezone":
            found = valid_zone(value)
            if found is None:
                raise UserError(
                    ctx._(
                        "I don't know that time zone. Use a name like Europe/Minsk or Asia/Tehran."
                    )
                )
            tz, when = found, action.rule
        rule, once_at = parse_start(ctx, when, tz)
        if (once_at is None) != (action.once_at is None):
            raise UserError(
                ctx._(
                    "A one-off action stays one-off and a repeating one keeps repeating: call "
                    "this one off (/unschedule {id}) and schedule a new one.",
                    id=action.id,
                )
            )
        actions.update(
            conn, action.id, rule=rec.format_rule(rule), timezone=tz, once_at=once_at,
            all_day=False,
        )  # fmt: skip
        replan(conn, action, now, tell_joined(conn, action, now))
    elif fld == "place":
        actions.update(conn, action.id, place=None if value == "-" else clean_place(ctx, value))
    elif fld == "secret":
        exact = None if value == "-" else clean_place(ctx, value, most=300)
        actions.update(conn, action.id, exact_place=exact)
        replan_reveals(conn, action, now)
    elif fld == "reveal":
        actions.update(conn, action.id, reveal_before=parse_duration(ctx, value))
        replan_reveals(conn, action, now)
    elif fld == "audience":
        audience = parse_audience(ctx, value)
        if audience == "case" and case is None:
            raise UserError(ctx._("Only an action for a case can go to the case's followers."))
        if case is not None and case.visibility != "public" and audience != "case":
            raise UserError(
                ctx._(
                    "This case is restricted, so its actions go only to the people tied to it "
                    "and its followers (to=case)."
                )
            )
        actions.update(conn, action.id, audience=audience)
    elif fld == "reminders":
        actions.update(conn, action.id, reminders=parse_offsets(ctx, value))
        replan_reminders(conn, action, now)
    elif fld == "until":
        edit_until(ctx, action, value)
    ctx.audit("action.edited", f"action:{action.id}:{fld}")
    fresh = actions.get(conn, action.id)
    assert fresh is not None
    ctx.reply(summary(ctx, fresh))


@commands.command(
    "unschedule", roles=COORDINATORS, summary=N_("call off an action: /unschedule ID"), order=48
)
def unschedule(ctx: Context, args: str) -> None:
    ctx.services.poke_alarm()  # a schedule may change: re-arm after this commits
    if not args.strip():
        return _offer(ctx, "unschedule", manage=True)
    action = visible_action(ctx, args, manage=True)
    if action.state != actions.ACTIVE:
        raise UserError(ctx._("Action #{id} has already taken place.", id=action.id))
    n = cancel_action(ctx.conn, action, ctx.now, tell_joined(ctx.conn, action, ctx.now))
    ctx.audit("action.cancelled", f"action:{action.id}")
    ctx.reply(
        ctx._.plural(
            "Action #{id} is called off ({n} date). Those who had joined are told.",
            "Action #{id} is called off ({n} dates). Those who had joined are told.",
            n,
            id=action.id,
        )
    )


@commands.command(
    "template",
    roles=COORDINATORS,
    summary=N_("built-in actions such as 30 October: /template oct30 on"),
    order=49,
)
def template(ctx: Context, args: str) -> None:
    ctx.services.poke_alarm()  # a schedule may change: re-arm after this commits
    member = ctx.require_member()
    remember_defaults(ctx)
    parts = args.lower().split()
    if not parts:
        lines = [ctx._("Built-in actions:")]
        for t in TEMPLATES.values():
            live = actions.by_origin(ctx.conn, f"template:{t.name}")
            state = ctx._("on, #{id}", id=live.id) if live else ctx._("off")
            lines.append(f"• {t.name} — {ctx._(t.title)} ({state})")
        lines.append(ctx._("Switch one on: /template NAME on [HH:MM]; off: /template NAME off"))
        ctx.reply("\n".join(lines))
        return
    t = TEMPLATES.get(parts[0])
    if t is None or len(parts) < 2 or parts[1] not in ("on", "off"):
        raise UserError(
            ctx._(
                "Send /template oct30 on (or off). Built-in: {names}.", names=", ".join(TEMPLATES)
            )
        )
    live = actions.by_origin(ctx.conn, f"template:{t.name}")
    if parts[1] == "off":
        if live is None:
            ctx.reply(ctx._("{title} is already off.", title=ctx._(t.title)))
            return
        cancel_action(ctx.conn, live, ctx.now, tell_joined(ctx.conn, live, ctx.now))
        ctx.audit("action.template_off", f"action:{live.id}")
        ctx.reply(ctx._("{title} is off.", title=ctx._(t.title)))
        return
    if live is not None:
        ctx.reply(summary(ctx, live))
        return
    rule_text = t.rule
    if len(parts) > 2:
        if not re.fullmatch(r"\d{1,2}:\d{2}", parts[2]):
            raise UserError(ctx._("Give the time as HH:MM, for example 12:00."))
        rule_text = t.rule.split("@")[0] + "@" + parts[2]
    try:
        rule = rec.parse_when(rule_text)
    except rec.WhenError as err:
        raise when_error(ctx, err) from None
    tz = valid_zone(ctx.services.default_timezone) or "UTC"
    action = create_action(
        ctx.conn, kind=t.kind, title=None, case_id=None, rule=rule, tz=tz, once_at=None,
        audience="all", reminders=t.reminders, now=ctx.now, origin=f"template:{t.name}",
        created_by=member.id,
    )  # fmt: skip
    ctx.audit("action.template_on", f"action:{action.id}")
    ctx.reply(summary(ctx, action, created=True))
