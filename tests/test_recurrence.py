"""Tests for bot.recurrence: WHEN parsing and DST-correct occurrence computation."""

from __future__ import annotations

import itertools
import pickle
import time as clock
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.recurrence import (
    ERROR_MESSAGES,
    LAST_DAY,
    MAX_INPUT_LEN,
    Rule,
    WhenError,
    format_rule,
    next_occurrence,
    occurrences,
    parse_when,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def run(when: str, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    return list(occurrences(parse_when(when), tz, start, end))


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00", Rule("once", time(10, 0), on_date=date(2026, 12, 1))),
        ("2026-12-01 10:00", Rule("once", time(10, 0), on_date=date(2026, 12, 1))),
        ("2026-12-01t10:00", Rule("once", time(10, 0), on_date=date(2026, 12, 1))),
        (" 2026 - 12 - 01   10 : 00 ", Rule("once", time(10, 0), on_date=date(2026, 12, 1))),
        ("daily@09:05", Rule("daily", time(9, 5))),
        ("DAILY @ 9:05", Rule("daily", time(9, 5))),
        ("weekly:sun@18:00", Rule("weekly", time(18, 0), weekdays=(6,))),
        ("Weekly: Sunday @ 18:00", Rule("weekly", time(18, 0), weekdays=(6,))),
        ("weekly:mon,wed,fri@18:30", Rule("weekly", time(18, 30), weekdays=(0, 2, 4))),
        ("weekly : FRI , mon ,wednesday@18:30", Rule("weekly", time(18, 30), weekdays=(0, 2, 4))),
        ("weekly:mon,monday@07:00", Rule("weekly", time(7, 0), weekdays=(0,))),
        ("monthly:15@19:00", Rule("monthly", time(19, 0), day=15)),
        ("monthly:31@19:00", Rule("monthly", time(19, 0), day=31)),
        ("monthly: LAST @19:00", Rule("monthly", time(19, 0), day=LAST_DAY)),
        ("yearly:10-30@12:00", Rule("yearly", time(12, 0), month=10, day=30)),
        ("yearly: 2 - 29 @ 00:00", Rule("yearly", time(0, 0), month=2, day=29)),
    ],
)
def test_parse_accepts(text: str, expected: Rule) -> None:
    assert parse_when(text) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "bad_format"),
        ("   ", "bad_format"),
        ("tomorrow", "bad_format"),
        ("daily", "bad_format"),
        ("daily@", "bad_format"),
        ("daily:mon@10:00", "bad_format"),
        ("daily@10:5", "bad_format"),
        ("daily@10:00:00", "bad_format"),
        ("daily@-1:00", "bad_format"),
        ("daily@25:00", "bad_time"),
        ("daily@24:00", "bad_time"),
        ("daily@10:60", "bad_time"),
        ("2026-12-01T25:00", "bad_time"),
        ("weekly@18:00", "bad_format"),
        ("weekly:@18:00", "bad_format"),
        ("weekly:mon,,wed@18:00", "bad_format"),
        ("weekly:xyz@18:00", "bad_weekday"),
        ("weekly:mon,funday@18:00", "bad_weekday"),
        ("weekly:1@18:00", "bad_weekday"),
        ("weekly sun@18:00", "bad_format"),
        ("monthly:0@10:00", "bad_date"),
        ("monthly:32@10:00", "bad_date"),
        ("monthly:-1@10:00", "bad_format"),
        ("monthly:first@10:00", "bad_format"),
        ("yearly:13-01@10:00", "bad_date"),
        ("yearly:00-10@10:00", "bad_date"),
        ("yearly:02-30@10:00", "bad_date"),
        ("yearly:04-31@10:00", "bad_date"),
        ("yearly:10@10:00", "bad_format"),
        ("2026-02-30T10:00", "bad_date"),
        ("2026-13-01T10:00", "bad_date"),
        ("2026-00-10T10:00", "bad_date"),
        ("1969-12-31T10:00", "bad_date"),
        ("3000-01-01T10:00", "bad_date"),
        ("-2026-12-01T10:00", "bad_format"),
        ("26-12-01T10:00", "bad_format"),
        ("2026-12-01T10:00Z", "bad_format"),
        ("2026-12-01T10:00+01:00", "bad_format"),
        ("2026-12-01", "bad_format"),
    ],
)
def test_parse_rejects_with_code(text: str, code: str) -> None:
    with pytest.raises(WhenError) as info:
        parse_when(text)
    assert info.value.code == code
    assert str(info.value) == ERROR_MESSAGES[code]


HOSTILE = [
    "daily@10:00" + " " * 100_000,
    "9" * 100_000,
    "weekly:" + "mon," * 25_000 + "@10:00",
    "\u202edaily@10:00",  # right-to-left override
    "daily@10:\u200b00",  # zero-width space
    "daily@10:00\u200d",  # zero-width joiner
    "\ufeffdaily@10:00",  # byte-order mark
    "daily@10:00\x00",
    "daily\n@10:00",
    "daily@10:00\r\n",
    "daily\t@10:00",
    "\x1b[31mdaily@10:00",
    "daily@\u0661\u0660:00",  # Arabic-Indic digits match \d, not [0-9]
    "daily@\uff11\uff10:00",  # full-width digits
    "dаily@10:00",  # Cyrillic a
    "DAİLY@10:00",  # dotted capital I lowercases to two code points
    "\udcff",  # lone surrogate
    "daily@10:00\u00a0",  # no-break space
    "weekly:mon" + ",mon" * 30 + "@10:00",
    "daily@99999999999999999999:00",
    "2026-12-01T10:00'; DROP TABLE schedule; --",
    "%s%s%n",
    "{rule}",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_raises_when_error_quickly(text: str) -> None:
    started = clock.perf_counter()
    with pytest.raises(WhenError) as info:
        parse_when(text)
    assert clock.perf_counter() - started < 0.05
    # The message must never echo attacker-controlled text back.
    assert str(info.value) in ERROR_MESSAGES.values()


@pytest.mark.parametrize("value", [None, b"daily@10:00", 42, ["daily@10:00"]])
def test_non_string_input_raises_when_error(value: object) -> None:
    with pytest.raises(WhenError):
        parse_when(value)  # type: ignore[arg-type]


def test_length_limit_applies_to_raw_input() -> None:
    padded = "daily@10:00".ljust(MAX_INPUT_LEN)
    assert parse_when(padded) == Rule("daily", time(10, 0))
    with pytest.raises(WhenError):
        parse_when(padded + " ")


def test_all_full_day_names_fit_the_length_limit() -> None:
    text = "weekly:monday,tuesday,wednesday,thursday,friday,saturday,sunday@18:30"
    assert parse_when(text).weekdays == (0, 1, 2, 3, 4, 5, 6)


def test_in_past_needs_now_and_zone() -> None:
    now = utc(2026, 6, 1, 12, 0)
    with pytest.raises(WhenError) as info:
        parse_when("2026-01-01T10:00", tz=BERLIN, now_utc=now)
    assert info.value.code == "in_past"
    # Exactly now is not in the future either.
    with pytest.raises(WhenError):
        parse_when("2026-06-01T14:00", tz=BERLIN, now_utc=now)
    assert parse_when("2026-06-01T14:01", tz=BERLIN, now_utc=now).kind == "once"
    # Without a clock the parser cannot know, and recurring rules are never past.
    assert parse_when("2026-01-01T10:00").kind == "once"
    assert parse_when("daily@10:00", tz=BERLIN, now_utc=now).kind == "daily"
    with pytest.raises(TypeError):
        parse_when("daily@10:00", tz=BERLIN)


def test_when_error_pickles_and_is_a_value_error() -> None:
    err = WhenError("bad_time")
    assert isinstance(err, ValueError)
    clone = pickle.loads(pickle.dumps(err))
    assert clone.code == "bad_time"
    assert str(clone) == str(err)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "hourly", "at": time(1, 0)},
        {"kind": "daily", "at": time(1, 0, 30)},
        {"kind": "daily", "at": time(1, 0, tzinfo=UTC)},
        {"kind": "daily", "at": time(1, 0), "day": 3},
        {"kind": "weekly", "at": time(1, 0)},
        {"kind": "weekly", "at": time(1, 0), "weekdays": (2, 1)},
        {"kind": "weekly", "at": time(1, 0), "weekdays": (1, 1)},
        {"kind": "weekly", "at": time(1, 0), "weekdays": (7,)},
        {"kind": "monthly", "at": time(1, 0), "day": 0},
        {"kind": "monthly", "at": time(1, 0)},
        {"kind": "yearly", "at": time(1, 0), "month": 2, "day": 30},
        {"kind": "once", "at": time(1, 0)},
        {"kind": "once", "at": time(1, 0), "on_date": datetime(2026, 1, 1)},
    ],
)
def test_rule_rejects_inconsistent_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(WhenError):
        Rule(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01T10:00",
        "daily@00:00",
        "weekly:mon,wed,fri@18:30",
        "monthly:last@19:00",
        "monthly:5@07:00",
        "yearly:10-30@12:00",
        "yearly:02-29@00:00",
    ],
)
def test_format_is_canonical(text: str) -> None:
    assert format_rule(parse_when(text)) == text


# --- DST: Europe/Berlin (2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 -> 02:00) ------


def test_berlin_daily_midnight_spring_forward_skips_no_day() -> None:
    # APScheduler's CronTrigger jumps 03-29 -> 03-31 here.
    assert run("daily@00:00", BERLIN, utc(2026, 3, 27, 12), utc(2026, 3, 31, 12)) == [
        utc(2026, 3, 27, 23),  # 03-28 00:00 CET
        utc(2026, 3, 28, 23),  # 03-29 00:00 CET
        utc(2026, 3, 29, 22),  # 03-30 00:00 CEST
        utc(2026, 3, 30, 22),  # 03-31 00:00 CEST
    ]


def test_berlin_daily_0230_spring_forward_moves_by_the_gap() -> None:
    got = run("daily@02:30", BERLIN, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    assert got == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 30),  # 02:30 does not exist -> 03:30 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    assert got[1].astimezone(BERLIN).time() == time(3, 30)


def test_berlin_daily_midnight_fall_back() -> None:
    assert run("daily@00:00", BERLIN, utc(2026, 10, 23, 12), utc(2026, 10, 27, 12)) == [
        utc(2026, 10, 23, 22),  # 10-24 00:00 CEST
        utc(2026, 10, 24, 22),  # 10-25 00:00 CEST
        utc(2026, 10, 25, 23),  # 10-26 00:00 CET
        utc(2026, 10, 26, 23),
    ]


def test_berlin_daily_0230_fall_back_fires_once_at_first_instant() -> None:
    # APScheduler fires twice here: 00:30Z and 01:30Z.
    assert run("daily@02:30", BERLIN, utc(2026, 10, 23, 12), utc(2026, 10, 26, 12)) == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # first 02:30 (CEST, fold=0)
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]


def test_berlin_next_occurrence_between_the_two_ambiguous_instants() -> None:
    rule = parse_when("daily@02:30")
    # 01:00Z is 02:00 CET, after the first 02:30 and before the repeated one.
    assert next_occurrence(rule, BERLIN, utc(2026, 10, 25, 1, 0)) == utc(2026, 10, 26, 1, 30)
    assert next_occurrence(rule, BERLIN, utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)
    assert next_occurrence(rule, BERLIN, utc(2026, 10, 25, 0, 29)) == utc(2026, 10, 25, 0, 30)


def test_berlin_weekly_across_both_transitions() -> None:
    spring = run("weekly:sun@02:30", BERLIN, utc(2026, 3, 20), utc(2026, 4, 6))
    assert spring == [
        utc(2026, 3, 22, 1, 30),
        utc(2026, 3, 29, 1, 30),  # 03:30 CEST
        utc(2026, 4, 5, 0, 30),
    ]
    fall = run("weekly:sun@02:30", BERLIN, utc(2026, 10, 17), utc(2026, 11, 2))
    assert fall == [utc(2026, 10, 18, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 11, 1, 1, 30)]
    multi = run("weekly:sat,sun,mon@18:00", BERLIN, utc(2026, 3, 27), utc(2026, 3, 31))
    assert multi == [utc(2026, 3, 28, 17), utc(2026, 3, 29, 16), utc(2026, 3, 30, 16)]


# --- DST: America/New_York (2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 -> 01:00) ----


def test_new_york_daily_midnight_both_transitions() -> None:
    assert run("daily@00:00", NEW_YORK, utc(2026, 3, 6, 12), utc(2026, 3, 9, 12)) == [
        utc(2026, 3, 7, 5),
        utc(2026, 3, 8, 5),
        utc(2026, 3, 9, 4),
    ]
    assert run("daily@00:00", NEW_YORK, utc(2026, 10, 30, 12), utc(2026, 11, 2, 12)) == [
        utc(2026, 10, 31, 4),
        utc(2026, 11, 1, 4),
        utc(2026, 11, 2, 5),
    ]


def test_new_york_daily_0230_spring_forward_gap() -> None:
    got = run("daily@02:30", NEW_YORK, utc(2026, 3, 6, 12), utc(2026, 3, 9, 12))
    assert got == [
        utc(2026, 3, 7, 7, 30),  # 02:30 EST
        utc(2026, 3, 8, 7, 30),  # 02:30 does not exist -> 03:30 EDT
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
    ]
    assert got[1].astimezone(NEW_YORK).time() == time(3, 30)


def test_new_york_daily_0130_spring_forward_is_ordinary() -> None:
    assert run("daily@01:30", NEW_YORK, utc(2026, 3, 7), utc(2026, 3, 9, 12)) == [
        utc(2026, 3, 7, 6, 30),
        utc(2026, 3, 8, 6, 30),  # 01:30 EST, before the gap
        utc(2026, 3, 9, 5, 30),
    ]


def test_new_york_daily_0130_fall_back_fires_once_at_first_instant() -> None:
    assert run("daily@01:30", NEW_YORK, utc(2026, 10, 30, 12), utc(2026, 11, 2, 12)) == [
        utc(2026, 10, 31, 5, 30),
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT; the repeated 01:30 EST (06:30Z) is not used
        utc(2026, 11, 2, 6, 30),
    ]


def test_new_york_daily_0230_fall_back_is_unambiguous() -> None:
    assert run("daily@02:30", NEW_YORK, utc(2026, 10, 30, 12), utc(2026, 11, 2, 12)) == [
        utc(2026, 10, 31, 6, 30),
        utc(2026, 11, 1, 7, 30),  # 02:30 EST exists only once
        utc(2026, 11, 2, 7, 30),
    ]


def test_new_york_weekly_across_fall_back() -> None:
    assert run("weekly:sunday@01:30", NEW_YORK, utc(2026, 10, 20), utc(2026, 11, 9)) == [
        utc(2026, 10, 25, 5, 30),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 8, 6, 30),
    ]


# --- other zones -----------------------------------------------------------------------------


def test_lord_howe_half_hour_dst() -> None:
    tz = ZoneInfo("Australia/Lord_Howe")
    # 2026-04-05 02:00 +11 -> 01:30 +10:30: 01:45 happens twice, the first one wins.
    assert run("daily@01:45", tz, utc(2026, 4, 3), utc(2026, 4, 6)) == [
        utc(2026, 4, 3, 14, 45),
        utc(2026, 4, 4, 14, 45),
        utc(2026, 4, 5, 15, 15),
    ]
    # 2026-10-04 02:00 +10:30 -> 02:30 +11: 02:15 moves forward by 30 minutes.
    got = run("daily@02:15", tz, utc(2026, 10, 2), utc(2026, 10, 5))
    assert got == [utc(2026, 10, 2, 15, 45), utc(2026, 10, 3, 15, 45), utc(2026, 10, 4, 15, 15)]
    assert got[1].astimezone(tz).time() == time(2, 45)


def test_santiago_midnight_transition_still_fires_that_day() -> None:
    tz = ZoneInfo("America/Santiago")
    # 2026-09-06 00:00 -04 -> 01:00 -03: midnight does not exist, 01:00 is used.
    got = run("daily@00:00", tz, utc(2026, 9, 4), utc(2026, 9, 7, 12))
    assert got == [utc(2026, 9, 4, 4), utc(2026, 9, 5, 4), utc(2026, 9, 6, 4), utc(2026, 9, 7, 3)]
    assert [x.astimezone(tz).day for x in got] == [4, 5, 6, 7]


def test_troll_two_hour_gap() -> None:
    tz = ZoneInfo("Antarctica/Troll")
    got = run("daily@01:30", tz, utc(2026, 3, 28), utc(2026, 3, 30, 12))
    assert got == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 23, 30)]
    assert got[1].astimezone(tz).time() == time(3, 30)


def test_apia_skipped_day_fires_once() -> None:
    tz = ZoneInfo("Pacific/Apia")
    # Samoa jumped from 2011-12-29 24:00 (-10) to 2011-12-31 00:00 (+14); 30 Dec never happened.
    got = run("daily@10:00", tz, utc(2011, 12, 28), utc(2012, 1, 2))
    assert got == [
        utc(2011, 12, 28, 20),
        utc(2011, 12, 29, 20),
        utc(2011, 12, 30, 20),
        utc(2011, 12, 31, 20),
        utc(2012, 1, 1, 20),
    ]
    assert [x.astimezone(tz).day for x in got] == [28, 29, 31, 1, 2]


def test_gap_ending_at_midnight_fires_just_after_midnight() -> None:
    tz = ZoneInfo("Asia/Pyongyang")
    # 2018-05-04 23:30 +08:30 -> 2018-05-05 00:00 +09:00. 23:45 on 05-04 never happened; it
    # fires 30 minutes later, at 00:15 on 05-05, and 05-05 still gets its own 23:45.
    got = run("daily@23:45", tz, utc(2018, 5, 3), utc(2018, 5, 6))
    assert got == [utc(2018, 5, 3, 15, 15), utc(2018, 5, 4, 15, 15), utc(2018, 5, 5, 14, 45)]
    assert got[1].astimezone(tz).replace(tzinfo=None) == datetime(2018, 5, 5, 0, 15)
    # Asked from 00:10 on 05-05, the shifted occurrence of 05-04 is still ahead.
    after = datetime(2018, 5, 5, 0, 10, tzinfo=tz)
    assert next_occurrence(parse_when("daily@23:45"), tz, after) == utc(2018, 5, 4, 15, 15)


# --- calendar rules --------------------------------------------------------------------------


def test_yearly_international_day_of_political_prisoners() -> None:
    got = run("yearly:10-30@12:00", BERLIN, utc(2026, 1, 1), utc(2028, 12, 31))
    assert got == [
        utc(2026, 10, 30, 11),  # after 2026-10-25: CET
        utc(2027, 10, 30, 10),  # before 2027-10-31: still CEST
        utc(2028, 10, 30, 11),
    ]
    minsk = ZoneInfo("Europe/Minsk")
    assert next_occurrence(parse_when("yearly:10-30@18:00"), minsk, utc(2026, 1, 1)) == utc(
        2026, 10, 30, 15
    )


def test_yearly_feb_29_fires_on_feb_28_in_common_years() -> None:
    got = run("yearly:02-29@12:00", ZoneInfo("UTC"), utc(2026, 1, 1), utc(2029, 12, 31))
    assert got == [
        utc(2026, 2, 28, 12),
        utc(2027, 2, 28, 12),
        utc(2028, 2, 29, 12),
        utc(2029, 2, 28, 12),
    ]


def test_monthly_31_clamps_to_last_day() -> None:
    got = run("monthly:31@19:00", BERLIN, utc(2026, 1, 1), utc(2026, 5, 1))
    assert got == [
        utc(2026, 1, 31, 18),
        utc(2026, 2, 28, 18),
        utc(2026, 3, 31, 17),  # CEST
        utc(2026, 4, 30, 17),
    ]
    leap = run("monthly:31@19:00", BERLIN, utc(2028, 2, 1), utc(2028, 3, 1))
    assert leap == [utc(2028, 2, 29, 18)]


def test_monthly_last() -> None:
    got = run("monthly:last@09:00", ZoneInfo("UTC"), utc(2027, 12, 31, 10), utc(2028, 4, 30, 9))
    assert got == [
        utc(2028, 1, 31, 9),
        utc(2028, 2, 29, 9),
        utc(2028, 3, 31, 9),
        utc(2028, 4, 30, 9),
    ]


def test_monthly_15_in_berlin_across_a_year() -> None:
    got = run("monthly:15@19:00", BERLIN, utc(2026, 1, 1), utc(2027, 1, 1))
    assert len(got) == 12
    assert all(x.astimezone(BERLIN).day == 15 for x in got)
    assert all(x.astimezone(BERLIN).time() == time(19, 0) for x in got)


# --- one-offs --------------------------------------------------------------------------------


def test_one_off_in_gap_and_in_overlap() -> None:
    gap = parse_when("2026-03-29T02:30")
    assert next_occurrence(gap, BERLIN, utc(2026, 1, 1)) == utc(2026, 3, 29, 1, 30)
    gap_ny = parse_when("2026-03-08 02:30")
    assert next_occurrence(gap_ny, NEW_YORK, utc(2026, 1, 1)) == utc(2026, 3, 8, 7, 30)
    overlap = parse_when("2026-10-25T02:30")
    assert next_occurrence(overlap, BERLIN, utc(2026, 1, 1)) == utc(2026, 10, 25, 0, 30)
    # Between the two 02:30s the one-off has already happened.
    assert next_occurrence(overlap, BERLIN, utc(2026, 10, 25, 1, 0)) is None


def test_one_off_past_is_none() -> None:
    rule = parse_when("2026-12-01T10:00")
    assert next_occurrence(rule, BERLIN, utc(2026, 12, 1, 8, 59)) == utc(2026, 12, 1, 9)
    assert next_occurrence(rule, BERLIN, utc(2026, 12, 1, 9)) is None
    assert next_occurrence(rule, BERLIN, utc(2027, 1, 1)) is None
    assert list(occurrences(rule, BERLIN, utc(2026, 1, 1), utc(2026, 12, 1, 8))) == []
    assert list(occurrences(rule, BERLIN, utc(2026, 1, 1), utc(2026, 12, 1, 9))) == [
        utc(2026, 12, 1, 9)
    ]


# --- API contract ----------------------------------------------------------------------------


def test_results_are_aware_utc_and_strictly_after() -> None:
    rule = parse_when("daily@10:00")
    after = datetime(2026, 6, 1, 12, 0, tzinfo=BERLIN)  # any aware datetime is accepted
    got = next_occurrence(rule, BERLIN, after)
    assert got == utc(2026, 6, 2, 8)
    assert got.tzinfo is UTC
    assert next_occurrence(rule, BERLIN, got) == utc(2026, 6, 3, 8)


def test_naive_datetimes_are_refused() -> None:
    rule = parse_when("daily@10:00")
    with pytest.raises(ValueError, match="aware"):
        next_occurrence(rule, BERLIN, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        occurrences(rule, BERLIN, utc(2026, 1, 1), datetime(2026, 2, 1))


def test_extreme_instants_do_not_raise() -> None:
    rule = parse_when("daily@00:00")
    for name in ("Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"):
        tz = ZoneInfo(name)
        first = next_occurrence(rule, tz, datetime.min.replace(tzinfo=UTC))
        assert first is not None and first.year in (1, 2)
        assert next_occurrence(rule, tz, datetime.max.replace(tzinfo=UTC)) is None
    late = parse_when("yearly:12-31@23:59")
    pago = ZoneInfo("Pacific/Pago_Pago")
    assert next_occurrence(late, pago, utc(9999, 1, 1)) == utc(9999, 1, 1, 10, 59)
    # 9999-12-31 23:59 -11 is past datetime.max in UTC: no representable occurrence is left.
    assert next_occurrence(late, pago, utc(9999, 1, 1, 10, 59)) is None


# --- properties ------------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tehran",
    "Europe/Minsk",
    "Asia/Yangon",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "America/Santiago",
    "Europe/Dublin",  # negative DST in tzdata
    "Africa/Casablanca",  # DST suspended for Ramadan
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "America/St_Johns",
    "Antarctica/Troll",  # two-hour DST
    "America/Havana",  # midnight transitions
    "Europe/Moscow",
    "Asia/Pyongyang",  # 2018-05-04 23:30 -> 00:00: a gap that ends at midnight
    "Europe/Sofia",  # 1979-1982: 23:00 -> 00:00
]

zones = st.sampled_from(ZONES).map(ZoneInfo)
# Bias towards the hours where transitions happen.
hours = st.one_of(st.sampled_from([0, 1, 2, 3, 23]), st.integers(0, 23))
minutes = st.one_of(st.sampled_from([0, 15, 30, 45]), st.integers(0, 59))
times = st.builds(time, hours, minutes)
year_days = st.dates(date(2000, 1, 1), date(2000, 12, 31))  # a leap year, so 02-29 appears

daily_rules = st.builds(lambda at: Rule("daily", at), times)
weekly_rules = st.builds(
    lambda at, wd: Rule("weekly", at, weekdays=tuple(sorted(wd))),
    times,
    st.sets(st.integers(0, 6), min_size=1),
)
monthly_rules = st.builds(
    lambda at, d: Rule("monthly", at, day=d),
    times,
    st.one_of(st.integers(1, 31), st.just(LAST_DAY)),
)
yearly_rules = st.builds(
    lambda at, d: Rule("yearly", at, month=d.month, day=d.day), times, year_days
)
once_rules = st.builds(
    lambda at, d: Rule("once", at, on_date=d), times, st.dates(date(1970, 1, 1), date(2999, 12, 31))
)
recurring_rules = st.one_of(daily_rules, weekly_rules, monthly_rules, yearly_rules)
all_rules = st.one_of(recurring_rules, once_rules)
starts = st.datetimes(datetime(1975, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC))


def oracle(tz: ZoneInfo, wall: datetime) -> datetime:
    """The intended instant for a naive local `wall`, found without relying on `fold`.

    An instant u shows `wall` iff u + offset(u) == wall. If several do (overlap), the earliest
    is meant; if none does (gap), the pre-transition offset is applied, i.e. the latest of the
    candidates wall - offset.
    """
    naive_utc = wall.replace(tzinfo=UTC)
    offsets = {(naive_utc + timedelta(hours=h)).astimezone(tz).utcoffset() for h in range(-30, 31)}
    candidates = [naive_utc - o for o in offsets if o is not None]
    shown = [u for u in candidates if u.astimezone(tz).utcoffset() == wall - u.replace(tzinfo=None)]
    return min(shown) if shown else max(candidates)


def exists(tz: ZoneInfo, wall: datetime) -> bool:
    instant = oracle(tz, wall)
    return instant.astimezone(tz).replace(tzinfo=None) == wall


def fires_on(rule: Rule, day: date) -> bool:
    if rule.kind == "daily":
        return True
    if rule.kind == "weekly":
        return day.weekday() in rule.weekdays
    next_month = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    month_len = (next_month - timedelta(days=1)).day
    if rule.kind == "monthly":
        return day.day == (month_len if rule.day == LAST_DAY else min(rule.day, month_len))
    assert rule.kind == "yearly"
    return day.month == rule.month and day.day == min(rule.day, month_len)


def window_for(rule: Rule) -> timedelta:
    return {
        "daily": timedelta(days=120),
        "weekly": timedelta(days=400),
        "monthly": timedelta(days=3 * 366),
        "yearly": timedelta(days=12 * 366),
    }[rule.kind]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=recurring_rules, tz=zones, start=starts)
def test_occurrences_match_independent_oracle(rule: Rule, tz: ZoneInfo, start: datetime) -> None:
    end = start + window_for(rule)
    got = list(occurrences(rule, tz, start, end))

    first_day = start.astimezone(tz).date() - timedelta(days=3)
    last_day = end.astimezone(tz).date() + timedelta(days=3)
    expected: set[datetime] = set()
    day = first_day
    while day <= last_day:
        if fires_on(rule, day):
            instant = oracle(tz, datetime.combine(day, rule.at))
            if start < instant <= end:
                expected.add(instant)
        day += timedelta(days=1)
    assert got == sorted(expected)
    assert all(x.tzinfo is UTC for x in got)


@settings(max_examples=150, deadline=None)
@given(rule=all_rules, tz=zones, start=starts)
def test_next_occurrence_is_strictly_increasing(rule: Rule, tz: ZoneInfo, start: datetime) -> None:
    walked: list[datetime] = []
    t = start
    for _ in range(40):
        nxt = next_occurrence(rule, tz, t)
        if nxt is None:
            break
        assert nxt > t
        walked.append(nxt)
        t = nxt
    if rule.kind != "once":
        assert len(walked) == 40
        assert walked == list(occurrences(rule, tz, start, walked[-1]))
    else:
        assert len(walked) <= 1


def intended_day(tz: ZoneInfo, at: time, instant: datetime) -> date:
    """The local date an occurrence stands for; differs from its own date only after a gap."""
    wall = instant.astimezone(tz)
    if wall.time() == at:
        return wall.date()
    # Off the rule's wall time only when that time did not exist, and then moved forward by
    # exactly the gap; a gap ending at midnight pushes it into the next day.
    for day in (wall.date(), wall.date() - timedelta(days=1)):
        intended = datetime.combine(day, at)
        if not exists(tz, intended) and oracle(tz, intended) == instant:
            return day
    raise AssertionError(f"{instant} shows {wall.time()} instead of {at}")


@settings(max_examples=40, deadline=None)
@given(at=times, tz=zones, year=st.integers(1970, 2040))
def test_daily_fires_once_per_local_day_for_a_year(at: time, tz: ZoneInfo, year: int) -> None:
    rule = Rule("daily", at)
    start = datetime(year, 1, 1, tzinfo=tz).astimezone(UTC)
    end = datetime(year + 1, 1, 1, tzinfo=tz).astimezone(UTC)
    got = list(occurrences(rule, tz, start, end))

    days = [intended_day(tz, at, x) for x in got]
    for (x, day), (y, following) in itertools.pairwise(zip(got, days, strict=True)):
        assert following > day, "exactly one occurrence per local calendar day"
        if (following - day).days > 1:
            # A day may be missing only if it never appeared on the wall clock.
            assert (following - day).days == 2
            missing = day + timedelta(days=1)
            probe = x
            while probe < y:
                assert probe.astimezone(tz).date() != missing
                probe += timedelta(minutes=15)
    expected_days = (datetime(year + 1, 1, 1) - datetime(year, 1, 1)).days
    assert len(got) >= expected_days - 1  # -1: Samoa's vanished 2011-12-30


@given(rule=all_rules)
def test_format_parse_round_trip(rule: Rule) -> None:
    text = format_rule(rule)
    assert len(text) <= MAX_INPUT_LEN
    assert parse_when(text) == rule
    assert parse_when(text.upper()) == rule


GRAMMAR_CHARS = "0123456789:@,- tTdailywekmonthyrsfuDWLY\u200b\u202e\x00\t\n\u0661"


@settings(max_examples=300)
@given(text=st.one_of(st.text(max_size=200), st.text(alphabet=GRAMMAR_CHARS, max_size=40)))
def test_parse_raises_only_when_error(text: str) -> None:
    try:
        rule = parse_when(text)
    except WhenError as err:
        assert err.code in ERROR_MESSAGES
    else:
        assert parse_when(format_rule(rule)) == rule


@settings(max_examples=300)
@given(
    parts=st.lists(
        st.sampled_from(
            [
                "daily",
                "weekly",
                "monthly",
                "yearly",
                ":",
                "@",
                ",",
                "-",
                " ",
                "mon",
                "sun",
                "last",
                "10",
                "30",
                "2",
                "29",
                "31",
                "25",
                "00",
                "2026",
                "t",
                "99",
            ]
        ),
        max_size=12,
    )
)
def test_parse_token_soup_raises_only_when_error(parts: list[str]) -> None:
    text = "".join(parts)
    try:
        rule = parse_when(text)
    except WhenError as err:
        assert err.code in ERROR_MESSAGES  # a sentence for the user, not an internal error
    else:
        assert parse_when(format_rule(rule)) == rule  # what was understood can be said back


# --- until: the last local calendar date of a series -----------------------------------------


def test_until_keeps_the_last_day_across_spring_forward() -> None:
    # The series ends on the day Berlin springs forward; 02:30 does not exist that day, and the
    # gap-shifted 03:30 is still that day's occurrence (the date decides, not the offset).
    got = list(
        occurrences(
            parse_when("daily@02:30"), BERLIN, utc(2026, 3, 26), utc(2026, 4, 5),
            until=date(2026, 3, 29),
        )
    )  # fmt: skip
    assert got == [utc(2026, 3, d, 1, 30) for d in (26, 27, 28, 29)]
    assert got[-1].astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 3, 29, 3, 30)


def test_until_across_fall_back_fires_once_on_the_last_day() -> None:
    got = list(
        occurrences(
            parse_when("weekly:sun@02:30"), BERLIN, utc(2026, 10, 1), utc(2026, 12, 1),
            until=date(2026, 10, 25),
        )
    )  # fmt: skip
    assert got == [
        utc(2026, 10, 4, 0, 30),
        utc(2026, 10, 11, 0, 30),
        utc(2026, 10, 18, 0, 30),
        utc(2026, 10, 25, 0, 30),  # the first of the two 02:30s
    ]
    assert (
        next_occurrence(parse_when("weekly:sun@02:30"), BERLIN, got[-1], until=date(2026, 10, 25))
        is None
    )


def test_until_gap_ending_at_midnight_keeps_the_shifted_occurrence() -> None:
    tz = ZoneInfo("Asia/Pyongyang")
    rule = parse_when("daily@23:45")
    # 05-04's 23:45 fires at 00:15 on 05-05, and belongs to 05-04: until=05-04 keeps it.
    got = list(occurrences(rule, tz, utc(2018, 5, 3), utc(2018, 5, 8), until=date(2018, 5, 4)))
    assert got == [utc(2018, 5, 3, 15, 15), utc(2018, 5, 4, 15, 15)]


def test_until_before_the_start_yields_nothing_and_one_offs_ignore_it() -> None:
    assert run("daily@10:00", BERLIN, utc(2026, 1, 1), utc(2026, 1, 9)) != []
    rule = parse_when("daily@10:00")
    assert (
        list(occurrences(rule, BERLIN, utc(2026, 5, 1), utc(2026, 6, 1), until=date(2026, 4, 1)))
        == []
    )
    once = parse_when("2026-12-01T10:00")
    assert next_occurrence(once, BERLIN, utc(2026, 1, 1), until=date(2026, 1, 2)) is not None
    with pytest.raises(ValueError):
        next_occurrence(rule, BERLIN, utc(2026, 1, 1), until=datetime(2026, 2, 1))  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=recurring_rules, tz=zones, start=starts, cut=st.integers(-5, 400))
def test_occurrences_with_until_match_independent_oracle(
    rule: Rule, tz: ZoneInfo, start: datetime, cut: int
) -> None:
    end = start + window_for(rule)
    until = start.astimezone(tz).date() + timedelta(days=cut)
    got = list(occurrences(rule, tz, start, end, until=until))

    first_day = start.astimezone(tz).date() - timedelta(days=3)
    expected: set[datetime] = set()
    day = first_day
    while day <= until:
        if fires_on(rule, day):
            instant = oracle(tz, datetime.combine(day, rule.at))
            if start < instant <= end:
                expected.add(instant)
        day += timedelta(days=1)
    assert got == sorted(expected)
    # The same walk, one next_occurrence at a time.
    walked: list[datetime] = []
    t = start
    while (nxt := next_occurrence(rule, tz, t, until=until)) is not None and nxt <= end:
        walked.append(nxt)
        t = nxt
    assert walked == got
