"""One message being handled: who sent it, the open transaction, and how to answer.

Handlers are synchronous functions `(ctx, args) -> None` that run on the database writer thread
inside the message's transaction; they change state through `storage/` and answer by writing
outbox rows. Raising `UserError` rolls back what the handler did and sends its sentence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bot.i18n import Translator
from bot.messages import Choice, Incoming, Priority
from bot.notify import notify_member, outbox_body
from bot.services import Services
from storage import audit, members, outbox
from storage.db import Connection
from storage.members import Member

if TYPE_CHECKING:
    from bot.capability import Registry
    from bot.flows import Flow, FlowContext, Flows

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


class FlowFailed(UserError):
    """Like UserError, and the member's open flow ends too. The end is applied after the
    rollback, so it cannot be undone with the rest: no wizard is left stuck on a step that can
    never succeed."""


@dataclass(frozen=True)
class RequestResult:
    ok: bool
    detail: str = ""  # a plain sentence or an outcome kind, never a token or an address


# (conn, now, result) -> messages to handle again (held ones released by a /trust); runs in a
# transaction of its own once the transport answered.
OnResult = Callable[[Connection, float, RequestResult], list[Incoming]]


@dataclass(frozen=True)
class TransportRequest:
    """Something a handler needs a transport to do (trust a safety number, submit a captcha).
    Handlers do no I/O: the app runs the request after the message's transaction committed."""

    transport: str
    op: Literal["trust_identity", "solve_challenge"]
    argument: str = field(repr=False)  # an address or a captcha: never logged
    on_result: OnResult = field(repr=False, default=lambda conn, now, result: [])


@dataclass
class Context:
    conn: Connection
    incoming: Incoming
    member: Member | None
    services: Services
    now: float
    _: Translator
    flows: Flows | None = None  # the router's flow engine (None in contexts without one)
    registry: Registry | None = None  # the app's commands, for /help
    requests: list[TransportRequest] = field(default_factory=list)

    def reply(
        self,
        text: str,
        choices: tuple[Choice, ...] = (),
        priority: Priority = Priority.REPLY,
        *,
        sensitivity: str = outbox.ORDINARY,
    ) -> None:
        """Answer in the chat the message came from (always a 1:1 chat: the router drops the
        rest). A reply that names a report, or carries a code, is `sensitivity`-marked so the
        row is deleted once delivered."""
        outbox.enqueue(
            self.conn,
            transport=self.incoming.transport,
            chat=self.incoming.chat,
            member_id=self.member.id if self.member else None,
            body=outbox_body(text, choices),
            priority=priority,
            now=self.now,
            sensitivity=sensitivity,
        )

    def notify(
        self,
        member_id: int,
        render: Callable[[Translator], str],
        *,
        priority: Priority = Priority.ALERT,
        idem_key: str | None = None,
        choices: Callable[[Translator], tuple[Choice, ...]] | None = None,
        sensitivity: str = outbox.ORDINARY,
        origin: str | None = None,
        notice: Callable[[Translator], str] | None = None,
    ) -> int:
        """Message another member, in their language, on the one identity its class allows
        (bot/notify.py)."""
        return notify_member(
            self.conn, member_id, render, now=self.now, channels=self.services.transports,
            priority=priority, idem_key=idem_key, choices=choices, sensitivity=sensitivity,
            origin=origin, notice=notice,
        )  # fmt: skip

    def audit(self, action: str, target: str | None = None) -> None:
        audit.record(self.conn, self.member.id if self.member else None, action, target, self.now)

    def request(self, request: TransportRequest) -> None:
        """Ask the app to run `request` once this message's changes are committed."""
        self.requests.append(request)

    def require_member(self) -> Member:
        if self.member is None:
            raise UserError(self._("Send /start to join first."))
        return self.member

    # -- flows (wizards) ----------------------------------------------------------------------

    def start_flow(
        self, flow: Flow, data: dict[str, Any] | None = None, *, step: str | None = None,
        note: str | None = None,
    ) -> FlowContext:  # fmt: skip
        """Open `flow` for this member (replacing any other) and ask its first question."""
        assert self.flows is not None, "flows need the router"
        return self.flows.start(self, flow, data or {}, step=step, note=note)

    def flow(self) -> FlowContext | None:
        """The member's open flow, if any."""
        return self.flows.current(self) if self.flows is not None else None


def ascii_digits(text: str) -> str:
    """Decimal digits of any script as ASCII: a Persian keyboard types ۱۲, an Arabic one ١٢, a
    Burmese one ၁၂, and each means 12. Only decimal digits (category Nd) are mapped, so "²" and
    "①" stay what they are and fail to parse as numbers, as before."""
    if text.isascii():
        return text
    return "".join(
        str(unicodedata.decimal(ch)) if unicodedata.category(ch) == "Nd" else ch for ch in text
    )


def parse_id(text: str) -> int | None:
    """A number typed by a person, in any script's decimal digits (`ascii_digits`), short enough
    for SQLite's INTEGER; an optional leading #."""
    text = ascii_digits(text.strip()).removeprefix("#")
    return int(text) if re.fullmatch(r"[0-9]{1,12}", text) else None


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def clean_surrogates(text: str) -> str:
    """Lone surrogates (malformed UTF-16 from a client) cannot be encoded, stored or compared;
    they become U+FFFD on intake so every handler sees valid text."""
    return text.encode("utf-8", "replace").decode("utf-8") if has_surrogates(text) else text
