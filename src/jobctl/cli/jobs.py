"""``jobctl run NAME`` and ``jobctl jobs list``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from jobctl.cli import options as opt
from jobctl.cli import render
from jobctl.cli.state import State
from jobctl.runner import RunOutcome

jobs_app = typer.Typer(help="Configured jobs.", no_args_is_help=True)


def report_outcome(outcome: RunOutcome) -> None:
    """One line on stderr saying how the run ended; the exit code says the rest."""
    counters = outcome.counters
    moved = ""
    if counters and any(counters.values()):
        moved = " — " + ", ".join(f"{k} {v}" for k, v in counters.items() if v)
    run = f"run {outcome.run_id}" if outcome.run_id else "no run"
    message = f": {outcome.message}" if outcome.message else ""
    style = render.STATUS_STYLE.get(outcome.status, "")
    render.err.print(
        f"{outcome.job}: [{style}]{outcome.status}[/] ({run}){message}{moved}",
        markup=True,
        highlight=False,
        soft_wrap=True,
    )


def exit_with(outcome: RunOutcome) -> NoReturn:
    """Say how the run ended (stderr) and leave with its exit code."""
    report_outcome(outcome)
    raise typer.Exit(int(outcome.exit_code))


def run_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A job registered by your jobs module.")],
    params: opt.Params = None,
    wait: opt.Wait = False,
    wait_timeout: opt.WaitTimeout = None,
    retries: opt.Retries = None,
    retry_delay: opt.RetryDelay = None,
    timeout: opt.Timeout = None,
    trigger: opt.Trigger = None,
    force: opt.Force = False,
) -> None:
    """Run a job registered by your own code, through the runner (lock, ledger, retries)."""
    state: State = ctx.obj
    options = opt.from_command(locals())
    outcome = state.app.run(name, options)
    exit_with(outcome)


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON array on stdout.")] = False,
) -> None:
    """Each job: enabled, schedule in words, time zone, next fire times, last run, running now."""
    state: State = ctx.obj
    infos = state.app.jobs_overview()
    if as_json:
        render.print_json([_job_json(i) for i in infos])
        return
    now = datetime.now(UTC)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("job", no_wrap=True, max_width=14, overflow="ellipsis")
    table.add_column("on", no_wrap=True)
    table.add_column("schedule", overflow="fold", max_width=30)
    table.add_column("last", no_wrap=True)
    table.add_column("ok", no_wrap=True)
    table.add_column("running", overflow="fold", max_width=16)
    for info in infos:
        schedule = "-"
        if info.schedule:
            nxt = (
                info.next_fire_times[0]
                .astimezone(ZoneInfo(info.timezone))
                .strftime("%a %m-%d %H:%M")
                if info.next_fire_times
                else "-"
            )
            schedule = f"{info.schedule_words}; next {nxt}"
        running = "-"
        if info.running:
            running = f"run {info.running['id']} {info.running['host']} pid {info.running['pid']}"
        table.add_row(
            info.name,
            "yes" if info.enabled else "no",
            schedule,
            render.status_text(info.last_status),
            render.ago(info.last_success, now),
            running,
        )
    render.out.print(table)


def _job_json(info: Any) -> dict[str, Any]:
    return {
        "name": info.name,
        "description": info.description,
        "builtin": info.builtin,
        "enabled": info.enabled,
        "schedule": info.schedule,
        "schedule_words": info.schedule_words,
        "timezone": info.timezone,
        "next_fire_times": info.next_fire_times,
        "last_status": info.last_status,
        "last_run_id": info.last_run_id,
        "last_success": info.last_success,
        "running": info.running,
    }


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.add_typer(jobs_app, name="jobs")
