"""``jobctl schedule add|list|cancel|run-due|stats``: one-off future runs of a job."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobctl.cli import render
from jobctl.cli.options import Params, duration, parse_params
from jobctl.cli.state import State
from jobctl.when import IMMINENT, countdown, iso_utc, local_text

if TYPE_CHECKING:
    from rich.table import Table

    from jobctl.db.scheduled import Scheduled
    from jobctl.scheduling import Handled

schedule_app = typer.Typer(
    help="One-off future runs of a job, started by the per-minute worker (run-due).",
    no_args_is_help=True,
)

SCHEDULE_STYLE = {
    "pending": "cyan",
    "running": "cyan",
    "triggered": "green",
    "cancelled": "yellow",
    "failed": "bold red",
}


@schedule_app.command("add")
def schedule_add(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job to run (built-in or your own).")],
    at: Annotated[
        str,
        typer.Option(
            "--at",
            help="ISO-8601 with offset or Z, or 'in 1h', 'tomorrow 09:00', 'monday 08:00' "
            "(in the job's zone).",
        ),
    ],
    params: Params = None,
    by: Annotated[str | None, typer.Option("--by", help="Who asked for it (shown).")] = None,
    every: Annotated[
        str | None, typer.Option("--every", help="Repeat: day, week or month.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Last repeat at or before this (as --at).")
    ] = None,
) -> None:
    """Schedule a one-off run of a job at a future time (at least a minute ahead)."""
    from jobctl import scheduling

    state: State = ctx.obj
    row = scheduling.add(state.app, job, at, parse_params(params), by=by, every=every, until=until)
    repeat = f", every {row.every}" if row.every else ""
    # stdout: the id and the two times, tab-separated (for scripts); stderr: the sentence.
    typer.echo(f"{row.id}\t{iso_utc(row.run_at)}\t{local_text(row.run_at, row.timezone)}")
    render.say(
        f"schedule {row.id}: {row.job} at {iso_utc(row.run_at)} "
        f"({local_text(row.run_at, row.timezone)} in {row.timezone}){repeat}"
    )


@schedule_app.command("list")
def schedule_list(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option("--status", help="pending, running, triggered, cancelled or failed."),
    ] = None,
    job: Annotated[str | None, typer.Option("--job", help="Only this job.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many (0: all).")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON array on stdout.")] = False,
) -> None:
    """Schedules by due time, with a countdown; a triggered one shows its run."""
    from jobctl import scheduling
    from jobctl.shapes import schedule_json

    state: State = ctx.obj
    rows = scheduling.list_schedules(state.app, status=status, job=job, limit=limit)
    now = datetime.now(UTC)
    if as_json:
        # Params and error messages may hold a secret known only now: redacted as runs are.
        render.print_json(state.redactor.data([schedule_json(r, now) for r in rows]))
    elif rows:
        render.out.print(schedule_table(rows, now, state.redact))
    else:
        render.say("no schedules match")


def schedule_table(
    rows: list[Scheduled], now: datetime, redact: Callable[[str], str] = str
) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("id", "job", "status", "in", "at (UTC)", "local", "run", "by"):
        table.add_column(name, no_wrap=name != "job", overflow="fold")
    for row in rows:
        left = ""
        style = ""
        if row.status == "pending":
            left = countdown(row.run_at - now)
            style = "bold yellow" if row.run_at - now < IMMINENT else ""
        run = f"{row.run_id} {row.run_status}" if row.run_id else (row.error_message or "")
        run = redact(run)
        table.add_row(
            str(row.id),
            row.job + (f" (every {row.every})" if row.every else ""),
            Text(row.status, style=SCHEDULE_STYLE.get(row.status, "")),
            Text(left, style=style),
            iso_utc(row.run_at),
            local_text(row.run_at, row.timezone),
            Text(run[:60]),
            row.created_by or "",
        )
    return table


@schedule_app.command("cancel")
def schedule_cancel(
    ctx: typer.Context,
    schedule_id: Annotated[int, typer.Argument(help="The schedule's id.", metavar="ID")],
) -> None:
    """Cancel a pending schedule (any other status exits 2, saying it)."""
    from jobctl import scheduling

    state: State = ctx.obj
    row = scheduling.cancel(state.app, schedule_id)
    render.say(f"schedule {row.id}: {row.job} at {iso_utc(row.run_at)} cancelled")


@schedule_app.command("run-due")
def schedule_run_due(ctx: typer.Context) -> None:
    """Run every due schedule once (the per-minute worker; safe on several hosts)."""
    from jobctl import scheduling

    state: State = ctx.obj
    report = scheduling.run_due(state.app)
    for done in report.handled:
        render.say(_handled_line(done), level="error" if done.status == "failed" else "info")
    raise typer.Exit(int(report.exit_code))


def _handled_line(done: Handled) -> str:
    line = f"schedule {done.id}: {done.job} {done.status}"
    if done.run_id is not None:
        line += f" (run {done.run_id}{f', {done.run_status}' if done.run_status else ''})"
    if done.message:
        line += f": {done.message}"
    if done.next_id is not None:
        line += f"; next: schedule {done.next_id}"
    return line


@schedule_app.command("stats")
def schedule_stats(
    ctx: typer.Context,
    since: Annotated[str, typer.Option("--since", help="Finished within, e.g. 7d.")] = "7d",
    as_json: Annotated[bool, typer.Option("--json", help="JSON object on stdout.")] = False,
) -> None:
    """Schedules by status, imminent (< 5 min), overdue, and the runs' success rate."""
    from jobctl import scheduling

    state: State = ctx.obj
    window = duration(since, "--since")
    assert window is not None
    figures = scheduling.stats(state.app, window)
    if as_json:
        render.print_json(figures)
        return
    rate = figures["success_rate"]
    pairs: list[tuple[str, Any]] = [
        *figures["by_status"].items(),
        ("imminent (< 5 min)", figures["imminent"]),
        ("overdue", figures["overdue"]),
        ("success rate", "-" if rate is None else f"{rate:.1%}"),
        ("next", render.when(figures["next_run_at"])),
    ]
    render.out.print(render.key_values(pairs))


def register(app: typer.Typer) -> None:
    app.add_typer(schedule_app, name="schedule")
