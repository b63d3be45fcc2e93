"""Administration in chat: /members, /promote, /revoke, /assign, /unassign, /audit, /panic.

Members are named by their member number. A member reads theirs in /mydata and tells the
administrator (in person, or over a channel the administrator trusts). /members lists numbers
with role, cases, transports and join month, never a name or a platform id, at most 50 lines a
message, and every listing is audited: a seized admin account yields no names.

/members [ROLE|CASE]     Who is who, by number.
/promote N ROLE [CASE]   ROLE: coordinator, admin, or family (with CASE: link as a relative).
                         Shows the member's line and asks /confirm: a typo must not hand
                         someone the families' reports. A new coordinator or admin, and a
                         coordinator given a case, then wait for a second administrator
                         (handlers/approvals) unless there is none. The member is told.
/revoke N [remove]       Shows the member's line and asks /confirm, then: demote to supporter,
                         or with `remove` delete them entirely. Case links dropped, their
                         dialog ended, their broadcasts stopped, their pending requests void,
                         unredeemed invite codes they issued invalidated, and messages still
                         queued to them cancelled. Revoking an administrator waits for a
                         second administrator. The member is not told: a hijacked account
                         should learn nothing from it. Authority is read from the database on
                         every message, so revocation applies from their next message.
/assign N CASE           A coordinator coordinates the case too (second administrator agrees).
/unassign N CASE         They no longer do; at once, since taking authority away is what one
                         does to a seized account. A case nobody coordinates is the admins'.
/audit [COUNT|#N|ACTION] The latest privileged acts (who by member number, what, which internal
                         id; never content), optionally only member N's, or one kind of act.
/panic PHRASE            Crypto-erase (storage/wipe.py), one person alone: speed matters in a
                         raid. The handler does no I/O: it calls the callable the App puts in
                         `Services.panic`, which schedules the wipe on the event loop to start
                         once this message's transaction has committed.

Every act is audited (`member.promoted`, `member.revoked`, `member.removed`, `case.assigned`,
`case.unassigned`, `members.listed`, `audit.viewed`, `panic.requested`, and the approvals').
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from bot.capability import Capability, Commands
from bot.context import ADMINS, Context, UserError, ascii_digits
from bot.flows import Flow, FlowContext, Step
from bot.i18n import N_, Translator
from bot.messages import Choice, Priority
from handlers.approvals import core as approval
from handlers.common import (
    NOT_FOUND,
    ROLE_RANK,
    normalize_phrase,
    phrase_matches,
    role_label,
    role_name,
)
from storage import audit, cases, members, privacy
from storage.approvals import Approval
from storage.members import ROLE_ALIASES

commands = Commands()

MEMBER_NOT_FOUND = N_("No member with that number.")
PANIC_PHRASE = N_("wipe everything")
AUDIT_DEFAULT = 20
AUDIT_MAX = 100
AUDIT_SCAN = 5000  # rows searched for a filter

PROMOTABLE = ("coordinator", "admin", "family")


_NUMBER = re.compile(r"#?([0-9]{1,11})")  # ASCII only: "²".isdigit() is True, int("²") fails


def number(word: str) -> int | None:
    m = _NUMBER.fullmatch(ascii_digits(word))
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


# --- who a member is, for the admin acting on them ------------------------------------------


def member_line(ctx: Context, target: members.Member, tr: Translator | None = None) -> str:
    """Number, role, cases, transports and join month; never a name or a platform id. In the
    reader's language: `tr` for a preview that goes to someone else."""
    _ = tr or ctx._
    links = cases.links_of(ctx.conn, target.id)
    where = ", ".join(
        (_("coordinates {case}", case=slug) if rel == "coordinator" else
         _("relative in {case}", case=slug) if rel == "family" else slug)
        for slug, rel in links
    ) or _("no case")  # fmt: skip
    kinds = sorted({i.transport for i in members.identities(ctx.conn, target.id)})
    transports = ", ".join(TRANSPORT_NAMES.get(t, t) for t in kinds) or "-"
    joined = datetime.fromtimestamp(members.joined_at(ctx.conn, target.id), UTC).strftime("%Y-%m")
    return (
        _(
            "#{id} · {role} · {cases} · {transports} · joined {month}",
            id=target.id,
            role=role_label(_, target.role),
            cases=where,
            transports=transports,
            month=joined,
        )
        + " · "
        + (_("vetted") if target.vetted else _("open supporter"))
    )


TRANSPORT_NAMES = {"telegram": "Telegram", "signal": "Signal", "console": "console"}
MEMBERS_SHOWN = 50


@commands.command(
    "members", roles=ADMINS, summary=N_("list members by number: /members [ROLE|CASE]"), order=69
)
def list_members(ctx: Context, args: str) -> None:
    word = args.strip().lower()
    role: str | None = None
    case_id: int | None = None
    if word:
        if word in ROLE_ALIASES:
            role = ROLE_ALIASES[word]
        else:
            case = cases.by_slug(ctx.conn, word[:64])
            if case is None:
                raise UserError(
                    ctx._("Send /members, /members ROLE (supporter, relative, coordinator, "
                          "admin) or /members CASE.")
                )  # fmt: skip
            case_id = case.id
    ids = members.listing(ctx.conn, role=role, case_id=case_id)
    ctx.audit("members.listed", None)
    if not ids:
        ctx.reply(ctx._("No members match."))
        return
    lines = [ctx._("Members: {n} (numbers only, never names).", n=len(ids))]
    for mid in ids[:MEMBERS_SHOWN]:
        m = members.get(ctx.conn, mid)
        if m is not None:
            lines.append(member_line(ctx, m))
    if len(ids) > MEMBERS_SHOWN:
        lines.append(
            ctx._("Not shown: {n}. Narrow the list with /members ROLE or /members CASE.",
                  n=len(ids) - MEMBERS_SHOWN)
        )  # fmt: skip
    ctx.reply("\n".join(lines))


# --- /promote ------------------------------------------------------------------------------


@commands.command(
    "promote", roles=ADMINS, summary=N_("give a member a role: /promote N ROLE [CASE]"), order=70
)
def promote(ctx: Context, args: str) -> None:
    words = args.split()
    if len(words) < 2 or members.parse_role(words[1]) not in PROMOTABLE:
        raise UserError(
            ctx._(
                "Send /promote N ROLE [CASE]: N is the member's number (they see it in "
                "/mydata), ROLE one of coordinator, administrator, relative (a relative needs "
                "a CASE)."
            )
        )
    target = _member_number(ctx, words[0])
    _not_self(ctx, target)
    role = members.parse_role(words[1]) or words[1].lower()
    case = None
    if len(words) > 2:
        case = cases.by_slug(ctx.conn, words[2].lower()[:64])
        if case is None:
            raise UserError(ctx._(NOT_FOUND))
    new_role = _promotion(ctx, target, role, case)
    if new_role == target.role and case is None:
        ctx.reply(
            ctx._(
                "Member {id} already has that role or a higher one ({role}).",
                id=target.id,
                role=role_name(ctx, target.role),
            )
        )
        return
    data = {"act": "promote", "target": target.id, "role": role, "new_role": new_role,
            "case": case.id if case else None}  # fmt: skip
    ctx.start_flow(CHANGE, data)


def _promotion(ctx: Context, target: members.Member, role: str, case: cases.Case | None) -> str:
    """The role the member ends with; UserError when the promotion makes no sense."""
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
    return role if ROLE_RANK[role] > ROLE_RANK[target.role] else target.role


def _apply_promotion(
    ctx: Context, target: members.Member, role: str, new_role: str, case: cases.Case | None
) -> str:
    members.set_role(ctx.conn, target.id, new_role)
    members.set_vetted(ctx.conn, target.id)  # an administrator vouches for whom they promote
    if case is not None:
        relation = "family" if role == "family" else "coordinator"
        cases.link_member(ctx.conn, case.id, target.id, relation)
    where = f":case:{case.id}" if case else ""
    ctx.audit("member.promoted", f"member:{target.id}:{new_role}{where}")
    case_name = case.name if case else None
    ctx.notify(target.id, _promoted_text(new_role, role, case_name), priority=Priority.ALERT)
    return ctx._(
        "Member {id} now has the role {role}{case}. They have been told.",
        id=target.id,
        role=role_name(ctx, new_role),
        case=(" — " + case_name) if case_name else "",
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


def approved_promotion(ctx: Context, a: Approval) -> str | None:
    target = members.get(ctx.conn, a.payload["target"])
    case = cases.get(ctx.conn, a.payload["case"]) if a.payload.get("case") else None
    if target is None or (a.payload.get("case") and case is None):
        return None
    try:
        new_role = _promotion(ctx, target, a.payload["role"], case)
    except UserError:
        return None
    if new_role == target.role and case is None:
        return None
    done = _apply_promotion(ctx, target, a.payload["role"], new_role, case)
    _tell_initiator(ctx, a)
    return done


# --- /revoke -------------------------------------------------------------------------------


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
    ctx.start_flow(CHANGE, {"act": "revoke", "target": target.id, "remove": len(words) == 2})


def _apply_revocation(ctx: Context, target: members.Member, remove: bool) -> str:
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
    _ = ctx._
    details = _(
        "Dropped: {links}, {invites} they issued, {broadcasts} of theirs, {messages} still "
        "queued to them. They were not told.",
        links=_.plural("{n} case link", "{n} case links", done.links),
        invites=_.plural("{n} unused invite code", "{n} unused invite codes", done.invites),
        broadcasts=_.plural("{n} broadcast", "{n} broadcasts", done.broadcasts),
        messages=_.plural("{n} message", "{n} messages", done.messages),
    )
    return first + "\n" + details


def approved_revocation(ctx: Context, a: Approval) -> str | None:
    target = members.get(ctx.conn, a.payload["target"])
    me = ctx.require_member()
    if target is None or target.id == me.id or target.role != "admin":
        return None  # only an admin's revocation waits for approval
    done = _apply_revocation(ctx, target, bool(a.payload.get("remove")))
    _tell_initiator(ctx, a)
    return done


# --- /assign, /unassign --------------------------------------------------------------------


def _coordinator_and_case(ctx: Context, args: str, usage: str) -> tuple[members.Member, cases.Case]:
    words = args.split()
    if len(words) != 2:
        raise UserError(usage)
    target = _member_number(ctx, words[0])
    case = cases.by_slug(ctx.conn, words[1].lower()[:64])
    if case is None:
        raise UserError(ctx._(NOT_FOUND))
    return target, case


@commands.command(
    "assign", roles=ADMINS, summary=N_("let a coordinator coordinate a case: /assign N CASE"),
    order=73,
)  # fmt: skip
def assign(ctx: Context, args: str) -> None:
    target, case = _coordinator_and_case(
        ctx, args, ctx._("Send /assign N CASE: member N will coordinate that case.")
    )
    if target.role not in ("coordinator", "admin"):
        raise UserError(
            ctx._(
                "Member {id} is not a coordinator. To make them one for this case: "
                "/promote {id} coordinator {case}",
                id=target.id,
                case=case.slug,
            )
        )
    if target.id in cases.assigned_coordinators(ctx.conn, case.id):
        ctx.reply(ctx._("Member {id} already coordinates {name}.", id=target.id, name=case.name))
        return
    line = member_line(ctx, target)
    name = case.name

    def preview(_: Translator) -> str:
        return (
            member_line(ctx, target, _)
            + "\n"
            + _("Assign them to coordinate {name}: they would read its reports.", name=name)
        )

    aid = approval.request(
        ctx, kind="assign", subject=f"member:{target.id}",
        payload={"target": target.id, "case": case.id}, case_id=None, preview=preview,
    )  # fmt: skip
    if aid is not None:
        ctx.reply(line + "\n\n" + approval.waiting_text(ctx._, aid))
        return
    ctx.reply(_apply_assignment(ctx, target, case))


def _apply_assignment(ctx: Context, target: members.Member, case: cases.Case) -> str:
    cases.link_member(ctx.conn, case.id, target.id, "coordinator")
    ctx.audit("case.assigned", f"case:{case.id}:member:{target.id}")
    name = case.name
    ctx.notify(
        target.id,
        lambda _: _("You are now a coordinator of the case of {name}.", name=name),
        priority=Priority.ALERT,
    )
    return ctx._(
        "Member {id} now coordinates {name}. They have been told.", id=target.id, name=case.name
    )


def approved_assignment(ctx: Context, a: Approval) -> str | None:
    target = members.get(ctx.conn, a.payload["target"])
    case = cases.get(ctx.conn, a.payload["case"])
    if target is None or case is None or target.role not in ("coordinator", "admin"):
        return None
    done = _apply_assignment(ctx, target, case)
    _tell_initiator(ctx, a)
    return done


@commands.command(
    "unassign", roles=ADMINS, summary=N_("take a case from a coordinator: /unassign N CASE"),
    order=74,
)  # fmt: skip
def unassign(ctx: Context, args: str) -> None:
    # Taking authority away needs no second person: it is what one does to a seized account.
    target, case = _coordinator_and_case(
        ctx, args, ctx._("Send /unassign N CASE: member N will no longer coordinate that case.")
    )
    if not cases.unlink_member(ctx.conn, case.id, target.id, "coordinator"):
        raise UserError(
            ctx._("Member {id} does not coordinate {name}.", id=target.id, name=case.name)
        )
    ctx.audit("case.unassigned", f"case:{case.id}:member:{target.id}")
    left = cases.assigned_coordinators(ctx.conn, case.id)
    text = ctx._("Member {id} no longer coordinates {name}. They were not told.",
                 id=target.id, name=case.name)  # fmt: skip
    if not left:
        text += "\n" + ctx._(
            "Nobody coordinates {name} now: its reports go to the administrators.", name=case.name
        )
    ctx.reply(text)


def _tell_initiator(ctx: Context, a: Approval) -> None:
    if a.initiator_id is None:
        return
    me = ctx.require_member()
    aid = a.id
    ctx.notify(
        a.initiator_id,
        lambda _: _(
            "Member {member} approved your request #{id}; it is done.", member=me.id, id=aid
        ),
        priority=Priority.ALERT,
        idem_key=f"approval:{aid}:done",
    )


# --- the confirmation both /promote and /revoke ask for ---------------------------------------


def _ask_change(fc: FlowContext) -> str:
    ctx = fc.ctx
    target = members.get(ctx.conn, fc.data["target"])
    if target is None:
        return ctx._(MEMBER_NOT_FOUND)
    line = member_line(ctx, target)
    if fc.data["act"] == "revoke":
        what = (
            ctx._("Remove member {id} entirely? Nothing about them will be kept.", id=target.id)
            if fc.data.get("remove")
            else ctx._(
                "Make member {id} a supporter again, without case links or privileges?",
                id=target.id,
            )
        )
    else:
        case = cases.get(ctx.conn, fc.data["case"]) if fc.data.get("case") else None
        what = ctx._(
            "Give member {id} the role {role}{case}?",
            id=target.id,
            role=role_name(ctx, fc.data["new_role"]),
            case=(" — " + case.name) if case else "",
        )
    return line + "\n\n" + what + "\n" + ctx._("Send /confirm to go ahead, or /cancel.")


def _change_choices(fc: FlowContext) -> tuple[Choice, ...]:
    return (Choice(fc.ctx._("Confirm"), "yes"), Choice(fc.ctx._("Cancel"), "no"))


def _answer_change(fc: FlowContext, value: str) -> None:
    picked = fc.match(value)
    if picked == "yes":
        _confirm_change(fc, "")
    elif picked == "no":
        fc.end()
        fc.ctx.reply(fc.ctx._("Cancelled. Nothing was changed."))
    else:
        fc.again(fc.ctx._("Send /confirm to go ahead, or /cancel."))


def _confirm_change(fc: FlowContext, args: str) -> None:
    ctx = fc.ctx
    fc.end()
    target = members.get(ctx.conn, fc.data["target"])
    if target is None:
        raise fc.fail(ctx._(MEMBER_NOT_FOUND))
    if fc.data["act"] == "revoke":
        remove = bool(fc.data.get("remove"))
        if target.role == "admin":
            tid = target.id

            def what(_: Translator) -> str:
                if remove:
                    return _("Remove administrator {id} entirely.", id=tid)
                return _("Revoke administrator {id}: make them a supporter.", id=tid)

            aid = approval.request(
                ctx, kind="revoke", subject=f"member:{target.id}",
                payload={"target": target.id, "remove": remove}, case_id=None,
                preview=lambda _: member_line(ctx, target, _) + "\n" + what(_),
            )  # fmt: skip
            if aid is not None:
                ctx.reply(approval.waiting_text(ctx._, aid))
                return
        ctx.reply(_apply_revocation(ctx, target, remove))
        return
    case = cases.get(ctx.conn, fc.data["case"]) if fc.data.get("case") else None
    if fc.data.get("case") and case is None:
        raise fc.fail(ctx._(NOT_FOUND))
    role = fc.data["role"]
    try:
        new_role = _promotion(ctx, target, role, case)
    except UserError as err:  # the member changed since the question: end, then answer
        raise fc.fail(err.message) from None
    # A new coordinator or admin, or a coordinator given a case: a second person agrees.
    raised = new_role in ("coordinator", "admin") and new_role != target.role
    if raised or (case is not None and role != "family"):
        tid, case_name = target.id, case.name if case else None

        def what(_: Translator) -> str:
            return _(
                "Give member {id} the role {role}{case}.",
                id=tid,
                role=role_label(_, new_role),
                case=(" — " + case_name) if case_name else "",
            )

        aid = approval.request(
            ctx, kind="promote", subject=f"member:{target.id}",
            payload={"target": target.id, "role": role, "case": case.id if case else None},
            case_id=None, preview=lambda _: member_line(ctx, target, _) + "\n" + what(_),
        )  # fmt: skip
        if aid is not None:
            ctx.reply(approval.waiting_text(ctx._, aid))
            return
    ctx.reply(_apply_promotion(ctx, target, role, new_role, case))


CHANGE = Flow(
    "member-change",
    steps=(Step("confirm", _ask_change, _answer_change, _change_choices),),
    commands={"confirm": _confirm_change},
    back=False,
    ttl=3600.0,
)


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
    return Capability("admin", commands=tuple(commands), flows=(CHANGE,))
