"""``--at`` values, repeats across DST changes and countdowns (jobctl.when: pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobctl.errors import UsageError
from jobctl.when import countdown, next_occurrence, occurrence_at, parse_when

TORONTO = "America/Toronto"
#: A Wednesday, 07:00 in Toronto (EST, UTC-5).
NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("in 1h", datetime(2027, 3, 10, 13, 0)),
        ("in 30m", datetime(2027, 3, 10, 12, 30)),
        ("in 90 min", datetime(2027, 3, 10, 13, 30)),
        ("in 1m", datetime(2027, 3, 10, 12, 1)),
        ("IN 2 Hours", datetime(2027, 3, 10, 14, 0)),
        ("today 17:00", datetime(2027, 3, 10, 22, 0)),
        ("tomorrow 09:00", datetime(2027, 3, 11, 14, 0)),
        ("tomorrow 9:05", datetime(2027, 3, 11, 14, 5)),
        ("wednesday 08:00", datetime(2027, 3, 10, 13, 0)),  # today, still ahead
        ("wednesday 06:00", datetime(2027, 3, 17, 10, 0)),  # today's has passed; after DST
        ("monday 08:00", datetime(2027, 3, 15, 12, 0)),  # EDT by then (UTC-4)
        ("2027-03-14T09:00Z", datetime(2027, 3, 14, 9, 0)),
        ("2027-03-14T09:00:30+02:00", datetime(2027, 3, 14, 7, 0, 30)),
        ("2027-03-14 09:00", datetime(2027, 3, 14, 13, 0)),  # local, EDT
        ("2027-03-13T09:00", datetime(2027, 3, 13, 14, 0)),  # local, EST
        # The hour that happens twice (clocks go back): the first, still summer time.
        ("2027-11-07 01:30", datetime(2027, 11, 7, 5, 30)),
    ],
)
def test_at_forms(text: str, utc: datetime) -> None:
    assert parse_when(text, TORONTO, NOW).at == utc.replace(tzinfo=UTC)


def test_the_wall_time_is_kept_for_repeats() -> None:
    assert parse_when("tomorrow 09:00", TORONTO, NOW).local == datetime(2027, 3, 11, 9, 0)
    assert parse_when("in 1h", TORONTO, NOW).local == datetime(2027, 3, 10, 8, 0)


def test_a_local_time_the_clocks_skip_is_refused_saying_so() -> None:
    with pytest.raises(UsageError) as caught:
        parse_when("2027-03-14 02:30", TORONTO, NOW)
    assert str(caught.value) == (
        "--at '2027-03-14 02:30': 2027-03-14 02:30 does not exist in America/Toronto (the "
        "clocks skip that hour; it would be 03:30): give another time or an offset"
    )
    # With an offset it is a plain moment.
    assert parse_when("2027-03-14T02:30-05:00", TORONTO, NOW).at == datetime(
        2027, 3, 14, 7, 30, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("in 59s", "less than a minute ahead"),
        ("2027-03-10T11:00Z", "in the past"),
        ("today 06:00", "in the past"),
        ("", "is not a date-time"),
        ("next week", "is not a date-time"),
        ("in 5 parsecs", "unknown unit"),
        ("tomorrow 24:00", "is not a time of day"),
        ("2027-02-29 10:00", "is not a valid date-time"),
        ("0999-01-01T00:00Z", "out of range"),
        ("2200-01-01T00:00Z", "more than 100 years ahead"),
        ("in\x00 1h", "is not a date-time"),
        ("in 1h\udcff", "is not a date-time"),
        ("9" * 10_000, "is not a date-time"),
    ],
)
def test_bad_at_values(text: str, said: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_when(text, TORONTO, NOW)
    assert said in str(caught.value)
    assert len(str(caught.value)) < 300


@given(st.text(st.characters(exclude_categories=()), max_size=40))
def test_any_text_is_a_moment_ahead_or_a_usage_error(text: str) -> None:
    try:
        when = parse_when(text, TORONTO, NOW)
    except UsageError:
        return
    assert timedelta(minutes=1) <= when.at - NOW <= timedelta(days=36500)


def test_a_daily_repeat_keeps_its_wall_time_across_the_spring_change() -> None:
    anchor = datetime(2027, 3, 12, 9, 0)  # Friday 09:00 EST
    utc = [occurrence_at(anchor, "day", n, TORONTO) for n in range(4)]
    assert [u.hour if u else None for u in utc] == [14, 14, 13, 13]
    zone = ZoneInfo(TORONTO)
    assert {u.astimezone(zone).strftime("%H:%M") for u in utc if u} == {"09:00"}


def test_a_repeat_in_the_skipped_hour_moves_forward_and_comes_back() -> None:
    anchor = datetime(2027, 3, 13, 2, 30)
    zone = ZoneInfo(TORONTO)
    local = [occurrence_at(anchor, "day", n, TORONTO) for n in range(3)]
    shown = [u.astimezone(zone).strftime("%m-%d %H:%M") for u in local if u]
    assert shown == ["03-13 02:30", "03-14 03:30", "03-15 02:30"]


def test_a_weekly_repeat_across_the_autumn_change() -> None:
    anchor = datetime(2027, 10, 31, 8, 0)  # Sunday, EDT
    first, second = (occurrence_at(anchor, "week", n, TORONTO) for n in (0, 1))
    assert first is not None and second is not None
    assert second - first == timedelta(days=7, hours=1)


def test_a_monthly_repeat_keeps_its_day_or_the_month_end() -> None:
    anchor = datetime(2027, 1, 31, 9, 0)
    days = [occurrence_at(anchor, "month", n, "UTC") for n in range(4)]
    assert [d.date().isoformat() for d in days if d] == [
        "2027-01-31",
        "2027-02-28",
        "2027-03-31",
        "2027-04-30",
    ]


def test_next_occurrence_passes_over_missed_ones_and_stops_at_until() -> None:
    anchor = datetime(2027, 3, 1, 9, 0)
    after = datetime(2027, 3, 20, 10, 0, tzinfo=UTC)
    found = next_occurrence(anchor, "day", 0, TORONTO, not_before=after, until=None)
    assert found == (19, datetime(2027, 3, 20, 13, 0, tzinfo=UTC))  # 09:00 EDT
    stop = datetime(2027, 3, 20, 12, 0, tzinfo=UTC)
    assert next_occurrence(anchor, "day", 0, TORONTO, not_before=after, until=stop) is None
    years = next_occurrence(
        anchor, "day", 0, "UTC", not_before=datetime(2090, 1, 1, tzinfo=UTC), until=None
    )
    assert years is not None and years[1] == datetime(2090, 1, 1, 9, 0, tzinfo=UTC)
    assert (
        next_occurrence(
            datetime(9998, 12, 1),
            "month",
            0,
            "UTC",
            not_before=datetime(9998, 12, 2, tzinfo=UTC),
            until=None,
        )
        is None
    )


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (45, "45s"),
        (59.9, "59s"),
        (60, "1 min"),
        (900, "15 min"),
        (3599, "59 min"),
        (3600, "1h"),
        (9000, "2h 30min"),
        (86399, "23h 59min"),
        (86400, "1d"),
        (3 * 86400 + 5 * 3600 + 59, "3d 5h"),
        (400 * 86400, "400d"),
        (-120, "overdue 2 min"),
    ],
)
def test_countdown(seconds: float, shown: str) -> None:
    assert countdown(timedelta(seconds=seconds)) == shown
