"""Quiet hours, local hours and the network defaults that background work reads."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from bot.context import Context, ascii_digits
from handlers.common import zone
from storage import settings
from storage.db import Connection

DEFAULT_TZ_KEY = "network.default_timezone"


DEFAULT_LANG_KEY = "network.default_language"


_QUIET = re.compile(r"^(\d{1,2})-(\d{1,2})$")


def parse_quiet(quiet: str | None) -> tuple[int, int] | None:
    m = _QUIET.match(ascii_digits(quiet or ""))
    if not m:
        return None
    start, end = int(m.group(1)), int(m.group(2))
    if start == end or start > 23 or end > 23:
        return None
    return start, end


def quiet_until(quiet: str | None, tz: str | None, now: float) -> float:
    """When the member's quiet hours end if `now` is inside them (UTC epoch), else 0."""
    hours = parse_quiet(quiet)
    if hours is None:
        return 0.0
    start, end = hours
    local = datetime.fromtimestamp(now, zone(tz))
    h = local.hour
    inside = start <= h < end if start < end else (h >= start or h < end)
    if not inside:
        return 0.0
    return next_local_hour(end, tz, now)


def next_local_hour(hour: int, tz: str | None, now: float) -> float:
    """The next moment after `now` when the local clock shows hour:00 (DST-safe)."""
    z = zone(tz)
    local = datetime.fromtimestamp(now, z)
    day = local.date()
    for offset in range(3):
        candidate = datetime(day.year, day.month, day.day, hour, tzinfo=z) + timedelta(days=offset)
        # Re-normalise: a wall time that does not exist (DST gap) moves forward.
        at = candidate.timestamp()
        if at > now:
            return at
    return now + 86400.0


def network_defaults(conn: Connection) -> tuple[str, str]:
    """(time zone, language) for members who chose none; remembered from the services."""
    return (
        settings.get(conn, DEFAULT_TZ_KEY) or "UTC",
        settings.get(conn, DEFAULT_LANG_KEY) or "en",
    )


def remember_defaults(ctx: Context) -> None:
    """Producers run without a handler context; keep the network defaults where they see them."""
    for key, value in (
        (DEFAULT_TZ_KEY, ctx.services.default_timezone),
        (DEFAULT_LANG_KEY, ctx.services.default_language),
    ):
        if settings.get(ctx.conn, key) != value:
            settings.put(ctx.conn, key, value)
