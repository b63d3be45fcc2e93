"""Following cases and hearing about them: /subscribe, /unsubscribe, /subscriptions, /update.

Followers choose, per case (or for all cases), instant alerts or one daily digest; they may
opt out of distressing categories (health, torture), and updates in those categories carry a
content note for everyone else. Quiet hours (/quiet, in the member's own time zone) hold alerts
until they end, except emergencies (an update marked `urgent`), which also skip the digest.

A published case update becomes an alert fan-out (handlers/broadcasts.py) to the case's
followers, idempotent per (update, member, transport). `/update` publishes directly; the
reviewed-report path (/publish) calls `on_case_update_published(ctx, case_id, update_id)`.
The daily digest is a dispatcher producer that gathers, per member at their digest hour, the
alerts of their digest-mode cases since their last digest into one message.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from bot.capability import Capability, Commands
from bot.context import COORDINATORS, MEMBERS, Context, UserError
from bot.flows import Flow, FlowContext, Step
from bot.i18n import N_, Translator
from bot.jobs import Producer
from bot.messages import Choice, Priority
from handlers import broadcasts as engine
from handlers.common import clean_text, visible_case
from storage import audience, broadcasts, cases, members, outbox
from storage import subscriptions as subs
from storage.audience import Recipient
from storage.broadcasts import Broadcast
from storage.db import Connection
from storage.subscriptions import ALL, DISTRESSING

commands = Commands()

log = logging.getLogger(__name__)

KINDS = ("hearing", "verdict", "transfer", "health", "release", "action", "general")
FLAGS = ("torture", "health", "urgent")
MAX_UPDATE_CHARS = 3500
DIGEST_BATCH = 500  # members per digest producer call
DIGEST_MAX_ITEMS = 15
DIGEST_ITEM_CHARS = 400
DAY = 86400.0


def kind_label(tr: Translator, kind: str) -> str:
    return {
        "hearing": tr("hearing"),
        "verdict": tr("verdict"),
        "transfer": tr("transfer"),
        "health": tr("health"),
        "release": tr("release"),
        "action": tr("call to action"),
        "general": tr("news"),
    }.get(kind, kind)


def category_label(tr: Translator, category: str) -> str:
    return {"health": tr("health"), "torture": tr("torture or ill-treatment")}.get(
        category, category
    )


def mode_label(tr: Translator, mode: str) -> str:
    return tr("daily digest") if mode == "digest" else tr("instant alerts")


def _categories(kind: str, flags: list[str] | tuple[str, ...]) -> list[str]:
    found = {f for f in flags if f in DISTRESSING}
    if kind == "health":
        found.add("health")
    return sorted(found)


# -- /subscribe, /unsubscribe, /subscriptions -----------------------------------------------


def _digest_started(ctx: Context, member_id: int) -> None:
    """Schedule the member's first digest when they choose digest mode anywhere."""
    p = subs.prefs(ctx.conn, member_id)
    if p.next_digest_at is None and subs.has_digest(ctx.conn, member_id):
        subs.set_digest_schedule(
            ctx.conn,
            member_id,
            _next_digest_at(ctx.conn, member_id, p.digest_hour, ctx.now),
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


# -- /update and the alert fan-out ------------------------------------------------------------

_HEAD = re.compile(r"^([A-Za-z]+(?:\+[A-Za-z]+)*):\s*(.*)$", re.S)


def parse_update(text: str) -> tuple[str, list[str], str]:
    """`[KIND[+FLAG...]:] TEXT` -> (kind, flags, text). A head that is not made of known
    kinds and flags is part of the text ("Note: ...")."""
    m = _HEAD.match(text.strip())
    if m:
        words = [w.lower() for w in m.group(1).split("+")]
        kinds = [w for w in words if w in KINDS]
        flags = [w for w in words if w in FLAGS and w not in kinds]
        if len(kinds) <= 1 and len(kinds) + len(flags) == len(words):
            return (kinds[0] if kinds else "general"), sorted(set(flags)), m.group(2).strip()
    return "general", [], text.strip()


_coordinated_case = engine.coordinated_case


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
    case = _coordinated_case(ctx, slug)
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
    _post(ctx, case, kind, flags, text)


def _ask_update_text(fc: FlowContext) -> str:
    case = cases.get(fc.ctx.conn, int(fc.data["case"]))
    return fc.ctx._(
        "Send the text of the {kind} update for {name}, or /cancel.",
        kind=kind_label(fc.ctx._, fc.data["kind"]),
        name=case.name if case else "",
    )


def _update_text(fc: FlowContext, text: str) -> None:
    ctx = fc.ctx
    member = ctx.require_member()
    case = cases.get(ctx.conn, int(fc.data["case"]))
    if case is None or not cases.may_coordinate(ctx.conn, case, member.id, member.role):
        raise fc.fail(ctx._("No case by that name was found, or you may not see it."))
    fc.end()
    _post(ctx, case, fc.data["kind"], list(fc.data.get("flags", [])), text.strip())


UPDATE_TEXT = Flow("update", (Step("text", ask=_ask_update_text, answer=_update_text),))


def _post(ctx: Context, case: cases.Case, kind: str, flags: list[str], text: str) -> None:
    # Others read it: no direction overrides, zero-width or control characters (NFC, trimmed).
    text = clean_text(ctx, text, label=ctx._("update"), most=MAX_UPDATE_CHARS, multiline=True)
    member = ctx.require_member()
    update_id = store_update(ctx.conn, case.id, kind, text, member.id, ctx.now)
    bid, people = publish_alert(
        ctx.conn,
        case=case,
        update_id=update_id,
        kind=kind,
        flags=flags,
        text=text,
        author_id=member.id,
        now=ctx.now,
    )
    ctx.audit("case.update", f"case:{case.id}")
    ctx.reply(
        ctx._(
            "Update posted for {name} ({kind}). {n} followers will be alerted "
            "(alert #{id}; /cancel {id} stops it).",
            name=case.name,
            kind=kind_label(ctx._, kind),
            n=people,
            id=bid,
        )
    )


def store_update(
    conn: Connection, case_id: int, kind: str, text: str, author_id: int | None, now: float
) -> int | None:
    """The public case update row, through the cases repository (migration 002); None while
    that repository has no `add_update` (the alert carries its own copy of the text)."""
    add = getattr(cases, "add_update", None)
    if add is None:
        return None
    return add(conn, case_id, text, now=now, kind=kind, author_id=author_id)


def load_update(conn: Connection, update_id: int) -> tuple[int, str, list[str], str] | None:
    """(case id, kind, flags, text) of a stored update, via the cases repository if it offers
    `get_update`, else from the `case_updates` table."""
    get = getattr(cases, "get_update", None)
    if get is not None:
        u = get(conn, update_id)
        if u is None:
            return None
        text = getattr(u, "text", None) or getattr(u, "body", "")
        flags = list(getattr(u, "flags", ()) or ())
        return u.case_id, getattr(u, "kind", "general"), flags, text
    try:
        cur = conn.execute("SELECT * FROM case_updates WHERE id = ?", (update_id,))
    except Exception:  # no such table yet
        return None
    row = cur.fetchone()
    if row is None:
        return None
    data = dict(zip([d[0] for d in cur.description], row, strict=True))
    flags = [f for f in str(data.get("flags") or "").split(",") if f]
    return (
        data["case_id"],
        str(data.get("kind") or "general"),
        flags,
        str(data.get("text") or data.get("body") or ""),
    )


def publish_alert(
    conn: Connection,
    *,
    case: cases.Case,
    update_id: int | None,
    kind: str,
    flags: list[str],
    text: str,
    author_id: int | None,
    now: float,
) -> tuple[int, int]:
    """Start the alert fan-out of a case update: (alert id, people it will reach). Publishing
    the same update twice starts nothing new."""
    if update_id is not None:
        row = conn.execute("SELECT id FROM broadcasts WHERE update_id = ?", (update_id,)).fetchone()
        if row is not None:
            return row[0], 0
    priority = Priority.EMERGENCY if "urgent" in flags else Priority.ALERT
    people, _ = audience.count(conn, f"subs:{case.id}")
    bid = broadcasts.create(
        conn,
        kind="alert",
        segment=f"subs:{case.id}",
        body={
            "text": text,
            "kind": kind if kind in KINDS else "general",
            "flags": sorted(set(flags)),
            "case": case.name,
            "slug": case.slug,
        },
        priority=priority,
        now=now,
        state=broadcasts.RUNNING,
        author_id=author_id,
        case_id=case.id,
        update_id=update_id,
        expected=people,
    )
    assert bid is not None
    b = broadcasts.get(conn, bid)
    assert b is not None
    engine.materialise(conn, b, now)  # the first chunk now; the dispatcher streams the rest
    return bid, people


def on_case_update_published(ctx: Context, case_id: int, update_id: int) -> None:
    """Hook for the reviewed-report path (/publish): alert the case's followers."""
    case = cases.get(ctx.conn, case_id)
    loaded = load_update(ctx.conn, update_id)
    if case is None or loaded is None:
        log.warning("published update not found; no alert")
        return
    _, kind, flags, text = loaded
    engine.remember_defaults(ctx)
    publish_alert(
        ctx.conn,
        case=case,
        update_id=update_id,
        kind=kind,
        flags=flags,
        text=text,
        author_id=ctx.member.id if ctx.member else None,
        now=ctx.now,
    )


def alert_text(tr: Translator, body: dict[str, Any], *, digest: bool = False) -> str:
    kind = str(body.get("kind", "general"))
    head = f"{body.get('case', '')} — {kind_label(tr, kind)}"
    lines = [head]
    cats = _categories(kind, body.get("flags", []))
    if cats:
        lines.append(
            tr(
                "Content note: {topics}.",
                topics=", ".join(category_label(tr, c) for c in cats),
            )
        )
    text = str(body.get("text", ""))
    if digest and len(text) > DIGEST_ITEM_CHARS:
        text = text[: DIGEST_ITEM_CHARS - 1].rstrip() + "…"
    lines.append(text)
    if not digest:
        lines.append(f"/case {body.get('slug', '')}")
    return "\n".join(lines)


def _render_alert(
    conn: Connection, b: Broadcast, r: Recipient, tr: Translator
) -> dict[str, Any] | None:
    cats = _categories(str(b.body.get("kind", "general")), b.body.get("flags", []))
    if r.optouts.intersection(cats):
        return None
    if r.mode == "digest" and b.priority != Priority.EMERGENCY:
        return None  # the daily digest picks it up
    return {"text": alert_text(tr, b.body)}


engine.RENDERERS["alert"] = _render_alert


# -- the daily digest ---------------------------------------------------------------------


def _next_digest_at(conn: Connection, member_id: int, hour: int, now: float) -> float:
    member = members.get(conn, member_id)
    default_tz, _ = engine.network_defaults(conn)
    tz = (member.timezone if member else None) or default_tz
    at = engine.next_local_hour(hour, tz, now)
    held = engine.quiet_until(member.quiet_hours if member else None, tz, at)
    return held or at


def _digest_mode(conn: Connection, member_id: int) -> dict[int, str]:
    return {s.case_id: s.mode for s in subs.of_member(conn, member_id)}


def digest_tick(conn: Connection, now: float, transport: str) -> bool:
    """Dispatcher producer: one digest message per member whose digest hour has come."""
    due = subs.digests_due(conn, now, DIGEST_BATCH)
    if not due:
        return False
    wrote = False
    earliest = min((subs.prefs(conn, m).last_digest_at or now - DAY) for m in due)
    recent = broadcasts.alerts_since(conn, None, earliest, now)
    case_cache: dict[int, cases.Case | None] = {}
    for member_id in due:
        wrote |= _digest_for(conn, member_id, now, recent, case_cache)
    return wrote


def _digest_for(
    conn: Connection,
    member_id: int,
    now: float,
    recent: list[Broadcast],
    case_cache: dict[int, cases.Case | None],
) -> bool:
    member = members.get(conn, member_id)
    p = subs.prefs(conn, member_id)
    if member is None:
        return False
    modes = _digest_mode(conn, member_id)
    if "digest" not in modes.values():
        subs.set_digest_schedule(conn, member_id, None, p.last_digest_at)
        return False
    since = p.last_digest_at or now - DAY
    items = []
    for b in recent:
        if b.created_at <= since or b.priority == Priority.EMERGENCY or b.case_id is None:
            continue
        mode = modes.get(b.case_id) or modes.get(ALL)
        if mode != "digest":
            continue
        if b.case_id not in case_cache:
            case_cache[b.case_id] = cases.get(conn, b.case_id)
        case = case_cache[b.case_id]
        if case is None or not cases.can_see(conn, case, member.id, member.role):
            continue
        cats = _categories(str(b.body.get("kind", "general")), b.body.get("flags", []))
        if p.optouts.intersection(cats):
            continue
        items.append(b)
    subs.set_digest_schedule(
        conn, member_id, _next_digest_at(conn, member_id, p.digest_hour, now), now
    )
    if not items:
        return False
    default_tz, default_lang = engine.network_defaults(conn)
    tr = Translator(member.language or default_lang)
    parts = [tr("Your daily digest: {n} updates.", n=len(items))]
    for b in items[:DIGEST_MAX_ITEMS]:
        parts.append(alert_text(tr, b.body, digest=True) + f"\n/case {b.body.get('slug', '')}")
    if len(items) > DIGEST_MAX_ITEMS:
        parts.append(tr("…and {n} more. See /cases.", n=len(items) - DIGEST_MAX_ITEMS))
    parts.append(tr("Settings: /subscriptions"))
    text = "\n\n".join(parts)
    day = engine.zone(member.timezone or default_tz)
    stamp = datetime.fromtimestamp(now, day).strftime("%Y-%m-%d")
    wrote = False
    for ident in members.identities(conn, member_id):
        if not ident.reachable:
            continue
        wrote |= (
            outbox.enqueue(
                conn,
                transport=ident.transport,
                chat=ident.chat,
                member_id=member_id,
                body={"text": text},
                priority=Priority.ALERT,
                now=now,
                idem_key=f"digest:{member_id}:{stamp}:{ident.transport}",
            )
            is not None
        )
    return wrote


PRODUCERS = (Producer("digest", lambda job, t: digest_tick(job.conn, job.now, t), every=5.0),)


def capability() -> Capability:
    return Capability(
        "subscriptions", commands=tuple(commands), flows=(UPDATE_TEXT,), producers=PRODUCERS
    )
