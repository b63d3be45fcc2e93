"""The daily digest: per member at their digest hour, the alerts since the last one."""

from __future__ import annotations

import logging
from datetime import datetime

from bot.i18n import Translator
from bot.messages import Priority
from bot.notify import notify_member
from handlers import broadcasts as engine
from handlers.broadcasts import (
    alert_text,
    categories,
)
from handlers.common import zone
from storage import broadcasts, cases, members
from storage import subscriptions as subs
from storage.broadcasts import Broadcast
from storage.db import Connection
from storage.subscriptions import ALL

log = logging.getLogger(__name__)


DIGEST_BATCH = 500  # members per digest producer call


DIGEST_MAX_ITEMS = 15


DAY = 86400.0


def next_digest_at(conn: Connection, member_id: int, hour: int, now: float) -> float:
    member = members.get(conn, member_id)
    default_tz, _ = engine.network_defaults(conn)
    tz = (member.timezone if member else None) or default_tz
    at = engine.next_local_hour(hour, tz, now)
    held = engine.quiet_until(member.quiet_hours if member else None, tz, at)
    return held or at


def _digest_mode(conn: Connection, member_id: int) -> dict[int, str]:
    return {s.case_id: s.mode for s in subs.of_member(conn, member_id)}


def digest_tick(conn: Connection, now: float, transport: str) -> bool:
    """Dispatcher producer: one digest message per member whose digest hour has come."""
    due = subs.digests_due(conn, now, DIGEST_BATCH)
    if not due:
        return False
    wrote = False
    earliest = min((subs.prefs(conn, m).last_digest_at or now - DAY) for m in due)
    recent = broadcasts.alerts_since(conn, None, earliest, now)
    case_cache: dict[int, cases.Case | None] = {}
    for member_id in due:
        wrote |= _digest_for(conn, member_id, now, recent, case_cache)
    return wrote


def _digest_for(
    conn: Connection,
    member_id: int,
    now: float,
    recent: list[Broadcast],
    case_cache: dict[int, cases.Case | None],
) -> bool:
    member = members.get(conn, member_id)
    p = subs.prefs(conn, member_id)
    if member is None:
        return False
    modes = _digest_mode(conn, member_id)
    if "digest" not in modes.values():
        subs.set_digest_schedule(conn, member_id, None, p.last_digest_at)
        return False
    since = p.last_digest_at or now - DAY
    items = []
    for b in recent:
        if b.created_at <= since or b.priority == Priority.EMERGENCY or b.case_id is None:
            continue
        mode = modes.get(b.case_id) or modes.get(ALL)
        if mode != "digest":
            continue
        if not b.public and not member.vetted:
            continue  # relatives' news: vetted members only, as in the instant alert
        if b.case_id not in case_cache:
            case_cache[b.case_id] = cases.get(conn, b.case_id)
        case = case_cache[b.case_id]
        if case is None or not cases.can_see(conn, case, member.id, member.role):
            continue
        cats = categories(str(b.body.get("kind", "general")), b.body.get("flags", []))
        if p.optouts.intersection(cats):
            continue
        items.append(b)
    subs.set_digest_schedule(
        conn, member_id, next_digest_at(conn, member_id, p.digest_hour, now), now
    )
    if not items:
        return False
    default_tz, default_lang = engine.network_defaults(conn)
    tr = Translator(member.language or default_lang)
    parts = [tr("Your daily digest: {n} updates.", n=len(items))]
    for b in items[:DIGEST_MAX_ITEMS]:
        parts.append(alert_text(tr, b.body, digest=True) + f"\n/case {b.body.get('slug', '')}")
    if len(items) > DIGEST_MAX_ITEMS:
        parts.append(tr("…and {n} more. See /cases.", n=len(items) - DIGEST_MAX_ITEMS))
    parts.append(tr("Settings: /subscriptions"))
    text = "\n\n".join(parts)
    day = zone(member.timezone or default_tz)
    stamp = datetime.fromtimestamp(now, day).strftime("%Y-%m-%d")
    key = f"digest:{member_id}:{stamp}"
    return notify_member(conn, member_id, lambda _: text, now=now, idem_key=key) > 0
