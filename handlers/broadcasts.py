"""Broadcasts: /broadcast SEGMENT TEXT, /confirm, /cancel ID; and the streaming fan-out engine.

A broadcast is a draft until its author confirms the preview (which shows how many people it
reaches). Confirming starts a fan-out: a `broadcasts` row with a cursor over the segment's
members in id order. The first chunk of outbox rows is written at once; the rest is written
by a dispatcher producer (`refill`) just ahead of sending, never more than AHEAD due rows per
transport, so 100,000 recipients are never in memory and a cancel stops what is left cheaply.
Each chunk and its cursor move commit together, and outbox idempotency keys make a repeated
chunk harmless: after a crash the fan-out resumes where its last commit left it.

Progress: one message to the author, edited in place where the transport can edit (Telegram),
at most every PROGRESS_EVERY seconds; elsewhere (Signal) a new line every PROGRESS_LINE_EVERY
seconds. A final summary is sent as a new message when nothing is left to send.

Quiet hours apply to every fan-out message below emergency priority: a member in their quiet
hours (in their own time zone) gets the message when the quiet hours end. Case alerts
(handlers/subscriptions.py) use the same engine with their own rendering.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bot.capability import Capability, Commands
from bot.context import COORDINATORS, Context, UserError, parse_id
from bot.i18n import N_, Translator, language_name
from bot.jobs import JobContext, Producer
from bot.messages import Choice, Priority
from handlers.common import clean_text, coordinated_case, role_name, zone
from storage import audience, broadcasts, members, outbox, settings
from storage.audience import Recipient
from storage.broadcasts import Broadcast
from storage.db import Connection

commands = Commands()

CHUNK = 500  # members read per materialisation step
AHEAD = 2000  # due outbox rows per transport kept ready ahead of the dispatcher
MAX_CHUNKS_PER_CALL = 1  # one chunk per writer job: claims and marks never wait long
DRAFT_TTL = 3600.0  # a preview not confirmed within an hour is dropped
PROGRESS_EVERY = 3.0  # edits in place (Telegram allows ~1 message per second per chat)
PROGRESS_LINE_EVERY = 60.0  # new progress lines where messages cannot be edited
MAX_BROADCAST_CHARS = 4000
STALL = 300.0  # seconds without progress after which rows "in flight" are no longer awaited
DEFAULT_TZ_KEY = "network.default_timezone"
DEFAULT_LANG_KEY = "network.default_language"

ROLE_ALIASES = {
    "activist": "activist",
    "activists": "activist",
    "supporter": "activist",
    "supporters": "activist",
    "family": "family",
    "relative": "family",
    "relatives": "family",
    "coordinator": "coordinator",
    "coordinators": "coordinator",
    "admin": "admin",
    "admins": "admin",
}


# -- time: quiet hours and local hours ------------------------------------------------------


_QUIET = re.compile(r"^(\d{1,2})-(\d{1,2})$")


def parse_quiet(quiet: str | None) -> tuple[int, int] | None:
    m = _QUIET.match(quiet or "")
    if not m:
        return None
    start, end = int(m.group(1)), int(m.group(2))
    if start == end or start > 23 or end > 23:
        return None
    return start, end


def quiet_until(quiet: str | None, tz: str | None, now: float) -> float:
    """When the member's quiet hours end if `now` is inside them (UTC epoch), else 0."""
    hours = parse_quiet(quiet)
    if hours is None:
        return 0.0
    start, end = hours
    local = datetime.fromtimestamp(now, zone(tz))
    h = local.hour
    inside = start <= h < end if start < end else (h >= start or h < end)
    if not inside:
        return 0.0
    return next_local_hour(end, tz, now)


def next_local_hour(hour: int, tz: str | None, now: float) -> float:
    """The next moment after `now` when the local clock shows hour:00 (DST-safe)."""
    z = zone(tz)
    local = datetime.fromtimestamp(now, z)
    day = local.date()
    for offset in range(3):
        candidate = datetime(day.year, day.month, day.day, hour, tzinfo=z) + timedelta(days=offset)
        # Re-normalise: a wall time that does not exist (DST gap) moves forward.
        at = candidate.timestamp()
        if at > now:
            return at
    return now + 86400.0


def network_defaults(conn: Connection) -> tuple[str, str]:
    """(time zone, language) for members who chose none; remembered from the services."""
    return (
        settings.get(conn, DEFAULT_TZ_KEY) or "UTC",
        settings.get(conn, DEFAULT_LANG_KEY) or "en",
    )


def remember_defaults(ctx: Context) -> None:
    """Producers run without a handler context; keep the network defaults where they see them."""
    for key, value in (
        (DEFAULT_TZ_KEY, ctx.services.default_timezone),
        (DEFAULT_LANG_KEY, ctx.services.default_language),
    ):
        if settings.get(ctx.conn, key) != value:
            settings.put(ctx.conn, key, value)


# -- the fan-out engine -------------------------------------------------------------------

# Per fan-out kind: recipient -> outbox body, or None to leave that recipient out.
Render = Callable[[Connection, Broadcast, Recipient, Translator], dict[str, Any] | None]


def _render_broadcast(
    conn: Connection, b: Broadcast, r: Recipient, tr: Translator
) -> dict[str, Any] | None:
    return {"text": b.body["text"]}


RENDERERS: dict[str, Render] = {"broadcast": _render_broadcast}


def _idem_prefix(b: Broadcast) -> str:
    return f"u{b.update_id}" if b.update_id is not None else f"b{b.id}"


def materialise(conn: Connection, b: Broadcast, now: float, limit: int = CHUNK) -> int:
    """Write the outbox rows of the next chunk of recipients and move the cursor."""
    default_tz, default_lang = network_defaults(conn)
    rows, cursor, exhausted = audience.chunk(conn, b.segment, b.cursor, limit, default_lang)
    render = RENDERERS[b.kind]
    bodies: dict[str, str | None] = {}  # rendering depends on language (and opt-outs)
    prefix = _idem_prefix(b)
    out = []
    for r in rows:
        if r.transport is None or r.chat is None:
            continue
        language = r.language or default_lang
        cache_key = f"{language}|{r.mode}|{','.join(sorted(r.optouts))}"
        if cache_key not in bodies:
            body = render(conn, b, r, Translator(language))
            bodies[cache_key] = outbox.dump_body(body) if body is not None else None
        body_json = bodies[cache_key]
        if body_json is None:
            continue
        not_before = 0.0
        if b.priority != Priority.EMERGENCY and r.quiet_hours:
            not_before = quiet_until(r.quiet_hours, r.timezone or default_tz, now)
        out.append(
            (
                r.transport,
                r.chat,
                r.member_id,
                b.priority,
                body_json,
                f"{prefix}:{r.member_id}:{r.transport}",
                b.id,
                not_before,
                now,
            )
        )
    written = outbox.enqueue_many(conn, out, b.id) if out else 0
    broadcasts.advance(conn, b.id, cursor, exhausted)
    return written


def refill(conn: Connection, now: float, transport: str) -> bool:
    """Dispatcher producer: materialise the next chunks of running fan-outs while this
    transport has fewer than AHEAD due rows at their priority (called when its queue runs
    dry, and periodically)."""
    wrote = False
    chunks = 0
    for b in broadcasts.materialising(conn):
        while not b.exhausted and chunks < MAX_CHUNKS_PER_CALL:
            if outbox.due_backlog(conn, transport, b.priority, now, AHEAD) >= AHEAD:
                break
            wrote |= materialise(conn, b, now) > 0
            chunks += 1
            fresh = broadcasts.get(conn, b.id)
            assert fresh is not None
            b = fresh
        if chunks >= MAX_CHUNKS_PER_CALL:
            return True  # more to do: ask to be called again at once
    return wrote


def _counts(conn: Connection, b: Broadcast, now: float) -> dict[str, int]:
    """Progress from the fan-out's counters, plus its pending rows (an index range)."""
    done = b.sent_count + b.failed_count + b.maybe_count + b.cancelled_count
    pending, held = outbox.fanout_pending(conn, b.id, now)
    sending = max(0, b.materialised - done - pending)
    left = pending + sending
    if not b.exhausted and b.state == broadcasts.RUNNING:
        left = max(left, b.expected - done)
    return {
        "sent": b.sent_count,
        "failed": b.failed_count + b.maybe_count,
        "maybe": b.maybe_count,
        "cancelled": b.cancelled_count,
        "left": left,
        "held": held,
        "pending": pending,
        "sending": sending,
    }


def _is_done(b: Broadcast, c: dict[str, int], now: float) -> bool:
    """Nothing left to write or send. Rows in flight count until they are answered, but a
    count that has not moved for STALL seconds (rows changed outside the outbox functions,
    e.g. cancelled by a revocation) does not keep a fan-out open for ever."""
    if not (b.exhausted or b.state == broadcasts.CANCELLED) or c["pending"]:
        return False
    return c["sending"] == 0 or now - b.progress_at > STALL


def _progress_text(tr: Translator, b: Broadcast, c: dict[str, int]) -> str:
    text = tr(
        "Broadcast #{id}: {sent} sent, {failed} not delivered, {left} to go.",
        id=b.id,
        sent=c["sent"],
        failed=c["failed"],
        left=c["left"],
    )
    if c["held"]:
        text += " " + tr("{held} wait for their quiet hours to end.", held=c["held"])
    return text


def _summary_text(tr: Translator, b: Broadcast, c: dict[str, int]) -> str:
    if b.state == broadcasts.CANCELLED:
        text = tr(
            "Broadcast #{id} was cancelled: {sent} sent before it stopped, {cancelled} not sent.",
            id=b.id,
            sent=c["sent"],
            cancelled=c["cancelled"],
        )
    else:
        text = tr(
            "Broadcast #{id} finished: {sent} sent, {failed} not delivered.",
            id=b.id,
            sent=c["sent"],
            failed=c["failed"],
        )
    if c["maybe"]:
        text += " " + tr(
            "For {maybe} of them the platform did not confirm delivery.", maybe=c["maybe"]
        )
    return text


def progress(
    conn: Connection, now: float, transport: str, editable: frozenset[str] = frozenset()
) -> bool:
    """Dispatcher producer: progress edits/lines and final summaries; drops stale drafts.
    `editable`: the transports that edit a sent message in place."""
    broadcasts.expire_drafts(conn, now - DRAFT_TTL)
    wrote = False
    for b in broadcasts.unfinished(conn):
        c = _counts(conn, b, now)
        done = _is_done(b, c, now)
        author = members.get(conn, b.author_id) if b.author_id else None
        if (
            b.progress_transport is None
            or b.progress_chat is None
            or author is None
            or author.role not in COORDINATORS
        ):
            # Alerts have no progress; nor does an author who was revoked meanwhile (a hijacked
            # account must not learn from a summary that its broadcast was stopped).
            if done:
                broadcasts.finish(conn, b.id, now)
            continue
        tr = Translator(author.language or network_defaults(conn)[1])
        editable = b.progress_transport in editable
        text = _progress_text(tr, b, c)
        if done:
            if editable and b.progress_id is not None:
                _edit_progress(conn, b, text, now)
            outbox.enqueue(
                conn,
                transport=b.progress_transport,
                chat=b.progress_chat,
                member_id=b.author_id,
                body={"text": _summary_text(tr, b, c)},
                priority=Priority.REPLY,
                now=now,
                idem_key=f"b{b.id}:summary",
            )
            broadcasts.finish(conn, b.id, now)
            wrote = True
            continue
        if text == b.progress_text:
            continue
        if editable and b.progress_id is not None:
            if now - b.progress_at >= PROGRESS_EVERY:
                _edit_progress(conn, b, text, now)
                wrote = True
        elif now - b.progress_at >= PROGRESS_LINE_EVERY:
            outbox.enqueue(
                conn,
                transport=b.progress_transport,
                chat=b.progress_chat,
                member_id=b.author_id,
                body={"text": text},
                priority=Priority.REPLY,
                now=now,
            )
            broadcasts.set_progress(conn, b.id, text=text, at=now)
            wrote = True
    return wrote


def _edit_progress(conn: Connection, b: Broadcast, text: str, now: float) -> None:
    """Edit the progress message in place; an edit not yet claimed is rewritten, not stacked."""
    assert b.progress_transport is not None and b.progress_chat is not None
    body = {"kind": "edit", "target": b.progress_id, "text": text}
    if b.progress_edit_id is not None and outbox.replace_pending_body(
        conn, b.progress_edit_id, body
    ):
        broadcasts.set_progress(conn, b.id, text=text, at=now)
        return
    edit_id = outbox.enqueue(
        conn,
        transport=b.progress_transport,
        chat=b.progress_chat,
        member_id=b.author_id,
        body=body,
        priority=Priority.REPLY,
        now=now,
    )
    broadcasts.set_progress(conn, b.id, text=text, at=now, edit_id=edit_id)


def _editable(job: JobContext) -> frozenset[str]:
    return frozenset(t for t, caps in job.services.transports.items() if caps.edits)


PRODUCERS = (
    Producer("fanout", lambda job, t: refill(job.conn, job.now, t), every=0.25, eager=True),
    Producer("progress", lambda job, t: progress(job.conn, job.now, t, _editable(job)), every=1.0),
)


# -- commands -----------------------------------------------------------------------------


def parse_segment(ctx: Context, token: str) -> tuple[str, str]:
    """(segment, label for the preview) from `all`, `case:SLUG`, `role:ROLE`, `lang:CODE`."""
    kind, _, value = token.partition(":")
    kind, value = kind.lower(), value.strip()
    if kind in ("all", "everyone") and not value:
        return "all", ctx._("everyone")
    if kind == "case" and value:
        case = coordinated_case(ctx, value)
        return f"case:{case.id}", ctx._("followers and relatives of {name}", name=case.name)
    if kind == "role" and value.lower() in ROLE_ALIASES:
        role = ROLE_ALIASES[value.lower()]

        return f"role:{role}", ctx._("every {role}", role=role_name(ctx, role))
    if kind in ("lang", "language") and re.fullmatch(r"[A-Za-z]{2,8}", value):
        code = value.lower()
        return f"lang:{code}", ctx._("members reading {language}", language=language_name(code))
    raise UserError(_usage(ctx))


def _usage(ctx: Context) -> str:
    return ctx._(
        "Send /broadcast SEGMENT TEXT. SEGMENT is one of: all, case:NAME, role:ROLE "
        "(activist, family, coordinator, admin), lang:CODE (e.g. lang:ru)."
    )


@commands.command(
    "broadcast",
    roles=COORDINATORS,
    summary=N_("message a group: /broadcast all|case:NAME|role:ROLE|lang:CODE TEXT"),
    order=60,
)
def broadcast(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    remember_defaults(ctx)
    token, _, text = args.strip().partition(" ")
    if not token:
        raise UserError(_usage(ctx))
    segment, label = parse_segment(ctx, token)
    if not text.strip():
        raise UserError(_usage(ctx))
    text = clean_text(ctx, text, label=ctx._("broadcast"), most=MAX_BROADCAST_CHARS, multiline=True)
    people, messages = audience.count(ctx.conn, segment, ctx.services.default_language)
    if people == 0:
        raise UserError(ctx._("Nobody can be reached in that group, so nothing was prepared."))
    bid = broadcasts.create(
        ctx.conn,
        kind="broadcast",
        segment=segment,
        body={"text": text},
        priority=Priority.BULK,
        now=ctx.now,
        author_id=member.id,
        expected=messages,
    )
    assert bid is not None
    ctx.audit("broadcast.drafted", f"broadcast:{bid}")
    preview = ctx._(
        "Broadcast #{id} to {label}: {people} people ({messages} messages).\n\n"
        "{text}\n\n"
        "Send /confirm to send it, or /cancel {id} to drop it. The draft expires in an hour.",
        id=bid,
        label=label,
        people=people,
        messages=messages,
        text=text,
    )
    ctx.reply(
        preview,
        choices=(
            Choice(ctx._("Send it"), f"/confirm {bid}"),
            Choice(ctx._("Drop it"), f"/cancel {bid}"),
        ),
    )


@commands.command(
    "confirm", roles=COORDINATORS, summary=N_("send the broadcast you prepared"), order=61
)
def confirm(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    remember_defaults(ctx)
    wanted = parse_id(args) if args.strip() else None
    if args.strip() and wanted is None:
        raise UserError(ctx._("There is no broadcast of yours waiting to be sent."))
    b: Broadcast | None
    if wanted is not None:
        b = broadcasts.get(ctx.conn, wanted)
        if b is not None and (
            b.author_id != member.id or b.state != broadcasts.DRAFT or b.kind != "broadcast"
        ):
            b = None
    else:
        b = broadcasts.latest_draft(ctx.conn, member.id, ctx.now - DRAFT_TTL)
    if b is None or b.created_at < ctx.now - DRAFT_TTL:
        raise UserError(ctx._("There is no broadcast of yours waiting to be sent."))
    _, messages = audience.count(ctx.conn, b.segment, ctx.services.default_language)
    broadcasts.start(
        ctx.conn,
        b.id,
        ctx.now,
        expected=messages,
        progress_transport=ctx.incoming.transport,
        progress_chat=ctx.incoming.chat,
    )
    started = broadcasts.get(ctx.conn, b.id)
    assert started is not None
    tr = ctx._
    text = (
        tr("Sending broadcast #{id}. /cancel {id} stops what is not sent yet.", id=b.id)
        + "\n"
        + _progress_text(tr, started, _counts(ctx.conn, started, ctx.now))
    )
    progress_id = outbox.enqueue(
        ctx.conn,
        transport=ctx.incoming.transport,
        chat=ctx.incoming.chat,
        member_id=member.id,
        body={"text": text},
        priority=Priority.REPLY,
        now=ctx.now,
    )
    broadcasts.set_progress(ctx.conn, b.id, text=text, at=ctx.now, progress_id=progress_id)
    fresh = broadcasts.get(ctx.conn, b.id)
    assert fresh is not None
    materialise(ctx.conn, fresh, ctx.now)
    ctx.audit("broadcast.confirmed", f"broadcast:{b.id}")


def cancel_fanout(ctx: Context, args: str) -> None:
    """/cancel ID: stop a broadcast or a case alert that is still going out."""
    wanted = parse_id(args)
    member = ctx.member
    if wanted is None or member is None or member.role not in COORDINATORS:
        raise UserError(ctx._("Send /cancel on its own to stop the current dialog."))
    b = broadcasts.get(ctx.conn, wanted)
    if b is None:
        raise UserError(ctx._("There is no broadcast or alert with that number."))
    if b.state == broadcasts.DRAFT:
        broadcasts.set_state(ctx.conn, b.id, broadcasts.CANCELLED)
        broadcasts.finish(ctx.conn, b.id, ctx.now)
        ctx.audit("broadcast.dropped", f"broadcast:{b.id}")
        ctx.reply(ctx._("Broadcast #{id} was dropped; nothing was sent.", id=b.id))
        return
    if b.state != broadcasts.RUNNING:
        raise UserError(ctx._("Broadcast #{id} has already finished.", id=b.id))
    broadcasts.set_state(ctx.conn, b.id, broadcasts.CANCELLED)
    stopped = outbox.cancel_broadcast(ctx.conn, b.id, ctx.now)
    ctx.audit("broadcast.cancelled", f"broadcast:{b.id}")
    ctx.reply(
        ctx._(
            "Stopped #{id}: {n} messages will not be sent. Messages already on their way "
            "cannot be called back.",
            id=b.id,
            n=stopped,
        )
    )


def capability() -> Capability:
    return Capability("broadcasts", commands=tuple(commands), producers=PRODUCERS)
