"""Messages to members who did not just write: one place decides where and how they go."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.i18n import Translator
from bot.messages import Choice, Priority
from storage import members, outbox
from storage.db import Connection


def outbox_body(text: str, choices: tuple[Choice, ...] = ()) -> dict[str, Any]:
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
    """Write the message for every transport the member can be reached on, in their language.
    Returns how many rows were written (an idempotency key makes a repeat write nothing)."""
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
            body=outbox_body(render(tr), choices(tr) if choices else ()),
            priority=priority,
            now=now,
            idem_key=key,
            broadcast_id=broadcast_id,
        ):
            sent += 1
    return sent
