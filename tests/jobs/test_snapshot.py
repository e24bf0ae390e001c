"""``jobctl snapshot`` over the shipped example (real PostgreSQL; the executable and in-process)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.rows import dict_row

from jobctl.app import App
from jobctl.config import load_settings
from jobctl.errors import UsageError
from jobctl.jobs.snapshot import SnapshotArgs, served_date
from jobctl.jobs.sync import SyncArgs
from jobctl.runner import RunOptions, RunOutcome
from tests.conftest import Cli
from tests.fixtures.example import append_config, example_project, set_key

TODAY = date(2026, 10, 15)  # example data: permits issued 2026-06-17 .. 2026-10-14
DAY = date(2026, 9, 10)  # a Thursday well inside the data


@pytest.fixture
def example(project: Path) -> Path:
    return example_project(project, TODAY)


@pytest.fixture
def make_app(example: Path, db_url: str) -> Iterator[Callable[[], App]]:
    """In-process jobctl (faster than a process per run); built after config edits."""
    apps: list[App] = []

    def make() -> App:
        environ = {"DATABASE_URL": db_url, "HOME": str(example)}
        apps.append(App(load_settings(config_path=example / "jobctl.toml", environ=environ)))
        return apps[-1]

    yield make
    for app in apps:
        app.close()


def sync(app: App, on_date: str | None = None, *sources: str) -> None:
    outcome = app.run_job("sync", RunOptions(), SyncArgs(sources=list(sources), on_date=on_date))
    assert outcome.status == "completed", outcome.message


def snapshot(
    app: App, on_date: str | None, *sets: str, periods: tuple[str, ...] = ()
) -> RunOutcome:
    outcome = app.run_job(
        "snapshot",
        RunOptions(),
        SnapshotArgs(sets=list(sets), on_date=on_date, periods=list(periods)),
    )
    assert outcome.status == "completed", outcome.message
    return outcome


def ok(cli: Cli, *args: str) -> str:
    result = cli(*args, timeout=120)
    assert result.code == 0, (args, result.stdout, result.stderr)
    return result.stderr


def last_run(psql: psycopg.Connection[Any], job: str = "snapshot") -> dict[str, Any]:
    cur = psql.cursor(row_factory=dict_row)
    row = cur.execute(
        "SELECT * FROM jobctl.runs WHERE job = %s ORDER BY id DESC LIMIT 1", (job,)
    ).fetchone()
    assert row is not None
    return row


def counts(run: dict[str, Any]) -> dict[str, int]:
    return {
        k: run[f"records_{k}"]
        for k in ("total", "new", "updated", "unchanged", "deleted", "errors")
    }


def table(psql: psycopg.Connection[Any], name: str, key: str) -> list[tuple[Any, ...]]:
    """Every column of every row, in a stable order."""
    return psql.execute(
        f"SELECT * FROM {name} ORDER BY period_type, period_start, {key} NULLS FIRST"
    ).fetchall()


def exists(psql: psycopg.Connection[Any], name: str) -> bool:
    row = psql.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def unique_constraint(psql: psycopg.Connection[Any], name: str) -> str:
    row = psql.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass"
        " AND contype = 'u'",
        (name,),
    ).fetchone()
    assert row is not None, f"{name} has no unique constraint"
    return str(row[0])


def by_ward_from_permits(psql: psycopg.Connection[Any], start: date, end: date) -> dict[str, Any]:
    """What the permits_by_ward set should hold for [start, end), computed independently."""
    rows = psql.execute(
        "SELECT data->>'WARD', count(*), coalesce(sum((data->>'EST_CONST_COST')::numeric), 0)"
        " FROM permits WHERE removed_at IS NULL"
        " AND (data->>'ISSUED_DATE')::date >= %s AND (data->>'ISSUED_DATE')::date < %s"
        " GROUP BY 1",
        (start, end),
    ).fetchall()
    return {w: (n, cost) for w, n, cost in rows}


def by_ward_rows(psql: psycopg.Connection[Any], kind: str, start: date) -> dict[str, Any]:
    rows = psql.execute(
        "SELECT ward, permits, est_cost FROM snap_permits_by_ward"
        " WHERE period_type = %s AND period_start = %s",
        (kind, start),
    ).fetchall()
    return {w: (n, cost) for w, n, cost in rows}


def test_first_use_creates_table_and_rerun_changes_nothing(
    cli: Cli, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    assert not exists(psql, "snap_permits_by_ward")
    sync(make_app(), DAY.isoformat())
    ok(cli, "snapshot", "--date", DAY.isoformat())
    first = last_run(psql)
    assert first["status"] == "completed" and first["partition"] == DAY.isoformat()
    for name, key in (("snap_permits_by_ward", "ward"), ("snap_permits_by_type", "permit_type")):
        assert exists(psql, name)
        assert unique_constraint(psql, name) == (
            f"UNIQUE NULLS NOT DISTINCT (period_type, period_start, {key})"
        )
    assert first["records_total"] > 0
    assert counts(first) == {
        "total": first["records_total"],
        "new": first["records_total"],
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "errors": 0,
    }
    expected = by_ward_from_permits(psql, DAY, DAY + timedelta(days=1))
    assert expected and by_ward_rows(psql, "day", DAY) == expected
    before = {
        "ward": table(psql, "snap_permits_by_ward", "ward"),
        "type": table(psql, "snap_permits_by_type", "permit_type"),
        "pages": table(psql, "snap_pageviews", "page"),
    }
    assert len(before["pages"]) == 10  # the day's page views, synced above

    ok(cli, "snapshot", "--date", DAY.isoformat())
    second = last_run(psql)
    assert second["id"] != first["id"] and second["status"] == "completed"
    assert counts(second) == {
        "total": first["records_total"],
        "new": 0,
        "updated": 0,
        "unchanged": first["records_total"],
        "deleted": 0,
        "errors": 0,
    }
    after = {
        "ward": table(psql, "snap_permits_by_ward", "ward"),
        "type": table(psql, "snap_permits_by_type", "permit_type"),
        "pages": table(psql, "snap_pageviews", "page"),
    }
    # Identical rows, computed_at and run_id included: unchanged rows are not rewritten.
    assert after == before
    stats = second["stats"]["snapshots"]["permits_by_ward"]
    assert [(s["period"], s["start"], s["unchanged"]) for s in stats] == [
        ("day", DAY.isoformat(), len(expected))
    ]


def test_week_and_month_equal_the_sum_of_their_days(
    cli: Cli, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    sync(make_app(), "2026-09-15")  # permits, and the page-view table
    # Every day of September plus the Monday before: weeks close on each Sunday, the
    # month on the 30th (and August on the 31st).
    ok(cli, "backfill", "--from", "2026-08-31", "--to", "2026-09-30", "--job", "snapshot")
    weeks = [
        r[0]
        for r in psql.execute(
            "SELECT DISTINCT period_start FROM snap_permits_by_ward WHERE period_type = 'week'"
            " ORDER BY 1"
        )
    ]
    assert weeks == [date(2026, 8, 31), date(2026, 9, 7), date(2026, 9, 14), date(2026, 9, 21)]
    months = [
        r[0]
        for r in psql.execute(
            "SELECT DISTINCT period_start FROM snap_permits_by_ward WHERE period_type = 'month'"
            " ORDER BY 1"
        )
    ]
    assert months == [date(2026, 8, 1), date(2026, 9, 1)]
    for kind, start, end in [
        *[("week", w, w + timedelta(days=7)) for w in weeks],
        ("month", date(2026, 9, 1), date(2026, 10, 1)),
    ]:
        summed = psql.execute(
            "SELECT ward, sum(permits), sum(est_cost) FROM snap_permits_by_ward"
            " WHERE period_type = 'day' AND period_start >= %s AND period_start < %s"
            " GROUP BY 1",
            (start, end),
        ).fetchall()
        days = psql.execute(
            "SELECT count(DISTINCT period_start) FROM snap_permits_by_ward"
            " WHERE period_type = 'day' AND period_start >= %s AND period_start < %s",
            (start, end),
        ).fetchone()
        assert days == ((end - start).days,)
        sums = {w: (n, cost) for w, n, cost in summed}
        assert by_ward_rows(psql, kind, start) == sums, (kind, start)
        assert sums == by_ward_from_permits(psql, start, end)
        # The other set too: permits and dwelling units per permit type.
        mismatch = psql.execute(
            "SELECT count(*) FROM (SELECT permit_type, sum(permits) AS p,"
            " sum(dwelling_units) AS u FROM snap_permits_by_type WHERE period_type = 'day'"
            " AND period_start >= %s AND period_start < %s GROUP BY 1) d"
            " FULL JOIN (SELECT permit_type, permits AS p, dwelling_units AS u"
            " FROM snap_permits_by_type WHERE period_type = %s AND period_start = %s) w"
            " USING (permit_type) WHERE d.p IS DISTINCT FROM w.p OR d.u IS DISTINCT FROM w.u",
            (start, end, kind, start),
        ).fetchone()
        assert mismatch == (0,), (kind, start)
    month_total = psql.execute(
        "SELECT sum(permits), sum(est_cost) FROM snap_permits_by_ward"
        " WHERE period_type = 'month' AND period_start = '2026-09-01'"
    ).fetchone()
    assert month_total is not None and month_total[0] > 100 and month_total[1] > Decimal(0)


def test_rerun_after_the_source_changed_replaces_the_period(
    example: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    feed = example / "data" / "permits.json"
    records = json.loads(feed.read_text())
    on_day = [r for r in records if r["ISSUED_DATE"] == DAY.isoformat()]
    wards = sorted({r["WARD"] for r in on_day})
    assert len(wards) >= 3
    gone, changed = wards[0], wards[1]
    app = make_app()
    sync(app, None, "permits")
    snapshot(app, DAY.isoformat(), "permits_by_ward", periods=("day",))
    first = last_run(psql)
    assert first["records_new"] == len(wards)
    old_cost = by_ward_rows(psql, "day", DAY)[changed][1]

    # Ward `gone` loses every permit of the day; one permit of ward `changed` costs more.
    kept = [r for r in records if not (r["ISSUED_DATE"] == DAY.isoformat() and r["WARD"] == gone)]
    target = next(r for r in kept if r["ISSUED_DATE"] == DAY.isoformat() and r["WARD"] == changed)
    target["EST_CONST_COST"] = (target["EST_CONST_COST"] or 0) + 1_000_000
    feed.write_text(json.dumps(kept, indent=0) + "\n")
    sync(app, None, "permits")
    snapshot(app, DAY.isoformat(), "permits_by_ward", periods=("day",))
    second = last_run(psql)
    assert counts(second) == {
        "total": len(wards) - 1,
        "new": 0,
        "updated": 1,
        "unchanged": len(wards) - 2,
        "deleted": 1,
        "errors": 0,
    }
    rows = by_ward_rows(psql, "day", DAY)
    assert gone not in rows
    assert rows[changed][1] == old_cost + 1_000_000
    assert rows == by_ward_from_permits(psql, DAY, DAY + timedelta(days=1))
    updated_by = psql.execute(
        "SELECT ward, run_id FROM snap_permits_by_ward WHERE period_type = 'day'"
        " AND period_start = %s AND run_id = %s",
        (DAY, second["id"]),
    ).fetchall()
    assert updated_by == [(changed, second["id"])]


def test_null_keys_do_not_duplicate_rows(
    example: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    append_config(
        example,
        """
[snapshots.permits_by_units]
table = "snap_permits_by_units"
key = ["units"]
query = '''
SELECT (data->>'DWELLING_UNITS_CREATED')::int AS units, count(*) AS permits
FROM permits
WHERE removed_at IS NULL
  AND (data->>'ISSUED_DATE')::date >= :period_start
  AND (data->>'ISSUED_DATE')::date <  :period_end
GROUP BY 1
'''
""",
    )
    app = make_app()
    sync(app, None, "permits")
    snapshot(app, "2026-09-30", "permits_by_units")  # the day and the month
    first = last_run(psql)
    assert unique_constraint(psql, "snap_permits_by_units") == (
        "UNIQUE NULLS NOT DISTINCT (period_type, period_start, units)"
    )
    rows = table(psql, "snap_permits_by_units", "units")
    nulls = psql.execute(
        "SELECT period_type, count(*) FROM snap_permits_by_units WHERE units IS NULL"
        " GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert nulls == [("day", 1), ("month", 1)]
    snapshot(app, "2026-09-30", "permits_by_units")
    second = last_run(psql)
    assert second["records_unchanged"] == second["records_total"] == first["records_total"]
    assert second["records_new"] == 0
    assert table(psql, "snap_permits_by_units", "units") == rows
    # The constraint itself refuses a second NULL key for the same period.
    with pytest.raises(psycopg.errors.UniqueViolation):
        psql.execute(
            "INSERT INTO snap_permits_by_units (period_type, period_start, period_end, units,"
            " permits) VALUES ('day', '2026-09-30', '2026-10-01', NULL, 1)"
        )


def test_requires_sync_without_a_completed_sync_fails_the_run(
    cli: Cli, example: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    set_key(example, "snapshots.pageviews_daily", "requires_sync = true")
    other = DAY - timedelta(days=1)
    app = make_app()
    sync(app, other.isoformat())  # synced the day before, not DAY
    snapshot(app, other.isoformat())  # fine: its sync is there
    result = cli("snapshot", "--date", DAY.isoformat())
    assert result.code == 1, result.stderr
    run = last_run(psql)
    assert run["status"] == "failed"
    assert f"needs a completed sync for {DAY}" in run["error_message"]
    assert f"jobctl sync --date {DAY}" in run["error_message"]
    assert "needs a completed sync" in result.stderr
    # A failed run writes no period of any set.
    written = psql.execute(
        "SELECT (SELECT count(*) FROM snap_permits_by_ward WHERE period_start = %(d)s)"
        " + (SELECT count(*) FROM snap_permits_by_type WHERE period_start = %(d)s)"
        " + (SELECT count(*) FROM snap_pageviews WHERE period_start = %(d)s)",
        {"d": DAY},
    ).fetchone()
    assert written == (0,)

    sync(app, DAY.isoformat())
    snapshot(app, DAY.isoformat())
    pages = psql.execute(
        "SELECT count(*) FROM snap_pageviews WHERE period_type = 'day' AND period_start = %s",
        (DAY,),
    ).fetchone()
    assert pages == (10,)


def periods_written(psql: psycopg.Connection[Any], run_id: int) -> set[tuple[str, date]]:
    rows = psql.execute(
        "SELECT DISTINCT period_type, period_start FROM snap_permits_by_ward WHERE run_id = %s",
        (run_id,),
    ).fetchall()
    return {(t, s) for t, s in rows}


def test_default_periods_are_the_day_and_what_closed_on_it(
    cli: Cli, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    app = make_app()
    sync(app, None, "permits")
    snapshot(app, "2026-09-13", "permits_by_ward")  # a Sunday
    assert periods_written(psql, last_run(psql)["id"]) == {
        ("day", date(2026, 9, 13)),
        ("week", date(2026, 9, 7)),
    }
    snapshot(app, "2026-09-14", "permits_by_ward")  # a Monday
    assert periods_written(psql, last_run(psql)["id"]) == {("day", date(2026, 9, 14))}
    snapshot(app, "2026-09-30", "permits_by_ward")  # a Wednesday
    assert periods_written(psql, last_run(psql)["id"]) == {
        ("day", date(2026, 9, 30)),
        ("month", date(2026, 9, 1)),
    }
    snapshot(app, "2026-09-16", "permits_by_ward", periods=("week",))  # only that week
    assert periods_written(psql, last_run(psql)["id"]) == {("week", date(2026, 9, 14))}

    # No --date: yesterday in the configured zone, plus whatever closed on it.
    ok(cli, "snapshot", "--set", "permits_by_ward")
    run = last_run(psql)
    yesterday = datetime.now(ZoneInfo("America/Toronto")).date() - timedelta(days=1)
    assert run["partition"] == yesterday.isoformat()
    expected = [("day", yesterday.isoformat())]
    if yesterday.weekday() == 6:
        expected.append(("week", (yesterday - timedelta(days=6)).isoformat()))
    if (yesterday + timedelta(days=1)).day == 1:
        expected.append(("month", yesterday.replace(day=1).isoformat()))
    done = run["stats"]["snapshots"]["permits_by_ward"]
    assert [(p["period"], p["start"]) for p in done] == expected


def test_period_bounds_are_in_the_configured_time_zone(
    example: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    psql.execute("CREATE TABLE events (kind text, ts timestamptz)")
    psql.execute(
        "INSERT INTO events VALUES ('early', '2026-09-10 03:30Z'), ('late', '2026-09-10 04:30Z'),"
        " ('next', '2026-09-11 03:59Z'), ('after', '2026-09-11 04:00Z')"
    )
    query = (
        "query = '''SELECT kind, count(*) AS n FROM events"
        " WHERE ts >= :period_start AND ts < :period_end GROUP BY 1'''"
    )
    append_config(
        example,
        f"""
[snapshots.events_local]
table = "snap_events_local"
key = ["kind"]
periods = ["day"]
{query}

[snapshots.events_utc]
table = "snap_events_utc"
key = ["kind"]
periods = ["day"]
timezone = "UTC"
{query}
""",
    )
    snapshot(make_app(), "2026-09-10", "events_local", "events_utc")
    # America/Toronto (the config's zone, EDT): 2026-09-10 is 04:00Z .. 04:00Z next day.
    local = psql.execute("SELECT kind FROM snap_events_local ORDER BY 1").fetchall()
    assert local == [("late",), ("next",)]
    utc = psql.execute("SELECT kind FROM snap_events_utc ORDER BY 1").fetchall()
    assert utc == [("early",), ("late",)]
    bounds = psql.execute(
        "SELECT DISTINCT period_start, period_end FROM snap_events_local"
    ).fetchall()
    assert bounds == [(date(2026, 9, 10), date(2026, 9, 11))]


def test_a_failing_set_writes_no_period_of_any_set(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    """All periods of all sets share one transaction: a failure leaves every table as it was."""
    psql.execute("CREATE TABLE facts (day date, kind text, n int)")
    psql.execute("INSERT INTO facts VALUES ('2026-11-01', 'a', 1), ('2026-11-01', 'b', 2)")
    (project / "jobctl.toml").write_text(
        'timezone = "UTC"\n'
        "[snapshots.good]\n"
        'table = "snap_good"\nkey = ["kind"]\nperiods = ["day"]\n'
        'query = "SELECT kind, sum(n) AS n FROM facts WHERE day >= :period_start'
        ' AND day < :period_end GROUP BY 1"\n'
        "[snapshots.bad]\n"
        'table = "snap_bad"\nkey = ["kind"]\nperiods = ["day"]\n'
        'query = "SELECT kind, sum(n) / (count(*) - count(*)) AS n FROM facts'
        ' WHERE day >= :period_start AND day < :period_end GROUP BY 1"\n'
    )
    assert cli("snapshot", "--date", "2026-11-01", "--set", "good").code == 0
    before = psql.execute("SELECT kind, n, computed_at FROM snap_good ORDER BY 1").fetchall()
    psql.execute("UPDATE facts SET n = n + 10")

    result = cli("snapshot", "--date", "2026-11-01")
    assert result.code == 1
    assert "division by zero" in result.stderr
    run = (
        psql.cursor(row_factory=dict_row)
        .execute("SELECT * FROM jobctl.runs ORDER BY id DESC LIMIT 1")
        .fetchone()
    )
    assert run is not None and run["status"] == "failed"
    assert run["records_new"] == 0 and run["records_updated"] == 0
    assert "one transaction" in run["stats"]["rolled_back"]
    after = psql.execute("SELECT kind, n, computed_at FROM snap_good ORDER BY 1").fetchall()
    assert after == before


def test_a_dry_run_sync_does_not_satisfy_requires_sync(
    example: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    set_key(example, "snapshots.pageviews_daily", "requires_sync = true")
    app = make_app()
    sync(app, (DAY - timedelta(days=1)).isoformat())  # the page views table exists
    dry = app.run_job(
        "sync", RunOptions(dry_run=True), SyncArgs(sources=[], on_date=DAY.isoformat())
    )
    assert dry.status == "completed" and dry.partition == DAY.isoformat()
    refused = app.run_job(
        "snapshot", RunOptions(), SnapshotArgs(sets=[], on_date=DAY.isoformat(), periods=[])
    )
    assert refused.status == "failed"
    assert f"needs a completed sync for {DAY}" in refused.message
    sync(app, DAY.isoformat())
    snapshot(app, DAY.isoformat())


# 19:52 on 2026-11-10 in Toronto, 00:52 UTC on 2026-11-11.
EVENING = datetime(2026, 11, 11, 0, 52, tzinfo=UTC)


def test_date_not_ended_in_the_sets_zone_is_refused_unless_forced(
    make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    app = make_app()
    with pytest.raises(UsageError) as refused:
        app.run_job(
            "snapshot",
            RunOptions(now=EVENING),
            SnapshotArgs(sets=[], on_date="2026-11-10", periods=[]),
        )
    assert str(refused.value) == (
        "--date 2026-11-10 has not ended in America/Toronto: it ends at 2026-11-11 00:00 EST, "
        "in 4h08m; a run for it would record a partial day as done (--force takes it anyway)"
    )
    with pytest.raises(UsageError, match="--date 2026-11-11 is in the future"):
        app.run_job(
            "snapshot",
            RunOptions(now=EVENING, force=True),
            SnapshotArgs(sets=[], on_date="2026-11-11", periods=[]),
        )
    assert psql.execute("SELECT count(*) FROM jobctl.runs").fetchone() == (0,)
    sync(app, None, "permits")
    forced = app.run_job(
        "snapshot",
        RunOptions(now=EVENING, force=True),
        SnapshotArgs(sets=["permits_by_ward"], on_date="2026-11-10", periods=[]),
    )
    assert forced.status == "completed" and forced.partition == "2026-11-10"
    ended = app.run_job(
        "snapshot",
        RunOptions(now=EVENING),
        SnapshotArgs(sets=["permits_by_ward"], on_date="2026-11-09", periods=[]),
    )
    assert ended.status == "completed" and ended.partition == "2026-11-09"


HAWAII = """
[snapshots.hawaii]
table = "snap_hawaii"
key = ["k"]
periods = ["day"]
timezone = "Pacific/Honolulu"
query = "SELECT 'x' AS k, 1 AS n WHERE :period_start < :period_end"
"""


def test_default_date_has_ended_in_every_sets_zone(
    example: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    """03:00 in Toronto is 21:00 the evening before in Honolulu: "yesterday" in Toronto
    is still in progress there, so a run without --date takes the day before."""
    toronto = ZoneInfo("America/Toronto")
    slot = datetime(2026, 10, 10, 3, 0, tzinfo=toronto)
    app = make_app()
    assert served_date(app.settings, slot) == date(2026, 10, 9)  # yesterday in Toronto
    append_config(example, HAWAII)
    app = make_app()
    assert served_date(app.settings, slot) == date(2026, 10, 8)
    sync(app, None, "permits")
    sync(app, "2026-10-08", "pageviews")
    outcome = app.run("snapshot", RunOptions(trigger="backfill", scheduled_for=slot))
    assert outcome.status == "completed", outcome.message
    assert outcome.partition == "2026-10-08"
    assert psql.execute("SELECT period_start FROM snap_hawaii").fetchall() == [(date(2026, 10, 8),)]
    # --date is judged in the zones of the sets chosen.
    with pytest.raises(UsageError, match="2026-10-09 has not ended in Pacific/Honolulu"):
        app.run_job(
            "snapshot",
            RunOptions(now=slot),
            SnapshotArgs(sets=["hawaii"], on_date="2026-10-09", periods=[]),
        )
    ours = app.run_job(
        "snapshot",
        RunOptions(now=slot),
        SnapshotArgs(sets=["permits_by_ward"], on_date="2026-10-09", periods=[]),
    )
    assert ours.status == "completed", ours.message


def test_cli_refuses_today_in_the_configured_zone(
    cli: Cli, example: Path, psql: psycopg.Connection[Any]
) -> None:
    today = datetime.now(ZoneInfo("America/Toronto")).date()
    result = cli("snapshot", "--date", str(today))
    assert result.code == 2, (result.stdout, result.stderr)
    assert f"--date {today} has not ended in America/Toronto" in result.stderr
    assert f"it ends at {today + timedelta(days=1)} 00:00" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    future = cli("snapshot", "--date", str(today + timedelta(days=1)), "--force")
    assert future.code == 2 and "is in the future" in future.stderr, future.stderr
    assert psql.execute("SELECT count(*) FROM jobctl.runs").fetchone() == (0,)
    ok(cli, "sync", "--source", "permits")
    ok(cli, "snapshot", "--date", str(today), "--set", "permits_by_ward", "--force")
    assert last_run(psql)["partition"] == str(today)
