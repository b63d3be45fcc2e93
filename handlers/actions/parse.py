"""Reading a coordinator's /schedule and /editaction words: times, rules, options."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from bot import recurrence as rec
from bot.context import Context, UserError, ascii_digits
from handlers.actions.model import (
    DAY,
    HOUR,
    KIND_ALIASES,
    MAX_AHEAD_DAYS,
    MAX_REMINDERS,
    MINUTE,
    utc,
)
from handlers.common import valid_zone, zone
from storage.members import ROLE_ALIASES

_DURATION = re.compile(r"^(\d{1,4})\s*(m|min|mins|h|hr|hrs|d|day|days)$")


def parse_offsets(ctx: Context, value: str) -> tuple[int, ...]:
    text = ascii_digits(value.strip().lower())
    if text in ("off", "none", "-", "0"):
        return ()
    out: set[int] = set()
    bad = ctx._(
        "Give reminders as times before the start, for example 24h,1h or 2d,3h,30m "
        "(from 5 minutes to 60 days, at most {n}), or off.",
        n=MAX_REMINDERS,
    )
    for token in text.split(","):
        m = _DURATION.match(token.strip())
        if not m:
            raise UserError(bad)
        unit = m.group(2)[0]
        seconds = int(m.group(1)) * {"m": MINUTE, "h": HOUR, "d": DAY}[unit]
        if not 5 * MINUTE <= seconds <= 60 * DAY:
            raise UserError(bad)
        out.add(seconds)
    if not out or len(out) > MAX_REMINDERS:
        raise UserError(bad)
    return tuple(sorted(out, reverse=True))


def parse_duration(ctx: Context, value: str) -> int:
    m = _DURATION.match(ascii_digits(value.strip().lower()))
    if not m:
        raise UserError(ctx._("Give a time like 2h, 90m or 1d."))
    seconds = int(m.group(1)) * {"m": MINUTE, "h": HOUR, "d": DAY}[m.group(2)[0]]
    if not 0 < seconds <= 7 * DAY:
        raise UserError(ctx._("Give a time like 2h, 90m or 1d."))
    return seconds


def parse_kind(ctx: Context, value: str) -> str:
    kind = KIND_ALIASES.get(value.strip().lower())
    if kind is None:
        raise UserError(
            ctx._("Kinds of action: {kinds}.", kinds=", ".join(sorted(set(KIND_ALIASES.values()))))
        )
    return kind


def parse_audience(ctx: Context, value: str) -> str:
    text = value.strip().lower()
    if text in ("all", "everyone"):
        return "all"
    if text in ("case", "followers", "subscribers"):
        return "case"
    role = ROLE_ALIASES.get(text.removeprefix("role:"))
    if role is None:
        raise UserError(
            ctx._(
                "The audience is all, case (the case's followers), or a role such as role:activist."
            )
        )
    return f"role:{role}"


def when_error(ctx: Context, err: rec.WhenError) -> UserError:
    return UserError(ctx._(rec.ERROR_MESSAGES[err.code]))


def parse_start(ctx: Context, text: str, tz: str) -> tuple[rec.Rule, float | None]:
    """A WHEN expression -> (rule, start instant for a one-off)."""
    text = ascii_digits(text)
    now = utc(ctx.now)
    try:
        rule = rec.parse_when(text, tz=zone(tz), now_utc=now)
    except rec.WhenError as err:
        raise when_error(ctx, err) from None
    if rule.kind != "once":
        return rule, None
    first = rec.next_occurrence(rule, zone(tz), now)
    assert first is not None  # parse_when refused a time in the past
    if first.timestamp() > ctx.now + MAX_AHEAD_DAYS * DAY:
        raise UserError(ctx._("That date is too far ahead."))
    return rule, first.timestamp()


def take_when(tokens: list[str]) -> tuple[str, int] | rec.WhenError:
    """The WHEN at the head of `tokens` (it may hold a space: 2026-12-01 10:00)."""
    best: rec.WhenError | None = None
    for n in (2, 1):
        if len(tokens) < n:
            continue
        text = ascii_digits(" ".join(tokens[:n]))
        try:
            rec.parse_when(text)
        except rec.WhenError as err:
            if best is None or best.code == "bad_format":
                best = err
            continue
        return text, n
    return best or rec.WhenError("bad_format")


_OPTION = re.compile(r"^(kind|to|remind|tz|until)=(\S+)$", re.IGNORECASE)
# The series end is also written with a colon, like the rule itself: until:2027-03-01.
_UNTIL = re.compile(r"^until:(\S+)$", re.IGNORECASE)
_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")


def parse_until(ctx: Context, value: str, tz: str) -> str | None:
    """The last local date of a series (ISO), or None for no end ("-", "none", "never")."""
    text = ascii_digits(value.strip().lower())
    if text in ("-", "none", "never", "off"):
        return None
    m = _DATE.match(text)
    bad = ctx._("Give the last date of the series like 2027-03-01, or - for no end.")
    if not m:
        raise UserError(bad)
    try:
        last = date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        raise UserError(bad) from None
    today = utc(ctx.now).astimezone(zone(tz)).date()
    if last < today:
        raise UserError(ctx._("That date has already passed."))
    if (last - today).days > MAX_AHEAD_DAYS:
        raise UserError(ctx._("That date is too far ahead."))
    return last.isoformat()


def take_options(ctx: Context, tokens: list[str], data: dict[str, Any]) -> list[str]:
    """Parse leading key=value options into `data` (kind) and `data["options"]`."""
    opts = data["options"]
    while tokens and (
        m := _OPTION.match(ascii_digits(tokens[0])) or _UNTIL.match(ascii_digits(tokens[0]))
    ):
        key, value = (m.group(1).lower(), m.group(2)) if m.re is _OPTION else ("until", m[1])
        if key == "until":
            # Checked against the action's zone when it is created (the tz= may come later).
            opts["until"] = value
        elif key == "tz":
            found = valid_zone(value)
            if found is None:
                raise UserError(
                    ctx._(
                        "I don't know that time zone. Use a name like Europe/Minsk or Asia/Tehran."
                    )
                )
            opts["tz"] = found
        elif key == "kind":
            data["kind"] = parse_kind(ctx, value)
        elif key == "to":
            opts["to"] = parse_audience(ctx, value)
        else:
            opts["remind"] = list(parse_offsets(ctx, value))
        tokens = tokens[1:]
    return tokens
