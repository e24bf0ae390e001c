"""No read command of the ledger scans the whole of ``jobctl.runs`` (issue 13).

A ledger of 200,000 runs over 20 jobs (``tests/fixtures/ledger.py``, made with
``generate_series`` in a few seconds, then ANALYZEd): every statement that ``runs
list`` (with and without ``--job``, ``--status``, ``--since``), ``runs show``, ``runs
gaps``, ``jobs list``, ``status``, ``check`` and ``metrics`` send — the sweep for
abandoned runs and the schema check included — is recorded as the library sends it,
then planned with ``EXPLAIN (FORMAT JSON)`` on the same parameters: no node of any
plan is a Seq Scan of ``runs``. (The times are measured by ``bench/bench_ledger.py``;
no test here is timed.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobctl.app import App
from jobctl.config import load_settings
from jobctl.db.engine import Database
from jobctl.db.job_state import ledger_totals
from jobctl.db.ledger import delete_old_runs, sweep_abandoned
from tests.fixtures import ledger as fixture

RUNS = 200_000


def build(db_url: str, runs: int) -> None:
    with psycopg.connect(db_url) as conn:
        made = fixture.build(conn, runs)
        conn.commit()
    assert made["runs"] == runs and made["children"] > 0


@pytest.fixture
def ledger_url(db_url: str) -> Iterator[str]:
    """``db_url`` holding the generated ledger, the running runs' locks held."""
    build(db_url, RUNS)
    holder = psycopg.connect(db_url)
    try:
        with psycopg.connect(db_url) as conn:
            fixture.hold_running_locks(holder, conn)
        yield db_url
    finally:
        holder.close()


def plan_of(conn: psycopg.Connection[Any], sql: str, params: Any) -> dict[str, Any]:
    row = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
    assert row is not None
    doc = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return dict(doc[0]["Plan"])


def test_no_read_command_scans_the_whole_ledger(ledger_url: str, tmp_path: Path) -> None:
    config = tmp_path / "jobctl.toml"
    config.write_text(fixture.config_text(ledger_url))
    settings = load_settings(config_path=config, environ={"HOME": str(tmp_path)})
    with psycopg.connect(ledger_url) as conn:
        parent = conn.execute("SELECT max(parent_id) FROM jobctl.runs").fetchone()
    assert parent is not None and parent[0] is not None
    scans: dict[str, list[str]] = {}
    planned = 0
    for command in fixture.read_commands(int(parent[0])):
        app = App(settings)
        try:
            with fixture.recording() as seen:
                command.call(app)
        finally:
            app.close()
        on_runs = [(s, p) for s, p in seen if fixture.EXPLAINABLE.match(s) and "runs" in s]
        if command.name.startswith(("runs", "jobs", "status", "check", "metrics")):
            assert on_runs, f"{command.name}: no statement on the ledger was recorded"
        with psycopg.connect(ledger_url) as conn:
            for sql, params in on_runs:
                planned += 1
                if fixture.seq_scans_of_runs(plan_of(conn, sql, params)):
                    scans.setdefault(command.name, []).append(" ".join(sql.split())[:160])
                conn.rollback()
    assert planned >= 30
    assert scans == {}


def test_run_totals_follow_every_change_of_the_ledger(db_url: str) -> None:
    """``metrics``' counts come from ``jobctl.run_totals`` (sql/0008's triggers): equal to
    a count over the ledger after inserts, a sweep, finished runs, heartbeats, cleanup's
    deletes (their cascade to children too) and a TRUNCATE."""

    def counted(conn: Any) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        runs = {
            (str(j), str(s)): int(n)
            for j, s, n in conn.exec_driver_sql(
                "SELECT job, status, count(*) FROM jobctl.runs GROUP BY job, status"
            ).fetchall()
        }
        kinds = ("total", "new", "updated", "unchanged", "errors", "removed", "deleted")
        records: dict[tuple[str, str], int] = {}
        rows = conn.exec_driver_sql(
            "SELECT job, "
            + ", ".join(f"sum(records_{k})" for k in kinds)
            + " FROM jobctl.runs WHERE status = 'completed' AND NOT dry_run GROUP BY job"
        ).fetchall()
        for row in rows:
            for kind, value in zip(kinds, row[1:], strict=True):
                records[(str(row[0]), kind)] = int(value)
        return runs, records

    def same(conn: Any) -> None:
        totals = ledger_totals(conn)
        assert (totals.runs, totals.records) == counted(conn)

    build(db_url, 20_000)
    db = Database(db_url)
    try:
        with db.begin() as conn:
            same(conn)
            # a run left by a dead process, swept; a running one finishing; a dry run
            conn.exec_driver_sql(
                "UPDATE jobctl.runs SET status = 'running', finished_at = NULL,"
                " lock_backend_pid = 1, lock_key = 1"
                " WHERE id = (SELECT max(id) FROM jobctl.runs WHERE job = 'cleanup')"
            )
            # (no lock is held here: the fixture's running runs are swept too)
            swept = sweep_abandoned(conn)
            assert len(swept) == 1 + len(fixture.RUNNING)
            same(conn)
            conn.exec_driver_sql(
                "UPDATE jobctl.runs SET status = 'completed', records_new = records_new + 7,"
                " dry_run = (job = 'sync_orders') WHERE id = ANY(%(ids)s)",
                {"ids": swept},
            )
            conn.exec_driver_sql(
                "UPDATE jobctl.runs SET heartbeat_at = now() WHERE job = 'sync_permits'"
            )
            same(conn)
        with db.begin() as conn:
            # the older half of the ledger, backfill parents with their children
            cutoff = conn.exec_driver_sql(
                "SELECT min(started_at) + (max(started_at) - min(started_at)) / 2 FROM jobctl.runs"
            ).scalar()
            parents, deleted = delete_old_runs(conn, cutoff, 10**9)
            assert parents > 0 and deleted > parents
            same(conn)
        with db.begin() as conn:
            conn.exec_driver_sql("TRUNCATE jobctl.runs")
            assert ledger_totals(conn).runs == {}
    finally:
        db.dispose()
