"""Messages to members who did not just write: one place decides where and how each one goes.

Every message has a sensitivity class (storage/outbox.py: ordinary, report, urgent, code,
place) and goes to ONE of the member's identities (THREATS rules 10 and 14):

* ordinary: the identity the member wrote from last (`preferred`), else any reachable one;
* report, urgent, place: the most private identity (an end-to-end transport first), then the
  one they use;
* content that arrived over an end-to-end transport (a report or an emergency sent over
  Signal) never leaves over one that is not: when the member has no such identity, they get a
  content-free notice instead (`notice`), on the identity they use;
* a quarantined identity (its safety number changed) is passed over while the member has
  another; when it is their only one, the message is written but held (`outbox.HELD`) until a
  coordinator confirms them (/trust), so nothing is lost and nothing goes out before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.i18n import Translator
from bot.messages import Choice, Priority
from bot.transports.base import Capabilities
from storage import members, outbox
from storage.db import Connection
from storage.members import Identity

Channels = Mapping[str, Capabilities]  # what each running transport can do (Services)
Render = Callable[[Translator], str]


def outbox_body(text: str, choices: tuple[Choice, ...] = ()) -> outbox.OutboxBody:
    body: outbox.OutboxBody = {"text": text}
    if choices:
        body["choices"] = [[c.label, c.value] for c in choices]
    return body


def private(channels: Channels, transport: str) -> bool:
    caps = channels.get(transport)
    return caps is not None and caps.end_to_end


@dataclass(frozen=True)
class Route:
    identity: Identity
    content: bool  # False: only a content-free notice may go there
    held: bool  # written, but held until the identity is trusted again


def route(
    identities: list[Identity], sensitivity: str, origin: str | None, channels: Channels
) -> Route | None:
    """Where one message of this class goes, or None when the member cannot be reached."""
    usable = [i for i in identities if i.reachable]
    if not usable:
        return None
    by_use = sorted(usable, key=lambda i: not i.preferred)
    trusted = [i for i in by_use if not i.quarantined]
    if not trusted:
        return Route(by_use[0], True, held=True)
    if sensitivity == outbox.ORDINARY or sensitivity == outbox.CODE:
        return Route(trusted[0], True, held=False)
    floor = origin is not None and private(channels, origin)
    allowed = [i for i in trusted if private(channels, i.transport) or not floor]
    if allowed:
        best = sorted(allowed, key=lambda i: not private(channels, i.transport))[0]
        return Route(best, True, held=False)
    return Route(trusted[0], False, held=False)


def _wait_for_link(
    conn: Connection,
    member_id: int,
    body: outbox.OutboxBody,
    *,
    now: float,
    channels: Channels,
    priority: Priority,
    idem_key: str | None,
    sensitivity: str,
) -> None:
    """Keep the content for the private transport the member has not linked yet: when they
    send /link CODE from it, the row is addressed and sent (`outbox.deliver_waiting`); if they
    never do, it expires with every undelivered message and is scrubbed as sensitive."""
    target = next(
        (t for t in sorted(channels, key=lambda t: t != "signal") if private(channels, t)), None
    )
    if target is None:
        return
    outbox.enqueue(
        conn, transport=target, chat=outbox.WAITING_CHAT, member_id=member_id, body=body,
        priority=priority, now=now, idem_key=f"{idem_key}:waiting" if idem_key else None,
        not_before=outbox.HELD, sensitivity=sensitivity,
    )  # fmt: skip


def notify_member(
    conn: Connection,
    member_id: int,
    render: Render,
    *,
    now: float,
    channels: Channels | None = None,
    priority: Priority = Priority.ALERT,
    idem_key: str | None = None,
    choices: Callable[[Translator], tuple[Choice, ...]] | None = None,
    broadcast_id: int | None = None,
    sensitivity: str = outbox.ORDINARY,
    origin: str | None = None,
    notice: Render | None = None,
) -> int:
    """Write the message for the one identity its class allows, in the member's language.
    `origin` is the transport the content came in on; `notice` is what goes instead where the
    content may not. Without `channels` no transport counts as private: a class with a floor
    then fails closed (only the notice goes). Returns 1 when a row was written (an idempotency
    key makes a repeat write nothing), else 0."""
    member = members.get(conn, member_id)
    if member is None:
        return 0
    found = route(members.identities(conn, member_id), sensitivity, origin, channels or {})
    if found is None:
        return 0
    tr = Translator(member.language)
    if found.content:
        body = outbox_body(render(tr), choices(tr) if choices else ())
        klass = sensitivity
    elif notice is not None:
        _wait_for_link(
            conn, member_id, outbox_body(render(tr), choices(tr) if choices else ()),
            now=now, channels=channels or {}, priority=priority, idem_key=idem_key,
            sensitivity=sensitivity,
        )  # fmt: skip
        body, klass = outbox_body(notice(tr)), outbox.ORDINARY
    else:
        return 0
    ident = found.identity
    key = f"{idem_key}:{ident.transport}" if idem_key else None
    written = outbox.enqueue(
        conn,
        transport=ident.transport,
        chat=ident.chat,
        member_id=member_id,
        body=body,
        priority=priority,
        now=now,
        idem_key=key,
        broadcast_id=broadcast_id,
        not_before=outbox.HELD if found.held else 0,
        sensitivity=klass,
    )
    return 1 if written else 0
