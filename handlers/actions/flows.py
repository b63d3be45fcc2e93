"""/schedule's step-by-step questions, and creating the action from the answers."""

from __future__ import annotations

from typing import Any

from bot.context import Context, UserError
from bot.flows import Flow, FlowContext, Step
from bot.messages import Choice
from handlers.actions.engine import create_action
from handlers.actions.model import DEFAULT_REMINDERS, DEFAULT_REVEAL, FLOW, KIND_LABELS, rule_of
from handlers.actions.parse import parse_kind, parse_start, parse_until
from handlers.actions.render import (
    action_title,
    audience_label,
    cap,
    describe_rule,
    fmt_duration,
    fmt_offsets,
    fmt_when,
    kind_label,
)
from handlers.common import clean_text, coordinated_case, valid_zone
from storage import actions, cases
from storage.actions import Action


def coordinator_zone(ctx: Context) -> str:
    """The zone a coordinator's times are read in: their /timezone, else the network's."""
    member = ctx.member
    own = valid_zone(member.timezone) if member is not None and member.timezone else None
    return own or valid_zone(ctx.services.default_timezone) or "UTC"


def usage(ctx: Context) -> str:
    text = ctx._(
        "Send /schedule SLUG WHEN TITLE, or /schedule - WHEN TITLE for an action without a "
        "case. WHEN is a local time like 2026-12-01T10:00 or a rule like weekly:sun@18:00, "
        "monthly:15@19:00 or yearly:10-30@12:00 (in {tz}). Options before the title: kind=vigil "
        "(or protest, hearing, letters, callin, online, other), to=all|case|role:activist, "
        "remind=24h,1h, tz=Europe/Berlin. Send /schedule alone for step-by-step questions.",
        tz=coordinator_zone(ctx),
    )
    return text + "\n" + ctx._("A repeating action can end: put until:2027-03-01 before the title.")


def zone_of(ctx: Context, data: dict[str, Any]) -> str:
    return data["options"].get("tz") or coordinator_zone(ctx)


def _missing(data: dict[str, Any]) -> str | None:
    """The first piece the coordinator has not given yet (the one-line form may give some)."""
    if "case_id" not in data:
        return "case"
    if "kind" not in data and "title" not in data:
        return "kind"
    if "when" not in data:
        return "when"
    if data.get("ask_until"):  # the wizard asks it of a repeating rule; the one-line form not
        return "until"
    for key in ("title", "place"):
        if key not in data:
            return key
    return None


def ask(ctx: Context, data: dict[str, Any]) -> None:
    """Ask for the first missing piece, or create the action when nothing is missing."""
    step = _missing(data)
    if step is None:
        _create_from(ctx, data)
        return
    ctx.start_flow(SCHEDULE, data, step=step)


def _continue(fc: FlowContext) -> None:
    step = _missing(fc.data)
    if step is not None:
        fc.goto(step)
        return
    fc.end()
    try:
        _create_from(fc.ctx, fc.data)
    except UserError as err:
        raise fc.fail(err.message) from None


def _ask_case(fc: FlowContext) -> str:
    return fc.ctx._(
        "Which case is this action for? Send the case's short name, or - for an action "
        "without a case. (/cancel stops.)"
    )


def _case_choices(fc: FlowContext) -> tuple[Choice, ...]:
    member = fc.ctx.require_member()
    mine = cases.coordinated_by(fc.ctx.conn, member.id, member.role)[:8]
    return (Choice(fc.ctx._("No case"), "-"), *(Choice(c.name[:40], c.slug) for c in mine))


def _answer_case(fc: FlowContext, value: str) -> None:
    value = value.strip()
    fc.data["case_id"] = None if value == "-" else coordinated_case(fc.ctx, value.lower()).id
    _continue(fc)


def _kind_choices(fc: FlowContext) -> tuple[Choice, ...]:
    return tuple(Choice(cap(kind_label(fc.ctx._, k)), k) for k in KIND_LABELS)


def _answer_kind(fc: FlowContext, value: str) -> None:
    fc.data["kind"] = parse_kind(fc.ctx, value.strip())
    _continue(fc)


def _ask_when(fc: FlowContext) -> str:
    return fc.ctx._(
        "When? Send a date and time like 2026-12-01T10:00, or a rule like "
        "weekly:sun@18:00, monthly:15@19:00 or yearly:10-30@12:00. Times are in {tz}.",
        tz=zone_of(fc.ctx, fc.data),
    )


def _answer_when(fc: FlowContext, value: str) -> None:
    fc.data.setdefault("options", {})
    _rule, once_at = parse_start(fc.ctx, value.strip(), zone_of(fc.ctx, fc.data))
    fc.data["when"] = value.strip()
    if once_at is None and "until" not in fc.data["options"]:
        fc.data["ask_until"] = True
    _continue(fc)


def _ask_until(fc: FlowContext) -> str:
    return fc.ctx._(
        "Does the series end? Send its last date like 2027-03-01, or - to keep it going."
    )


def _answer_until(fc: FlowContext, value: str) -> None:
    fc.data["options"]["until"] = parse_until(fc.ctx, value, zone_of(fc.ctx, fc.data))
    fc.data.pop("ask_until", None)
    _continue(fc)


def _answer_title(fc: FlowContext, value: str) -> None:
    fc.data["title"] = clean_title(fc.ctx, value.strip())
    _continue(fc)


def _ask_place(fc: FlowContext) -> str:
    return fc.ctx._(
        'Where? A city, an address or "online": everyone invited sees it. Send - to '
        "leave it empty. An exact meeting point for those who join only can be added "
        "afterwards with /editaction ID secret TEXT."
    )


def _answer_place(fc: FlowContext, value: str) -> None:
    value = value.strip()
    fc.data["place"] = None if value == "-" else clean_place(fc.ctx, value)
    _continue(fc)


SCHEDULE = Flow(
    FLOW,
    (
        Step("case", ask=_ask_case, answer=_answer_case, choices=_case_choices),
        Step(
            "kind",
            ask=lambda fc: fc.ctx._("What kind of action?"),
            answer=_answer_kind,
            choices=_kind_choices,
        ),
        Step("when", ask=_ask_when, answer=_answer_when),
        Step(
            "until",
            ask=_ask_until,
            answer=_answer_until,
            choices=lambda fc: (Choice(fc.ctx._("No end"), "-"),),
        ),
        Step(
            "title",
            ask=lambda fc: fc.ctx._("A short title, for example: Vigil outside the embassy."),
            answer=_answer_title,
        ),
        Step(
            "place",
            ask=_ask_place,
            answer=_answer_place,
            choices=lambda fc: (Choice(fc.ctx._("No place"), "-"),),
        ),
    ),
)


def clean_title(ctx: Context, value: str) -> str:
    return clean_text(ctx, value, label=ctx._("title"), most=120, multiline=False)


def clean_place(ctx: Context, value: str, most: int = 200) -> str:
    return clean_text(ctx, value, label=ctx._("place"), most=most, multiline=False)


def _create_from(ctx: Context, data: dict[str, Any]) -> None:
    ctx.services.poke_alarm()  # a schedule may change: re-arm after this commits
    member = ctx.require_member()
    opts = data["options"]
    tz = zone_of(ctx, data)
    rule, once_at = parse_start(ctx, data["when"], tz)
    until = opts.get("until")
    if until is not None:
        if once_at is not None:
            raise UserError(ctx._("Only a repeating action can have a last date (until:)."))
        until = parse_until(ctx, until, tz)
    case = cases.get(ctx.conn, data["case_id"]) if data["case_id"] is not None else None
    audience = opts.get("to") or ("case" if case is not None else "all")
    if audience == "case" and case is None:
        raise UserError(ctx._("Only an action for a case can go to the case's followers."))
    if case is not None and case.visibility != "public" and audience != "case":
        raise UserError(
            ctx._(
                "This case is restricted, so its actions go only to the people tied to it and "
                "its followers (to=case)."
            )
        )
    action = create_action(
        ctx.conn,
        kind=data.get("kind") or "other",
        title=clean_title(ctx, data["title"]),
        case_id=case.id if case else None,
        rule=rule,
        tz=tz,
        once_at=once_at,
        audience=audience,
        reminders=tuple(opts["remind"]) if "remind" in opts else DEFAULT_REMINDERS,
        now=ctx.now,
        place=data.get("place"),
        created_by=member.id,
        until_date=until,
    )
    ctx.audit("action.created", f"action:{action.id}")
    ctx.reply(summary(ctx, action, created=True))


def summary(ctx: Context, action: Action, *, created: bool = False) -> str:
    case = cases.get(ctx.conn, action.case_id) if action.case_id else None
    occ = actions.next_occurrence(ctx.conn, action.id, ctx.now)
    lines = [
        (ctx._("Scheduled #{id}: {title}", id=action.id, title=action_title(ctx._, action, case))
         if created else
         ctx._("#{id}: {title}", id=action.id, title=action_title(ctx._, action, case)))
    ]  # fmt: skip
    lines.append(ctx._("Kind: {kind}", kind=kind_label(ctx._, action.kind)))
    if occ is not None:
        lines.append(
            ctx._(
                "Next: {when}", when=fmt_when(ctx._, occ.start_at, action.timezone, action.all_day)
            )
        )
    repeat = describe_rule(ctx._, rule_of(action)) if action.once_at is None else None
    if repeat:
        lines.append(ctx._("Repeats {rule} ({tz})", rule=repeat, tz=action.timezone))
        if action.until_date:
            lines.append(ctx._("Last date: {date}", date=action.until_date))
    if case is not None:
        lines.append(ctx._("Case: {name}", name=case.name))
    if action.place:
        lines.append(ctx._("Where: {place}", place=action.place))
    if action.exact_place:
        lines.append(
            ctx._(
                "Exact meeting point, sent to those who joined {before} before the start: {place}",
                before=fmt_duration(ctx._, action.reveal_before or DEFAULT_REVEAL),
                place=action.exact_place,
            )
        )
    lines.append(ctx._("Audience: {audience}", audience=audience_label(ctx._, action.audience)))
    lines.append(ctx._("Reminders: {offsets}", offsets=fmt_offsets(ctx._, action.reminders)))
    lines.append(
        ctx._(
            "Change: /editaction {id} FIELD VALUE (title, kind, when, timezone, place, secret, "
            "reveal, audience, reminders). Call off: /unschedule {id}. Headcount: /headcount {id}",
            id=action.id,
        )
    )
    return "\n".join(lines)
