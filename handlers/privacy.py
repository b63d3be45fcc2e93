"""What Vigil keeps about me, and forgetting me: /mydata and /forgetme.

/mydata lists the member's own records and, for each kind, how long it is kept. The periods
come from storage/retention.py (`retention.current`), the same values the housekeeping job
enforces, so what the member reads is what happens. It never mentions another person.

/forgetme deletes the member and everything linked to them (storage/privacy.py has the full
list) after a typed confirmation phrase, either on one line (`/forgetme delete me`) or as the
answer to the question. What it does not delete is said before the member confirms:

* Reports they sent stay in the sealed archive until the report retention ends. They never
  recorded who sent them and cannot be read on the server; the coordinators and the case
  depend on them.
* Platform copies: the bot cannot erase the chat history on the member's own phone, or what
  Telegram keeps of a cloud chat. Telegram report messages already queued for deletion are
  still deleted.

A non-member gets a short, truthful answer: Vigil keeps only the keys of the messages they
sent (to never handle one twice), for the inbox-key period.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.capability import Capability, Commands
from bot.context import ANYONE, Context, UserError
from bot.flows import Flow, FlowContext, Step
from bot.i18n import N_
from handlers.common import phrase_matches, role_name
from storage import privacy, retention

commands = Commands()

PHRASE = N_("delete me")  # typed to confirm /forgetme; translated, English always accepted

TRANSPORT_NAMES = {"telegram": "Telegram", "signal": "Signal", "console": N_("this console")}


def _days(ctx: Context, r: retention.Retention, kind: str) -> str:
    n = r.days(kind)
    return ctx._.plural("{n} day", "{n} days", n)


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


# --- /mydata ---------------------------------------------------------------------------------


@commands.command("mydata", roles=ANYONE, summary=N_("what Vigil keeps about you"), order=84)
def mydata(ctx: Context, args: str) -> None:
    r = retention.current(ctx.conn)
    if ctx.member is None:
        ctx.reply(
            ctx._(
                "You are not a member, so Vigil keeps nothing about you except the keys of the "
                "messages you sent (so that none is handled twice), for {inbox}. Nothing of "
                "their text is kept.",
                inbox=_days(ctx, r, "inbox_keys"),
            )
        )
        return
    s = privacy.summary(ctx.conn, ctx.member.id)
    assert s is not None
    _ = ctx._
    lines = [_("What Vigil keeps about you:"), ""]
    lines.append(
        _(
            "• Your membership: member number {id}, role {role}, since {date}; your language, "
            "time zone and quiet hours. Kept until you send /forgetme or an administrator "
            "removes you.",
            id=s.member_id,
            role=role_name(ctx, s.role),
            date=_date(s.created_at),
        )
    )
    names = ", ".join(_(TRANSPORT_NAMES.get(t, t)) for t in s.transports) or "-"
    lines.append(
        _(
            "• How to reach you ({where}): your account id and chat id on that platform, never "
            "your phone number. Kept until /forgetme.",
            where=names,
        )
    )
    if s.cases:
        linked = ", ".join(
            f"{name} ({_('relative') if rel == 'family' else _('coordinator')})"
            for name, rel in s.cases
        )
        lines.append(_("• Cases you are linked to: {cases}. Kept until /forgetme.", cases=linked))
    if s.follows or s.follows_all:
        all_cases = _("(and all cases)")  # extracted only outside another call's arguments
        lines.append(
            _(
                "• Cases you follow: {n}{all}, and your alert preferences. Kept until you "
                "unsubscribe or send /forgetme.",
                n=s.follows,
                all=(" " + all_cases) if s.follows_all else "",
            )
        )
    if s.rsvps:
        lines.append(
            _(
                "• Actions you said you will join: {n}. Who joined is forgotten {days} after "
                "each action; only the count stays.",
                n=s.rsvps,
                days=_days(ctx, r, "rsvps"),
            )
        )
    lines.append(
        _(
            "• An unfinished dialog, if any: forgotten after {days}.",
            days=_days(ctx, r, "wizard_state"),
        )
    )
    lines.append(
        _(
            "• Messages we sent you: deleted {days} after delivery.",
            days=_days(ctx, r, "delivered_messages"),
        )
    )
    lines.append(
        _(
            "• The keys of messages you sent us (never their text): {days}.",
            days=_days(ctx, r, "inbox_keys"),
        )
    )
    if s.role == "family" or any(rel == "family" for _name, rel in s.cases):
        lines.append(
            _(
                "• Reports you send are sealed: nobody on this server can read them, and they "
                "do not record who sent them. They are kept {days}, then deleted. /forgetme "
                "does not delete them, because they cannot be traced to you.",
                days=_days(ctx, r, "report_bodies"),
            )
        )
    if s.role in ("coordinator", "admin"):
        lines.append(
            _(
                "• Privileged acts you do (your member number, what, which case — never "
                "content) are recorded for {days}.",
                days=_days(ctx, r, "audit"),
            )
        )
    lines += ["", _("Send /forgetme to delete all of this.")]
    ctx.reply("\n".join(lines))


# --- /forgetme -------------------------------------------------------------------------------


@commands.command("forgetme", roles=ANYONE, summary=N_("delete everything about you"), order=85)
def forgetme(ctx: Context, args: str) -> None:
    if ctx.member is None:
        ctx.reply(ctx._("You are not a member: there is nothing about you to delete."))
        return
    if args and phrase_matches(ctx, args, PHRASE):
        _forget(ctx)
        return
    if args:
        raise UserError(
            ctx._(
                "That is not the confirmation phrase, so nothing was deleted. To delete "
                "everything about you, send: /forgetme {phrase}",
                phrase=ctx._(PHRASE),
            )
        )
    ctx.start_flow(FORGETME)


def _confirmation(fc: FlowContext) -> str:
    ctx = fc.ctx
    member = ctx.require_member()
    r = retention.current(ctx.conn)
    lines = [
        ctx._(
            "This deletes your membership, how to reach you, your case links, what you "
            "follow, your RSVPs and the messages waiting for you. It cannot be undone."
        ),
        ctx._(
            "Reports you sent stay in the sealed archive for up to {days}: they do not record "
            "who sent them and cannot be read on this server. Messages already on your phone, "
            "and what the platform itself keeps, are beyond this bot's reach.",
            days=_days(ctx, r, "report_bodies"),
        ),
    ]
    if member.role == "admin" and privacy.admins(ctx.conn) == 1:
        lines.append(
            ctx._(
                "You are the last administrator: afterwards only the server operator can make "
                "a new one (`vigil invite --role admin`)."
            )
        )
    lines.append(
        ctx._(
            "To confirm, send: {phrase}\nAnything else keeps everything as it is.",
            phrase=ctx._(PHRASE),
        )
    )
    return "\n\n".join(lines)


def _confirmed(fc: FlowContext, text: str) -> None:
    fc.end()
    if phrase_matches(fc.ctx, text, PHRASE):
        _forget(fc.ctx)
        return
    fc.ctx.reply(fc.ctx._("Nothing was deleted."))


FORGETME = Flow("forgetme", (Step("confirm", ask=_confirmation, answer=_confirmed),), back=False)


def _forget(ctx: Context) -> None:
    member = ctx.require_member()
    privileged = member.role in ("coordinator", "admin")
    privacy.forget_member(ctx.conn, member.id, ctx.services.index_key, ctx.now)
    leftover = privacy.references_to(ctx.conn, member.id)
    if leftover:  # a table without a cascading key: roll back rather than half-forget
        raise RuntimeError("forget_member left references")
    ctx.member = None  # the answer goes to the chat, linked to no one
    if privileged:
        ctx.audit("member.forgotten", f"member:{member.id}")
    ctx.reply(
        ctx._(
            "Done. Everything Vigil kept about you is deleted. If you send /start again, you "
            "join as someone new."
        )
    )


def capability() -> Capability:
    return Capability("privacy", commands=tuple(commands), flows=(FORGETME,))
