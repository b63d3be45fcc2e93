"""Invitations: /invite in chat and `vigil invite` on the command line share this code."""

from __future__ import annotations

import re

from bot.capability import Capability, Commands
from bot.context import COORDINATORS, Context, UserError, ascii_digits
from bot.i18n import N_, Translator
from storage import cases, invites, members, outbox
from storage.db import Connection

commands = Commands()

DEFAULT_EXPIRY = 7 * 24 * 3600
MAX_USES = 10_000
_DURATION = re.compile(r"^(\d{1,4})([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class InviteError(ValueError):
    """Bad invite parameters; `code` names the problem for translation."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def parse_duration(text: str) -> int:
    m = _DURATION.match(ascii_digits(text.strip().lower()))
    if not m or int(m.group(1)) == 0:
        raise InviteError("bad_duration")
    return int(m.group(1)) * _UNITS[m.group(2)]


def create_invite(
    conn: Connection,
    index_key: bytes,
    *,
    role: str,
    case_slug: str | None,
    uses: int,
    expires_in: int,
    created_by: int | None,
    now: float,
    by: members.Member | None = None,
) -> str:
    """`by` is the member inviting in chat (None: the operator on the command line). A member
    may tie an invite only to a case they coordinate, so a coordinator of another case cannot
    mint a relative's way into this one."""
    if role not in members.ROLES:
        raise InviteError("bad_role")
    if not 1 <= uses <= MAX_USES:
        raise InviteError("bad_uses")
    case_id = None
    if case_slug:
        case = cases.by_slug(conn, case_slug)
        if case is None or (by and not cases.may_coordinate(conn, case, by.id, by.role)):
            raise InviteError("no_case")
        case_id = case.id
    elif role == "family":
        raise InviteError("family_needs_case")
    return invites.create(
        conn,
        index_key,
        role=role,
        case_id=case_id,
        uses=uses,
        expires_at=now + expires_in,
        created_by=created_by,
        now=now,
    )


def invite_message(tr: Translator, code: str, link_prefix: str | None) -> str:
    """Exactly what to forward: where the bot is and what to send there."""
    start = f"/start {code}"
    if link_prefix:
        return tr(
            "Open {link} and press Start. Or, in the chat with the bot, send:\n{start}",
            link=f"{link_prefix}{code.replace('-', '')}",
            start=start,
        )
    return tr("In the chat with this bot, send:\n{start}", start=start)


@commands.command(
    "invite", roles=COORDINATORS, summary=N_("create an invite: /invite ROLE [CASE]"), order=60
)
def invite(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    parts = args.split()
    if not parts:
        raise UserError(
            ctx._("Send /invite ROLE [CASE], with ROLE one of: supporter, relative, coordinator.")
        )
    role = members.parse_role(parts[0]) or parts[0].lower()
    # Only an admin may mint admins or coordinators: a compromised coordinator cannot spread.
    if role in ("admin", "coordinator") and member.role != "admin":
        raise UserError(ctx._("Only an administrator can invite coordinators."))
    try:
        code = create_invite(
            ctx.conn,
            ctx.services.index_key,
            role=role,
            case_slug=parts[1][:64] if len(parts) > 1 else None,
            by=member,
            uses=1,
            expires_in=DEFAULT_EXPIRY,
            created_by=member.id,
            now=ctx.now,
        )
    except InviteError as err:
        raise UserError(
            {
                "bad_role": ctx._("Unknown role. Use supporter, relative or coordinator."),
                "no_case": ctx._("No case with that name was found, or it is not yours."),
                "family_needs_case": ctx._("A relative's invite needs a case: /invite family CASE"),
            }.get(err.code, ctx._("That invite cannot be created."))
        ) from None
    ctx.audit("invite.created", f"role:{role}")
    link = ctx.services.bot_links.get(ctx.incoming.transport)
    ctx.reply(
        ctx._(
            "Invite code (one use, valid for 7 days). Forward the lines below, or read them out, "
            "to the person it is for, in person or over Signal. Spaces, dashes and capitals in "
            "the code do not matter.\n\n{code}",
            code=invite_message(ctx._, code, link),
        ),
        sensitivity=outbox.CODE,  # deleted once delivered: a copy of the store holds no code
    )


def capability() -> Capability:
    return Capability("invites", commands=tuple(commands))
