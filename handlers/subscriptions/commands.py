"""/subscribe, /unsubscribe, /subscriptions and /update."""

from __future__ import annotations

from bot.capability import Commands
from bot.context import COORDINATORS, MEMBERS, Context, UserError
from bot.i18n import N_
from bot.messages import Choice
from handlers import broadcasts as engine
from handlers.broadcasts import (
    KINDS,
    category_label,
    kind_label,
    mode_label,
)
from handlers.common import coordinated_case, visible_case
from handlers.subscriptions.digest import next_digest_at
from handlers.subscriptions.updates import UPDATE_TEXT, parse_update, post
from storage import cases, members
from storage import subscriptions as subs
from storage.subscriptions import ALL, DISTRESSING

commands = Commands()


def _digest_started(ctx: Context, member_id: int) -> None:
    """Schedule the member's first digest when they choose digest mode anywhere."""
    p = subs.prefs(ctx.conn, member_id)
    if p.next_digest_at is None and subs.has_digest(ctx.conn, member_id):
        subs.set_digest_schedule(
            ctx.conn,
            member_id,
            next_digest_at(ctx.conn, member_id, p.digest_hour, ctx.now),
            p.last_digest_at or ctx.now,
        )


def _parse_mode(ctx: Context, word: str) -> str:
    word = word.lower()
    if word in ("digest", "daily"):
        return "digest"
    if word in ("instant", "now", "alerts"):
        return "instant"
    raise UserError(ctx._("Choose instant or digest, for example /subscribe NAME digest."))


@commands.command(
    "subscribe", roles=MEMBERS, summary=N_("follow a case: /subscribe NAME or all"), order=20
)
def subscribe(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    engine.remember_defaults(ctx)
    words = args.split()
    if not words:
        found = cases.visible_to(ctx.conn, member.id, member.role)
        choices = [Choice(c.name, f"/subscribe {c.slug}") for c in found[:20]]
        choices.append(Choice(ctx._("All cases"), "/subscribe all"))
        ctx.reply(ctx._("Which case do you want to follow?"), tuple(choices))
        return
    mode = _parse_mode(ctx, words[1]) if len(words) > 1 else None
    if words[0].lower() == "all":
        case_id, name = ALL, ctx._("all cases")
    else:
        case = visible_case(ctx, words[0])
        case_id, name = case.id, case.name
    current = subs.get(ctx.conn, member.id, case_id)
    chosen = mode or (current if current in subs.MODES else "instant")
    if current == chosen:
        ctx.reply(
            ctx._("You already follow {name} ({mode}).", name=name, mode=mode_label(ctx._, chosen))
        )
        return
    subs.subscribe(ctx.conn, member.id, case_id, chosen, ctx.now)
    _digest_started(ctx, member.id)
    if chosen == "digest":
        hour = subs.prefs(ctx.conn, member.id).digest_hour
        text = ctx._(
            "You follow {name}: one daily digest at {hour}:00 your time.",
            name=name,
            hour=f"{hour:02d}",
        )
    else:
        text = ctx._("You follow {name}: alerts as they happen.", name=name)
    other = "instant" if chosen == "digest" else "digest"
    target = "all" if case_id == ALL else words[0].lower()
    ctx.reply(
        text + "\n" + ctx._("Quiet hours: /quiet. Your alerts and settings: /subscriptions"),
        (Choice(mode_label(ctx._, other), f"/subscribe {target} {other}"),),
    )


@commands.command("unsubscribe", roles=MEMBERS, summary=N_("stop following a case"), order=21)
def unsubscribe(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    words = args.split()
    if not words:
        current = [s for s in subs.of_member(ctx.conn, member.id) if s.mode != "off"]
        if not current:
            ctx.reply(ctx._("You do not follow any case."))
            return
        choices = []
        for s in current:
            if s.case_id == ALL:
                choices.append(Choice(ctx._("All cases"), "/unsubscribe all"))
                continue
            case = cases.get(ctx.conn, s.case_id)
            if case is not None:
                choices.append(Choice(case.name, f"/unsubscribe {case.slug}"))
        ctx.reply(ctx._("Which case do you want to stop following?"), tuple(choices))
        return
    if words[0].lower() == "all":
        removed = subs.remove_all(ctx.conn, member.id)
        if removed:
            ctx.reply(ctx._("You no longer follow any case. /subscribe to follow one again."))
        else:
            ctx.reply(ctx._("You do not follow any case."))
        return
    case = visible_case(ctx, words[0])
    follows_all = subs.get(ctx.conn, member.id, ALL) in subs.MODES
    current = subs.get(ctx.conn, member.id, case.id)
    if follows_all:
        if current == "off":
            ctx.reply(ctx._("You already get no alerts about {name}.", name=case.name))
            return
        subs.subscribe(ctx.conn, member.id, case.id, "off", ctx.now)
        ctx.reply(
            ctx._(
                "You no longer get alerts about {name}. You still follow all other cases.",
                name=case.name,
            )
        )
        return
    if not subs.remove(ctx.conn, member.id, case.id):
        ctx.reply(ctx._("You were not following {name}.", name=case.name))
        return
    ctx.reply(ctx._("You no longer follow {name}.", name=case.name))


@commands.command(
    "subscriptions", roles=MEMBERS, summary=N_("what you follow, digest, hidden topics"), order=22
)
def subscriptions(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    engine.remember_defaults(ctx)
    words = args.lower().split()
    p = subs.prefs(ctx.conn, member.id)
    if words and words[0] in ("digest", "instant", "daily", "now"):
        mode = _parse_mode(ctx, words[0])
        changed = subs.set_mode_everywhere(ctx.conn, member.id, mode)
        if not changed:
            raise UserError(ctx._("You do not follow any case yet. Send /subscribe to start."))
        _digest_started(ctx, member.id)
        ctx.reply(ctx._("All your cases now come as {mode}.", mode=mode_label(ctx._, mode)))
        return
    if words and words[0] in ("hide", "show") and len(words) > 1:
        category = words[1]
        if category not in DISTRESSING:
            raise UserError(
                ctx._("You can hide these topics: {list}.", list=", ".join(DISTRESSING))
            )
        optouts = set(p.optouts)
        if words[0] == "hide":
            optouts.add(category)
            text = ctx._(
                "You will not get updates about {topic}.",
                topic=category_label(ctx._, category),
            )
        else:
            optouts.discard(category)
            text = ctx._(
                "You will get updates about {topic} again, with a content note.",
                topic=category_label(ctx._, category),
            )
        subs.set_optouts(ctx.conn, member.id, optouts)
        ctx.reply(text)
        return
    if words:
        raise UserError(
            ctx._(
                "Send /subscriptions alone, or /subscriptions digest|instant, "
                "or /subscriptions hide|show health|torture."
            )
        )
    ctx.reply(*_overview(ctx, member.id, p))


def _overview(ctx: Context, member_id: int, p: subs.Prefs) -> tuple[str, tuple[Choice, ...]]:
    tr = ctx._
    lines = []
    current = subs.of_member(ctx.conn, member_id)
    follows = [s for s in current if s.mode != "off"]
    if not follows:
        lines.append(tr("You do not follow any case. Send /subscribe to start."))
    else:
        lines.append(tr("You follow:"))
        for s in follows:
            if s.case_id == ALL:
                lines.append("• " + tr("all cases") + f" — {mode_label(tr, s.mode)}")
                continue
            case = cases.get(ctx.conn, s.case_id)
            if case is not None:
                lines.append(f"• {case.name} (/case {case.slug}) — {mode_label(tr, s.mode)}")
        muted = [s for s in current if s.mode == "off"]
        for s in muted:
            case = cases.get(ctx.conn, s.case_id)
            if case is not None:
                lines.append("• " + tr("not {name}", name=case.name))
    member = members.get(ctx.conn, member_id)
    quiet = engine.parse_quiet(member.quiet_hours if member else None)
    if quiet:
        lines.append(
            tr(
                "Quiet hours: {start}:00 to {end}:00 (/quiet).",
                start=f"{quiet[0]:02d}",
                end=f"{quiet[1]:02d}",
            )
        )
    if p.optouts:
        topics = ", ".join(category_label(tr, c) for c in sorted(p.optouts))
        lines.append(tr("Hidden topics: {topics}.", topics=topics))
    choices = [
        Choice(tr("Daily digest for all"), "/subscriptions digest"),
        Choice(tr("Instant alerts for all"), "/subscriptions instant"),
    ]
    for c in DISTRESSING:
        verb = "show" if c in p.optouts else "hide"
        label = (
            tr("Show {topic}", topic=category_label(tr, c))
            if verb == "show"
            else tr("Hide {topic}", topic=category_label(tr, c))
        )
        choices.append(Choice(label, f"/subscriptions {verb} {c}"))
    return "\n".join(lines), tuple(choices)


@commands.command(
    "update",
    roles=COORDINATORS,
    summary=N_("post a case update and alert followers: /update NAME [kind:] TEXT"),
    order=40,
)
def update(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    engine.remember_defaults(ctx)
    slug, _, rest = args.strip().partition(" ")
    if not slug:
        found = [
            c
            for c in cases.visible_to(ctx.conn, member.id, member.role)
            if cases.may_coordinate(ctx.conn, c, member.id, member.role)
        ]
        ctx.reply(
            ctx._("Which case is the update about?"),
            tuple(Choice(c.name, f"/update {c.slug}") for c in found[:20]),
        )
        return
    case = coordinated_case(ctx, slug)
    rest = rest.strip()
    if not rest:
        ctx.reply(
            ctx._("What kind of update is it?"),
            tuple(Choice(kind_label(ctx._, k), f"/update {case.slug} {k}:") for k in KINDS),
        )
        return
    kind, flags, text = parse_update(rest)
    if not text.strip():
        ctx.start_flow(UPDATE_TEXT, {"case": case.id, "kind": kind, "flags": flags})
        return
    post(ctx, case, kind, flags, text)
