"""Per-job catch-up (``catchup = all | latest | none``): the runner in-process, fixed clocks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from jobctl.app import App
from jobctl.config import load_settings
from jobctl.errors import ExitCode
from jobctl.jobs.snapshot import SnapshotArgs
from jobctl.jobs.sync import SyncArgs
from jobctl.runner import RunOptions
from tests.fixtures.example import example_project

JOBS = '''"""Jobs for the catch-up tests: each records the slot it served."""

from sqlalchemy import text

import jobctl


def _record(ctx: jobctl.RunContext) -> dict[str, int]:
    ctx.conn.execute(
        text("INSERT INTO public.served (job, run_id, slot) VALUES (:j, :r, :s)"),
        {"j": ctx.job, "r": ctx.run_id, "s": ctx.scheduled_for},
    )
    return {"new": 1}


@jobctl.job("daily", date_based=True)
def daily(ctx: jobctl.RunContext) -> dict[str, int]:
    """Works on the date of its slot."""
    return _record(ctx)


@jobctl.job("plain")
def plain(ctx: jobctl.RunContext) -> dict[str, int]:
    """Does not depend on the date."""
    return _record(ctx)
'''

DAY0 = datetime(2026, 11, 16, 6, 0, tzinfo=UTC)  # a 06:00 UTC slot


def slot(n: int) -> datetime:
    return DAY0 + timedelta(days=n)


@pytest.fixture
def make_app(
    tmp_path: Path, db_url: str, psql: psycopg.Connection[Any]
) -> Iterator[Callable[[str], App]]:
    psql.execute(
        "CREATE TABLE public.served (ord bigserial, job text, run_id bigint, slot timestamptz)"
    )
    (tmp_path / "catchjobs.py").write_text(JOBS)
    apps: list[App] = []

    def make(jobs_toml: str) -> App:
        (tmp_path / "jobctl.toml").write_text(
            'timezone = "UTC"\njobs_module = "catchjobs.py"\n\n' + jobs_toml
        )
        environ = {"DATABASE_URL": db_url, "HOME": str(tmp_path)}
        apps.append(App(load_settings(config_path=tmp_path / "jobctl.toml", environ=environ)))
        return apps[-1]

    yield make
    for app in apps:
        app.close()


def runs(psql: psycopg.Connection[Any], **where: Any) -> list[dict[str, Any]]:
    cur = psql.cursor(row_factory=dict_row)
    clause = " AND ".join(f"{k} = %({k})s" for k in where) or "true"
    return cur.execute(f"SELECT * FROM jobctl.runs WHERE {clause} ORDER BY id", where).fetchall()


def served(psql: psycopg.Connection[Any], after_run: int = 0) -> list[tuple[int, datetime]]:
    return psql.execute(
        "SELECT run_id, slot FROM public.served WHERE run_id > %s ORDER BY ord", (after_run,)
    ).fetchall()


def seed(app: App, job: str, *slots: datetime) -> int:
    """Completed runs for these slots (as a backfill would leave them); returns the last id."""
    last = 0
    for s in slots:
        outcome = app.run(job, RunOptions(trigger="backfill", scheduled_for=s))
        assert outcome.status == "completed", outcome.message
        last = outcome.run_id or 0
    return last


def tick(app: App, job: str, at: datetime) -> Any:
    return app.run(job, RunOptions(trigger="timer", now=at))


def test_all_runs_the_missed_slots_oldest_first_as_children(
    make_app: Callable[[str], App], psql: psycopg.Connection[Any]
) -> None:
    app = make_app('[jobs.daily]\nschedule = "0 6 * * *"\ncatchup = "all"\n')
    # It ran every day up to DAY0; then the host was down for three days.
    seeded = seed(app, "daily", *[slot(n) for n in range(-6, 1)])
    outcome = tick(app, "daily", slot(4) + timedelta(seconds=20))
    assert outcome.status == "completed" and outcome.exit_code == ExitCode.OK
    assert outcome.scheduled_for == slot(4)
    parent = runs(psql, id=outcome.run_id)[0]
    assert parent["status"] == "completed" and parent["scheduled_for"] == slot(4)
    children = runs(psql, parent_id=outcome.run_id)
    assert [c["scheduled_for"] for c in children] == [slot(1), slot(2), slot(3)]
    assert {c["status"] for c in children} == {"completed"}
    assert {c["job"] for c in children} == {"daily"}
    # Oldest first, then the tick's own slot.
    assert served(psql, seeded) == [
        *[(c["id"], c["scheduled_for"]) for c in children],
        (outcome.run_id, slot(4)),
    ]
    assert children[-1]["finished_at"] <= parent["finished_at"]

    # The same tick again (a second host, a scheduler firing twice): nothing runs.
    again = tick(app, "daily", slot(4) + timedelta(seconds=50))
    assert again.status == "skipped" and "slot already done" in again.message
    assert runs(psql, parent_id=again.run_id) == []
    assert len(served(psql, seeded)) == 4


def test_all_only_looks_back_over_the_catchup_window(
    make_app: Callable[[str], App], psql: psycopg.Connection[Any]
) -> None:
    app = make_app('[jobs.daily]\nschedule = "0 6 * * *"\ncatchup = "all"\ncatchup_window = "3d"\n')
    outcome = tick(app, "daily", slot(0) + timedelta(seconds=20))  # never ran before
    assert outcome.status == "completed"
    children = runs(psql, parent_id=outcome.run_id)
    assert [c["scheduled_for"] for c in children] == [slot(-2), slot(-1)]


def test_all_for_a_job_that_does_not_depend_on_the_date_runs_the_latest_only(
    make_app: Callable[[str], App], psql: psycopg.Connection[Any]
) -> None:
    app = make_app('[jobs.plain]\nschedule = "0 6 * * *"\ncatchup = "all"\n')
    seeded = seed(app, "plain", slot(0))
    outcome = tick(app, "plain", slot(4) + timedelta(seconds=20))
    assert outcome.status == "completed"
    assert runs(psql, parent_id=outcome.run_id) == []
    assert served(psql, seeded) == [(outcome.run_id, slot(4))]


def test_latest_just_runs_the_late_tick(
    make_app: Callable[[str], App], psql: psycopg.Connection[Any]
) -> None:
    app = make_app('[jobs.daily]\nschedule = "0 6 * * *"\n')  # catchup = "latest" by default
    seeded = seed(app, "daily", slot(0))
    outcome = tick(app, "daily", slot(4) + timedelta(hours=5))  # late, still slot 4
    assert outcome.status == "completed" and outcome.scheduled_for == slot(4)
    assert runs(psql, parent_id=outcome.run_id) == []
    assert served(psql, seeded) == [(outcome.run_id, slot(4))]


def test_none_with_misfire_grace_skips_a_tick_that_is_too_late(
    make_app: Callable[[str], App], psql: psycopg.Connection[Any]
) -> None:
    app = make_app('[jobs.daily]\nschedule = "0 6 * * *"\ncatchup = "none"\nmisfire_grace = "1h"\n')
    assert tick(app, "daily", slot(0) + timedelta(seconds=20)).status == "completed"
    late = tick(app, "daily", slot(4) + timedelta(hours=2))
    assert late.status == "skipped" and late.exit_code == ExitCode.OK
    assert late.message.startswith("missed")
    assert "2h" in late.message and "1h" in late.message
    row = runs(psql, id=late.run_id)[0]
    assert row["status"] == "skipped" and row["scheduled_for"] == slot(4)
    assert row["error_message"].startswith("missed")
    assert runs(psql, parent_id=late.run_id) == []
    assert [s for _, s in served(psql)] == [slot(0)]  # nothing else ran
    # Within the grace period the tick runs (and only its own slot).
    on_time = tick(app, "daily", slot(5) + timedelta(minutes=59))
    assert on_time.status == "completed" and on_time.scheduled_for == slot(5)
    assert [s for _, s in served(psql)] == [slot(0), slot(5)]


def test_all_reruns_a_slot_that_only_a_dry_run_served(
    make_app: Callable[[str], App], psql: psycopg.Connection[Any]
) -> None:
    app = make_app('[jobs.daily]\nschedule = "0 6 * * *"\ncatchup = "all"\ncatchup_window = "3d"\n')
    seed(app, "daily", slot(-1), slot(0))
    dry = app.run("daily", RunOptions(trigger="backfill", scheduled_for=slot(1), dry_run=True))
    assert dry.status == "completed"
    assert runs(psql, id=dry.run_id)[0]["dry_run"] is True
    outcome = tick(app, "daily", slot(2) + timedelta(seconds=20))
    assert outcome.status == "completed", outcome.message
    children = runs(psql, parent_id=outcome.run_id)
    assert [(c["scheduled_for"], c["status"], c["dry_run"]) for c in children] == [
        (slot(1), "completed", False)
    ]


@pytest.fixture
def example_app(tmp_path: Path, db_url: str) -> Iterator[App]:
    example_project(tmp_path, date(2026, 10, 15))
    environ = {"DATABASE_URL": db_url, "HOME": str(tmp_path)}
    app = App(load_settings(config_path=tmp_path / "jobctl.toml", environ=environ))
    yield app
    app.close()


def test_snapshot_catches_up_the_days_it_missed(
    example_app: App, psql: psycopg.Connection[Any]
) -> None:
    """The example's snapshot job (daily 02:00 UTC, catchup = all) after an outage: a slot
    at 02:00 UTC on day D works on D - 2, the last day that has ended in Toronto then."""
    app = example_app
    synced = app.run_job("sync", RunOptions(), SyncArgs(sources=[], on_date="2026-10-09"))
    assert synced.status == "completed", synced.message
    # Computed by hand for 10-02 .. 10-04 (the slots of 10-04 .. 10-06 are covered).
    for day in ("2026-10-02", "2026-10-03", "2026-10-04"):
        done = app.run_job("snapshot", RunOptions(), SnapshotArgs(sets=[], on_date=day, periods=[]))
        assert done.status == "completed", done.message
    at = datetime(2026, 10, 10, 2, 0, 30, tzinfo=UTC)
    outcome = app.run("snapshot", RunOptions(trigger="timer", now=at))
    assert outcome.status == "completed", outcome.message
    assert outcome.scheduled_for == datetime(2026, 10, 10, 2, 0, tzinfo=UTC)
    assert runs(psql, id=outcome.run_id)[0]["partition"] == "2026-10-08"
    children = runs(psql, parent_id=outcome.run_id)
    assert [c["partition"] for c in children] == ["2026-10-05", "2026-10-06", "2026-10-07"]
    assert [c["scheduled_for"] for c in children] == [
        datetime(2026, 10, d, 2, 0, tzinfo=UTC) for d in (7, 8, 9)
    ]
    assert {c["status"] for c in children} == {"completed"}
    days = psql.execute(
        "SELECT DISTINCT period_start FROM snap_permits_by_ward WHERE period_type = 'day'"
        " ORDER BY 1"
    ).fetchall()
    assert [d for (d,) in days] == [date(2026, 10, n) for n in range(2, 9)]
