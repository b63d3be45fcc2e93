"""What a message must pass before any handler sees it: a 1:1 chat, a trusted identity, and,
for attachments, a sender who may send them now (THREATS rules 9, 14 and issue 12 item 5).

The router calls these inside the message's transaction, the app calls `attachments_wanted`
before fetching a single byte. Nothing here answers a group, and nothing logs more than the
kind of event.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict

from bot.messages import Incoming, Priority
from bot.notify import notify_member
from bot.services import Services
from storage import audit, cases, members, outbox
from storage.db import Connection, scrubbed

log = logging.getLogger(__name__)

DAY = 86400.0
ATTACHMENT_QUOTA = 50 * 1024 * 1024  # sealed attachment bytes per member per day
REPORT_COMMANDS = ("/report", "/urgent")


def quarantine(
    conn: Connection, transport: str, address: str, now: float, services: Services
) -> None:
    """An identity's Signal safety number changed (seen on receive or on a refused send): a
    cloned or seized phone may be writing. Quarantine it, hold what was waiting for it, tell
    the member where we still can and their coordinators (admins for others), content-free."""
    ident = members.identity(conn, transport, address)
    if ident is None:
        log.info("untrusted identity of a non-member ignored")
        return
    if not members.set_quarantined(conn, transport, address, True):
        return  # already quarantined: one alert per change
    outbox.hold_chat(conn, ident.transport, ident.chat)
    log.warning("identity quarantined after a safety-number change: member:%d", ident.member_id)
    audit.record(conn, None, "identity.quarantined", f"member:{ident.member_id}", now)
    channels = services.transports
    notify_member(
        conn, ident.member_id,
        lambda _: _(
            "Your security number changed. Until a coordinator confirms it is you, nothing "
            "sensitive is sent to you here."
        ),
        now=now, channels=channels, priority=Priority.EMERGENCY,
        idem_key=f"quarantine:{ident.member_id}:{int(now)}:self",
    )  # fmt: skip
    for mid in confirmers(conn, ident.member_id):
        notify_member(
            conn, mid,
            lambda _: _(
                "The security number of member {n} changed. That can mean a new phone, or a "
                "seized or copied one. Check with them in person, then send /trust {n} (or "
                "/revoke {n}).",
                n=ident.member_id,
            ),
            now=now, channels=channels, priority=Priority.EMERGENCY,
            idem_key=f"quarantine:{ident.member_id}:{int(now)}:to:{mid}",
        )  # fmt: skip


def confirmers(conn: Connection, member_id: int) -> list[int]:
    """Who may confirm a member in person: the coordinators of their cases, else the admins."""
    found: set[int] = set()
    for relation in ("family", "coordinator"):
        for case in cases.member_cases(conn, member_id, relation):
            found |= set(cases.coordinators_of(conn, case.id))
    found.discard(member_id)
    return sorted(found) or [a for a in members.with_role(conn, ("admin",)) if a != member_id]


def hold(conn: Connection, msg: Incoming) -> None:
    """Keep a message from a quarantined identity unprocessed until /trust (or /revoke)."""
    payload = asdict(msg) | {"attachments": []}  # files are never fetched for a held message
    conn.execute(
        "INSERT INTO held_messages (transport, address, payload) VALUES (?, ?, ?)",
        (msg.transport, msg.sender, json.dumps(payload, ensure_ascii=False)),
    )
    log.info("message from a quarantined identity held")


def release(conn: Connection, transport: str, address: str, now: float) -> list[Incoming]:
    """The identity is trusted again: its held outbox rows go, its held messages come back."""
    ident = members.identity(conn, transport, address)
    if ident is None:
        return []
    members.set_quarantined(conn, transport, address, False)
    outbox.release_chat(conn, ident.transport, ident.chat, now)
    return _take_held(conn, transport, address)


def drop_held(conn: Connection, transport: str, address: str) -> int:
    return len(_take_held(conn, transport, address))


def _take_held(conn: Connection, transport: str, address: str) -> list[Incoming]:
    rows = conn.execute(
        "DELETE FROM held_messages WHERE transport = ? AND address = ? RETURNING id, payload",
        (transport, address),
    ).fetchall()
    if rows:
        scrubbed(conn)
    return [Incoming(**json.loads(payload)) for _id, payload in sorted(rows)]


class AttachmentQuota:
    """Sealed attachment bytes per member and day, in memory only: a counter on disk would say
    which member sent files when, and so link a relative to a report. A restart resets it."""

    def __init__(
        self, limit: int = ATTACHMENT_QUOTA, clock: Callable[[], float] = time.time
    ) -> None:
        self.limit = limit
        self.clock = clock
        self._used: dict[int, tuple[int, int]] = {}

    def _today(self, member_id: int) -> int:
        day = int(self.clock() // DAY)
        used_day, used = self._used.get(member_id, (day, 0))
        return used if used_day == day else 0

    def allows(self, member_id: int, size: int) -> bool:
        return self._today(member_id) + size <= self.limit

    def take(self, member_id: int, size: int) -> None:
        self._used[member_id] = (int(self.clock() // DAY), self._today(member_id) + size)
