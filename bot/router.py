"""Routes an Incoming message to a handler: inbox, member lookup, rate limits, flows, commands.

`Router.process` runs inside one database transaction on the writer thread, so the inbox key,
the handler's changes and the outbox rows it writes commit together or not at all.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot import guard
from bot.capability import Registry, may_use
from bot.context import (
    Context,
    FlowFailed,
    TransportRequest,
    UserError,
    clean_surrogates,
    has_surrogates,
)
from bot.flows import Flows
from bot.i18n import Translator
from bot.messages import MAX_TEXT_CHARS, Incoming
from bot.services import Services
from storage import conversations, inbox, members
from storage.db import Connection

log = logging.getLogger(__name__)


class CommandRateLimiter:
    """Per-sender token bucket held in memory: abuse control, not a security boundary."""

    def __init__(self, rate_per_minute: float = 30, burst: int = 15) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = burst
        self._buckets: dict[tuple[str, str], tuple[float, float, bool]] = {}

    def allow(self, transport: str, sender: str, now: float) -> tuple[bool, bool]:
        """(allowed, warn): warn once per throttled stretch so a flood gets one answer."""
        tokens, last, warned = self._buckets.get((transport, sender), (self.burst, now, False))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._buckets[(transport, sender)] = (tokens - 1, now, False)
            return True, False
        self._buckets[(transport, sender)] = (tokens, now, True)
        if len(self._buckets) > 100_000:
            self._buckets.clear()  # bounded memory under a flood of new senders
        return False, not warned

    def peek(self, transport: str, sender: str, now: float) -> bool:
        """Would `allow` let a message through now (without spending a token)?"""
        tokens, last, _warned = self._buckets.get((transport, sender), (self.burst, now, False))
        return min(self.burst, tokens + (now - last) * self.rate) >= 1


@dataclass(frozen=True)
class Outcome:
    """What handling one message left for the app to do after its transaction committed."""

    fresh: bool = True  # False: a replay, or traffic that is never handled (groups)
    requests: tuple[TransportRequest, ...] = ()


class Router:
    def __init__(
        self,
        services: Services,
        registry: Registry,
        clock: Callable[[], float] = time.time,
        limiter: CommandRateLimiter | None = None,
    ) -> None:
        self.services = services
        self.registry = registry
        self.flows = Flows(registry.flows)
        self.clock = clock
        self.limiter = limiter or CommandRateLimiter()

    def process(self, conn: Connection, msg: Incoming, *, held: bool = False) -> Outcome:
        """Handle one message inside the caller's transaction. `held`: a message released
        after /trust, whose inbox key was claimed when it was held."""
        now = self.clock()
        if not msg.private:
            # THREATS rule 9: a group is never a place where the bot learns or answers.
            log.info("traffic from a group chat ignored")
            return Outcome(fresh=False)
        if not held and not inbox.claim(conn, self.services.index_key, msg, now):
            return Outcome(fresh=False)
        if msg.untrusted_identity:
            guard.quarantine(conn, msg.transport, msg.sender, now, self.services)
            return Outcome()
        if has_surrogates(msg.text):
            msg = dataclasses.replace(msg, text=clean_surrogates(msg.text))
        ident = members.identity(conn, msg.transport, msg.sender)
        if ident is not None and ident.quarantined:
            guard.hold(conn, msg)
            return Outcome()
        member = members.get(conn, ident.member_id) if ident else None
        if member is not None and not (
            ident.chat == msg.chat and ident.reachable and ident.preferred
        ):
            members.update_chat(conn, msg.transport, msg.sender, msg.chat)
        language = member.language if member else msg.language_hint
        tr = Translator(language or self.services.default_language)
        ctx = Context(conn, msg, member, self.services, now, tr, self.flows, self.registry)

        allowed, warn = self.limiter.allow(msg.transport, msg.sender, now)
        if not allowed:
            if warn:
                ctx.reply(tr("Too many messages at once. Please wait a minute and try again."))
            return Outcome()
        if len(msg.text) > MAX_TEXT_CHARS:
            ctx.reply(tr("That message is too long. Please keep it shorter."))
            return Outcome()

        conn.execute("SAVEPOINT handler")
        try:
            self._dispatch(ctx)
        except UserError as err:
            conn.execute("ROLLBACK TO handler")
            if isinstance(err, FlowFailed) and ctx.member is not None:
                conversations.clear(conn, ctx.member.id)  # after the rollback: it stays ended
            ctx.reply(err.message)
        except Exception as exc:
            conn.execute("ROLLBACK TO handler")
            # The type only: an exception's text may quote what the person wrote.
            log.error("handler failed: %s", type(exc).__name__)
            ctx.reply(tr("Something went wrong on our side. Nothing was changed; please try again"))
            ctx.requests.clear()
        conn.execute("RELEASE handler")
        return Outcome(requests=tuple(ctx.requests))

    def attachments_wanted(self, conn: Connection, msg: Incoming) -> int | None:
        """May this message's attachments be fetched at all (issue 12 item 5)? Only for a
        relative in a 1:1 chat, on a trusted identity, not a replay, within the rate limit,
        whose message is a report or answers a report question that takes files: their member
        id, else None. Read-only: the message itself is handled afterwards, as usual."""
        if msg.untrusted_identity or not msg.private:
            return None
        if inbox.seen(conn, self.services.index_key, msg):
            return None
        ident = members.identity(conn, msg.transport, msg.sender)
        member = members.get(conn, ident.member_id) if ident and not ident.quarantined else None
        if member is None or member.role != "family":
            return None
        if not self.limiter.peek(msg.transport, msg.sender, self.clock()):
            return None
        if msg.text.strip().split(" ", 1)[0].lower() in guard.REPORT_COMMANDS:
            return member.id
        tr = Translator(member.language or self.services.default_language)
        ctx = Context(conn, msg, member, self.services, self.clock(), tr, self.flows, self.registry)
        fc = self.flows.current(ctx)
        return member.id if fc is not None and fc.current.files else None

    def _dispatch(self, ctx: Context) -> None:
        text = ctx.incoming.text.strip()
        if self.flows.handle(ctx, text):
            return
        if text.startswith("/"):
            name, _, args = text[1:].partition(" ")
            name = name.split("@", 1)[0].lower()  # Telegram group form /cmd@botname
            cmd = self.registry.commands.get(name)
            if cmd is None or not may_use(cmd, ctx.member):
                # Same answer for "no such command" and "not for you": roles are not advertised.
                ctx.reply(ctx._("I don't know that command. Send /help to see what you can do."))
                return
            open_flow = ctx.flow()
            if open_flow is not None:
                self.flows.abandon(open_flow)  # another command abandons a wizard half-way
            cmd.handler(ctx, args.strip())
            return
        if ctx.member is None:
            ctx.reply(ctx._("Welcome. Send /start to join, or /help to learn what this bot does."))
            return
        if ctx.incoming.attachments:
            ctx.reply(ctx._("To send a photo or document as a report, start with /report."))
            return
        if any(take(ctx, text) for take in self.registry.free_text):
            return
        ctx.reply(ctx._("I did not understand that. Send /help to see what you can do."))
