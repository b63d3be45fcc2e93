"""One member on both platforms, and the identities behind them: /link, /unlink, /trust, and
/captcha for Signal's rate-limit challenge.

* /link gives a one-time code (10 minutes, one use, rate-limited like invites) in the chat
  where it was asked; `/link CODE` sent from the other platform joins that identity to the
  same member. The identity the code was asked from is told at once, so a code someone else
  read (the platform can read Telegram chats) and used first is noticed and undone with
  /unlink.
* /trust N confirms, after checking in person, a member whose Signal safety number changed:
  the transport trusts the new key, and what was held for and from them is released.
* /captcha passes an administrator's solved captcha to the Signal transport.

Handlers do no I/O: trust and captcha are transport requests the app runs after commit.
"""

from __future__ import annotations

from collections.abc import Callable

from bot import guard
from bot.capability import Capability, Commands
from bot.context import (
    ADMINS,
    ANYONE,
    COORDINATORS,
    Context,
    RequestResult,
    TransportRequest,
    ascii_digits,
)
from bot.i18n import N_, Translator
from bot.messages import Incoming, Priority
from bot.notify import outbox_body
from storage import audit, crypto, linkcodes, members, outbox, ratelimits
from storage.db import Connection

commands = Commands()

LINK_LIMIT = 5  # attempts per sender
LINK_WINDOW = 15 * 60
LINK_LOCKOUT = 60 * 60
PLATFORMS = {"telegram": "Telegram", "signal": "Signal", "console": "console"}
MEMBER_NOT_FOUND = N_("No member with that number.")


def platform(name: str) -> str:
    return PLATFORMS.get(name, name)


def _answer_later(ctx: Context) -> Callable[[Connection, float, Callable[[Translator], str]], None]:
    """How a request's result reaches the person who asked, once the transport answered."""
    transport, chat = ctx.incoming.transport, ctx.incoming.chat
    member_id = ctx.member.id if ctx.member else None
    language = ctx._.language

    def answer(conn: Connection, now: float, render: Callable[[Translator], str]) -> None:
        outbox.enqueue(
            conn, transport=transport, chat=chat, member_id=member_id,
            body=outbox_body(render(Translator(language))), priority=Priority.REPLY, now=now,
        )  # fmt: skip

    return answer


# --- /link and /unlink ------------------------------------------------------------------------


@commands.command(
    "link", roles=ANYONE, summary=N_("use Vigil from Signal and Telegram as one: /link"), order=86
)
def link(ctx: Context, args: str) -> None:
    if not args.strip():
        ctx.require_member()
    bucket = "link:" + crypto.keyed_hash(
        ctx.services.index_key, f"{ctx.incoming.transport}:{ctx.incoming.sender}"
    )
    if not ratelimits.hit(
        ctx.conn, bucket, limit=LINK_LIMIT, window=LINK_WINDOW, lockout=LINK_LOCKOUT, now=ctx.now
    ):
        ctx.reply(ctx._("Too many attempts. Please wait an hour before trying another code."))
        return
    if args.strip():
        _redeem(ctx, args.strip())
        return
    member = ctx.require_member()
    code = linkcodes.create(
        ctx.conn, ctx.services.index_key, member.id, ctx.incoming.transport, ctx.now
    )
    ctx.reply(
        ctx._(
            "Your link code: {code}\n\nWithin 10 minutes, send /link {code} to this bot from "
            "your other app (Signal or Telegram). Never show it to anyone: whoever sends it "
            "becomes you.",
            code=code,
        ),
        sensitivity=outbox.CODE,
    )


def _redeem(ctx: Context, code: str) -> None:
    here = ctx.incoming.transport
    found = linkcodes.peek(ctx.conn, ctx.services.index_key, code, ctx.now)
    if found is None:
        ctx.reply(ctx._("This code is not valid: it may be mistyped, expired or already used."))
        return
    member_id, asked_on = found
    if asked_on == here:
        ctx.reply(ctx._("Send this code from your other app, not from this one."))
        return
    if ctx.member is not None:
        if ctx.member.id == member_id:
            ctx.reply(ctx._("This account is already linked."))
        else:
            ctx.reply(
                ctx._(
                    "This account already belongs to a member of its own. To join it to "
                    "another, first send /forgetme from it."
                )
            )
        return
    if any(i.transport == here for i in members.identities(ctx.conn, member_id)):
        ctx.reply(
            ctx._(
                "You already have a {platform} account linked. Send /unlink {name} from your "
                "other app first.",
                platform=platform(here),
                name=here,
            )
        )
        return
    linkcodes.use(ctx.conn, ctx.services.index_key, code)
    members.add_identity(
        ctx.conn, member_id, transport=here, address=ctx.incoming.sender,
        chat=ctx.incoming.chat, now=ctx.now,
    )  # fmt: skip
    ctx.member = members.get(ctx.conn, member_id)
    waiting = outbox.deliver_waiting(ctx.conn, member_id, here, ctx.incoming.chat, ctx.now)
    # Told on the app that asked for the code, whichever the member uses: if someone else
    # read the code (Telegram can read bot chats) and used it first, this is how they learn.
    asker = next(i for i in members.identities(ctx.conn, member_id) if i.transport == asked_on)
    member = ctx.member
    assert member is not None
    tr = Translator(member.language)
    outbox.enqueue(
        ctx.conn, transport=asker.transport, chat=asker.chat, member_id=member_id,
        body=outbox_body(tr(
            "A {platform} account was just linked to you. If this was not you, send /unlink "
            "{name} now.", platform=platform(here), name=here,
        )),
        priority=Priority.EMERGENCY, now=ctx.now,
    )  # fmt: skip
    lines = [
        ctx._(
            "Linked. This {platform} account and your {other} account are now one member: your "
            "role, cases, subscriptions, language and time zone are the same on both.",
            platform=platform(here),
            other=platform(asked_on),
        )
    ]
    if waiting:
        lines.append(
            ctx._.plural(
                "{n} message that waited for this app follows.",
                "{n} messages that waited for this app follow.",
                waiting,
            )
        )
    ctx.reply("\n\n".join(lines))


@commands.command(
    "unlink",
    roles=ANYONE,
    summary=N_("drop a linked app: /unlink telegram or /unlink signal"),
    order=87,
)
def unlink(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    name = args.strip().lower()
    if name not in ("telegram", "signal"):
        ctx.reply(ctx._("Send /unlink telegram or /unlink signal."))
        return
    if not any(i.transport == name for i in members.identities(ctx.conn, member.id)):
        ctx.reply(ctx._("You have no {platform} account linked.", platform=platform(name)))
        return
    if not members.remove_identity(ctx.conn, member.id, name):
        ctx.reply(
            ctx._(
                "That is the only app you use Vigil from, so it cannot be unlinked. To delete "
                "everything about you instead, send /forgetme."
            )
        )
        return
    ctx.reply(
        ctx._(
            "Unlinked: Vigil no longer writes to your {platform} account.", platform=platform(name)
        )
    )


# --- /trust -----------------------------------------------------------------------------------


@commands.command(
    "trust",
    roles=COORDINATORS,
    summary=N_("confirm a member whose security number changed: /trust N"),
    order=69,
)
def trust(ctx: Context, args: str) -> None:
    actor = ctx.require_member()
    word = ascii_digits(args.strip()).removeprefix("#")
    target_id = int(word) if word.isascii() and word.isdigit() and len(word) < 12 else None
    target = members.get(ctx.conn, target_id) if target_id is not None else None
    may = target is not None and (
        actor.role == "admin" or actor.id in guard.confirmers(ctx.conn, target.id)
    )
    if target is None or not may or target.id == actor.id:
        ctx.reply(ctx._(MEMBER_NOT_FOUND))
        return
    held = [i for i in members.identities(ctx.conn, target.id) if i.quarantined]
    if not held:
        ctx.reply(ctx._("Member {n} has no changed security number to confirm.", n=target.id))
        return
    answer = _answer_later(ctx)
    for ident in held:
        ctx.request(
            TransportRequest(
                ident.transport, "trust_identity", ident.address,
                on_result=_trusted(answer, actor.id, target.id, ident.transport, ident.address),
            )
        )  # fmt: skip
    ctx.reply(ctx._("Confirming member {n}'s new security number…", n=target.id))


def _trusted(
    answer: Callable[[Connection, float, Callable[[Translator], str]], None],
    actor_id: int,
    target_id: int,
    transport: str,
    address: str,
) -> Callable[[Connection, float, RequestResult], list[Incoming]]:
    def done(conn: Connection, now: float, result: RequestResult) -> list[Incoming]:
        if not result.ok:
            answer(
                conn, now,
                lambda _: _(
                    "Signal could not confirm the new security number. Member {n} stays "
                    "quarantined; try again in a few minutes.",
                    n=target_id,
                ),
            )  # fmt: skip
            return []
        released = guard.release(conn, transport, address, now)
        audit.record(conn, actor_id, "identity.trusted", f"member:{target_id}", now)
        answer(
            conn, now,
            lambda _: _(
                "Member {n} confirmed. What was held for them and from them is released.",
                n=target_id,
            ),
        )  # fmt: skip
        return released

    return done


# --- /captcha ---------------------------------------------------------------------------------

CAPTCHA_ANSWERS = {
    "solved": N_("Signal accepted the captcha: sending resumes now."),
    "rejected": N_(
        "Signal did not accept that captcha; sending stays paused. Solve a new one and send it."
    ),
    "not_pending": N_("Signal is not asking for a captcha right now."),
    "malformed": N_(
        "That is not a Signal captcha. Copy the whole link that starts with signalcaptcha://"
    ),
    "unavailable": N_("Signal could not be reached. Please try again in a minute."),
}


@commands.command(
    "captcha",
    roles=ADMINS,
    summary=N_("pass a solved Signal captcha: /captcha signalcaptcha://…"),
    order=73,
)
def captcha(ctx: Context, args: str) -> None:
    solution = args.strip()
    if not solution.startswith("signalcaptcha://"):
        malformed = CAPTCHA_ANSWERS["malformed"]
        ctx.reply(ctx._(malformed))
        return
    answer = _answer_later(ctx)

    def done(conn: Connection, now: float, result: RequestResult) -> list[Incoming]:
        kind = result.detail if result.detail in CAPTCHA_ANSWERS else "unavailable"
        if result.ok:
            kind = "solved"
        answer(conn, now, lambda _: _(CAPTCHA_ANSWERS[kind]))
        audit.record(conn, None, f"captcha.{kind}", None, now)
        return []

    ctx.request(TransportRequest("signal", "solve_challenge", solution, on_result=done))
    ctx.audit("captcha.submitted", None)
    ctx.reply(ctx._("Passing the captcha to Signal…"))


def capability() -> Capability:
    return Capability("channels", commands=tuple(commands))
