"""/broadcast [public] SEGMENT TEXT, /confirm and /cancel ID; broadcasts under the two-person rule.

Who may address whom (issue 14): `case:SLUG` is for that case's coordinators and the admins
(`coordinated_case`); `all`, `role:ROLE` and `lang:CODE` for any coordinator, but they, and any
audience over the network's threshold (`approval_threshold`, 200 by default), go out only once
a second eligible person approves (handlers/approvals). A coordinator has one unsent draft at a
time: a new /broadcast replaces the previous one and says so, so nothing queues silently.

A broadcast goes to vetted members only unless the coordinator writes `public` before the
segment: then open supporters (joined without an invite) get it too. The word comes first,
not after the segment, so a text that starts with "public" ("public hearing at 10") can never
widen the audience by accident."""

from __future__ import annotations

import re

from bot.capability import Commands
from bot.context import COORDINATORS, Context, UserError, parse_id
from bot.i18n import N_, Translator, language_name
from bot.jobs import JobContext
from bot.messages import Choice, Priority
from bot.notify import route
from handlers.approvals import core as approval
from handlers.broadcasts.engine import materialise
from handlers.broadcasts.progress import DRAFT_TTL, counts, progress_text
from handlers.broadcasts.timing import remember_defaults
from handlers.common import clean_text, coordinated_case, count_people, role_label
from storage import approvals, audience, broadcasts, cases, members, outbox
from storage.approvals import Approval
from storage.broadcasts import Broadcast
from storage.db import Connection

commands = Commands()


MAX_BROADCAST_CHARS = 4000


def parse_segment(ctx: Context, token: str) -> tuple[str, str]:
    """(segment, label for the preview) from `all`, `case:SLUG`, `role:ROLE`, `lang:CODE`."""
    kind, _, value = token.partition(":")
    kind, value = kind.lower(), value.strip()
    segment = None
    if kind in ("all", "everyone") and not value:
        segment = "all"
    elif kind == "case" and value:
        segment = f"case:{coordinated_case(ctx, value).id}"
    elif kind == "role" and members.parse_role(value):
        segment = f"role:{members.parse_role(value)}"
    elif kind in ("lang", "language") and re.fullmatch(r"[A-Za-z]{2,8}", value):
        segment = f"lang:{value.lower()}"
    if segment is None:
        raise UserError(_usage(ctx))
    return segment, segment_label(ctx.conn, ctx._, segment)


def _usage(ctx: Context) -> str:
    return ctx._(
        "Send /broadcast [public] SEGMENT TEXT. SEGMENT is one of: all, case:NAME, role:ROLE "
        "(activist, family, coordinator, admin), lang:CODE (e.g. lang:ru). It goes to vetted "
        "members only; with public first, open supporters (joined without an invite) get it too."
    )


PUBLIC_WORD = "public"


def split_public(args: str) -> tuple[bool, str]:
    """(marked public, the rest): `public` is a flag only as the first word."""
    first, _, rest = args.strip().partition(" ")
    if first.lower() == PUBLIC_WORD:
        return True, rest.strip()
    return False, args.strip()


def reach_line(tr: Translator, public: bool, *, hint: bool = True) -> str:
    """What a preview says about open supporters, so whoever sends or approves it sees who is
    left out; `hint` tells the author how to include them."""
    if public:
        return tr("Public: open supporters (joined without an invite) get it too.")
    if not hint:
        return tr("Vetted members only: open supporters (joined without an invite) do not get it.")
    return tr(
        "Vetted members only: open supporters (joined without an invite) do not get it. "
        "To include them, start with public: /broadcast public SEGMENT TEXT"
    )


@commands.command(
    "broadcast",
    roles=COORDINATORS,
    summary=N_("message a group: /broadcast [public] all|case:NAME|role:ROLE|lang:CODE TEXT"),
    order=60,
)
def broadcast(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    remember_defaults(ctx)
    public, args = split_public(args)
    token, _, text = args.partition(" ")
    if not token:
        raise UserError(_usage(ctx))
    segment, label = parse_segment(ctx, token)
    if not text.strip():
        raise UserError(_usage(ctx))
    text = clean_text(ctx, text, label=ctx._("broadcast"), most=MAX_BROADCAST_CHARS, multiline=True)
    people, messages = audience.count(
        ctx.conn, segment, ctx.services.default_language, reach_open=public
    )
    if people == 0:
        raise UserError(ctx._("Nobody can be reached in that group, so nothing was prepared."))
    replaced = _drop_unsent(ctx, member.id)
    bid = broadcasts.create(
        ctx.conn,
        kind="broadcast",
        segment=segment,
        body={"text": text},
        priority=Priority.BULK,
        now=ctx.now,
        author_id=member.id,
        expected=messages,
        public=public,
    )
    assert bid is not None
    ctx.audit("broadcast.drafted", f"broadcast:{bid}")
    preview = ctx._(
        "Broadcast #{id} to {label}: {audience} ({messages}).\n\n"
        "{text}\n\n"
        "Send /confirm to send it, or /cancel {id} to drop it. The draft expires in an hour.",
        id=bid,
        label=label,
        audience=count_people(ctx._, people),
        messages=ctx._.plural("{n} message", "{n} messages", messages),
        text=text,
    )
    # The reach goes right after the count it explains, before the text.
    head, sep, rest = preview.partition("\n\n")
    preview = head + "\n" + reach_line(ctx._, public) + sep + rest
    from handlers.broadcasts.translations import coverage  # it registers on this module

    draft = broadcasts.get(ctx.conn, bid)
    assert draft is not None
    by_language = audience.languages(
        ctx.conn, segment, ctx.services.default_language, reach_open=public
    )
    if len(by_language) > 1:
        preview += (
            "\n"
            + coverage(ctx, draft, by_language)
            + "\n"
            + ctx._(
                "To give readers of another language their own text: /translate {id} LANG TEXT",
                id=bid,
            )
        )
    if needs_approval(ctx, segment, people)[0]:
        preview += "\n" + ctx._(
            "This audience needs a second person: after /confirm, another administrator (or "
            "another coordinator of the case) must approve it before anything is sent."
        )
    if replaced:
        preview = (
            ctx._(
                "This replaces your unsent draft #{old}, which was dropped.",
                old=", #".join(str(r) for r in replaced),
            )
            + "\n\n"
            + preview
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
    if b is None and wanted is None:
        # Nothing unsent: perhaps one is already waiting for a second person; say so.
        for old in broadcasts.drafts_of(ctx.conn, member.id, 0.0):
            asked = approvals.pending_for_subject(ctx.conn, f"broadcast:{old.id}")
            if asked is not None:
                ctx.reply(approval.waiting_text(ctx._, asked.id))
                return
    waiting = approvals.pending_for_subject(ctx.conn, f"broadcast:{b.id}") if b else None
    if waiting is not None:
        ctx.reply(approval.waiting_text(ctx._, waiting.id))
        return
    if b is None or b.created_at < ctx.now - DRAFT_TTL:
        raise UserError(ctx._("There is no broadcast of yours waiting to be sent."))
    people, messages = audience.count(
        ctx.conn, b.segment, ctx.services.default_language, reach_open=b.public
    )
    needed, case_id = needs_approval(ctx, b.segment, people)
    if needed:
        text = b.body.get("text", "")
        segment, public = b.segment, b.public

        def preview(_: Translator) -> str:
            head, sep, rest = _(
                "Broadcast #{id} to {label}: {audience}.\n\n{text}",
                id=b.id,
                label=segment_label(ctx.conn, _, segment),
                audience=count_people(_, people),
                text=text,
            ).partition("\n\n")
            return head + "\n" + reach_line(_, public, hint=False) + sep + rest

        aid = approval.request(
            ctx,
            kind="broadcast",
            subject=f"broadcast:{b.id}",
            payload={},
            case_id=case_id,
            preview=preview,
        )
        if aid is not None:
            ctx.audit("broadcast.confirmed", f"broadcast:{b.id}")
            ctx.reply(approval.waiting_text(ctx._, aid))
            return
    transport, chat = ctx.incoming.transport, ctx.incoming.chat
    _start(ctx.conn, b, ctx.now, ctx._, member.id, transport, chat, messages, None)
    ctx.audit("broadcast.confirmed", f"broadcast:{b.id}")


def needs_approval(ctx: Context, segment: str, people: int) -> tuple[bool, int | None]:
    """(under the two-person rule?, the case whose coordinators may also approve)."""
    case_id = audience.Segment.parse(segment).case_id
    if case_id is not None:
        return people > ctx.services.approval_threshold, case_id
    return True, None


def segment_label(conn: Connection, tr: Translator, segment: str) -> str:
    """The audience in words, for an approver who did not write the command."""
    kind, _, value = segment.partition(":")
    if kind == "case":
        case = cases.get(conn, int(value))
        return tr("followers and relatives of {name}", name=case.name if case else "?")
    if kind == "role":
        return tr("every {role}", role=role_label(tr, value))
    if kind == "lang":
        return tr("members reading {language}", language=language_name(value))
    return tr("everyone")


def _start(
    conn: Connection,
    b: Broadcast,
    now: float,
    tr: Translator,
    author_id: int,
    transport: str,
    chat: str,
    messages: int,
    approved_by: int | None,
) -> None:
    """Start the fan-out, with the progress message to its author."""
    broadcasts.start(
        conn, b.id, now, expected=messages, progress_transport=transport, progress_chat=chat
    )
    started = broadcasts.get(conn, b.id)
    assert started is not None
    head = (
        tr("Member {member} approved broadcast #{id}.", member=approved_by, id=b.id) + "\n"
        if approved_by is not None
        else ""
    )
    text = (
        head
        + tr("Sending broadcast #{id}. /cancel {id} stops what is not sent yet.", id=b.id)
        + "\n"
        + progress_text(tr, started, counts(conn, started, now))
    )
    progress_id = outbox.enqueue(
        conn,
        transport=transport,
        chat=chat,
        member_id=author_id,
        body={"text": text},
        priority=Priority.REPLY,
        now=now,
    )
    broadcasts.set_progress(conn, b.id, text=text, at=now, progress_id=progress_id)
    fresh = broadcasts.get(conn, b.id)
    assert fresh is not None
    materialise(conn, fresh, now)


def approved_broadcast(ctx: Context, a: Approval) -> str | None:
    """The second person approved: the broadcast starts, its progress goes to its author."""
    bid = int(a.subject.partition(":")[2])
    b = broadcasts.get(ctx.conn, bid)
    if b is None or b.state != broadcasts.DRAFT or b.author_id is None:
        return None
    author = members.get(ctx.conn, b.author_id)
    if author is None or author.role not in COORDINATORS:
        return None
    way = route(
        members.identities(ctx.conn, author.id), outbox.ORDINARY, None, ctx.services.transports
    )
    if way is None:
        return None
    people, messages = audience.count(
        ctx.conn, b.segment, ctx.services.default_language, reach_open=b.public
    )
    tr = Translator(author.language or ctx.services.default_language)
    approver = ctx.require_member()
    _start(
        ctx.conn, b, ctx.now, tr, author.id, way.identity.transport, way.identity.chat, messages,
        approver.id,
    )  # fmt: skip
    ctx.audit("broadcast.approved", f"broadcast:{b.id}")
    return ctx._(
        "Approved: broadcast #{id} is going out to {audience}. Its author follows the progress.",
        id=b.id,
        audience=count_people(ctx._, people),
    )


def drop_broadcast(ctx: Context | JobContext, a: Approval) -> None:
    bid = int(a.subject.partition(":")[2])
    b = broadcasts.get(ctx.conn, bid)
    if b is not None and b.state == broadcasts.DRAFT:
        broadcasts.set_state(ctx.conn, b.id, broadcasts.CANCELLED)
        broadcasts.finish(ctx.conn, b.id, ctx.now)


def _drop_unsent(ctx: Context, author_id: int) -> list[int]:
    """A new draft replaces the author's unconfirmed ones (not those waiting for approval)."""
    dropped = []
    for b in broadcasts.drafts_of(ctx.conn, author_id, ctx.now - DRAFT_TTL):
        if approvals.pending_for_subject(ctx.conn, f"broadcast:{b.id}") is None:
            broadcasts.set_state(ctx.conn, b.id, broadcasts.CANCELLED)
            broadcasts.finish(ctx.conn, b.id, ctx.now)
            ctx.audit("broadcast.dropped", f"broadcast:{b.id}")
            dropped.append(b.id)
    return dropped


def may_stop(ctx: Context, b: Broadcast) -> bool:
    """Its author; for a running fan-out also an admin, and for a case's alert or a broadcast
    to a case, that case's coordinators. Nobody else learns that it exists."""
    member = ctx.member
    if member is None or member.role not in COORDINATORS:
        return False
    if b.author_id == member.id:
        return True
    if b.state == broadcasts.DRAFT:
        return False  # a draft is its author's own until confirmed
    if member.role == "admin":
        return True
    case_id = b.case_id or audience.Segment.parse(b.segment).case_id
    if case_id is None:
        return False
    case = cases.get(ctx.conn, case_id)
    return case is not None and cases.may_coordinate(ctx.conn, case, member.id, member.role)


def cancel_latest(ctx: Context) -> bool:
    """Bare /cancel outside a dialog: the coordinator's one pending broadcast is dropped; with
    several (an unsent draft, others waiting for approval) they are listed and an id is needed.
    False when they have none."""
    member = ctx.member
    if member is None or member.role not in COORDINATORS:
        return False
    mine = broadcasts.drafts_of(ctx.conn, member.id, 0.0)
    live = [
        b
        for b in mine
        if b.created_at >= ctx.now - DRAFT_TTL
        or approvals.pending_for_subject(ctx.conn, f"broadcast:{b.id}") is not None
    ]
    if not live:
        return False
    if len(live) == 1:
        cancel_fanout(ctx, str(live[0].id))
        return True
    lines = [ctx._("You have more than one broadcast pending; send /cancel ID for one of them:")]
    for b in live:
        waiting = approvals.pending_for_subject(ctx.conn, f"broadcast:{b.id}")
        label = segment_label(ctx.conn, ctx._, b.segment)
        lines.append(
            ctx._("#{id} to {label}, waiting for a second person", id=b.id, label=label)
            if waiting
            else ctx._("#{id} to {label}, not confirmed yet", id=b.id, label=label)
        )
    ctx.reply("\n".join(lines))
    return True


def cancel_fanout(ctx: Context, args: str) -> None:
    """/cancel ID: stop a broadcast or a case alert that is still going out."""
    wanted = parse_id(args)
    member = ctx.member
    if wanted is None or member is None or member.role not in COORDINATORS:
        raise UserError(ctx._("Send /cancel on its own to stop the current dialog."))
    b = broadcasts.get(ctx.conn, wanted)
    if b is None or not may_stop(ctx, b):
        raise UserError(ctx._("There is no broadcast or alert with that number."))
    if b.state == broadcasts.DRAFT:
        waiting = approvals.pending_for_subject(ctx.conn, f"broadcast:{b.id}")
        if waiting is not None:
            approvals.void(ctx.conn, waiting.id, ctx.now)
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
