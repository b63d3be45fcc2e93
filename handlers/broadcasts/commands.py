"""/broadcast SEGMENT TEXT, /confirm and /cancel ID."""

from __future__ import annotations

import re

from bot.capability import Commands
from bot.context import COORDINATORS, Context, UserError, parse_id
from bot.i18n import N_, language_name
from bot.messages import Choice, Priority
from handlers.broadcasts.engine import materialise
from handlers.broadcasts.progress import DRAFT_TTL, counts, progress_text
from handlers.broadcasts.timing import remember_defaults
from handlers.common import clean_text, coordinated_case, role_name
from storage import audience, broadcasts, outbox
from storage.broadcasts import Broadcast

commands = Commands()


MAX_BROADCAST_CHARS = 4000


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
        + progress_text(tr, started, counts(ctx.conn, started, ctx.now))
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
