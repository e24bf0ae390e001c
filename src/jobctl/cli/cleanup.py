"""``jobctl cleanup``."""

from __future__ import annotations

from typing import Annotated

import typer

from jobctl.cli import options as opt
from jobctl.cli.jobs import exit_with
from jobctl.cli.state import State


def cleanup_command(
    ctx: typer.Context,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help="Only this policy: a [cleanup.NAME] table, runs, schedules or "
            "snapshots.SET [default: every one].",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Count what would go and the oldest row kept; delete nothing."
        ),
    ] = False,
    params: opt.Params = None,
    wait: opt.Wait = False,
    wait_timeout: opt.WaitTimeout = None,
    retries: opt.Retries = None,
    retry_delay: opt.RetryDelay = None,
    timeout: opt.Timeout = None,
    trigger: opt.Trigger = None,
    by: opt.By = None,
    force: opt.Force = False,
) -> None:
    """Delete rows older than each retention policy keeps, in bounded batches."""
    from jobctl.jobs.cleanup import CleanupArgs

    state: State = ctx.obj
    options = opt.from_command(locals(), dry_run=dry_run)
    exit_with(state.app.run_job("cleanup", options, CleanupArgs(policies=policy or [])))


def register(app: typer.Typer) -> None:
    app.command("cleanup")(cleanup_command)
