"""Routes an Incoming message to a handler: inbox, member lookup, roles, rate limits, wizards.

`Router.process` runs inside one database transaction on the writer thread, so the inbox key,
the handler's changes and the outbox rows it writes commit together or not at all.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.i18n import N_, Translator
from bot.messages import MAX_TEXT_CHARS, Choice, Incoming, Priority
from bot.services import Services
from storage import audit, conversations, inbox, members, outbox
from storage.conversations import Conversation
from storage.db import Connection
from storage.members import Member

log = logging.getLogger(__name__)

ANYONE: frozenset[str] | None = None
MEMBERS = frozenset(members.ROLES)
FAMILY = frozenset({"family"})
COORDINATORS = frozenset({"coordinator", "admin"})
ADMINS = frozenset({"admin"})


class UserError(Exception):
    """A handler's clear answer to bad input; nothing it did in this message is kept."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


Handler = Callable[["Context", str], None]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    roles: frozenset[str] | None
    summary: str
    order: int
    keeps_flow: bool = False  # a wizard's own button command: does not abandon the wizard
    hidden: bool = False  # not listed in /help or platform menus


@dataclass
class Registry:
    commands: dict[str, Command] = field(default_factory=dict)
    flows: dict[str, Handler] = field(default_factory=dict)
    # Named extension points another module may fill, e.g. "cancel_with_args" for /cancel ID.
    hooks: dict[str, Handler] = field(default_factory=dict)

    def command(
        self,
        name: str,
        *,
        roles: frozenset[str] | None,
        summary: str,
        order: int = 50,
        keeps_flow: bool = False,
        hidden: bool = False,
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            if name in self.commands:
                raise RuntimeError(f"command /{name} registered twice")
            self.commands[name] = Command(name, fn, roles, summary, order, keeps_flow, hidden)
            return fn

        return register

    def flow(self, name: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.flows[name] = fn
            return fn

        return register

    def allowed(self, member: Member | None) -> list[Command]:
        out = [c for c in self.commands.values() if not c.hidden and may_use(c, member)]
        return sorted(out, key=lambda c: (c.order, c.name))


registry = Registry()


def may_use(cmd: Command, member: Member | None) -> bool:
    if cmd.roles is None:
        return True
    return member is not None and member.role in cmd.roles


@dataclass
class Context:
    """One message being handled: who sent it, the open transaction, and how to answer."""

    conn: Connection
    incoming: Incoming
    member: Member | None
    services: Services
    now: float
    _: Translator

    def reply(
        self, text: str, choices: tuple[Choice, ...] = (), priority: Priority = Priority.REPLY
    ) -> None:
        outbox.enqueue(
            self.conn,
            transport=self.incoming.transport,
            chat=self.incoming.chat,
            member_id=self.member.id if self.member else None,
            body=_body(text, choices),
            priority=priority,
            now=self.now,
        )

    def notify(
        self,
        member_id: int,
        render: Callable[[Translator], str],
        *,
        priority: Priority = Priority.ALERT,
        idem_key: str | None = None,
        choices: Callable[[Translator], tuple[Choice, ...]] | None = None,
    ) -> int:
        """Message another member on every transport they can be reached on, in their language."""
        return notify_member(
            self.conn, member_id, render, now=self.now, priority=priority,
            idem_key=idem_key, choices=choices,
        )  # fmt: skip

    def audit(self, action: str, target: str | None = None) -> None:
        audit.record(self.conn, self.member.id if self.member else None, action, target, self.now)

    # -- wizards ------------------------------------------------------------------------

    def start_flow(self, flow: str, step: str, data: dict[str, Any] | None = None) -> None:
        assert self.member is not None, "wizards are for members"
        conversations.put(self.conn, self.member.id, Conversation(flow, step, data or {}), self.now)

    def conversation(self) -> Conversation | None:
        return conversations.get(self.conn, self.member.id) if self.member else None

    def end_flow(self) -> None:
        if self.member:
            conversations.clear(self.conn, self.member.id)

    def require_member(self) -> Member:
        if self.member is None:
            raise UserError(self._("Send /start to join first."))
        return self.member


def _body(text: str, choices: tuple[Choice, ...]) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text}
    if choices:
        body["choices"] = [[c.label, c.value] for c in choices]
    return body


def notify_member(
    conn: Connection,
    member_id: int,
    render: Callable[[Translator], str],
    *,
    now: float,
    priority: Priority = Priority.ALERT,
    idem_key: str | None = None,
    choices: Callable[[Translator], tuple[Choice, ...]] | None = None,
    broadcast_id: int | None = None,
) -> int:
    member = members.get(conn, member_id)
    if member is None:
        return 0
    tr = Translator(member.language)
    sent = 0
    for ident in members.identities(conn, member_id):
        if not ident.reachable:
            continue
        key = f"{idem_key}:{ident.transport}" if idem_key else None
        if outbox.enqueue(
            conn,
            transport=ident.transport,
            chat=ident.chat,
            member_id=member_id,
            body=_body(render(tr), choices(tr) if choices else ()),
            priority=priority,
            now=now,
            idem_key=key,
            broadcast_id=broadcast_id,
        ):
            sent += 1
    return sent


def parse_id(text: str) -> int | None:
    """A number typed by a person: ASCII digits only ("²".isdigit() is True, and int() then
    fails), short enough for SQLite's INTEGER; an optional leading #."""
    text = text.strip().removeprefix("#")
    return int(text) if re.fullmatch(r"[0-9]{1,12}", text) else None


def clean_surrogates(text: str) -> str:
    """Lone surrogates (malformed UTF-16 from a client) cannot be encoded, stored or compared;
    they become U+FFFD on intake so every handler sees valid text."""
    return text.encode("utf-8", "replace").decode("utf-8") if _SURROGATE.search(text) else text


_SURROGATE = re.compile("[\ud800-\udfff]")


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


class Router:
    def __init__(
        self,
        services: Services,
        reg: Registry | None = None,
        clock: Callable[[], float] = time.time,
        limiter: CommandRateLimiter | None = None,
    ) -> None:
        self.services = services
        self.registry = reg or registry
        self.clock = clock
        self.limiter = limiter or CommandRateLimiter()

    def process(self, conn: Connection, msg: Incoming) -> bool:
        """Handle one message; False when its key was seen before (a replay)."""
        now = self.clock()
        if not inbox.claim(conn, msg.transport, msg.key, now):
            return False
        if _SURROGATE.search(msg.text):
            msg = dataclasses.replace(msg, text=clean_surrogates(msg.text))
        member = members.by_address(conn, msg.transport, msg.sender)
        if member is not None:
            members.update_chat(conn, msg.transport, msg.sender, msg.chat)
        language = member.language if member else msg.language_hint
        tr = Translator(language or self.services.default_language)
        ctx = Context(conn, msg, member, self.services, now, tr)

        allowed, warn = self.limiter.allow(msg.transport, msg.sender, now)
        if not allowed:
            if warn:
                ctx.reply(tr("Too many messages at once. Please wait a minute and try again."))
            return True
        if len(msg.text) > MAX_TEXT_CHARS:
            ctx.reply(tr("That message is too long. Please keep it shorter."))
            return True

        conn.execute("SAVEPOINT handler")
        try:
            self._dispatch(ctx)
        except UserError as err:
            conn.execute("ROLLBACK TO handler")
            ctx.reply(err.message)
        except Exception as exc:
            conn.execute("ROLLBACK TO handler")
            # The type only: an exception's text may quote what the person wrote.
            log.error("handler failed: %s", type(exc).__name__)
            ctx.reply(tr("Something went wrong on our side. Nothing was changed; please try again"))
        conn.execute("RELEASE handler")
        return True

    def _dispatch(self, ctx: Context) -> None:
        text = ctx.incoming.text.strip()
        if text.startswith("/"):
            name, _, args = text[1:].partition(" ")
            name = name.split("@", 1)[0].lower()  # Telegram group form /cmd@botname
            cmd = self.registry.commands.get(name)
            conv = ctx.conversation()
            if cmd is None and conv is not None and conv.flow in self.registry.flows:
                # A wizard's own short commands (/skip, /done, button values) are not global.
                self.registry.flows[conv.flow](ctx, text)
                return
            if cmd is None or not may_use(cmd, ctx.member):
                # Same answer for "no such command" and "not for you": roles are not advertised.
                ctx.reply(ctx._("I don't know that command. Send /help to see what you can do."))
                return
            if conv is not None and name != "cancel" and not cmd.keeps_flow:
                ctx.end_flow()  # a known command abandons a wizard half-way
            cmd.handler(ctx, args.strip())
            return
        conv = ctx.conversation()
        if conv is not None and conv.flow in self.registry.flows:
            self.registry.flows[conv.flow](ctx, text)
            return
        if ctx.member is None:
            ctx.reply(ctx._("Welcome. Send /start to join, or /help to learn what this bot does."))
            return
        if ctx.incoming.attachments:
            ctx.reply(ctx._("To send a photo or document as a report, start with /report."))
            return
        ctx.reply(ctx._("I did not understand that. Send /help to see what you can do."))


__all__ = [
    "ADMINS",
    "ANYONE",
    "COORDINATORS",
    "FAMILY",
    "MEMBERS",
    "N_",
    "Context",
    "Router",
    "Services",
    "UserError",
    "registry",
]
