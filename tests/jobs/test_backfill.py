"""``jobctl backfill`` over the shipped example: children, skips, --missing, guard rails,
failures, signals and the job's own lock (real PostgreSQL, real ``jobctl`` executable)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.rows import dict_row

from jobctl.app import App
from jobctl.config import Settings, load_settings
from jobctl.errors import UsageError
from jobctl.jobs import backfill
from jobctl.jobs.backfill import BackfillArgs
from jobctl.runner import RunOptions
from tests.conftest import Cli
from tests.fixtures.example import append_config, drop_table, example_project, set_key
from tests.jobs import wait_until

ZONE = ZoneInfo("America/Toronto")  # the example's time zone


def today() -> date:
    return datetime.now(ZONE).date()


@pytest.fixture
def example(project: Path) -> Path:
    """The example project with data generated for today: every past date has data."""
    return example_project(project, today())


SLOW_SET = """
timezone = "America/Toronto"

[snapshots.slow]
table = "snap_slow"
key = ["k"]
periods = ["day"]
query = "SELECT 'x' AS k, count(*) AS n FROM pg_sleep({seconds}) WHERE :period_start < :period_end"
"""


@pytest.fixture
def slow(project: Path) -> Path:
    """A project whose only snapshot set takes ~1.2 s per date."""
    (project / "jobctl.toml").write_text(SLOW_SET.format(seconds=1.2))
    return project


def all_runs(psql: psycopg.Connection[Any], job: str | None = None) -> list[dict[str, Any]]:
    cur = psql.cursor(row_factory=dict_row)
    if job is None:
        return cur.execute("SELECT * FROM jobctl.runs ORDER BY id").fetchall()
    return cur.execute("SELECT * FROM jobctl.runs WHERE job = %s ORDER BY id", (job,)).fetchall()


def children_of(cli: Cli, parent: int) -> list[dict[str, Any]]:
    shown = cli("runs", "show", str(parent), "--json")
    assert shown.code == 0, shown.stderr
    run = json.loads(shown.stdout)
    assert run["id"] == parent and run["job"] == "backfill"
    return sorted(run["children"], key=lambda c: c["id"])


def last_parent(psql: psycopg.Connection[Any]) -> dict[str, Any]:
    parents = all_runs(psql, "backfill")
    assert parents, "no backfill run"
    return parents[-1]


def gap_dates(cli: Cli) -> list[str]:
    result = cli("runs", "gaps", "snapshot", "--since", "70d", "--json")
    assert result.code == 0, result.stderr
    gaps = json.loads(result.stdout)
    assert all(g["job"] == "snapshot" for g in gaps)
    return [g["date"] for g in gaps]


def wait_for(predicate: Any, timeout: float = 20, what: str = "condition") -> Any:
    return wait_until(predicate, timeout, what)


def running_child(psql: psycopg.Connection[Any], job: str = "snapshot") -> dict[str, Any] | None:
    rows = [
        r for r in all_runs(psql, job) if r["status"] == "running" and r["parent_id"] is not None
    ]
    return rows[0] if rows else None


def test_sixty_days_then_again_then_missing(
    cli: Cli, example: Path, psql: psycopg.Connection[Any]
) -> None:
    d = today()
    first, last = d - timedelta(days=60), d - timedelta(days=1)
    dates = [(first + timedelta(days=n)).isoformat() for n in range(60)]
    assert cli("sync", "--source", "permits").code == 0
    assert cli("sync", "--source", "pageviews", "--date", last.isoformat()).code == 0
    args = ("backfill", "--from", first.isoformat(), "--to", last.isoformat(), "--job", "snapshot")

    started = time.monotonic()
    result = cli(*args, timeout=120)
    took = time.monotonic() - started
    assert result.code == 0, (result.stdout, result.stderr)
    print(f"backfill of 60 snapshot children took {took:.1f}s")
    assert took < 45, f"60 children took {took:.1f}s"
    parent = last_parent(psql)
    assert parent["status"] == "completed" and parent["partition"] == f"{first}..{last}"
    kids = children_of(cli, parent["id"])
    assert len(kids) == 60
    assert [c["partition"] for c in kids] == dates  # oldest first
    assert {c["status"] for c in kids} == {"completed"}
    assert {c["trigger"] for c in kids} == {"backfill"}
    assert {c["job"] for c in kids} == {"snapshot"}
    assert {c["parent_id"] for c in kids} == {parent["id"]}
    assert all(c["records_total"] > 0 for c in kids)
    assert dates[0] in result.stdout and dates[-1] in result.stdout  # the summary table
    # Each child computed its day (and the weeks / months that closed on it).
    per_day = psql.execute(
        "SELECT count(DISTINCT period_start) FROM snap_permits_by_ward WHERE period_type = 'day'"
    ).fetchone()
    assert per_day == (60,)

    # Again: every date already has a completed run.
    again = cli(*args, timeout=120)
    assert again.code == 0, again.stderr
    parent2 = last_parent(psql)
    assert parent2["id"] != parent["id"] and parent2["status"] == "completed"
    kids2 = [r for r in all_runs(psql, "snapshot") if r["parent_id"] == parent2["id"]]
    assert len(kids2) == 60 and {c["status"] for c in kids2} == {"skipped"}
    assert all("already done" in c["error_message"] for c in kids2)
    assert [c["partition"] for c in kids2] == dates

    # Three dates lose their completion: exactly those become gaps, and --missing fills them.
    before = gap_dates(cli)
    assert not set(before) & set(dates)  # the range is complete
    lost = [kids[5], kids[29], kids[58]]
    psql.execute(
        "UPDATE jobctl.runs SET status = 'failed' WHERE id = ANY(%s)", ([c["id"] for c in lost],)
    )
    lost_dates = [c["partition"] for c in lost]
    with_holes = gap_dates(cli)
    assert [x for x in with_holes if x in dates] == lost_dates
    assert [x for x in with_holes if x not in dates] == before

    filled = cli(*args, "--missing", timeout=120)
    assert filled.code == 0, (filled.stdout, filled.stderr)
    parent3 = last_parent(psql)
    assert parent3["params"]["missing"] == "true"
    kids3 = [r for r in all_runs(psql, "snapshot") if r["parent_id"] == parent3["id"]]
    assert [c["partition"] for c in kids3] == lost_dates
    assert {c["status"] for c in kids3} == {"completed"}
    # Each fills the schedule slot that works on its date (02:00 UTC two days after: the
    # last Toronto day that has ended then).
    for c in kids3:
        slot = c["scheduled_for"].astimezone(UTC)
        assert (slot.date() - timedelta(days=2)).isoformat() == c["partition"]
        assert (slot.hour, slot.minute) == (2, 0)
    assert gap_dates(cli) == before


def test_sync_backfill_reads_the_date_dependent_source(
    cli: Cli, example: Path, psql: psycopg.Connection[Any]
) -> None:
    d = today()
    first, last = d - timedelta(days=7), d - timedelta(days=1)
    result = cli("backfill", "--from", str(first), "--to", str(last), "--job", "sync")
    assert result.code == 0, (result.stdout, result.stderr)
    per_date = psql.execute(
        "SELECT partition_date, count(*) FROM pageviews GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert per_date == [(first + timedelta(days=n), 10) for n in range(7)]
    # The full-snapshot feed is not re-read per date (it only has today's version).
    assert psql.execute("SELECT to_regclass('permits')").fetchone() == (None,)
    kids = [r for r in all_runs(psql, "sync") if r["parent_id"] == last_parent(psql)["id"]]
    assert [r["partition"] for r in kids] == [str(first + timedelta(days=n)) for n in range(7)]
    assert {r["status"] for r in kids} == {"completed"}
    assert all(r["source"].endswith(f"data/daily/{r['partition']}.ndjson") for r in kids)


def test_missing_sync_rereads_what_each_missed_tick_would_have_read(
    cli: Cli, example: Path, psql: psycopg.Connection[Any]
) -> None:
    """The example's sync tick (weekdays 06:00) reads the page views of the day before."""
    d = today()
    first, last = d - timedelta(days=6), d - timedelta(days=1)
    now = datetime.now(ZONE)
    slots = [
        datetime.combine(day, datetime.min.time(), ZONE).replace(hour=6)
        for day in (first + timedelta(days=n) for n in range(1, 7))
        if day.weekday() < 5
    ]
    slots = [s for s in slots if s < now]

    def sync_gaps() -> list[datetime]:
        result = cli("runs", "gaps", "sync", "--since", "10d", "--json")
        assert result.code == 0, result.stderr
        return [datetime.fromisoformat(g["scheduled_for"]) for g in json.loads(result.stdout)]

    assert set(slots) <= set(sync_gaps())
    result = cli("backfill", "--from", str(first), "--to", str(last), "--job", "sync", "--missing")
    assert result.code == 0, (result.stdout, result.stderr)
    kids = [r for r in all_runs(psql, "sync") if r["parent_id"] == last_parent(psql)["id"]]
    assert [r["scheduled_for"] for r in kids] == slots
    assert [r["partition"] for r in kids] == [str(s.date() - timedelta(days=1)) for s in slots]
    assert {r["status"] for r in kids} == {"completed"}
    dates = psql.execute("SELECT DISTINCT partition_date FROM pageviews ORDER BY 1").fetchall()
    assert [x for (x,) in dates] == [s.date() - timedelta(days=1) for s in slots]
    assert not set(slots) & set(sync_gaps())


def test_sync_backfill_of_a_full_snapshot_feed_is_refused(
    cli: Cli, example: Path, psql: psycopg.Connection[Any]
) -> None:
    drop_table(example, "sources.pageviews")
    drop_table(example, "snapshots.pageviews_daily")
    d = today()
    result = cli(
        "backfill",
        "--from",
        str(d - timedelta(days=7)),
        "--to",
        str(d - timedelta(days=1)),
        "--job",
        "sync",
    )
    assert result.code == 2, (result.stdout, result.stderr)
    assert "depends on the date" in result.stderr
    assert "permits" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert all_runs(psql) == []
    assert psql.execute("SELECT to_regclass('permits')").fetchone() == (None,)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("reversed", "is after --to"),
        ("future", "is in the future"),
        ("in_progress", "has not ended in America/Toronto"),
        ("too_long", "over the maximum of 10"),
        ("unknown_job", "--job 'cleanup'"),
        ("bad_date", "2026-13-01"),
        ("missing_without_schedule", "--missing needs a schedule for job 'snapshot'"),
    ],
)
def test_guard_rails_exit_2_one_line_no_run(
    cli: Cli, example: Path, psql: psycopg.Connection[Any], case: str, needle: str
) -> None:
    append_config(example, "[backfill]\nmax_days = 10\n")
    d = today()
    ago = {n: str(d - timedelta(days=n)) for n in (1, 3, 5, 11)}
    args = {
        "reversed": ["--from", ago[3], "--to", ago[5]],
        "future": ["--from", ago[3], "--to", str(d + timedelta(days=1))],
        "in_progress": ["--from", ago[3], "--to", str(d)],  # today in the example's zone
        "too_long": ["--from", ago[11], "--to", ago[1], "--job", "snapshot"],
        "unknown_job": ["--from", ago[3], "--to", ago[1], "--job", "cleanup"],
        "bad_date": ["--from", "2026-13-01", "--to", ago[1]],
        "missing_without_schedule": ["--from", ago[3], "--to", ago[1], "--missing"],
    }[case]
    if case == "missing_without_schedule":
        drop_table(example, "jobs.snapshot")
    result = cli("backfill", *args)
    assert result.code == 2, (result.stdout, result.stderr)
    assert needle in result.stderr
    if case == "in_progress":
        assert f"--to {d} has not ended" in result.stderr
        assert f"it ends at {d + timedelta(days=1)} 00:00" in result.stderr
        assert "--force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert all_runs(psql) == []


def failing_day_project(example: Path) -> date:
    """Page views need a completed sync first; one date's export is missing."""
    set_key(example, "snapshots.pageviews_daily", "requires_sync = true")
    bad = today() - timedelta(days=3)
    (example / "data" / "daily" / f"{bad}.ndjson").unlink()
    return bad


def test_stops_at_the_first_failure(cli: Cli, example: Path, psql: psycopg.Connection[Any]) -> None:
    bad = failing_day_project(example)
    d = today()
    assert cli("sync", "--source", "permits").code == 0
    first, last = d - timedelta(days=5), d - timedelta(days=1)
    result = cli(
        "backfill", "--from", str(first), "--to", str(last), "--job", "sync", "--job", "snapshot"
    )
    assert result.code == 1, (result.stdout, result.stderr)
    kids = children_of(cli, last_parent(psql)["id"])
    assert [(c["job"], c["partition"], c["status"]) for c in kids] == [
        ("sync", str(first), "completed"),
        ("snapshot", str(first), "completed"),
        ("sync", str(first + timedelta(days=1)), "completed"),
        ("snapshot", str(first + timedelta(days=1)), "completed"),
        ("sync", str(bad), "failed"),
    ]
    assert last_parent(psql)["status"] == "failed"
    assert "1 of 10 child run(s) failed" in last_parent(psql)["error_message"]
    # The summary table names every attempted date and the failure.
    lines = [x for x in result.stdout.splitlines() if str(bad) in x]
    assert lines and "failed" in lines[0]
    assert str(d - timedelta(days=2)) not in result.stdout


def test_continue_on_error_attempts_every_date(
    cli: Cli, example: Path, psql: psycopg.Connection[Any]
) -> None:
    bad = failing_day_project(example)
    d = today()
    assert cli("sync", "--source", "permits").code == 0
    first, last = d - timedelta(days=5), d - timedelta(days=1)
    result = cli(
        "backfill",
        "--from",
        str(first),
        "--to",
        str(last),
        "--job",
        "sync",
        "--job",
        "snapshot",
        "--continue-on-error",
    )
    assert result.code == 1, (result.stdout, result.stderr)
    parent = last_parent(psql)
    kids = children_of(cli, parent["id"])
    got = [(c["job"], c["partition"], c["status"]) for c in kids]
    expected = []
    for n in range(5):
        day = str(first + timedelta(days=n))
        status = "failed" if day == str(bad) else "completed"
        expected += [("sync", day, status), ("snapshot", day, status)]
    assert got == expected
    failed_snapshot = next(c for c in kids if c["job"] == "snapshot" and c["status"] == "failed")
    assert "needs a completed sync" in failed_snapshot["error_message"]
    assert parent["status"] == "failed" and "2 of 10 child run(s) failed" in parent["error_message"]
    assert sum("failed" in x for x in result.stdout.splitlines()) == 2


def test_sigterm_cancels_the_child_and_the_parent(
    cli: Cli, slow: Path, psql: psycopg.Connection[Any]
) -> None:
    d = today()
    proc = cli.popen(
        "backfill", "--from", str(d - timedelta(days=5)), "--to", str(d - timedelta(days=1))
    )
    try:
        child = wait_for(lambda: running_child(psql), what="a running child")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, (out, err)
    parent = last_parent(psql)
    assert parent["status"] == "cancelled"
    kids = [r for r in all_runs(psql, "snapshot") if r["parent_id"] == parent["id"]]
    assert kids[-1]["id"] == child["id"] and kids[-1]["status"] == "cancelled"
    assert len(kids) < 5  # no further children
    assert not [r for r in all_runs(psql) if r["status"] == "running"]
    # The lock was released.
    assert cli("snapshot", "--date", str(d - timedelta(days=1))).code == 0


def test_a_child_holds_the_jobs_own_lock(
    cli: Cli, slow: Path, psql: psycopg.Connection[Any]
) -> None:
    (slow / "jobctl.toml").write_text(SLOW_SET.format(seconds=3))  # time for a second process
    day = str(today() - timedelta(days=1))
    proc = cli.popen("backfill", "--from", day, "--to", day)
    try:
        child = wait_for(lambda: running_child(psql), what="a running child")
        # Another date of the same job: the lock is the job's, not a per-date one.
        other = cli("snapshot", "--date", str(today() - timedelta(days=10)))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert other.code == 75, other.stderr
    assert f"run {child['id']}" in other.stderr and "already running" in other.stderr
    assert proc.returncode == 0, (out, err)
    snapshots = all_runs(psql, "snapshot")
    assert [(r["id"], r["status"]) for r in snapshots if r["parent_id"]] == [
        (child["id"], "completed")
    ]
    assert [r["status"] for r in snapshots if not r["parent_id"]] == ["skipped"]


def test_backfill_waits_for_the_jobs_lock(
    cli: Cli, slow: Path, db_url: str, psql: psycopg.Connection[Any]
) -> None:
    from jobctl.db.engine import Database
    from jobctl.db.locks import JobLock

    d = today()
    db = Database(db_url)
    holder = JobLock(db, "snapshot")
    assert holder.try_acquire()
    proc = cli.popen(
        "backfill", "--from", str(d - timedelta(days=1)), "--to", str(d - timedelta(days=1))
    )
    try:
        wait_for(
            lambda: [r for r in all_runs(psql, "backfill") if r["status"] == "running"],
            what="the backfill parent",
        )
        time.sleep(1.0)
        assert all_runs(psql, "snapshot") == []  # still waiting: no child run yet
        released = datetime.now().astimezone()
        holder.release()
        out, err = proc.communicate(timeout=30)
    finally:
        holder.release()
        db.dispose()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (out, err)
    kids = all_runs(psql, "snapshot")
    assert len(kids) == 1 and kids[0]["status"] == "completed"
    assert kids[0]["parent_id"] == last_parent(psql)["id"]
    assert kids[0]["started_at"] >= released


def test_missing_fills_gaps_of_a_job_with_misfire_grace(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    (project / "jobctl.toml").write_text(
        'timezone = "America/Toronto"\n\n[jobs.snapshot]\nschedule = "0 2 * * *"\n'
        'catchup = "none"\nmisfire_grace = "1h"\n\n[snapshots.one]\ntable = "snap_one"\n'
        'key = ["k"]\nperiods = ["day"]\n'
        "query = \"SELECT 'x' AS k, 1 AS n WHERE :period_start < :period_end\"\n"
    )
    d = today()
    result = cli(
        "backfill",
        "--from",
        str(d - timedelta(days=3)),
        "--to",
        str(d - timedelta(days=2)),
        "--job",
        "snapshot",
        "--missing",
    )
    assert result.code == 0, result.stderr
    kids = [r for r in all_runs(psql, "snapshot") if r["parent_id"] == last_parent(psql)["id"]]
    assert [(r["partition"], r["status"]) for r in kids] == [
        (str(d - timedelta(days=3)), "completed"),
        (str(d - timedelta(days=2)), "completed"),
    ], [r["error_message"] for r in kids]


def test_dry_runs_do_not_count_as_done(
    cli: Cli, example: Path, psql: psycopg.Connection[Any]
) -> None:
    """SPEC: a --dry-run run is completed, flagged dry, and covers no date: backfill
    and gaps ignore it."""
    day = str(today() - timedelta(days=2))
    assert cli("sync", "--source", "permits").code == 0
    # Another date for real, so the page views table exists for the dry snapshot.
    other = cli("sync", "--source", "pageviews", "--date", str(today() - timedelta(days=3)))
    assert other.code == 0, other.stderr
    dry_sync = cli("sync", "--dry-run", "--source", "pageviews", "--date", day)
    assert dry_sync.code == 0, dry_sync.stderr
    dry_snapshot = cli("snapshot", "--dry-run", "--date", day)
    assert dry_snapshot.code == 0, dry_snapshot.stderr
    dry = [r for r in all_runs(psql) if r["partition"] == day]
    assert [(r["job"], r["status"], r["dry_run"]) for r in dry] == [
        ("sync", "completed", True),
        ("snapshot", "completed", True),
    ]
    listed = cli("runs", "list", "--json")
    assert listed.code == 0, listed.stderr
    flags = {r["id"]: r["dry_run"] for r in json.loads(listed.stdout)}
    assert {r["id"]: True for r in dry}.items() <= flags.items()
    assert day in gap_dates(cli)  # a dry snapshot does not fill the slot of its date

    result = cli("backfill", "--from", day, "--to", day, "--job", "sync", "--job", "snapshot")
    assert result.code == 0, (result.stdout, result.stderr)
    kids = children_of(cli, last_parent(psql)["id"])
    assert [(c["job"], c["status"], c["dry_run"]) for c in kids] == [
        ("sync", "completed", False),
        ("snapshot", "completed", False),
    ], [c["error_message"] for c in kids]
    assert psql.execute(
        "SELECT count(*) FROM pageviews WHERE partition_date = %s", (day,)
    ).fetchone() == (10,)
    assert day not in gap_dates(cli)
    # Now the date is done: the next backfill skips it.
    again = cli("backfill", "--from", day, "--to", day, "--job", "snapshot")
    assert again.code == 0, again.stderr
    assert [c["status"] for c in children_of(cli, last_parent(psql)["id"])] == ["skipped"]


def test_force_takes_a_date_that_has_not_ended(
    cli: Cli, slow: Path, psql: psycopg.Connection[Any]
) -> None:
    (slow / "jobctl.toml").write_text(SLOW_SET.format(seconds=0))
    d = today()
    refused = cli("backfill", "--from", str(d - timedelta(days=1)), "--to", str(d))
    assert refused.code == 2 and "has not ended" in refused.stderr, refused.stderr
    assert all_runs(psql) == []
    forced = cli("backfill", "--from", str(d - timedelta(days=1)), "--to", str(d), "--force")
    assert forced.code == 0, (forced.stdout, forced.stderr)
    kids = children_of(cli, last_parent(psql)["id"])
    assert [(c["partition"], c["status"]) for c in kids] == [
        (str(d - timedelta(days=1)), "completed"),
        (str(d), "completed"),
    ]


# 19:52 in Toronto on 2026-11-10 (EST) is 00:52 UTC on 2026-11-11: on a UTC host,
# `date -d yesterday +%F` says 2026-11-10 — a day still in progress in Toronto.
EVENING = datetime(2026, 11, 11, 0, 52, tzinfo=UTC)


@pytest.fixture
def example_settings(tmp_path: Path, db_url: str) -> Callable[..., Settings]:
    """The example's settings (optionally with more config), read like the CLI reads them."""
    example_project(tmp_path, date(2026, 10, 15))

    def make(extra: str = "") -> Settings:
        if extra:
            append_config(tmp_path, extra)
        environ = {"DATABASE_URL": db_url, "HOME": str(tmp_path)}
        return load_settings(config_path=tmp_path / "jobctl.toml", environ=environ)

    return make


def test_a_day_is_over_only_when_it_has_ended_in_the_jobs_zone(
    example_settings: Callable[..., Settings],
) -> None:
    settings = example_settings()
    with pytest.raises(UsageError) as refused:
        backfill.plan(settings, start="2026-11-08", end="2026-11-10", now=EVENING)
    message = str(refused.value)
    assert message.startswith("--to 2026-11-10 has not ended in America/Toronto")
    assert "it ends at 2026-11-11 00:00 EST, in 4h08m" in message
    assert "--force" in message and "\n" not in message
    with pytest.raises(UsageError, match="--to 2026-11-11 is in the future"):
        backfill.plan(settings, start="2026-11-08", end="2026-11-11", now=EVENING)
    with pytest.raises(UsageError, match="is in the future"):
        backfill.plan(settings, start="2026-11-08", end="2026-11-11", now=EVENING, force=True)
    done = backfill.plan(settings, start="2026-11-08", end="2026-11-09", now=EVENING)
    assert (done.start, done.end) == (date(2026, 11, 8), date(2026, 11, 9))
    forced = backfill.plan(settings, start="2026-11-08", end="2026-11-10", now=EVENING, force=True)
    assert forced.end == date(2026, 11, 10) and forced.now == EVENING
    # Once Toronto's day is over (05:00 UTC), it is taken.
    after = EVENING.replace(hour=5, minute=0)
    assert backfill.plan(settings, start="2026-11-10", end="2026-11-10", now=after).end == date(
        2026, 11, 10
    )


def test_the_zone_where_the_day_ends_last_decides(
    example_settings: Callable[..., Settings],
) -> None:
    """A snapshot set in Honolulu: 06:00 UTC is 01:00 in Toronto but 20:00 the day before there."""
    settings = example_settings(
        '[snapshots.hawaii]\ntable = "snap_hawaii"\nkey = ["k"]\nperiods = ["day"]\n'
        'timezone = "Pacific/Honolulu"\n'
        "query = \"SELECT 'x' AS k, 1 AS n WHERE :period_start < :period_end\"\n"
    )
    now = datetime(2026, 11, 11, 6, 0, tzinfo=UTC)
    with pytest.raises(UsageError) as refused:
        backfill.plan(settings, start="2026-11-09", end="2026-11-10", jobs=["snapshot"], now=now)
    assert "--to 2026-11-10 has not ended in Pacific/Honolulu" in str(refused.value)
    assert "it ends at 2026-11-11 00:00 HST, in 4h00m" in str(refused.value)
    # sync reads only the page views export (Toronto): its day is over.
    synced = backfill.plan(settings, start="2026-11-09", end="2026-11-10", jobs=["sync"], now=now)
    assert synced.jobs == ("sync",) and synced.end == date(2026, 11, 10)


def test_app_backfill_refuses_a_day_in_progress_before_any_run(
    example_settings: Callable[..., Settings], psql: psycopg.Connection[Any]
) -> None:
    app = App(example_settings())
    try:
        with pytest.raises(UsageError, match="has not ended in America/Toronto"):
            app.run_job(
                "backfill",
                RunOptions(now=EVENING),
                BackfillArgs(
                    start="2026-11-09",
                    end="2026-11-10",
                    jobs=["snapshot"],
                    missing=False,
                    continue_on_error=False,
                ),
            )
    finally:
        app.close()
    assert all_runs(psql) == []
