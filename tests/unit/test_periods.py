"""Calendar periods: ISO weeks, configured week start, month ends, periods closing on a day."""

from __future__ import annotations

import calendar
from datetime import date, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobctl.durations import MAX_DATE, MIN_DATE, parse_date
from jobctl.errors import UsageError
from jobctl.periods import (
    PERIOD_TYPES,
    WEEKDAYS,
    Period,
    PeriodType,
    period_containing,
    periods_closing_on,
)

SUNDAY = WEEKDAYS.index("sunday")


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def test_day_is_half_open_one_day() -> None:
    p = period_containing("day", date(2026, 12, 31))
    assert p == Period("day", date(2026, 12, 31), date(2027, 1, 1))
    assert str(p) == "day 2026-12-31"


def test_iso_weeks_start_on_monday_for_every_day_of_three_years() -> None:
    for d in days(date(2026, 1, 1), date(2028, 12, 31)):
        year, week, _ = d.isocalendar()
        monday = date.fromisocalendar(year, week, 1)
        p = period_containing("week", d)
        assert p == Period("week", monday, monday + timedelta(days=7)), d
        assert p.start.weekday() == 0 and p.start <= d < p.end


def test_iso_week_across_new_year() -> None:
    # 2026-01-01 is a Thursday: ISO week 1 of 2026 starts on Monday 2025-12-29.
    p = period_containing("week", date(2026, 1, 1))
    assert (p.start, p.end) == (date(2025, 12, 29), date(2026, 1, 5))
    assert str(p) == "week 2025-12-29..2026-01-04"
    # 2027-01-03 is a Sunday: still in the week that began Monday 2026-12-28.
    assert period_containing("week", date(2027, 1, 3)).start == date(2026, 12, 28)


def test_week_start_sunday() -> None:
    # 2026-11-23 is a Monday: a Sunday week started the day before.
    p = period_containing("week", date(2026, 11, 23), SUNDAY)
    assert (p.start, p.end) == (date(2026, 11, 22), date(2026, 11, 29))
    # A Sunday starts its own week; a Saturday ends one.
    assert period_containing("week", date(2026, 11, 29), SUNDAY).start == date(2026, 11, 29)
    assert period_containing("week", date(2026, 11, 28), SUNDAY).start == date(2026, 11, 22)
    for d in days(date(2026, 1, 1), date(2026, 12, 31)):
        p = period_containing("week", d, SUNDAY)
        assert p.start.weekday() == 6 and p.start <= d < p.end
        assert p.end - p.start == timedelta(days=7)


def test_week_start_from_snapshot_config() -> None:
    from jobctl.config_models import parse_snapshot_set as _parse

    parsed = _parse(
        "s",
        {
            "table": "t",
            "key": ["k"],
            "week_start": "Sunday",
            "query": "SELECT 1 AS k WHERE :period_start < :period_end",
        },
        "jobctl.toml",
        "UTC",
    )
    assert parsed.week_start == SUNDAY
    assert parsed.periods == PERIOD_TYPES


@pytest.mark.parametrize(
    ("day", "start", "end"),
    [
        (date(2028, 2, 29), date(2028, 2, 1), date(2028, 3, 1)),  # leap year
        (date(2028, 2, 1), date(2028, 2, 1), date(2028, 3, 1)),
        (date(2027, 2, 28), date(2027, 2, 1), date(2027, 3, 1)),
        (date(2026, 12, 31), date(2026, 12, 1), date(2027, 1, 1)),
        (date(2026, 1, 31), date(2026, 1, 1), date(2026, 2, 1)),
        (date(2026, 4, 30), date(2026, 4, 1), date(2026, 5, 1)),
    ],
)
def test_month_bounds(day: date, start: date, end: date) -> None:
    assert period_containing("month", day) == Period("month", start, end)


def test_month_length_matches_calendar_for_ten_years() -> None:
    for year in range(2024, 2034):
        for month in range(1, 13):
            p = period_containing("month", date(year, month, 15))
            assert (p.end - p.start).days == calendar.monthrange(year, month)[1]
    assert (period_containing("month", date(2028, 2, 10)).end - date(2028, 2, 1)).days == 29


def test_periods_closing_on_a_plain_weekday_is_just_the_day() -> None:
    # Wednesday 2026-11-18: no week or month ends.
    assert periods_closing_on(date(2026, 11, 18), PERIOD_TYPES) == [
        Period("day", date(2026, 11, 18), date(2026, 11, 19))
    ]


def test_periods_closing_on_sunday_closes_the_iso_week() -> None:
    found = periods_closing_on(date(2026, 11, 22), PERIOD_TYPES)
    assert found == [
        Period("day", date(2026, 11, 22), date(2026, 11, 23)),
        Period("week", date(2026, 11, 16), date(2026, 11, 23)),
    ]
    # With Sunday-start weeks, Sunday opens a week and Saturday closes one.
    assert [p.type for p in periods_closing_on(date(2026, 11, 22), PERIOD_TYPES, SUNDAY)] == ["day"]
    sat = periods_closing_on(date(2026, 11, 21), PERIOD_TYPES, SUNDAY)
    assert sat[1] == Period("week", date(2026, 11, 15), date(2026, 11, 22))


def test_periods_closing_on_last_day_of_month() -> None:
    # Monday 2026-11-30 ends November only.
    assert periods_closing_on(date(2026, 11, 30), PERIOD_TYPES) == [
        Period("day", date(2026, 11, 30), date(2026, 12, 1)),
        Period("month", date(2026, 11, 1), date(2026, 12, 1)),
    ]
    # Tuesday 2028-02-29 ends February of a leap year; 2028-02-28 ends nothing.
    assert [p.type for p in periods_closing_on(date(2028, 2, 29), PERIOD_TYPES)] == [
        "day",
        "month",
    ]
    assert [p.type for p in periods_closing_on(date(2028, 2, 28), PERIOD_TYPES)] == ["day"]
    # Sunday 2026-05-31 ends the day, the ISO week and the month.
    assert [p.type for p in periods_closing_on(date(2026, 5, 31), PERIOD_TYPES)] == [
        "day",
        "week",
        "month",
    ]


def test_periods_closing_on_respects_the_kinds_asked() -> None:
    assert periods_closing_on(date(2026, 5, 31), ("day",)) == [
        Period("day", date(2026, 5, 31), date(2026, 6, 1))
    ]
    assert periods_closing_on(date(2026, 5, 31), ("week", "month")) == [
        Period("week", date(2026, 5, 25), date(2026, 6, 1)),
        Period("month", date(2026, 5, 1), date(2026, 6, 1)),
    ]
    assert periods_closing_on(date(2026, 5, 30), ("week", "month")) == []


def test_every_day_of_a_year_closes_exactly_the_right_periods() -> None:
    weeks = months = 0
    for d in days(date(2027, 1, 1), date(2027, 12, 31)):
        kinds = [p.type for p in periods_closing_on(d, PERIOD_TYPES)]
        assert kinds[0] == "day"
        assert ("week" in kinds) == (d.weekday() == 6)
        assert ("month" in kinds) == ((d + timedelta(days=1)).day == 1)
        for p in periods_closing_on(d, PERIOD_TYPES):
            assert p.end == d + timedelta(days=1) and p.start <= d
        weeks += "week" in kinds
        months += "month" in kinds
    assert (weeks, months) == (52, 12)


# --- property tests over every date that parse_date accepts ---------------------------

accepted_days = st.dates(min_value=MIN_DATE, max_value=MAX_DATE)


@settings(deadline=None, max_examples=500)
@given(accepted_days, st.sampled_from(PERIOD_TYPES), st.integers(min_value=0, max_value=6))
@example(MIN_DATE, "week", 6)
@example(MAX_DATE, "month", 0)
@example(MAX_DATE, "week", 0)
def test_every_accepted_date_lies_in_its_period(
    day: date, kind: PeriodType, week_start: int
) -> None:
    # parse_date's range keeps this arithmetic clear of date.min / date.max
    assert parse_date(day.isoformat()) == day
    p = period_containing(kind, day, week_start)
    assert p.start <= day < p.end
    length = (p.end - p.start).days
    assert length == {"day": 1, "week": 7}.get(kind, calendar.monthrange(day.year, day.month)[1])
    if kind == "week":
        assert p.start.weekday() == week_start
    for closing in periods_closing_on(day, PERIOD_TYPES, week_start):
        assert closing.end == day + timedelta(days=1) and closing.start <= day


@settings(deadline=None, max_examples=300)
@given(st.dates())
def test_a_date_outside_the_range_is_refused_not_overflowed(day: date) -> None:
    if MIN_DATE <= day <= MAX_DATE:
        assert parse_date(day.isoformat()) == day
    else:
        with pytest.raises(UsageError, match="out of range"):
            parse_date(day.isoformat())
