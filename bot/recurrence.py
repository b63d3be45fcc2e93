"""Parse /schedule WHEN expressions and compute their occurrences in UTC, correctly across DST."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from types import MappingProxyType
from typing import Final, Literal
from zoneinfo import ZoneInfo

__all__ = [
    "ERROR_MESSAGES",
    "LAST_DAY",
    "MAX_INPUT_LEN",
    "MAX_YEAR",
    "MIN_YEAR",
    "WEEKDAY_NAMES",
    "ErrorCode",
    "Kind",
    "Rule",
    "WhenError",
    "format_rule",
    "next_occurrence",
    "occurrences",
    "parse_when",
]

# Grammar (case-insensitive, spaces allowed around every separator):
#   2026-12-01T10:00 | 2026-12-01 10:00      one-off, local wall time in the member's zone
#   daily@HH:MM
#   weekly:sun@18:00 | weekly:mon,wed,fri@18:30   (3-letter or full English day names)
#   monthly:15@19:00 | monthly:last@19:00    day 29-31 fires on the month's last day when the
#                                            month is shorter
#   yearly:10-30@12:00                       MM-DD; 02-29 fires on 28 Feb in common years
#
# DST policy, applied to every kind (see _resolve):
#   * a day is never skipped;
#   * a wall time inside a spring-forward gap fires later by the size of the gap
#     (02:30 -> 03:30 in Europe/Berlin on 2026-03-29);
#   * a wall time repeated by a fall-back fires once, at the first (earlier) instant.
# Two rare consequences, both pinned by tests: a gap that ends at midnight pushes that day's
# occurrence just past midnight (Asia/Pyongyang 2018-05-04 23:45 -> 05-05 00:15), and a
# calendar day that never existed (Pacific/Apia 2011-12-30) yields no extra occurrence.

Kind = Literal["once", "daily", "weekly", "monthly", "yearly"]
ErrorCode = Literal["bad_format", "bad_time", "bad_weekday", "bad_date", "in_past"]

# monthly:last. A negative sentinel cannot collide with a real day of the month.
LAST_DAY: Final = -1

# The longest sensible input (all seven full day names) is about 70 characters; the bound is
# checked before any other work so hostile megabyte strings cost O(1).
MAX_INPUT_LEN: Final = 96

# One-off years outside this window are typos, and far-out years would overflow datetime
# arithmetic in zones with large offsets.
MIN_YEAR: Final = 1970
MAX_YEAR: Final = 2999

# Monday = 0, as datetime.date.weekday(); cron counts from Sunday = 0, which is how
# APScheduler 3.x's from_crontab("0 18 * * 2") ends up firing on Wednesday.
WEEKDAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_NAMES: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Fixed English names, not calendar.day_name, which follows the process locale.
_WEEKDAY_BY_NAME: Final[Mapping[str, int]] = MappingProxyType(
    {name: i for names in (WEEKDAY_NAMES, _FULL_NAMES) for i, name in enumerate(names)}
)

ERROR_MESSAGES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "bad_format": (
            "Use a date and time like 2026-12-01T10:00, or a rule like daily@09:00, "
            "weekly:sun@18:00, monthly:15@19:00 or yearly:10-30@12:00."
        ),
        "bad_time": "The time must be between 00:00 and 23:59.",
        "bad_weekday": "Weekdays are mon, tue, wed, thu, fri, sat and sun.",
        "bad_date": "That date does not exist.",
        "in_past": "That time has already passed.",
    }
)


class WhenError(ValueError):
    """A WHEN expression was rejected; `code` selects the translated message.

    The message never echoes the input, so it is safe to show and to log.
    """

    def __init__(self, code: ErrorCode) -> None:
        super().__init__(ERROR_MESSAGES[code])
        self.code: ErrorCode = code

    def __reduce__(self) -> tuple[type[WhenError], tuple[ErrorCode]]:
        # The default would call WhenError(message), which is not a code.
        return (WhenError, (self.code,))


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed WHEN expression. Times are local wall-clock times in the caller's zone.

    Only the fields of `kind` are set; the others keep their defaults:
      once:    on_date, at
      daily:   at
      weekly:  weekdays (sorted, unique, Monday = 0), at
      monthly: day (1..31 or LAST_DAY), at
      yearly:  month, day (a valid day in a leap year), at
    """

    kind: Kind
    at: time
    weekdays: tuple[int, ...] = ()
    day: int | None = None
    month: int | None = None
    on_date: date | None = None

    def __post_init__(self) -> None:
        # Rules also come back from storage, so the invariants are enforced here, not only in
        # the parser; the parser relies on these checks for its error codes.
        at = self.at
        if not isinstance(at, time) or at.tzinfo is not None or at.second or at.microsecond:
            raise WhenError("bad_time")
        kind = self.kind
        if kind not in ("once", "daily", "weekly", "monthly", "yearly"):
            raise WhenError("bad_format")
        if kind != "weekly" and self.weekdays != ():
            raise WhenError("bad_format")
        if kind not in ("monthly", "yearly") and self.day is not None:
            raise WhenError("bad_format")
        if kind != "yearly" and self.month is not None:
            raise WhenError("bad_format")
        if kind != "once" and self.on_date is not None:
            raise WhenError("bad_format")

        if kind == "once":
            d = self.on_date
            # datetime is a subclass of date; a datetime here would smuggle in a second time.
            if not isinstance(d, date) or isinstance(d, datetime):
                raise WhenError("bad_format")
            if not MIN_YEAR <= d.year <= MAX_YEAR:
                raise WhenError("bad_date")
        elif kind == "weekly":
            wd = self.weekdays
            if not isinstance(wd, tuple) or not wd:
                raise WhenError("bad_format")
            if any(type(w) is not int or not 0 <= w <= 6 for w in wd):
                raise WhenError("bad_weekday")
            # Canonical order keeps equality, hashing and format_rule round trips exact.
            if list(wd) != sorted(set(wd)):
                raise WhenError("bad_format")
        elif kind == "monthly":
            if type(self.day) is not int or not (1 <= self.day <= 31 or self.day == LAST_DAY):
                raise WhenError("bad_date")
        elif kind == "yearly":
            m, d = self.month, self.day
            if type(m) is not int or type(d) is not int or not 1 <= m <= 12:
                raise WhenError("bad_date")
            # 2000 is a leap year, so 02-29 is accepted and 02-30 / 04-31 are not.
            if not 1 <= d <= calendar.monthrange(2000, m)[1]:
                raise WhenError("bad_date")


# --- parsing ---------------------------------------------------------------------------------

_ALLOWED_CHARS: Final = frozenset("0123456789abcdefghijklmnopqrstuvwxyz:@,- ")

# Bounded quantifiers only, applied to at most MAX_INPUT_LEN ASCII characters: no
# catastrophic backtracking is possible.
_ONCE_RE: Final = re.compile(
    r"([0-9]{4}) *- *([0-9]{1,2}) *- *([0-9]{1,2})(?: *t *| +)([0-9]{1,2}) *: *([0-9]{2})"
)
_RULE_RE: Final = re.compile(
    r"(daily|weekly|monthly|yearly) *(?:: *([a-z0-9 ,-]{0,96}?) *)?@ *([0-9]{1,2}) *: *([0-9]{2})"
)
_MONTH_DAY_RE: Final = re.compile(r"([0-9]{1,2}) *- *([0-9]{1,2})")
_DAY_RE: Final = re.compile(r"[0-9]{1,2}")


def parse_when(text: str, *, tz: ZoneInfo | None = None, now_utc: datetime | None = None) -> Rule:
    """Parse a WHEN expression. Raises WhenError, and nothing else, for any bad input.

    With both `tz` and `now_utc`, a one-off that is not strictly in the future raises
    WhenError("in_past"). Without them the result depends on `text` alone.
    """
    if (tz is None) != (now_utc is None):
        raise TypeError("pass both tz and now_utc, or neither")
    if not isinstance(text, str) or len(text) > MAX_INPUT_LEN:
        raise WhenError("bad_format")
    s = text.strip(" ")
    # isascii() first: it rejects RTL overrides, zero-width and full-width characters, and
    # makes lower() a plain ASCII mapping.
    if not s or not s.isascii():
        raise WhenError("bad_format")
    s = s.lower()
    if not _ALLOWED_CHARS.issuperset(s):
        raise WhenError("bad_format")

    if m := _ONCE_RE.fullmatch(s):
        year, month, day, hh, mm = (int(g) for g in m.groups())
        at = _make_time(hh, mm)
        try:
            on = date(year, month, day)
        except ValueError:
            raise WhenError("bad_date") from None
        rule = Rule("once", at, on_date=on)
        if tz is not None and now_utc is not None:
            _require_aware(now_utc, "now_utc")
            if next_occurrence(rule, tz, now_utc) is None:
                raise WhenError("in_past")
        return rule

    m = _RULE_RE.fullmatch(s)
    if m is None:
        raise WhenError("bad_format")
    kind, arg, hh_s, mm_s = m.groups()
    at = _make_time(int(hh_s), int(mm_s))
    if kind == "daily":
        if arg is not None:
            raise WhenError("bad_format")
        return Rule("daily", at)
    if not arg:
        raise WhenError("bad_format")
    if kind == "weekly":
        return Rule("weekly", at, weekdays=_parse_weekdays(arg))
    if kind == "monthly":
        if arg == "last":
            return Rule("monthly", at, day=LAST_DAY)
        if not _DAY_RE.fullmatch(arg):
            raise WhenError("bad_format")
        return Rule("monthly", at, day=int(arg))
    md = _MONTH_DAY_RE.fullmatch(arg)
    if md is None:
        raise WhenError("bad_format")
    return Rule("yearly", at, month=int(md[1]), day=int(md[2]))


def _make_time(hh: int, mm: int) -> time:
    if not (0 <= hh <= 23 and 0 <= mm <= 59):
        raise WhenError("bad_time")
    return time(hh, mm)


def _parse_weekdays(arg: str) -> tuple[int, ...]:
    days: set[int] = set()
    for token in arg.split(","):
        name = token.strip(" ")
        if not name:
            raise WhenError("bad_format")
        if name not in _WEEKDAY_BY_NAME:
            raise WhenError("bad_weekday")
        days.add(_WEEKDAY_BY_NAME[name])
    # Duplicates are harmless ("mon,monday"), so they are merged rather than rejected.
    return tuple(sorted(days))


def format_rule(rule: Rule) -> str:
    """Canonical text of a rule; parse_when(format_rule(r)) == r."""
    hhmm = f"{rule.at.hour:02d}:{rule.at.minute:02d}"
    if rule.kind == "once":
        assert rule.on_date is not None
        return f"{rule.on_date.isoformat()}T{hhmm}"
    if rule.kind == "daily":
        return f"daily@{hhmm}"
    if rule.kind == "weekly":
        return f"weekly:{','.join(WEEKDAY_NAMES[w] for w in rule.weekdays)}@{hhmm}"
    if rule.kind == "monthly":
        day = "last" if rule.day == LAST_DAY else str(rule.day)
        return f"monthly:{day}@{hhmm}"
    return f"yearly:{rule.month:02d}-{rule.day:02d}@{hhmm}"


# --- occurrences -----------------------------------------------------------------------------


def next_occurrence(
    rule: Rule, tz: ZoneInfo, after_utc: datetime, *, until: date | None = None
) -> datetime | None:
    """The first occurrence strictly after `after_utc`, as an aware UTC datetime.

    None when a one-off is not after `after_utc` (or, for any rule, past year 9999, or past
    `until`). Feeding the result back in walks the schedule without repeats or steps backwards.
    `until` is the last local calendar date a recurring rule fires on (inclusive); it is a
    date, not an instant, so a series "until 1 March" keeps 1 March whatever the DST offset.
    """
    return next(_instants_after(rule, tz, after_utc, until), None)


def occurrences(
    rule: Rule,
    tz: ZoneInfo,
    start_utc: datetime,
    end_utc: datetime,
    *,
    until: date | None = None,
) -> Iterator[datetime]:
    """All occurrences in (start_utc, end_utc], ascending, as aware UTC datetimes; with
    `until`, none on a local calendar date after it."""
    # Validate now rather than at the first next(), so misuse fails at the call site.
    _require_aware(start_utc, "start_utc")
    _require_aware(end_utc, "end_utc")
    return _until(_instants_after(rule, tz, start_utc, until), end_utc)


def _until(instants: Iterator[datetime], end_utc: datetime) -> Iterator[datetime]:
    for instant in instants:
        if instant > end_utc:
            return
        yield instant


def _require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _instants_after(
    rule: Rule, tz: ZoneInfo, after: datetime, until: date | None = None
) -> Iterator[datetime]:
    _require_aware(after, "after_utc")
    if until is not None and (not isinstance(until, date) or isinstance(until, datetime)):
        raise ValueError("until must be a date")
    if rule.kind == "once":
        assert rule.on_date is not None
        instant = _resolve(rule.on_date, rule.at, tz)
        if instant is not None and instant > after:
            yield instant
        return
    last = after
    for day in _candidate_dates(rule, _search_start(after, tz)):
        # The candidate's calendar date decides, not the resolved instant: a gap-shifted
        # 23:45 that lands just past midnight still belongs to its own (last) day.
        if until is not None and day > until:
            return
        instant = _resolve(day, rule.at, tz)
        # Resolved instants never decrease from one candidate day to the next (that would
        # need a fall-back longer than a day), so one pass in date order suffices. Strict ">"
        # also drops the duplicate a vanished calendar day yields: Pacific/Apia skipped
        # 2011-12-30, whose times resolve to the same instants as 2011-12-31's.
        if instant is not None and instant > last:
            last = instant
            yield instant


def _search_start(after: datetime, tz: ZoneInfo) -> date:
    try:
        local = after.astimezone(tz).date()
    except OverflowError:
        # Only at the very ends of datetime's range; the wall date of `after` is close enough.
        local = after.date()
    # Start a few days early: a gap-shifted time can land on the next local day, and a
    # candidate that is already past costs one conversion.
    return date.fromordinal(max(1, local.toordinal() - 3))


def _resolve(day: date, at: time, tz: ZoneInfo) -> datetime | None:
    # fold=0 implements the whole DST policy (PEP 495): inside a spring-forward gap it applies
    # the offset from before the transition, which lands `gap` later on the new wall clock
    # (02:30 -> 03:30); in a fall-back overlap it selects the earlier of the two instants.
    try:
        return datetime.combine(day, at).replace(tzinfo=tz, fold=0).astimezone(UTC)
    except OverflowError:
        return None


def _candidate_dates(rule: Rule, start: date) -> Iterator[date]:
    """Local calendar dates on or after `start` on which `rule` fires, ascending."""
    if rule.kind in ("daily", "weekly"):
        weekdays = range(7) if rule.kind == "daily" else frozenset(rule.weekdays)
        for ordinal in range(start.toordinal(), date.max.toordinal() + 1):
            day = date.fromordinal(ordinal)
            if day.weekday() in weekdays:
                yield day
        return
    if rule.kind == "monthly":
        assert rule.day is not None
        year, month = start.year, start.month
        while year <= date.max.year:
            length = calendar.monthrange(year, month)[1]
            # Short months clamp to their last day, so monthly:31 still fires every month.
            day = date(year, month, length if rule.day == LAST_DAY else min(rule.day, length))
            if day >= start:
                yield day
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return
    if rule.kind == "yearly":
        assert rule.month is not None and rule.day is not None
        for year in range(start.year, date.max.year + 1):
            # 02-29 clamps to 28 Feb in common years rather than waiting up to eight years.
            length = calendar.monthrange(year, rule.month)[1]
            day = date(year, rule.month, min(rule.day, length))
            if day >= start:
                yield day
        return
    raise AssertionError(f"unexpected kind {rule.kind!r}")
