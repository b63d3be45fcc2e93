"""Test harness: drive the real router and store in-process, as chat users would."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.app import default_registry, services_for
from bot.capability import Registry
from bot.config import Settings
from bot.context import RequestResult, TransportRequest
from bot.messages import Attachment, Incoming
from bot.router import Router
from bot.services import Services
from bot.transports.base import Capabilities
from storage import cases, members
from storage.store import Store

PASSPHRASE = "correct horse battery staple"
CHANNELS = {
    "console": Capabilities(end_to_end=True),
    "telegram": Capabilities(edits=True, buttons=True, deletes_incoming=True),
    "signal": Capabilities(end_to_end=True, disappearing=True),
}


class Clock:
    """A controllable clock: tests move time instead of sleeping."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:  # 2026-09-21
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Sent:
    id: int
    transport: str
    chat: str
    priority: int
    state: str
    body: dict[str, Any]

    @property
    def text(self) -> str:
        return self.body.get("text", "")

    @property
    def choices(self) -> list[list[str]]:
        return self.body.get("choices", [])


class ChatHarness:
    def __init__(
        self,
        store: Store,
        clock: Clock | None = None,
        services: Services | None = None,
        registry: Registry | None = None,
    ):
        self.store = store
        self.clock = clock or Clock()
        self.services = services or services_for(store, Settings(data_dir=store.data_dir))
        if not self.services.transports:
            # Play every platform at once: what each can do decides where content may go.
            self.services.transports.update(CHANNELS)
        self.registry = registry or default_registry()
        self.router = Router(self.services, self.registry, clock=self.clock)
        self.requests: list[TransportRequest] = []  # what handlers asked transports to do
        self._keys = itertools.count(1)
        self.members: dict[str, int] = {}

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.store.db.run_sync(fn, *args)

    def case(self, slug: str, name: str | None = None, visibility: str = "public") -> int:
        return self.run(
            lambda c: cases.create(c, slug, name or slug.title(), visibility, self.clock()).id
        )

    def member(
        self,
        name: str,
        role: str = "activist",
        *,
        family_of: tuple[str, ...] = (),
        coordinates: tuple[str, ...] = (),
        transport: str = "console",
        language: str = "en",
    ) -> int:
        def create(conn: Any) -> int:
            m = members.create(
                conn, role=role, transport=transport, address=name, chat=name,
                now=self.clock(), language=language,
            )  # fmt: skip
            for slug in family_of:
                case = cases.by_slug(conn, slug)
                assert case is not None
                cases.link_member(conn, case.id, m.id, "family")
            for slug in coordinates:
                case = cases.by_slug(conn, slug)
                assert case is not None
                cases.link_member(conn, case.id, m.id, "coordinator")
            return m.id

        self.members[name] = self.run(create)
        return self.members[name]

    def last_id(self) -> int:
        return self.run(
            lambda c: c.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
        )

    def outbox(self, since: int = 0, chat: str | None = None) -> list[Sent]:
        def query(conn: Any) -> list[Sent]:
            sql = "SELECT id, transport, chat, priority, state, body FROM outbox WHERE id > ?"
            args: list[Any] = [since]
            if chat is not None:
                sql += " AND chat = ?"
                args.append(chat)
            rows = conn.execute(sql + " ORDER BY id", args).fetchall()
            return [Sent(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

        return self.run(query)

    def send(
        self,
        who: str,
        text: str,
        *,
        transport: str = "console",
        attachments: tuple[Attachment, ...] = (),
        message_ref: str | None = None,
        language_hint: str | None = None,
        key: str | None = None,
        chat: str | None = None,
        private: bool = True,
        untrusted_identity: bool = False,
        is_choice: bool = False,
    ) -> list[Sent]:
        """`who` types `text`; returns every outbox row the message caused (any chat)."""
        mark = self.last_id()
        msg = Incoming(
            transport=transport,
            sender=who,
            chat=chat or who,
            key=key or f"k{next(self._keys)}",
            text=text,
            attachments=attachments,
            message_ref=message_ref,
            language_hint=language_hint,
            private=private,
            untrusted_identity=untrusted_identity,
            is_choice=is_choice,
        )
        outcome = self.run(self.router.process, msg)
        self.requests += outcome.requests
        return self.outbox(mark)

    def answer(self, ok: bool, detail: str = "") -> list[Sent]:
        """Play the transport: answer the oldest pending request, then handle what it released
        (held messages after a /trust). Returns every outbox row this caused."""
        mark = self.last_id()
        request = self.requests.pop(0)
        released = self.run(request.on_result, self.clock(), RequestResult(ok, detail))
        for msg in released:
            self.run(lambda conn, m=msg: self.router.process(conn, m, held=True))
        return self.outbox(mark)

    def say(self, who: str, text: str, **kw: Any) -> str:
        """The replies to `who` only, joined: what the person sees on their screen."""
        return "\n".join(s.text for s in self.send(who, text, **kw) if s.chat == who)
