"""Administration in chat: /promote, /revoke, /audit, /panic. Administrators only.

Members are named by their member number. A member reads theirs in /mydata and tells the
administrator (in person, or over a channel the administrator trusts); numbers also appear in
/audit. The bot never lists members, not even to administrators: a seized or hijacked admin
account must not yield the network's roster in one message.

/promote N ROLE [CASE]   ROLE: coordinator, admin, or family (with CASE: link as a relative).
                         A coordinator may be assigned to a CASE. The member is told.
/revoke N [remove]       Demote to supporter, or with `remove` delete them entirely. Either way:
                         case links dropped, their dialog ended, their broadcasts stopped
                         (drafts dropped and running fan-outs cancelled: a hijacked coordinator
                         must not keep messaging the network), unredeemed invite codes they
                         issued invalidated, and messages still queued to them cancelled. The
                         member is not told: a hijacked account should learn nothing from it;
                         tell the real person yourself. Authority is read from the database on
                         every message, so revocation applies from their next message.
/audit [COUNT|#N|ACTION] The latest privileged acts (who by member number, what, which internal
                         id; never content), optionally only member N's, or one kind of act.
/panic PHRASE            Crypto-erase: the running bot stops taking messages, overwrites and
                         deletes the key slots, deletes the database and exits
                         (storage/wipe.py). The handler does no I/O: it calls the callable the
                         App puts in `Services.panic`, which schedules the wipe on the
                         event loop to start once this message's transaction has committed.

Every act is audited (`member.promoted`, `member.revoked`, `member.removed`, `audit.viewed`,
`panic.requested`). Approval by a second administrator for /promote admin and /panic is
planned (THREATS.md: compromised coordinator account); today one admin suffices.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from bot.capability import Capability, Commands
from bot.context import ADMINS, Context, UserError
from bot.i18n import N_, Translator
from bot.messages import Priority
from handlers.common import NOT_FOUND, ROLE_RANK, normalize_phrase, phrase_matches, role_name
from storage import audit, cases, members, privacy

commands = Commands()

MEMBER_NOT_FOUND = N_("No member with that number.")
PANIC_PHRASE = N_("wipe everything")
AUDIT_DEFAULT = 20
AUDIT_MAX = 100
AUDIT_SCAN = 5000  # rows searched for a filter

PROMOTABLE = ("coordinator", "admin", "family")


_NUMBER = re.compile(r"#?([0-9]{1,11})")  # ASCII only: "²".isdigit() is True, int("²") fails


def number(word: str) -> int | None:
    m = _NUMBER.fullmatch(word)
    return int(m.group(1)) if m else None


def _member_number(ctx: Context, word: str) -> members.Member:
    raw = number(word)
    found = members.get(ctx.conn, raw) if raw is not None else None
    if found is None:
        raise UserError(ctx._(MEMBER_NOT_FOUND))
    return found


def _not_self(ctx: Context, target: members.Member) -> None:
    me = ctx.require_member()
    if target.id == me.id:
        raise UserError(
            ctx._("You cannot change your own role. Ask another administrator, or use /forgetme.")
        )


# --- /promote --------------------------------------------------------------------------------


@commands.command(
    "promote", roles=ADMINS, summary=N_("give a member a role: /promote N ROLE [CASE]"), order=70
)
def promote(ctx: Context, args: str) -> None:
    words = args.split()
    if len(words) < 2 or words[1].lower() not in PROMOTABLE:
        raise UserError(
            ctx._(
                "Send /promote N ROLE [CASE]: N is the member's number (they see it in "
                "/mydata), ROLE one of coordinator, admin, family (family needs a CASE)."
            )
        )
    target = _member_number(ctx, words[0])
    _not_self(ctx, target)
    role = words[1].lower()
    case = None
    if len(words) > 2:
        case = cases.by_slug(ctx.conn, words[2].lower()[:64])
        if case is None:
            raise UserError(ctx._(NOT_FOUND))
    if role == "family":
        if case is None:
            raise UserError(ctx._("A relative is linked to a case: /promote N family CASE"))
        if ROLE_RANK[target.role] > ROLE_RANK["family"]:
            raise UserError(
                ctx._(
                    "Member {id} is a {role}; revoke that role first if they should report as "
                    "a relative.",
                    id=target.id,
                    role=role_name(ctx, target.role),
                )
            )
    if role == "admin" and case is not None:
        raise UserError(ctx._("Administrators are not tied to a case: /promote N admin"))
    new_role = role if ROLE_RANK[role] > ROLE_RANK[target.role] else target.role
    if new_role == target.role and case is None:
        ctx.reply(
            ctx._(
                "Member {id} already has that role or a higher one ({role}).",
                id=target.id,
                role=role_name(ctx, target.role),
            )
        )
        return
    members.set_role(ctx.conn, target.id, new_role)
    if case is not None:
        relation = "family" if role == "family" else "coordinator"
        cases.link_member(ctx.conn, case.id, target.id, relation)
    where = f":case:{case.id}" if case else ""
    ctx.audit("member.promoted", f"member:{target.id}:{new_role}{where}")
    case_name = case.name if case else None
    ctx.notify(
        target.id,
        _promoted_text(new_role, role, case_name),
        priority=Priority.ALERT,
    )
    ctx.reply(
        ctx._(
            "Member {id} now has the role {role}{case}. They have been told.",
            id=target.id,
            role=role_name(ctx, new_role),
            case=(" — " + case_name) if case_name else "",
        )
    )


def _promoted_text(new_role: str, asked: str, case_name: str | None) -> Callable[[Translator], str]:
    def render(_: Translator) -> str:
        if asked == "family" and case_name:
            text = _(
                "You are now linked to the case of {name} as a relative: you can send "
                "well-being reports with /report, and /urgent in an emergency.",
                name=case_name,
            )
        elif new_role == "admin":
            text = _("You are now an administrator of this network.")
        elif case_name:
            text = _("You are now a coordinator of the case of {name}.", name=case_name)
        else:
            text = _("You are now a coordinator of this network.")
        return text + "\n" + _("Send /help to see what you can do.")

    return render


# --- /revoke ---------------------------------------------------------------------------------


@commands.command(
    "revoke", roles=ADMINS, summary=N_("take a member's role away: /revoke N [remove]"), order=71
)
def revoke(ctx: Context, args: str) -> None:
    words = args.split()
    if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() != "remove"):
        raise UserError(
            ctx._(
                "Send /revoke N to make member N a supporter again (no case links, no "
                "privileges), or /revoke N remove to delete them."
            )
        )
    target = _member_number(ctx, words[0])
    _not_self(ctx, target)
    remove = len(words) == 2
    done = privacy.revoke_member(ctx.conn, target.id, ctx.now)
    if remove:
        privacy.forget_member(ctx.conn, target.id, ctx.services.index_key, ctx.now)
        ctx.audit("member.removed", f"member:{target.id}")
        first = ctx._("Member {id} is removed: nothing about them is kept.", id=target.id)
    else:
        ctx.audit("member.revoked", f"member:{target.id}")
        first = ctx._(
            "Member {id} is now a supporter: no case links and no privileges, from their next "
            "message on.",
            id=target.id,
        )
    details = ctx._(
        "Dropped: {links} case link(s), {invites} unused invite code(s) they issued, "
        "{broadcasts} broadcast(s) of theirs, {messages} message(s) still queued to them. "
        "They were not told.",
        links=done.links,
        invites=done.invites,
        broadcasts=done.broadcasts,
        messages=done.messages,
    )
    ctx.reply(first + "\n" + details)


# --- /audit ----------------------------------------------------------------------------------


@commands.command(
    "audit", roles=ADMINS, summary=N_("recent privileged acts: /audit [COUNT|#N|ACTION]"), order=72
)
def show_audit(ctx: Context, args: str) -> None:
    word = args.split()[0] if args.split() else ""
    limit = AUDIT_DEFAULT
    actor: int | None = None
    action: str | None = None
    if number(word) is not None and not word.startswith("#"):
        limit = max(1, min(AUDIT_MAX, number(word) or 1))
    elif word.startswith("#") and number(word) is not None:
        actor = number(word)
    elif word:
        if not all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in word[:60]):
            raise UserError(ctx._("Send /audit, /audit COUNT, /audit #N or /audit ACTION."))
        action = word[:60].lower()
    entries = audit.recent(ctx.conn, AUDIT_SCAN if (actor or action) else limit)
    if actor is not None:
        entries = [e for e in entries if e.actor_id == actor]
    if action is not None:
        entries = [e for e in entries if e.action.startswith(action)]
    entries = entries[:limit]
    ctx.audit("audit.viewed", None)
    if not entries:
        ctx.reply(ctx._("No matching entries in the audit log."))
        return
    lines = [ctx._("Audit log, newest first (UTC; member numbers, never content):")]
    for e in entries:
        when = datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M")
        who = f"#{e.actor_id}" if e.actor_id is not None else ctx._("server")
        lines.append(f"{when} · {who} · {e.action}" + (f" · {e.target}" if e.target else ""))
    ctx.reply("\n".join(lines))


# --- /panic ----------------------------------------------------------------------------------


@commands.command(
    "panic", roles=ADMINS, summary=N_("emergency: erase all data and stop the bot"), order=99
)
def panic(ctx: Context, args: str) -> None:
    if not args or not phrase_matches(ctx, args, PANIC_PHRASE):
        if args and normalize_phrase(args):
            raise UserError(
                ctx._(
                    "That is not the confirmation phrase; nothing happened. To erase "
                    "everything, send: /panic {phrase}",
                    phrase=ctx._(PANIC_PHRASE),
                )
            )
        ctx.reply(
            ctx._(
                "Panic wipe: the bot stops taking messages, destroys its key slots and deletes "
                "its database, then stops. Nothing can be recovered except from a backup made "
                "earlier, and it opens only with a passphrase. Copies outside this server "
                "(backups, exported reports, people's phones) are not touched.\n\n"
                "To do it, send: /panic {phrase}",
                phrase=ctx._(PANIC_PHRASE),
            )
        )
        return
    trigger = ctx.services.panic
    if trigger is None:
        raise UserError(
            ctx._(
                "The panic wipe is not available in this process. On the server, run `vigil wipe`."
            )
        )
    trigger()  # schedules only; the wipe starts after this transaction commits
    ctx.audit("panic.requested", None)
    ctx.reply(
        ctx._("Wiping now. The bot stops within seconds; this may be the last message it sends.")
    )


def capability() -> Capability:
    return Capability("admin", commands=tuple(commands))
