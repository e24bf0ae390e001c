"""jobctl.schedule: fire times, slots and gaps, DST-correct per scheduler flavour.

America/Toronto in 2026: spring forward Sun 2026-03-08 02:00 EST → 03:00 EDT (07:00Z);
fall back Sun 2026-11-01 02:00 EDT → 01:00 EST (06:00Z), so 01:00–01:59 happens twice.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from jobctl.errors import UsageError
from jobctl.schedule import (
    Schedule,
    missing_slots,
    parse_schedule,
    to_systemd_oncalendar,
)

TORONTO = ZoneInfo("America/Toronto")
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"


def z(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=TORONTO)


def fires_on(expr: str, flavour: str, day: date) -> list[datetime]:
    s = parse_schedule(expr, "America/Toronto", flavour)
    start = local(day.year, day.month, day.day)
    nxt = day + timedelta(days=1)
    return list(s.fire_times(start, local(nxt.year, nxt.month, nxt.day)))


SPRING = date(2026, 3, 8)
FALL = date(2026, 11, 1)


# -- DST, per flavour ----------------------------------------------------------------


class TestSystemdFlavour:
    def test_nonexistent_0230_is_skipped_on_spring_forward(self) -> None:
        s = parse_schedule("30 2 * * *", "America/Toronto")
        got = list(s.fire_times(local(2026, 3, 7), local(2026, 3, 10)))
        assert got == [z(2026, 3, 7, 7, 30), z(2026, 3, 9, 6, 30)]

    def test_repeated_0130_fires_once_first_occurrence(self) -> None:
        assert fires_on("30 1 * * *", "systemd", FALL) == [z(2026, 11, 1, 5, 30)]  # 01:30 EDT

    def test_hourly_skips_the_repeated_0130(self) -> None:
        got = fires_on("30 * * * *", "systemd", FALL)
        assert got[:4] == [
            z(2026, 11, 1, 4, 30),  # 00:30 EDT
            z(2026, 11, 1, 5, 30),  # 01:30 EDT
            z(2026, 11, 1, 7, 30),  # 02:30 EST; 01:30 EST (06:30Z) skipped
            z(2026, 11, 1, 8, 30),
        ]
        assert len(got) == 24  # 25-hour day, one repeat skipped

    def test_hourly_on_spring_forward_has_23_fires(self) -> None:
        got = fires_on("30 * * * *", "systemd", SPRING)
        assert len(got) == 23
        assert z(2026, 3, 8, 6, 30) in got and z(2026, 3, 8, 7, 30) in got  # 01:30 EST, 03:30 EDT

    def test_every_minute_skips_the_whole_repeated_hour(self) -> None:
        s = parse_schedule("* * * * *", "America/Toronto")
        got = s.next_fire_times(z(2026, 11, 1, 5, 58), 3)
        assert got == [z(2026, 11, 1, 5, 59), z(2026, 11, 1, 7, 0), z(2026, 11, 1, 7, 1)]


class TestCronFlavour:
    def test_nonexistent_0230_runs_at_0300(self) -> None:
        assert fires_on("30 2 * * *", "cron", SPRING) == [z(2026, 3, 8, 7, 0)]  # 03:00 EDT

    def test_repeated_0130_runs_once(self) -> None:
        assert fires_on("30 1 * * *", "cron", FALL) == [z(2026, 11, 1, 5, 30)]

    def test_hourly_runs_in_both_repeated_hours(self) -> None:
        # Debian cron runs jobs with '*' in the hour field "normally": both 01:30s.
        got = fires_on("30 * * * *", "cron", FALL)
        assert got[:4] == [
            z(2026, 11, 1, 4, 30),
            z(2026, 11, 1, 5, 30),
            z(2026, 11, 1, 6, 30),
            z(2026, 11, 1, 7, 30),
        ]
        assert len(got) == 25

    @pytest.mark.parametrize(
        "expr",
        [
            "30 2 * * *",
            "30 1 * * *",
            "30 * * * *",
            "*/20 1-3 * * *",
            "0 */2 * * *",
            "0 6 * * 1-5",
            "15 0 * * 0",
            "0 0 L * *",
        ],
    )
    def test_agrees_with_cronsim_over_all_of_2026(self, expr: str) -> None:
        start, end = local(2026, 1, 1), local(2027, 1, 1)
        expected = []
        for fire in CronSim(expr, start - timedelta(seconds=1)):
            if fire >= end:
                break
            expected.append(fire.astimezone(UTC))
        got = list(Schedule(expr, TORONTO, "cron").fire_times(start, end))
        assert got == expected


class TestK8sFlavour:
    def test_nonexistent_0230_is_skipped(self) -> None:
        assert fires_on("30 2 * * *", "k8s", SPRING) == []

    def test_repeated_0130_fires_at_both_occurrences(self) -> None:
        assert fires_on("30 1 * * *", "k8s", FALL) == [
            z(2026, 11, 1, 5, 30),  # 01:30 EDT
            z(2026, 11, 1, 6, 30),  # 01:30 EST
        ]

    def test_hourly_fires_in_both_repeated_hours(self) -> None:
        got = fires_on("30 * * * *", "k8s", FALL)
        assert z(2026, 11, 1, 6, 30) in got
        assert len(got) == 25


def test_weekday_0600_toronto_across_both_dst_changes() -> None:
    s = parse_schedule("0 6 * * 1-5", "America/Toronto")
    got = list(s.fire_times(z(2026, 3, 1), z(2026, 11, 8)))
    expected = []
    d = date(2026, 3, 1)
    while d < date(2026, 11, 8):
        if d.weekday() < 5:
            hour = 10 if SPRING <= d < FALL else 11  # 06:00 EDT = 10:00Z, EST = 11:00Z
            expected.append(z(d.year, d.month, d.day, hour))
        d += timedelta(days=1)
    assert got == expected
    assert all(f.weekday() < 5 for f in got)
    assert all(f.tzinfo is UTC for f in got)
    assert z(2026, 3, 6, 11) in got  # Fri before spring forward: EST
    assert z(2026, 3, 9, 10) in got  # Mon after: EDT
    assert z(2026, 10, 30, 10) in got  # Fri before fall back: EDT
    assert z(2026, 11, 2, 11) in got  # Mon after: EST
    assert not any(f.date() in (date(2026, 3, 7), date(2026, 3, 8)) for f in got)


def test_every_minute_for_a_year_is_complete_and_fast() -> None:
    counts = {}
    for flavour in ("systemd", "cron", "k8s"):
        s = parse_schedule("* * * * *", "America/Toronto", flavour)
        t0 = time.perf_counter()
        counts[flavour] = sum(1 for _ in s.fire_times(local(2026, 1, 1), local(2027, 1, 1)))
        assert time.perf_counter() - t0 < 2.0
    # 525600 minutes; the spring gap loses 60 wall minutes (all flavours: '*' jobs skip
    # it); the fall-back repeat gives 60 back to cron and k8s, never to systemd.
    assert counts == {"systemd": 525_540, "cron": 525_600, "k8s": 525_600}


@pytest.mark.parametrize("expr,count", [("0 * * * *", 8759), ("0 0 * * *", 365)])
def test_hourly_and_daily_for_a_year_are_fast(expr: str, count: int) -> None:
    s = Schedule(expr, TORONTO)
    best = 1.0
    for _ in range(3):
        t0 = time.perf_counter()
        n = sum(1 for _ in s.fire_times(local(2026, 1, 1), local(2027, 1, 1)))
        best = min(best, time.perf_counter() - t0)
    assert n == count
    assert best < 0.05


def test_fire_times_range_is_half_open_and_any_zone() -> None:
    s = Schedule("0 6 * * *", TORONTO)
    paris = ZoneInfo("Europe/Paris")
    got = list(s.fire_times(datetime(2026, 6, 1, 12, 1, tzinfo=paris), z(2026, 6, 3, 10)))
    assert got == [z(2026, 6, 2, 10)]  # 06-01 10:00Z is before start; 06-03 10:00Z == end
    got = list(s.fire_times(datetime(2026, 6, 1, 12, tzinfo=paris), z(2026, 6, 2, 10)))
    assert got == [z(2026, 6, 1, 10)]  # start (12:00 CEST == 10:00Z) is included
    assert list(s.fire_times(z(2026, 6, 3, 10), z(2026, 6, 3, 10))) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        list(s.fire_times(datetime(2026, 6, 1), z(2026, 6, 2)))


# -- systemd-analyze agrees ------------------------------------------------------------

_ELAPSE = re.compile(
    r"^\s*(?:Next elapse|Iter\. #\d+|\(in UTC\)):\s+\w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+)$"
)


def systemd_elapses(oncalendar: str, base: str, iterations: int) -> list[datetime]:
    """Parse ``systemd-analyze calendar``: each elapse line, replaced by its "(in UTC)" line."""
    proc = subprocess.run(
        [
            SYSTEMD_ANALYZE,
            "calendar",
            f"--base-time={base}",
            f"--iterations={iterations}",
            oncalendar,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
    )
    out: list[tuple[str, str]] = []
    for line in proc.stdout.splitlines():
        m = _ELAPSE.match(line)
        if not m:
            continue
        if line.strip().startswith("(in UTC)"):
            out[-1] = (m.group(1), m.group(2))
        else:
            out.append((m.group(1), m.group(2)))
    assert len(out) == iterations, proc.stdout
    assert {tzname for _, tzname in out} == {"UTC"}, proc.stdout
    return [datetime.fromisoformat(stamp).replace(tzinfo=UTC) for stamp, _ in out]


needs_systemd = pytest.mark.skipif(
    shutil.which(SYSTEMD_ANALYZE) is None, reason="systemd-analyze not installed"
)


@needs_systemd
@pytest.mark.parametrize(
    "expr,base,iterations",
    [
        ("30 2 * * *", "2026-03-06 12:00:00 UTC", 5),
        ("30 2 * * *", "2026-10-30 12:00:00 UTC", 5),
        ("30 1 * * *", "2026-03-06 12:00:00 UTC", 5),
        ("30 1 * * *", "2026-10-30 12:00:00 UTC", 5),
        ("30 * * * *", "2026-03-07 12:00:00 UTC", 48),
        ("30 * * * *", "2026-10-31 12:00:00 UTC", 48),
        ("0 6 * * 1-5", "2026-02-25 12:00:00 UTC", 200),
        ("*/15 1-3 * * *", "2026-03-07 12:00:00 UTC", 40),
        ("*/15 1-3 * * *", "2026-10-31 12:00:00 UTC", 40),
        ("0 */2 * * *", "2026-03-07 12:00:00 UTC", 30),
        ("* * * * *", "2026-11-01 05:00:00 UTC", 150),
        ("* * * * *", "2026-03-08 06:30:00 UTC", 90),
        ("@daily", "2026-10-30 12:00:00 UTC", 5),
        ("0 0 * * 5L", "2026-01-01 00:00:00 UTC", 12),
        ("0 12 * * 2#3", "2026-01-01 00:00:00 UTC", 12),
    ],
)
def test_systemd_flavour_matches_systemd_analyze(expr: str, base: str, iterations: int) -> None:
    oncalendar = to_systemd_oncalendar(expr, "America/Toronto")
    expected = systemd_elapses(oncalendar, base, iterations)
    s = parse_schedule(expr, "America/Toronto", "systemd")
    base_dt = datetime.fromisoformat(base.removesuffix(" UTC")).replace(tzinfo=UTC)
    assert s.next_fire_times(base_dt, iterations) == expected


@needs_systemd
@pytest.mark.parametrize(
    "expr,oncalendar",
    [
        ("0 6 * * 1-5", "Mon..Fri *-*-* 06:00:00 America/Toronto"),
        ("30 2 * * *", "*-*-* 02:30:00 America/Toronto"),
        ("30 * * * *", "*-*-* *:30:00 America/Toronto"),
        ("*/15 9-17 * * mon-fri", "Mon..Fri *-*-* 09..17:00/15:00 America/Toronto"),
        ("0 0 1,15 * *", "*-*-01,15 00:00:00 America/Toronto"),
        ("5,10 */3 1-10/2 jan,jul *", "*-01,07-01..09/2 00/3:05,10:00 America/Toronto"),
        ("0 0 * * 0,6", "Sat,Sun *-*-* 00:00:00 America/Toronto"),
        ("0 0 * * 7", "Sun *-*-* 00:00:00 America/Toronto"),
        ("0 0 L * *", "*-*~01 00:00:00 America/Toronto"),
        ("0 0 * * 5L", "Fri *-*~07/1 00:00:00 America/Toronto"),
        ("0 0 * * 5#2", "Fri *-*-08..14 00:00:00 America/Toronto"),
        ("@yearly", "*-01-01 00:00:00 America/Toronto"),
        ("@hourly", "*-*-* *:00:00 America/Toronto"),
        ("0 0 */2 * *", "*-*-01/2 00:00:00 America/Toronto"),
        ("0 8-10,14 * * 1,3,5", "Mon,Wed,Fri *-*-* 08..10,14:00:00 America/Toronto"),
    ],
)
def test_to_systemd_oncalendar_is_accepted_by_systemd(expr: str, oncalendar: str) -> None:
    got = to_systemd_oncalendar(expr, "America/Toronto")
    assert got == oncalendar
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "calendar", "--base-time=2026-01-01 00:00:00 UTC", got],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "Next elapse:" in proc.stdout


@pytest.mark.parametrize(
    "expr,why",
    [
        ("0 0 1 * 1", "both restricted"),
        ("0 0 LW * *", "LW"),
        ("0 0 L,15 * *", "'L' mixed"),
        ("0 0 * * 1#2,3", "alone"),
    ],
)
def test_to_systemd_oncalendar_rejects_what_oncalendar_cannot_say(expr: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as info:
        to_systemd_oncalendar(expr, "UTC")
    assert repr(expr) in str(info.value)


# -- slots -------------------------------------------------------------------------


class TestSlots:
    s = Schedule("0 6 * * *", TORONTO)

    def test_tick_three_minutes_late_serves_0600(self) -> None:
        assert self.s.slot_for(z(2026, 6, 2, 10, 3)) == z(2026, 6, 2, 10)

    def test_tick_exactly_at_the_fire_time_serves_it(self) -> None:
        assert self.s.slot_for(z(2026, 6, 2, 10)) == z(2026, 6, 2, 10)

    def test_tick_before_the_fire_time_serves_the_previous_slot(self) -> None:
        assert self.s.slot_for(z(2026, 6, 2, 9, 59)) == z(2026, 6, 1, 10)

    def test_tick_after_the_next_fire_time_serves_the_newer_one(self) -> None:
        assert self.s.slot_for(z(2026, 6, 3, 10, 0, 1)) == z(2026, 6, 3, 10)

    def test_late_tick_over_a_weekend_serves_friday(self) -> None:
        s = Schedule("0 6 * * 1-5", TORONTO)
        assert s.slot_for(z(2026, 6, 6, 15)) == z(2026, 6, 5, 10)  # Saturday

    def test_slot_on_a_dst_repeat_for_k8s(self) -> None:
        s = Schedule("30 1 * * *", TORONTO, "k8s")
        assert s.slot_for(z(2026, 11, 1, 6, 45)) == z(2026, 11, 1, 6, 30)
        assert s.slot_for(z(2026, 11, 1, 6, 15)) == z(2026, 11, 1, 5, 30)
        systemd = Schedule("30 1 * * *", TORONTO)
        assert systemd.slot_for(z(2026, 11, 1, 6, 45)) == z(2026, 11, 1, 5, 30)

    def test_no_slot_when_nothing_fired_in_the_lookback(self) -> None:
        s = Schedule("0 0 29 2 *", ZoneInfo("UTC"))
        assert s.slot_for(z(2026, 6, 1)) is None
        assert s.previous_fire_time(z(2026, 6, 1)) is None
        assert s.previous_fire_time(z(2025, 6, 1)) is None  # 458 days back: beyond ~400
        assert s.previous_fire_time(z(2025, 3, 1)) == z(2024, 2, 29)


def test_previous_fire_time() -> None:
    s = Schedule("0 6 * * 1-5", TORONTO)
    assert s.previous_fire_time(z(2026, 3, 9, 10)) == z(2026, 3, 9, 10)  # inclusive
    assert s.previous_fire_time(z(2026, 3, 9, 9, 59)) == z(2026, 3, 6, 11)  # Fri, EST
    assert s.previous_fire_time(datetime(2026, 3, 9, 5, tzinfo=TORONTO)) == z(2026, 3, 6, 11)
    monthly = Schedule("@monthly", TORONTO)
    assert monthly.previous_fire_time(z(2026, 7, 15)) == z(2026, 7, 1, 4)


def test_next_fire_times() -> None:
    s = Schedule("0 6 * * 1-5", TORONTO)
    assert s.next_fire_times(z(2026, 3, 6, 11)) == [  # strictly after
        z(2026, 3, 9, 10),
        z(2026, 3, 10, 10),
        z(2026, 3, 11, 10),
    ]
    assert s.next_fire_times(z(2026, 3, 6, 11), 0) == []
    assert Schedule("0 0 29 2 *", ZoneInfo("UTC")).next_fire_times(z(2026, 1, 1), 2) == [
        z(2028, 2, 29),
        z(2032, 2, 29),
    ]


# -- parsing, words, hints, gaps ---------------------------------------------------


@pytest.mark.parametrize(
    "macro,expr",
    [
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@ANNUALLY", "0 0 1 1 *"),
    ],
)
def test_macros_equal_their_expansion(macro: str, expr: str) -> None:
    a = list(Schedule(macro, TORONTO).fire_times(z(2026, 1, 1), z(2028, 1, 1)))
    b = list(Schedule(expr, TORONTO).fire_times(z(2026, 1, 1), z(2028, 1, 1)))
    assert a == b and a


@pytest.mark.parametrize(
    "expr,tz,flavour,message",
    [
        ("61 * * * *", "UTC", "systemd", "cron expression '61 * * * *' is invalid: bad minute"),
        ("* 24 * * *", "UTC", "systemd", "cron expression '* 24 * * *' is invalid: bad hour"),
        ("* * * *", "UTC", "systemd", "expected 5 fields"),
        ("0 * * * * *", "UTC", "systemd", "expected 5 fields"),
        ("0 0 31 2 *", "UTC", "systemd", "'0 0 31 2 *' is invalid"),
        ("@reboot", "UTC", "systemd", "'@reboot' is invalid: unknown macro"),
        ("", "UTC", "systemd", "is empty"),
        ("0 0 * * 8", "UTC", "systemd", "bad day-of-week"),
        ("* * * * *", "Mars/Base", "systemd", "time zone 'Mars/Base' is not a known IANA zone"),
        ("* * * * *", "../etc/passwd", "systemd", "not a known IANA zone"),
        ("* * * * *", "UTC", "anacron", "scheduler flavour 'anacron' is unknown"),
    ],
)
def test_invalid_values_raise_usage_error(expr: str, tz: str, flavour: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_schedule(expr, tz, flavour)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_schedule_constructor_validates_too() -> None:
    with pytest.raises(UsageError, match="bad minute"):
        Schedule("61 * * * *", TORONTO)
    with pytest.raises(UsageError, match="flavour"):
        Schedule("* * * * *", TORONTO, "anacron")  # type: ignore[arg-type]


def test_parse_schedule_returns_a_schedule() -> None:
    s = parse_schedule("  0 6 * * 1-5 ", "America/Toronto", "k8s")
    assert s == Schedule("0 6 * * 1-5", TORONTO, "k8s")
    assert s.tz.key == "America/Toronto"


def test_describe() -> None:
    assert (
        parse_schedule("0 6 * * 1-5", "America/Toronto").describe()
        == "At 06:00, Monday through Friday (America/Toronto)"
    )
    assert parse_schedule("* * * * *", "UTC").describe() == "Every minute (UTC)"
    assert parse_schedule("@daily", "Europe/Paris").describe() == "At 00:00 (Europe/Paris)"
    assert "either" in parse_schedule("0 0 1 * 1", "UTC").describe()


def test_missing_slots() -> None:
    s = Schedule("0 6 * * *", TORONTO)
    expected = list(s.fire_times(z(2026, 6, 1), z(2026, 6, 6)))
    covered = [
        z(2026, 6, 1, 10),
        datetime(2026, 6, 3, 6, tzinfo=TORONTO),  # same instant as 10:00Z
        z(2026, 6, 4, 10, 0, 1),  # not exact: does not cover 06-04
        z(2026, 5, 1, 10),  # outside: ignored
    ]
    assert missing_slots(expected, covered) == [
        z(2026, 6, 2, 10),
        z(2026, 6, 4, 10),
        z(2026, 6, 5, 10),
    ]
    assert missing_slots(expected, expected) == []
    assert missing_slots([], covered) == []
    assert all(m.tzinfo is UTC for m in missing_slots(expected, []))
