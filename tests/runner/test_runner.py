"""The runner, called as a library (no terminal): ledger rows, retries, timeout, slots."""

from __future__ import annotations

import os
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobctl.app import App
from jobctl.config import load_settings
from jobctl.errors import ExitCode, UsageError
from jobctl.runner import RunOptions


def make_app(
    project: Path, db_url: str, extra_toml: str = "", env: dict[str, str] | None = None
) -> App:
    if extra_toml:
        with (project / "jobctl.toml").open("a") as f:
            f.write("\n" + extra_toml)
    environ = {"DATABASE_URL": db_url, "HOME": str(project), **(env or {})}
    return App(load_settings(config_path=project / "jobctl.toml", environ=environ))


def row(psql: psycopg.Connection[Any], run_id: int | None) -> dict[str, Any]:
    assert run_id is not None
    cur = psql.cursor(row_factory=psycopg.rows.dict_row)
    result = cur.execute("SELECT * FROM jobctl.runs WHERE id = %s", (run_id,)).fetchone()
    assert result is not None
    return result


def test_completed_run_records_counters_and_log_tail(project: Path, db_url: str, psql) -> None:
    app = make_app(project, db_url)
    outcome = app.run("sleepy", RunOptions(params={"seconds": "0"}))
    assert outcome.status == "completed" and outcome.exit_code == ExitCode.OK
    r = row(psql, outcome.run_id)
    assert r["status"] == "completed"
    assert r["records_new"] == 1 and r["records_total"] == 1
    assert r["params"] == {"seconds": "0"}
    assert r["attempts"] == 1
    assert r["finished_at"] >= r["started_at"] and r["duration_ms"] >= 0
    assert r["trigger"] == "manual" and r["pid"] == os.getpid()
    assert any("sleeping 0.0s" in line for line in r["log_tail"])


def test_failure_records_error_and_traceback(project: Path, db_url: str, psql) -> None:
    outcome = make_app(project, db_url).run("boom", RunOptions())
    assert outcome.status == "failed" and outcome.exit_code == ExitCode.FAILED
    r = row(psql, outcome.run_id)
    assert r["error_message"] == "ValueError: the answer is not 42"
    assert "Traceback" in r["error_detail"] and "myjobs.py" in r["error_detail"]
    assert any("about to fail" in line for line in r["log_tail"])


def test_failed_job_rolls_back_its_transaction(project: Path, db_url: str, psql) -> None:
    app = make_app(project, db_url)
    ok = app.run("writer", RunOptions())
    bad = app.run("writer", RunOptions(params={"fail": "1"}))
    assert ok.status == "completed" and bad.status == "failed"
    marks = [r[0] for r in psql.execute("SELECT run_id FROM public.marks")]
    assert marks == [ok.run_id]


def test_transient_errors_are_retried(project: Path, db_url: str, psql) -> None:
    app = make_app(project, db_url)
    outcome = app.run(
        "flaky",
        RunOptions(params={"succeed_on": "3"}, retries=3, retry_delay=timedelta(milliseconds=10)),
    )
    assert outcome.status == "completed"
    assert row(psql, outcome.run_id)["attempts"] == 3
    assert row(psql, outcome.run_id)["records_total"] == 3


def test_retries_exhausted_fail_the_run(project: Path, db_url: str, psql) -> None:
    outcome = make_app(project, db_url).run(
        "flaky",
        RunOptions(params={"succeed_on": "9"}, retries=2, retry_delay=timedelta(milliseconds=10)),
    )
    assert outcome.status == "failed"
    r = row(psql, outcome.run_id)
    assert r["attempts"] == 3 and r["error_message"] == "blip on attempt 3"


def test_permanent_errors_are_not_retried(project: Path, db_url: str, psql) -> None:
    outcome = make_app(project, db_url).run(
        "boom", RunOptions(retries=5, retry_delay=timedelta(milliseconds=10))
    )
    assert row(psql, outcome.run_id)["attempts"] == 1


def test_timeout_fails_the_run_with_clear_message(project: Path, db_url: str, psql) -> None:
    outcome = make_app(project, db_url).run(
        "sleepy", RunOptions(params={"seconds": "10"}, timeout=timedelta(milliseconds=300))
    )
    assert outcome.status == "failed" and outcome.exit_code == ExitCode.FAILED
    assert row(psql, outcome.run_id)["error_message"] == "timed out after 0.3s"


def test_sigterm_during_run_marks_cancelled(project: Path, db_url: str, psql) -> None:
    app = make_app(project, db_url)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    outcome = app.run("sleepy", RunOptions(params={"seconds": "10"}))
    timer.join()
    assert outcome.status == "cancelled" and outcome.exit_code == ExitCode.SIGTERM
    assert row(psql, outcome.run_id)["status"] == "cancelled"
    # The lock was released: the next run goes ahead.
    assert app.run("sleepy", RunOptions(params={"seconds": "0"})).status == "completed"


def test_disabled_job_records_skipped_and_exits_zero(project: Path, db_url: str, psql) -> None:
    app = make_app(project, db_url, env={"JOBCTL_SLEEPY_ENABLED": "0"})
    outcome = app.run("sleepy", RunOptions())
    assert outcome.status == "skipped" and outcome.exit_code == ExitCode.OK
    assert "disabled" in row(psql, outcome.run_id)["error_message"]


def test_lock_contention_records_skipped_with_holder(project: Path, db_url: str, psql) -> None:
    from jobctl.db.locks import JobLock

    app = make_app(project, db_url)
    holder = JobLock(app.db, "sleepy")
    assert holder.try_acquire()
    try:
        outcome = app.run("sleepy", RunOptions(params={"seconds": "0"}))
    finally:
        holder.release()
    assert outcome.status == "skipped" and outcome.exit_code == ExitCode.LOCKED
    assert "already running" in outcome.message
    # The holder has no run row yet: its lock connection still names host and pid.
    import socket

    assert f"host {socket.gethostname()[:40]} (pid {os.getpid()})" in outcome.message
    assert row(psql, outcome.run_id)["status"] == "skipped"


def test_wait_for_the_lock(project: Path, db_url: str) -> None:
    from jobctl.db.locks import JobLock

    app = make_app(project, db_url)
    holder = JobLock(app.db, "sleepy")
    assert holder.try_acquire()
    threading.Timer(0.5, holder.release).start()
    outcome = app.run(
        "sleepy", RunOptions(params={"seconds": "0"}, wait=True, wait_timeout=timedelta(seconds=10))
    )
    assert outcome.status == "completed"


def test_unknown_job_is_a_usage_error(project: Path, db_url: str) -> None:
    with pytest.raises(UsageError, match="unknown job 'nope'"):
        make_app(project, db_url).run("nope", RunOptions())


TICK_TOML = '[jobs.ticker]\nschedule = "0 6 * * *"\n'


def test_slot_runs_once_then_skips(project: Path, db_url: str, psql) -> None:
    app = make_app(project, db_url, '[jobs.writer]\nschedule = "0 6 * * *"\n')
    tick = datetime(2026, 11, 20, 6, 0, 7, tzinfo=UTC)
    first = app.run("writer", RunOptions(trigger="timer", now=tick))
    second = app.run("writer", RunOptions(trigger="timer", now=tick + timedelta(seconds=30)))
    forced = app.run("writer", RunOptions(trigger="timer", now=tick, force=True))
    slot = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    assert first.status == "completed" and first.scheduled_for == slot
    assert second.status == "skipped" and second.exit_code == ExitCode.OK
    assert "slot already done" in second.message
    assert forced.status == "completed"
    assert row(psql, second.run_id)["scheduled_for"] == slot
    # A manual run serves no slot.
    manual = app.run("writer", RunOptions(now=tick))
    assert row(psql, manual.run_id)["scheduled_for"] is None


def test_failed_slot_can_be_retried_by_the_next_tick(project: Path, db_url: str) -> None:
    app = make_app(project, db_url, '[jobs.writer]\nschedule = "0 6 * * *"\n')
    tick = datetime(2026, 11, 20, 6, 1, tzinfo=UTC)
    assert (
        app.run("writer", RunOptions(trigger="timer", now=tick, params={"fail": "1"})).status
        == "failed"
    )
    assert app.run("writer", RunOptions(trigger="timer", now=tick)).status == "completed"


def test_misfire_grace_skips_late_tick(project: Path, db_url: str, psql) -> None:
    app = make_app(
        project,
        db_url,
        '[jobs.writer]\nschedule = "0 6 * * *"\ncatchup = "none"\nmisfire_grace = "1h"\n',
    )
    late = app.run(
        "writer", RunOptions(trigger="timer", now=datetime(2026, 11, 20, 8, 0, tzinfo=UTC))
    )
    assert late.status == "skipped" and late.exit_code == ExitCode.OK
    assert late.message.startswith("missed")
    on_time = app.run(
        "writer", RunOptions(trigger="timer", now=datetime(2026, 11, 21, 6, 30, tzinfo=UTC))
    )
    assert on_time.status == "completed"


def test_invocation_id_means_timer_trigger(project: Path, db_url: str, psql) -> None:
    app = make_app(project, db_url, env={"INVOCATION_ID": "abc"})
    outcome = app.run("sleepy", RunOptions(params={"seconds": "0"}))
    assert row(psql, outcome.run_id)["trigger"] == "timer"


def test_secret_in_error_never_stored(project: Path, db_url: str, psql) -> None:
    (project / "myjobs.py").write_text(
        (project / "myjobs.py").read_text() + "\n@jobctl.job('leaky')\ndef leaky(ctx):\n"
        "    ctx.log.info('calling https://api.example/x?token=s3cr3tvalue&a=1')\n"
        "    raise RuntimeError('failed for https://u:hunter2pw@h/x?token=s3cr3tvalue')\n"
    )
    outcome = make_app(project, db_url).run("leaky", RunOptions())
    r = row(psql, outcome.run_id)
    blob = repr(r)
    assert "s3cr3tvalue" not in blob and "hunter2pw" not in blob
    assert "token=***" in r["error_message"]
