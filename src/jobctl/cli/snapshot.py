"""``jobctl snapshot``."""

from __future__ import annotations

from typing import Annotated

import typer

from jobctl.cli import options as opt
from jobctl.cli.jobs import exit_with
from jobctl.cli.state import State


def snapshot_command(
    ctx: typer.Context,
    period: Annotated[
        list[str] | None,
        typer.Option(
            "--period",
            help="day, week or month: the period containing --date [default: the day, "
            "plus the week / month that ended on it].",
        ),
    ] = None,
    on_date: Annotated[
        str | None,
        typer.Option("--date", help="YYYY-MM-DD [default: yesterday in the configured zone]."),
    ] = None,
    snapshot_set: Annotated[list[str] | None, typer.Option("--set", help="Only this set.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Compute, write nothing.")] = False,
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
    """Compute snapshot sets for day / week / month periods (re-running replaces a period)."""
    from jobctl.jobs.snapshot import SnapshotArgs

    state: State = ctx.obj
    args = SnapshotArgs(sets=snapshot_set or [], on_date=on_date, periods=period or [])
    options = opt.from_command(locals(), dry_run=dry_run)
    exit_with(state.app.run_job("snapshot", options, args))


def register(app: typer.Typer) -> None:
    app.command("snapshot")(snapshot_command)
