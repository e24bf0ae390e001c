"""``jobctl cleanup``: retention policies over a real PostgreSQL (the executable and in-process)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobctl.app import App
from jobctl.config import load_settings
from jobctl.jobs.cleanup import CleanupArgs
from jobctl.runner import RunOptions, RunOutcome
from tests.conftest import Cli
from tests.jobs import latest, wait_until

POLICY = """
[cleanup.logs]
table = "public.logs"
column = "at"
keep = "10d"
"""


def configure(project: Path, body: str) -> None:
    (project / "jobctl.toml").write_text('timezone = "UTC"\n' + body)


@pytest.fixture
def make_app(project: Path, db_url: str) -> Iterator[Callable[[], App]]:
    """In-process jobctl (faster than a process per run); built after config edits."""
    apps: list[App] = []

    def make() -> App:
        environ = {"DATABASE_URL": db_url, "HOME": str(project)}
        apps.append(App(load_settings(config_path=project / "jobctl.toml", environ=environ)))
        return apps[-1]

    yield make
    for app in apps:
        app.close()


def cleanup(app: App, *policies: str, dry_run: bool = False) -> RunOutcome:
    return app.run_job("cleanup", RunOptions(dry_run=dry_run), CleanupArgs(policies=list(policies)))


def logs_table(
    psql: psycopg.Connection[Any], ages_days: list[float], *, key: bool = True, now: datetime
) -> None:
    """``public.logs``: one row per age (days before ``now``), ``id`` from 1."""
    pk = "PRIMARY KEY" if key else ""
    psql.execute(f"CREATE TABLE public.logs (id int {pk}, at timestamptz, level text)")
    for i, age in enumerate(ages_days, start=1):
        psql.execute(
            "INSERT INTO public.logs VALUES (%s, %s, 'info')", (i, now - timedelta(days=age))
        )


def ids(psql: psycopg.Connection[Any], table: str = "public.logs") -> list[int]:
    return [r[0] for r in psql.execute(f"SELECT id FROM {table} ORDER BY id").fetchall()]


def test_rows_older_than_keep_go_and_younger_stay(
    project: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    configure(project, POLICY)
    now = datetime.now(UTC)
    logs_table(psql, [30, 11, 10.01, 9.99, 1, 0], now=now)
    outcome = cleanup(make_app(), "logs")
    assert outcome.status == "completed", outcome.message
    assert ids(psql) == [4, 5, 6]
    assert outcome.counters["deleted"] == 3
    stats = outcome.stats["policies"]["logs"]
    assert (stats["deleted"], stats["batches"]) == (3, 1)


def test_a_row_exactly_at_the_cutoff_is_kept(
    make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    """The age test is strict: a row stamped exactly at the cutoff stays (db layer, so
    that the cutoff is known to the microsecond)."""
    from jobctl.db import retention

    cutoff = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # a DST change in Europe
    logs_table(psql, [], now=cutoff)
    psql.execute(
        "INSERT INTO public.logs VALUES (1, %s, 'x'), (2, %s, 'x'), (3, %s, 'x')",
        (cutoff - timedelta(microseconds=1), cutoff, cutoff + timedelta(microseconds=1)),
    )
    target = retention.Target("public.logs", "at", cutoff)
    with make_app().db.begin() as conn:
        key = retention.key_columns(conn, target)
        assert key == ("id",)
        assert retention.preview(conn, target) == (1, cutoff)
        assert retention.delete_batch(conn, target, key, 10) == 1
    assert ids(psql) == [2, 3]


def test_time_zones_are_compared_as_instants(
    project: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    """timestamptz compares instants, whatever offset a row was written with."""
    configure(project, POLICY)
    psql.execute("CREATE TABLE public.logs (id int PRIMARY KEY, at timestamptz)")
    cutoff = datetime.now(UTC) - timedelta(days=10)
    older, younger = cutoff - timedelta(hours=1), cutoff + timedelta(hours=1)
    # Written as wall times: the older one in UTC+14 reads *later* than the younger
    # one in UTC-10; a comparison of wall times would keep the wrong one.
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    psql.execute(
        "INSERT INTO public.logs VALUES (1, %s::timestamptz), (2, %s::timestamptz)",
        (
            (older + timedelta(hours=14)).strftime(fmt) + "+14",
            (younger - timedelta(hours=10)).strftime(fmt) + "-10",
        ),
    )
    outcome = cleanup(make_app(), "logs")
    assert outcome.status == "completed", outcome.message
    assert ids(psql) == [2]


def test_dry_run_deletes_nothing_and_reports(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    configure(project, POLICY)
    now = datetime.now(UTC)
    logs_table(psql, [30, 20, 5, 1], now=now)
    result = cli("cleanup", "--policy", "logs", "--dry-run")
    assert result.code == 0, result.stderr
    assert "would delete 2 rows from public.logs" in result.stderr
    assert ids(psql) == [1, 2, 3, 4]
    run = latest(psql, "cleanup")
    assert run["status"] == "completed" and run["dry_run"] is True
    assert run["records_deleted"] == 0
    logs = run["stats"]["policies"]["logs"]
    assert logs["would_delete"] == 2
    assert datetime.fromisoformat(logs["oldest_kept"]) == now - timedelta(days=5)


def test_an_injected_table_name_fails_at_load_and_drops_nothing(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    psql.execute("CREATE TABLE y (id int)")
    configure(project, POLICY.replace('"public.logs"', '"x; DROP TABLE y"'))
    for args in (["cleanup"], ["jobs", "list"]):  # every command checks the config
        result = cli(*args)
        assert result.code == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "cleanup.logs.table" in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert psql.execute("SELECT to_regclass('y') IS NOT NULL").fetchone() == (True,)
    configure(project, POLICY.replace('"at"', '"at; DROP TABLE y"'))
    result = cli("cleanup")
    assert result.code == 2 and "cleanup.logs.column" in result.stderr
    assert psql.execute("SELECT to_regclass('y') IS NOT NULL").fetchone() == (True,)


def test_an_unknown_policy_exits_2_naming_the_configured_ones(project: Path, cli: Cli) -> None:
    configure(project, POLICY)
    result = cli("cleanup", "--policy", "nope")
    assert result.code == 2
    assert "unknown cleanup policy 'nope' (configured: logs, runs, schedules)" in result.stderr


def test_a_missing_table_or_column_fails_that_policy_only(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    configure(
        project,
        POLICY
        + '[cleanup.gone]\ntable = "public.nothere"\ncolumn = "at"\nkeep = "1d"\n'
        + '[cleanup.nocol]\ntable = "public.logs"\ncolumn = "when_"\nkeep = "1d"\n'
        + '[cleanup.badwhere]\ntable = "public.logs"\ncolumn = "at"\nkeep = "1d"\n'
        + 'where = "nosuch = 1"\n',
    )
    now = datetime.now(UTC)
    logs_table(psql, [30, 1], now=now)
    result = cli("cleanup")
    assert result.code == 1, result.stderr
    assert ids(psql) == [2]  # the good policy still ran
    run = latest(psql, "cleanup")
    assert run["status"] == "failed"
    assert "gone (table public.nothere does not exist)" in run["error_message"]
    assert "nocol (table public.logs has no column 'when_')" in run["error_message"]
    assert "badwhere (cleanup of public.logs failed: column " in run["error_message"]
    assert run["error_message"].startswith("cleanup policies failed: gone (")
    assert set(run["stats"]["policies"]) == {
        "logs",
        "gone",
        "nocol",
        "badwhere",
        "runs",
        "schedules",
    }
    assert run["records_deleted"] == 1
    assert run["stats"]["policies"]["logs"]["deleted"] == 1


def test_batches_are_bounded(
    project: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    configure(project, POLICY + "batch_size = 3\n")
    now = datetime.now(UTC)
    logs_table(psql, [30] * 10 + [1], key=False, now=now)  # no key: by ctid
    outcome = cleanup(make_app(), "logs")
    assert outcome.status == "completed", outcome.message
    stats = outcome.stats["policies"]["logs"]
    assert (stats["deleted"], stats["batches"]) == (10, 4)
    # The longest of the four batches (not its size: no timed tests).
    assert isinstance(stats["longest_batch_ms"], float) and stats["longest_batch_ms"] >= 0
    assert ids(psql) == [11]


def test_a_killed_work_connection_fails_that_policy_and_the_others_still_run(
    project: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    # pg_sleep in the policy's own where: each batch of 5 takes >= 50 ms, so the
    # killer below finds a DELETE running; it kills that backend (the work
    # connection the batches share), not the lock's
    configure(
        project,
        POLICY
        + 'batch_size = 5\nwhere = "pg_sleep(0.01) IS NOT NULL"\n'
        + '[cleanup.other]\ntable = "public.other"\ncolumn = "at"\nkeep = "10d"\n',
    )
    now = datetime.now(UTC)
    logs_table(psql, [30] * 60 + [1], now=now)
    psql.execute("CREATE TABLE public.other AS SELECT * FROM public.logs")
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 20
        while not killed and time.monotonic() < deadline:
            row = psql_killer.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE 'DELETE FROM \"public\".\"logs\"%%' AND state = 'active'"
            ).fetchone()
            if row is not None:
                psql_killer.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                killed.append(row[0])
            time.sleep(0.02)

    import threading

    with psycopg.connect(psql.info.dsn, autocommit=True) as psql_killer:
        thread = threading.Thread(target=killer)
        thread.start()
        outcome = cleanup(make_app())
        thread.join()
    assert killed, "the DELETE was never seen running"
    assert (outcome.status, int(outcome.exit_code)) == ("failed", 1)
    assert outcome.message.startswith("cleanup policy failed: logs (cleanup of public.logs")
    left = ids(psql)
    assert 1 < len(left) <= 61 and 61 in left  # whole batches went, then it stopped
    assert (len(left) - 1) % 5 == 0
    assert ids(psql, "public.other") == [61]  # the next policy, on a new connection, ran
    again = cleanup(make_app(), "logs")
    assert again.status == "completed" and ids(psql) == [61]


def test_where_is_anded_and_may_hold_a_percent(
    project: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    configure(project, POLICY + "where = \"level LIKE 'in%' -- not the errors\"\n")
    now = datetime.now(UTC)
    logs_table(psql, [30, 30, 1], now=now)
    psql.execute("UPDATE public.logs SET level = 'error' WHERE id = 2")
    outcome = cleanup(make_app(), "logs")
    assert outcome.status == "completed", outcome.message
    assert ids(psql) == [2, 3]


def insert_run(
    psql: psycopg.Connection[Any], status: str, age_days: float, parent: int | None = None
) -> int:
    started = datetime.now(UTC) - timedelta(days=age_days)
    row = psql.execute(
        "INSERT INTO jobctl.runs (job, status, trigger, started_at, parent_id, host, pid,"
        " jobctl_version) VALUES ('sync', %s, 'manual', %s, %s, 'h', 1, 'test') RETURNING id",
        (status, started, parent),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_runs_retention_keeps_running_rows_and_takes_children_with_parents(
    project: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    configure(project, '[retention]\nruns = "30d"\n')
    old_done = insert_run(psql, "completed", 40)
    old_child = insert_run(psql, "completed", 40, parent=old_done)
    old_running = insert_run(psql, "running", 40)
    busy_parent = insert_run(psql, "failed", 40)
    busy_child = insert_run(psql, "running", 40, parent=busy_parent)
    young = insert_run(psql, "completed", 5)
    young_parent_old_child = insert_run(psql, "completed", 5)
    old_child_of_young = insert_run(psql, "completed", 40, parent=young_parent_old_child)
    dry = cleanup(make_app(), "runs", dry_run=True)
    assert dry.stats["policies"]["runs"]["would_delete"] == 2
    outcome = cleanup(make_app(), "runs")
    assert outcome.status == "completed", outcome.message
    assert outcome.counters["deleted"] == 2
    left = set(ids(psql, "jobctl.runs"))
    assert old_done not in left and old_child not in left
    assert {old_running, busy_parent, busy_child, young, old_child_of_young} <= left


def test_snapshot_rows_per_period_and_per_set(
    project: Path, make_app: Callable[[], App], psql: psycopg.Connection[Any]
) -> None:
    configure(
        project,
        '[snapshots.a]\ntable = "snap_a"\nkey = ["k"]\n'
        "query = 'SELECT 1 AS k WHERE :period_start < :period_end'\n"
        'retention = { day = "10d" }\n'
        '[snapshots.b]\ntable = "snap_b"\nkey = ["k"]\n'
        "query = 'SELECT 1 AS k WHERE :period_start < :period_end'\n",
    )
    psql.execute(
        "CREATE TABLE snap_a (period_type text, period_start date, k int,"
        " PRIMARY KEY (period_type, period_start, k))"
    )
    today = datetime.now(UTC).date()
    for period, age in (("day", 20), ("day", 5), ("week", 100), ("week", 800), ("month", 1000)):
        psql.execute("INSERT INTO snap_a VALUES (%s, %s, 1)", (period, today - timedelta(days=age)))
    outcome = cleanup(make_app())  # snap_b does not exist yet: skipped, not failed
    assert outcome.status == "completed", outcome.message
    rows = psql.execute("SELECT period_type, period_start FROM snap_a ORDER BY 1, 2").fetchall()
    assert rows == [
        ("day", today - timedelta(days=5)),
        ("month", today - timedelta(days=1000)),
        ("week", today - timedelta(days=100)),
    ]
    stats = outcome.stats["policies"]
    assert stats["snapshots.a"]["periods"]["day"]["deleted"] == 1
    assert stats["snapshots.a"]["periods"]["week"]["deleted"] == 1
    assert "skipped" in stats["snapshots.b"]
    # The schedules' table exists (sql/0006): its policy runs, with nothing to delete.
    assert "skipped" not in stats["schedules"]
    assert (stats["schedules"]["table"], stats["schedules"]["deleted"]) == ("jobctl.scheduled", 0)


def test_a_killed_cleanup_leaves_whole_batches_and_an_abandoned_run(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    # Each row the batch's select reads sleeps: batches of 2 take ~0.6 s each.
    configure(project, POLICY + 'batch_size = 2\nwhere = "pg_sleep(0.3) IS NOT NULL"\n')
    now = datetime.now(UTC)
    logs_table(psql, [30] * 10, now=now)
    proc = cli.popen("cleanup", "--policy", "logs")
    try:
        wait_until(lambda: len(ids(psql)) <= 6, timeout=60, what="two batches")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)  # the server notices the dead client and rolls its batch back
    wait_until(
        lambda: (
            psql.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'jobctl%'"
                " AND pid <> pg_backend_pid()"
            ).fetchone()
            == (0,)
        ),
        timeout=30,
        what="the killed run's connections to close",
    )
    left = ids(psql)
    assert len(left) % 2 == 0 and 0 < len(left) <= 6, left  # whole batches only
    result = cli("runs", "list", "--job", "cleanup", "--json")
    assert result.code == 0, result.stderr
    (run,) = json.loads(result.stdout)
    assert run["status"] == "abandoned"


def test_the_schedules_policy_removes_finished_rows_after_30_days_never_pending_ones(
    make_app: Callable[[], App], psql: psycopg.Connection[Any], project: Path
) -> None:
    """``jobctl.scheduled``: triggered, cancelled and failed rows finished over 30 days
    ago go; younger ones, and pending or running rows however old, stay."""
    configure(project, "")
    rows = [  # (status, days since it finished; None: not finished)
        ("triggered", 31),
        ("cancelled", 45),
        ("failed", 400),
        ("triggered", 29),
        ("failed", 1),
        ("pending", None),
        ("running", None),
    ]
    for i, (status, days) in enumerate(rows):
        psql.execute(
            "INSERT INTO jobctl.scheduled (job, run_at, timezone, created_at, status,"
            " finished_at) VALUES (%s, now() - interval '500 days', 'UTC',"
            " now() - interval '501 days', %s, now() - %s::interval)",
            (f"j{i}", status, None if days is None else timedelta(days=days)),
        )
    outcome = cleanup(make_app(), "schedules")
    assert outcome.status == "completed", outcome.message
    assert outcome.counters["deleted"] == 3
    left = psql.execute("SELECT job FROM jobctl.scheduled ORDER BY job").fetchall()
    assert [r[0] for r in left] == ["j3", "j4", "j5", "j6"]
