"""Joining: /start with or without an invite code, /help, /cancel."""

from __future__ import annotations

from bot.capability import Capability, Commands
from bot.context import ANYONE, Context
from bot.i18n import N_
from bot.messages import Priority
from handlers.broadcasts import cancel_fanout, cancel_latest
from handlers.common import ROLE_RANK, role_name
from storage import cases, crypto, invites, members, outbox, ratelimits

commands = Commands()

# Invite brute force: 5 tries per 15 minutes per sender, then locked out for an hour.
REDEEM_LIMIT = 5
REDEEM_WINDOW = 15 * 60
REDEEM_LOCKOUT = 60 * 60


@commands.command("start", roles=ANYONE, summary=N_("join, or redeem an invite code"), order=0)
def start(ctx: Context, args: str) -> None:
    code = args.strip()  # the whole rest: a code read aloud comes as `xg9f myj5 zygg`
    if code:
        _redeem(ctx, code)
        return
    if ctx.member is not None:
        ctx.reply(ctx._("You are already a member. Send /help to see what you can do."))
        return
    if ctx.services.invite_only:
        ctx.reply(
            ctx._(
                "This network is invite-only. Ask a coordinator you know for an invite code, "
                "then send /start CODE."
            )
        )
        return
    # No invite, nobody vouched for them: an open supporter (public news only).
    ctx.member = members.create(
        ctx.conn,
        role="activist",
        transport=ctx.incoming.transport,
        address=ctx.incoming.sender,
        chat=ctx.incoming.chat,
        now=ctx.now,
        language=_language_for_new(ctx),
        vetted=False,
    )
    ctx.reply(
        ctx._(
            "Welcome to Vigil. Here you can follow the cases of people imprisoned for their "
            "beliefs, hear about hearings and transfers, and join solidarity actions.\n\n"
            "Send /cases to see the cases, /subscribe to follow one, /help for everything else."
        )
    )


def _gives_anything(ctx: Context, member: members.Member, invite: invites.Invite) -> bool:
    """Would redeeming change anything? Vetting an open supporter, a higher role, or the same
    role for one more case. A code below one's role (an admin trying a relative's link) gives
    nothing."""
    if not member.vetted or ROLE_RANK[invite.role] > ROLE_RANK[member.role]:
        return True
    if invite.role != member.role or invite.case_id is None:
        return False
    if invite.role not in ("family", "coordinator"):
        return False
    relation = "family" if invite.role == "family" else "coordinator"
    return (invite.case_id, relation) not in {
        (c.id, relation) for c in cases.member_cases(ctx.conn, member.id, relation)
    }


def _language_for_new(ctx: Context) -> str | None:
    from bot.i18n import normalize_language

    return normalize_language(ctx.incoming.language_hint) or ctx.services.default_language


def _redeem(ctx: Context, code: str) -> None:
    bucket = "redeem:" + crypto.keyed_hash(
        ctx.services.index_key, f"{ctx.incoming.transport}:{ctx.incoming.sender}"
    )
    if not ratelimits.hit(
        ctx.conn,
        bucket,
        limit=REDEEM_LIMIT,
        window=REDEEM_WINDOW,
        lockout=REDEEM_LOCKOUT,
        now=ctx.now,
    ):
        ctx.reply(ctx._("Too many attempts. Please wait an hour before trying another code."))
        return
    invite = invites.peek(ctx.conn, ctx.services.index_key, code, ctx.now)
    if invite is None:
        ctx.reply(ctx._("This code is not valid: it may be mistyped, expired or already used."))
        return
    member = ctx.member
    if member is not None and not _gives_anything(ctx, member, invite):
        # Someone already in (often the one who forwards it, trying the link) must not use up
        # the code meant for another person.
        ctx.reply(
            ctx._(
                "You are already a member with this role, so the code was not used: it still "
                "works for the person it is meant for."
            )
        )
        return
    invites.use(ctx.conn, invite.id)
    if member is None:
        member = members.create(
            ctx.conn,
            role=invite.role,
            transport=ctx.incoming.transport,
            address=ctx.incoming.sender,
            chat=ctx.incoming.chat,
            now=ctx.now,
            language=_language_for_new(ctx),
        )
    else:
        # Any invite vouches for its holder: an open supporter who redeems one is vetted.
        members.set_vetted(ctx.conn, member.id)
        if ROLE_RANK[invite.role] > ROLE_RANK[member.role]:
            members.set_role(ctx.conn, member.id, invite.role)
    if invite.case_id is not None:
        relation = "family" if invite.role == "family" else "coordinator"
        if invite.role in ("family", "coordinator"):
            cases.link_member(ctx.conn, invite.case_id, member.id, relation)
    ctx.member = members.get(ctx.conn, member.id)
    assert ctx.member is not None
    ctx.audit("invite.redeemed", f"invite:{invite.id}")
    caps = ctx.services.capabilities(ctx.incoming.transport)
    if invite.role == "family" and caps.disappearing:
        # Relatives' Signal chats get the network's disappearing-messages timer (if set):
        # a seized phone then holds less. The Signal transport applies it.
        outbox.enqueue(
            ctx.conn, transport=ctx.incoming.transport, chat=ctx.incoming.chat, member_id=member.id,
            body={"kind": "disappearing", "text": ""}, priority=Priority.REPLY, now=ctx.now,
        )  # fmt: skip
    lines = [ctx._("Welcome. You joined as {role}.", role=role_name(ctx, ctx.member.role))]
    if invite.role == "family":
        case = cases.get(ctx.conn, invite.case_id) if invite.case_id else None
        if case is not None:
            lines.append(
                ctx._(
                    "You can send well-being reports about {name} with /report, and /urgent "
                    "in an emergency. Only the coordinators of this case read them.",
                    name=case.name,
                )
            )
            lines.append(
                ctx._(
                    "A report is how the people working for {name} learn how they are: their "
                    "health, what you heard at a visit, a call or a letter, what is needed. "
                    "You can also simply write your news here; I will ask before sending it. "
                    "Please leave out the names of people who are still free, phone numbers "
                    "and plans: if a phone is taken, less is then at risk.",
                    name=case.name,
                )
            )
        if not caps.end_to_end:
            lines.append(
                ctx._(
                    "Please note: Telegram chats with bots are not end-to-end encrypted; "
                    "Telegram can read them. If you can, send reports over Signal instead. "
                    "We delete your report messages from this chat once they are stored."
                )
            )
    lines.append(ctx._("Send /help to see what you can do."))
    ctx.reply("\n\n".join(lines))


@commands.command("help", roles=ANYONE, summary=N_("what you can do here"), order=1)
def help_(ctx: Context, args: str) -> None:
    lines = [ctx._("What you can do:")]
    assert ctx.registry is not None
    for cmd in ctx.registry.allowed(ctx.member):
        lines.append(ctx._.layout(f"/{cmd.name} — {ctx._(cmd.summary)}"))
    if ctx.member is None:
        lines.append("")
        lines.append(ctx._("Send /start to join, or /start CODE if someone gave you an invite."))
    ctx.reply("\n".join(lines))


@commands.command("cancel", roles=ANYONE, summary=N_("stop the current dialog"), order=90)
def cancel(ctx: Context, args: str) -> None:
    """Bare /cancel inside a flow is the flow engine's; here: the coordinator's pending
    broadcast, or /cancel ID, or nothing to cancel."""
    if args:
        cancel_fanout(ctx, args)
        return
    if cancel_latest(ctx):
        return
    ctx.reply(ctx._("There is nothing to cancel."))


def capability() -> Capability:
    return Capability("onboarding", commands=tuple(commands))
