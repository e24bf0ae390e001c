"""``jobctl runs gaps``: expected fire times (DST days included) minus completed runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from jobctl.app import App
from jobctl.config import load_settings
from jobctl.errors import UsageError
from jobctl.jobs.snapshot import SnapshotArgs
from jobctl.runner import RunOptions
from tests.conftest import Cli

TORONTO = ZoneInfo("America/Toronto")
WEEKDAYS_0600 = '[jobs.writer]\nschedule = "0 6 * * 1-5"\ntimezone = "America/Toronto"\n'
NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
SINCE = timedelta(days=265)  # from 2026-02-18: both 2026 DST changes are inside


@pytest.fixture
def make_app(project: Path, db_url: str) -> Iterator[Callable[[str], App]]:
    apps: list[App] = []

    def make(extra_toml: str) -> App:
        path = project / "jobctl.toml"
        path.write_text(path.read_text() + "\n" + extra_toml)
        environ = {"DATABASE_URL": db_url, "HOME": str(project)}
        apps.append(App(load_settings(config_path=path, environ=environ)))
        return apps[-1]

    yield make
    for app in apps:
        app.close()


def weekday_fires(start: datetime, end: datetime) -> list[datetime]:
    """06:00 Toronto wall time on every weekday, as UTC instants in [start, end)."""
    out = []
    day = start.astimezone(TORONTO).date() - timedelta(days=1)
    while day <= end.astimezone(TORONTO).date():
        if day.weekday() < 5:
            fire = datetime.combine(day, time(6, 0), TORONTO).astimezone(UTC)
            if start <= fire < end:
                out.append(fire)
        day += timedelta(days=1)
    return out


def systemd_calendar(spec: str, base: datetime, iterations: int) -> list[datetime]:
    """The next ``iterations`` elapses after ``base`` as systemd computes them."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    proc = subprocess.run(
        [
            exe,
            "calendar",
            f"--base-time={base.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
            f"--iterations={iterations}",
            spec,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
        check=True,
    )
    found = re.findall(
        r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", proc.stdout
    )
    return [datetime.fromisoformat(f).replace(tzinfo=UTC) for f in found]


def test_weekday_gaps_across_both_dst_changes(make_app: Callable[[str], App]) -> None:
    app = make_app(WEEKDAYS_0600)
    gaps = app.gaps("writer", SINCE, now=NOW)
    got = [g.scheduled_for for g in gaps]
    assert got == weekday_fires(NOW - SINCE, NOW)
    assert all(g.served_date is None for g in gaps)  # a user job: slots only
    local = [g.astimezone(TORONTO) for g in got]
    assert all(t.weekday() < 5 and (t.hour, t.minute) == (6, 0) for t in local)
    dates = {t.date() for t in local}
    # No weekend, in particular not the two Sundays the clocks change on.
    assert not {date(2026, 3, 8), date(2026, 11, 1), date(2026, 3, 7), date(2026, 10, 31)} & dates
    # 06:00 is 11:00 UTC in winter (EST) and 10:00 UTC in summer (EDT).
    for instant in (
        datetime(2026, 3, 6, 11, 0, tzinfo=UTC),  # Friday before spring forward
        datetime(2026, 3, 9, 10, 0, tzinfo=UTC),  # Monday after
        datetime(2026, 10, 30, 10, 0, tzinfo=UTC),  # Friday before fall back
        datetime(2026, 11, 2, 11, 0, tzinfo=UTC),  # Monday after
    ):
        assert instant in got
    assert len(got) == 189  # 2026-02-18 (Wed) .. 2026-11-10 (Tue) 06:00

    # The same fire times as systemd computes for the equivalent OnCalendar=.
    expected = systemd_calendar(
        "Mon..Fri *-*-* 06:00:00 America/Toronto", NOW - SINCE, len(got) + 1
    )
    assert expected[: len(got)] == got
    assert expected[len(got)] >= NOW


def test_completed_runs_remove_their_slot(
    make_app: Callable[[str], App], psql: psycopg.Connection[Any]
) -> None:
    app = make_app(WEEKDAYS_0600)
    expected = weekday_fires(NOW - SINCE, NOW)
    done = [expected[0], datetime(2026, 3, 9, 10, 0, tzinfo=UTC), expected[-1]]
    for slot in done:
        outcome = app.run("writer", RunOptions(trigger="timer", now=slot + timedelta(seconds=9)))
        assert outcome.status == "completed" and outcome.scheduled_for == slot
    # Neither a failed tick nor a manual run covers a slot.
    failed = datetime(2026, 11, 2, 11, 0, tzinfo=UTC)
    bad = app.run(
        "writer",
        RunOptions(trigger="timer", now=failed + timedelta(minutes=1), params={"fail": "1"}),
    )
    assert bad.status == "failed" and bad.scheduled_for == failed
    assert app.run("writer", RunOptions(now=failed)).status == "completed"
    got = [g.scheduled_for for g in app.gaps("writer", SINCE, now=NOW)]
    assert got == [f for f in expected if f not in done]
    assert failed in got


SNAPSHOT = """
[jobs.snapshot]
schedule = "0 2 * * *"
timezone = "America/Toronto"

[snapshots.one]
table = "snap_one"
key = ["k"]
periods = ["day"]
query = "SELECT 'x' AS k, 1 AS n WHERE :period_start < :period_end"

[snapshots.needs_sync]
table = "snap_two"
key = ["k"]
requires_sync = true
query = "SELECT 'x' AS k, 1 AS n WHERE :period_start < :period_end"
"""


def test_a_completed_run_for_the_partition_covers_the_slot(
    make_app: Callable[[str], App], project: Path
) -> None:
    (project / "jobctl.toml").write_text('timezone = "America/Toronto"\n')
    app = make_app(SNAPSHOT)
    now = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
    gaps = app.gaps("snapshot", timedelta(days=5), now=now)
    # The 02:00 ticks of 11-06 .. 11-10 work on the day before each.
    assert [(g.scheduled_for.astimezone(TORONTO).day, g.served_date) for g in gaps] == [
        (day, date(2026, 11, day - 1)) for day in range(6, 11)
    ]
    # A failed run for a date does not cover its slot.
    failing = app.run_job(
        "snapshot",
        RunOptions(),
        SnapshotArgs(sets=["needs_sync"], on_date="2026-11-08", periods=[]),
    )
    assert failing.status == "failed" and failing.partition == "2026-11-08"
    done = app.run_job(
        "snapshot", RunOptions(), SnapshotArgs(sets=["one"], on_date="2026-11-07", periods=[])
    )
    assert done.status == "completed"
    left = [g.served_date for g in app.gaps("snapshot", timedelta(days=5), now=now)]
    assert left == [date(2026, 11, d) for d in (5, 6, 8, 9)]


def test_a_dry_run_covers_neither_its_slot_nor_its_date(
    make_app: Callable[[str], App], project: Path, psql: psycopg.Connection[Any]
) -> None:
    """SPEC: a --dry-run run is recorded completed, flagged dry, and never covers anything."""
    (project / "jobctl.toml").write_text('timezone = "America/Toronto"\njobs_module = "myjobs"\n')
    app = make_app(SNAPSHOT + "\n" + WEEKDAYS_0600)
    now = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
    before = [g.served_date for g in app.gaps("snapshot", timedelta(days=5), now=now)]
    assert date(2026, 11, 7) in before

    dry = app.run_job(
        "snapshot",
        RunOptions(dry_run=True),
        SnapshotArgs(sets=["one"], on_date="2026-11-07", periods=[]),
    )
    assert dry.status == "completed" and dry.partition == "2026-11-07"
    row = psql.execute(
        "SELECT status, dry_run FROM jobctl.runs WHERE id = %s", (dry.run_id,)
    ).fetchone()
    assert row == ("completed", True)
    assert [g.served_date for g in app.gaps("snapshot", timedelta(days=5), now=now)] == before

    # A dry tick neither fills its slot nor makes the same slot "already done".
    slot = datetime(2026, 11, 9, 11, 0, tzinfo=UTC)  # Monday 06:00 Toronto
    tick = app.run("writer", RunOptions(trigger="timer", now=slot, dry_run=True))
    assert tick.status == "completed" and tick.scheduled_for == slot
    assert slot in [g.scheduled_for for g in app.gaps("writer", timedelta(days=5), now=now)]
    overview = {j.name: j for j in app.jobs_overview(now)}
    assert overview["writer"].last_status == "completed"
    assert overview["writer"].last_success is None, "a dry run is not a success of the job"
    real = app.run("writer", RunOptions(trigger="timer", now=slot + timedelta(seconds=30)))
    assert real.status == "completed", real.message  # not 'skipped: slot already done'
    assert slot not in [g.scheduled_for for g in app.gaps("writer", timedelta(days=5), now=now)]
    assert {j.name: j for j in app.jobs_overview(now)}["writer"].last_success is not None
    again = app.run("writer", RunOptions(trigger="timer", now=slot + timedelta(seconds=50)))
    assert again.status == "skipped" and f"run {real.run_id} completed" in again.message


def test_cli_json_and_errors(cli: Cli, project: Path) -> None:
    path = project / "jobctl.toml"
    path.write_text(path.read_text() + "\n" + WEEKDAYS_0600)
    now = datetime.now(UTC)
    result = cli("runs", "gaps", "writer", "--since", "20d", "--json")
    assert result.code == 0, result.stderr
    gaps = json.loads(result.stdout)
    expected = weekday_fires(now - timedelta(days=20), now)
    assert [datetime.fromisoformat(g["scheduled_for"]) for g in gaps] == expected
    assert {g["job"] for g in gaps} == {"writer"}
    for g in gaps:
        local = datetime.fromisoformat(g["local_time"])
        assert local.utcoffset() == local.astimezone(TORONTO).utcoffset()
        assert (local.hour, local.minute) == (6, 0) and local.weekday() < 5
        assert g["date"] is None
    text = cli("runs", "gaps", "writer", "--since", "20d")
    assert text.code == 0 and len(text.stdout.strip().splitlines()) == len(expected)
    assert f"{len(expected)} slot(s) of writer" in text.stderr

    for args, needle in (
        (("runs", "gaps", "sleepy"), "job 'sleepy' has no schedule"),
        (("runs", "gaps", "nope"), "unknown job 'nope'"),
        (("runs", "gaps", "writer", "--since", "soon"), "'soon'"),
    ):
        bad = cli(*args)
        assert bad.code == 2, (args, bad.stdout, bad.stderr)
        assert needle in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_gaps_for_a_job_without_schedule_is_a_usage_error(make_app: Callable[[str], App]) -> None:
    app = make_app("")
    with pytest.raises(UsageError, match="has no schedule"):
        app.gaps("sleepy", timedelta(days=3), now=NOW)


def test_the_example_snapshot_schedule_serves_every_date(tmp_path: Path) -> None:
    from jobctl.jobs.snapshot import served_date
    from jobctl.schedule import parse_schedule
    from tests.fixtures.example import EXAMPLES

    settings = load_settings(config_path=EXAMPLES / "jobctl.toml", environ={"HOME": str(tmp_path)})
    cfg = settings.job("snapshot")
    assert cfg.schedule is not None
    schedule = parse_schedule(cfg.schedule, cfg.timezone, settings.scheduler)
    start = datetime(2026, 1, 2, tzinfo=UTC)
    # 02:00 UTC works on the Toronto day that ended 21-22 h before: 2027-01-02's slot
    # serves 2026-12-31
    served = {
        served_date(settings, f)
        for f in schedule.fire_times(start, datetime(2027, 1, 3, tzinfo=UTC))
    }
    year = {date(2026, 1, 1) + timedelta(days=n) for n in range(365)}
    assert sorted(year - served) == []
