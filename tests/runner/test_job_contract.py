"""The runner ↔ job contract (``jobctl.jobspec``): a built-in-style job is one module's
``SPEC`` (a typed plan, a run), run through ``App.run_job`` with its params stored,
its counters recorded and a child started through ``ctx.run_child``; and a run's
exit code is its error's own (``errors.exit_code_of``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from jobctl.app import App
from jobctl.config import Settings, load_settings
from jobctl.context import RunContext
from jobctl.errors import ExitCode, UsageError
from jobctl.jobspec import ChildRequest, JobSpec, Planning, RunStatus, Trigger
from jobctl.registry import Jobs, builtin_names, load_user_jobs
from jobctl.runner import RunOptions
from tests.conftest import Cli

# -- a throwaway built-in-style job: what docs/adding-a-job.md describes ----------


@dataclass(frozen=True)
class CountArgs:
    """The job's own arguments (what its command would parse)."""

    n: int = 1
    child_seconds: str | None = None


@dataclass(frozen=True)
class CountPlan:
    n: int
    child_seconds: str | None
    params: Mapping[str, str] = field(default_factory=dict)


def count_plan(settings: Settings, args: CountArgs, planning: Planning) -> CountPlan:
    if args.n < 0:
        raise UsageError(f"--n {args.n} must be 0 or more")
    params = {"n": str(args.n)}
    if planning.dry_run:
        params["dry_run"] = "true"
    return CountPlan(args.n, args.child_seconds, params)


def count_run(ctx: RunContext, plan: CountPlan) -> None:
    ctx.partition = f"n={plan.n}"
    ctx.counters.add({"total": plan.n, "new": plan.n})
    if plan.child_seconds is not None:
        # A user job as the child: its default plan (none), params stored with it.
        child = ctx.run_child(
            "sleepy",
            ChildRequest(params={"seconds": plan.child_seconds}, trigger=Trigger.BACKFILL),
        )
        ctx.stats["child"] = {"run_id": child.run_id, "status": child.status}
        ctx.counters.add({"updated": child.counters.get("new", 0)})


COUNT = JobSpec(
    "count",
    count_run,
    count_plan,
    default_args=CountArgs(),
    plan_type=CountPlan,
    description="Counts to n (a test's built-in-style job)",
    builtin=True,
)


@pytest.fixture
def app(project: Path, db_url: str) -> Iterator[App]:
    environ = {"DATABASE_URL": db_url, "HOME": str(project)}
    made = App(load_settings(config_path=project / "jobctl.toml", environ=environ))
    # The one registration line, here for the test: the job among the built-ins.
    user = load_user_jobs(made.settings.jobs_module, made.settings.jobs_path)
    made.jobs = Jobs(builtin_names(), {**user, "count": COUNT})
    yield made
    made.close()


def runs(psql: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return (
        psql.cursor(row_factory=dict_row)
        .execute("SELECT * FROM jobctl.runs ORDER BY id")
        .fetchall()
    )


def test_a_built_in_style_job_plans_runs_and_starts_a_child(
    app: App, psql: psycopg.Connection[Any]
) -> None:
    outcome = app.run_job("count", RunOptions(), CountArgs(n=3, child_seconds="0"))
    assert outcome.status == RunStatus.COMPLETED and outcome.exit_code == ExitCode.OK
    assert outcome.counters["total"] == 3 and outcome.counters["updated"] == 1
    parent, child = runs(psql)
    assert parent["job"] == "count" and parent["params"] == {"n": "3"}
    assert parent["status"] == "completed" and parent["partition"] == "n=3"
    assert (parent["records_total"], parent["records_new"], parent["records_updated"]) == (3, 3, 1)
    assert parent["stats"]["child"] == {"run_id": child["id"], "status": "completed"}
    assert f"count: run {parent['id']} started (trigger manual)" in parent["log_tail"][0]
    assert child["job"] == "sleepy" and child["parent_id"] == parent["id"]
    assert child["trigger"] == "backfill" and child["params"] == {"seconds": "0"}
    assert child["status"] == "completed" and child["records_new"] == 1


def test_a_bad_argument_exits_2_before_any_run_row(app: App, psql: psycopg.Connection[Any]) -> None:
    with pytest.raises(UsageError, match="--n -1 must be 0 or more") as refused:
        app.run_job("count", RunOptions(), CountArgs(n=-1))
    assert refused.value.exit_code == ExitCode.USAGE
    assert runs(psql) == []


def test_a_run_without_arguments_plans_with_the_defaults_in_the_run(
    app: App, psql: psycopg.Connection[Any]
) -> None:
    outcome = app.run("count", RunOptions(trigger="cron", dry_run=True))
    assert outcome.status == "completed" and outcome.counters["total"] == 1
    (row,) = runs(psql)
    assert row["trigger"] == "cron" and row["params"] == {}  # planned inside the run
    assert row["dry_run"] is True


def test_a_plan_of_another_job_is_refused(app: App, psql: psycopg.Connection[Any]) -> None:
    from jobctl.jobspec import NoPlan

    outcome = app.run("count", RunOptions(plan=NoPlan()))
    assert outcome.status == "failed" and "takes a CountPlan, not a NoPlan" in outcome.message


# -- exit codes: the error's own, decided in one place ----------------------------

UNREACHABLE_JOBS = '''
import jobctl
from jobctl.errors import DatabaseUnreachable


@jobctl.job("reporting")
def reporting(ctx):
    """Reads a second database, which is down."""
    raise DatabaseUnreachable("cannot connect to the reporting database at db.example:5432")
'''


def test_a_job_raising_database_unreachable_exits_2_and_fails_its_run(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    (project / "jobctl.toml").write_text('timezone = "UTC"\njobs_module = "reportjobs"\n')
    (project / "reportjobs.py").write_text(UNREACHABLE_JOBS)
    result = cli("run", "reporting")
    assert result.code == 2, result.stderr
    (row,) = runs(psql)
    assert row["job"] == "reporting" and row["status"] == "failed"
    assert row["error_message"] == "cannot connect to the reporting database at db.example:5432"
    assert "Traceback" in row["error_detail"]


def test_exit_code_of_reads_the_error() -> None:
    from jobctl.errors import (
        ConfigError,
        DatabaseError,
        DatabaseUnreachable,
        JobError,
        RunCancelled,
        exit_code_of,
    )

    assert exit_code_of(DatabaseUnreachable("down")) == ExitCode.USAGE
    assert exit_code_of(DatabaseError("query failed")) == ExitCode.FAILED
    assert exit_code_of(ConfigError("bad", key="k")) == ExitCode.USAGE
    assert exit_code_of(JobError("failed")) == ExitCode.FAILED
    assert exit_code_of(RunCancelled("SIGTERM", ExitCode.SIGTERM)) == ExitCode.SIGTERM
    assert exit_code_of(KeyboardInterrupt()) == ExitCode.SIGINT
    assert exit_code_of(ValueError("x")) == ExitCode.FAILED


def test_a_run_taken_over_while_it_ran_ends_abandoned() -> None:
    from jobctl.runner import Ending, _abandoned

    end = _abandoned("sleepy", 7, Ending(RunStatus.COMPLETED, ExitCode.OK, None, "trace"))
    assert (end.status, end.code, end.detail) == ("abandoned", ExitCode.FAILED, "trace")
    assert end.message == (
        "run 7 was marked abandoned by another process while it ran (its lock connection was lost)"
    )
