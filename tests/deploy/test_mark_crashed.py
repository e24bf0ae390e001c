"""``jobctl runs mark-crashed`` (the OnFailure= hook of the generated systemd units)
against a real PostgreSQL: what the ledger and the alerts say afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import Cli

ALERTS = (
    '\n[alerts]\ndefault = ["log"]\n[alerts.channels.log]\ntype = "file"\npath = "alerts.txt"\n'
)


def setup(project: Path, cli: Cli) -> None:
    with (project / "jobctl.toml").open("a") as f:
        f.write(ALERTS)
    assert cli("db", "upgrade").code == 0


def killed_run(psql: psycopg.Connection[Any], trigger: str) -> None:
    """What an OOM kill leaves: a running row of sleepy whose lock backend is gone."""
    psql.execute(
        "INSERT INTO jobctl.runs (job, trigger, status, host, pid, jobctl_version,"
        " lock_backend_pid, lock_key) VALUES ('sleepy', %s, 'running', 'h', 1, 't',"
        " 999999, 12345)",
        (trigger,),
    )


def runs(psql: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return psql.execute(
        "SELECT id, job, status, error_message FROM jobctl.runs ORDER BY id"
    ).fetchall()


def test_a_killed_run_is_marked_abandoned_and_alerted(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    setup(project, cli)
    killed_run(psql, "timer")
    result = cli(
        "runs",
        "mark-crashed",
        "sleepy",
        "--unit",
        "jobctl-sleepy.service",
        "--result",
        "oom-kill",
        "--exit-status",
        "9",
        "--json",
    )
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    (dead,) = report["abandoned"]
    assert report["failed_run"] is None
    assert runs(psql)[0][:3] == (dead, "sleepy", "abandoned")
    alert = (project / "alerts.txt").read_text()
    assert f"FAILED: sleepy (run {dead})" in alert and "status:    abandoned" in alert


def test_a_unit_that_failed_before_jobctl_recorded_a_run_gets_a_failed_row(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    setup(project, cli)
    result = cli(
        "runs",
        "mark-crashed",
        "sleepy",
        "--unit",
        "jobctl-sleepy.service",
        "--result",
        "exit-code",
        "--exit-status",
        "203",
    )
    assert result.code == 0, result.stderr
    ((run_id, job, status, error),) = runs(psql)
    assert (job, status) == ("sleepy", "failed")
    assert error == (
        "jobctl-sleepy.service failed (result exit-code, exit status 203) before jobctl"
        " recorded a run"
    )
    assert f"FAILED: sleepy (run {run_id})" in (project / "alerts.txt").read_text()


def test_runs_jobctl_recorded_itself_are_left_alone(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    setup(project, cli)
    for status in ("1", "143"):
        result = cli(
            "runs", "mark-crashed", "sleepy", "--result", "exit-code", "--exit-status", status
        )
        assert result.code == 0 and "recorded the run and its alerts itself" in result.stderr
    assert runs(psql) == []
    assert not (project / "alerts.txt").exists()


def test_an_unknown_job_exits_2_and_writes_nothing(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    setup(project, cli)
    result = cli("runs", "mark-crashed", "no_such_job", "--result", "oom-kill")
    assert result.code == 2 and "no_such_job" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert runs(psql) == []


def test_the_schedule_workers_hook_sweeps_every_job_and_writes_no_row_of_its_own(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    setup(project, cli)
    killed_run(psql, "schedule")  # the worker was OOM-killed while it ran a schedule
    killed = cli("runs", "mark-crashed", "schedule-worker", "--result", "oom-kill", "--json")
    assert killed.code == 0, killed.stderr
    assert json.loads(killed.stdout)["abandoned"] == [runs(psql)[0][0]]
    assert runs(psql)[0][2] == "abandoned"
    # nothing was running: no row for a job that does not exist
    again = cli(
        "runs", "mark-crashed", "schedule-worker", "--result", "exit-code", "--exit-status", "2"
    )
    assert again.code == 0 and "no run of it was running" in again.stderr
    assert len(runs(psql)) == 1
