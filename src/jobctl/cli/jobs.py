"""``jobctl run NAME`` and ``jobctl jobs list``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from zoneinfo import ZoneInfo

import typer

from jobctl.cli import options as opt
from jobctl.cli import render
from jobctl.cli.state import State
from jobctl.jobspec import RunStatus

if TYPE_CHECKING:
    from rich.table import Table

    from jobctl.runner import RunOutcome

jobs_app = typer.Typer(help="Configured jobs.", no_args_is_help=True)


OUTCOME_LEVEL: dict[str, str] = {
    RunStatus.FAILED: "error",
    RunStatus.ABANDONED: "error",
    RunStatus.CANCELLED: "warning",
}


def report_outcome(outcome: RunOutcome) -> None:
    """One line on stderr saying how the run ended; the exit code says the rest.

    It is the one place a run's end (and a skip's reason) is told on stderr, in
    text or, under ``--log-format json``, as a JSON line with the counters as fields.
    """
    counters = outcome.counters
    moved = ""
    if counters and any(counters.values()):
        moved = " — " + ", ".join(f"{k} {v}" for k, v in counters.items() if v)
    run = f"run {outcome.run_id}" if outcome.run_id else "no run"
    message = f": {outcome.message}" if outcome.message else ""
    head, tail = f"{outcome.job}: ", f" ({run}){message}{moved}"
    if render.json_logs():
        render.say(
            head + outcome.status + tail,
            level=OUTCOME_LEVEL.get(outcome.status, "info"),
            action="run.outcome",
            run_id=outcome.run_id,
            job=outcome.job,
            status=outcome.status,
            exit_code=int(outcome.exit_code),
            counters=dict(counters or {}),
        )
        return
    if render.write_plain(head + outcome.status + tail):
        return  # what rich would write off a terminal, without importing it
    from rich.text import Text

    line = Text(head)
    line.append(outcome.status, style=render.STATUS_STYLE.get(outcome.status, ""))
    line.append(tail)  # plain text: a message with [brackets] is not rich markup
    render.err.print(line, soft_wrap=True)


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
    by: opt.By = None,
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
        from jobctl.shapes import job_json

        render.print_json([job_json(i) for i in infos])
        return
    render.out.print(jobs_table(infos, datetime.now(UTC)))


def jobs_table(infos: list[Any], now: datetime) -> Table:
    """One row per job, several lines high: the three next fire times one under another,
    the schedule's zone under its words, the last success and a run in progress under
    the last status. That keeps every value whole at 80 columns."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("job", no_wrap=True, max_width=20, overflow="ellipsis")
    table.add_column("on", no_wrap=True)
    table.add_column("schedule", overflow="fold", min_width=20)
    table.add_column("next", no_wrap=True)
    table.add_column("last run", overflow="fold", min_width=12, max_width=24)
    for info in infos:
        schedule, nxt = Text("-"), "-"
        if info.schedule:
            zone = ZoneInfo(info.timezone)
            words = info.schedule_words or info.schedule
            # The zone on a line of its own: the words then fit one line at 80 columns.
            schedule = Text(words.removesuffix(f" ({info.timezone})"))
            schedule.append(f"\n{info.timezone}", style="dim")
            for note in info.dst_notes:
                schedule.append(f"\n{note.short()}", style="yellow")
            nxt = "\n".join(
                t.astimezone(zone).strftime("%a %m-%d %H:%M") for t in info.next_fire_times
            )
        last = render.status_text(info.last_status)
        last.append(
            f"\nok {render.ago(info.last_success, now)}" if info.last_success else "\nnever ok",
            style="",
        )
        if info.running:
            run = info.running
            last.append(f"\nnow: run {run['id']} pid {run['pid']}\non {run['host']}", style="cyan")
        table.add_row(info.name, "yes" if info.enabled else "no", schedule, nxt or "-", last)
    return table


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.add_typer(jobs_app, name="jobs")
