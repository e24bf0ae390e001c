"""``jobctl report``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from jobctl.cli import options as opt
from jobctl.cli import render
from jobctl.cli.jobs import exit_with
from jobctl.cli.state import State


def _stdout(text: str) -> None:
    # Not through rich: the report is already laid out (and may be HTML or JSON).
    sys.stdout.write(text)
    sys.stdout.flush()


def report_command(
    ctx: typer.Context,
    on_date: Annotated[
        str | None,
        typer.Option(
            "--date", help="Report the ISO week holding this date [default: the previous week]."
        ),
    ] = None,
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            help="Send to this address instead (with a recipients query: only the recipient "
            "with this address).",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="text|markdown|html|json for --output and stdout [default: from the "
            "file's suffix, else [report] format].",
        ),
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", help="Also write the report here (atomically).")
    ] = None,
    no_send: Annotated[
        bool,
        typer.Option("--no-send", help="Send nothing: print the report (or write --output)."),
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
    """Render the week's report (job health, your sections) and send it to its recipients.

    Each delivery is recorded: running it again for the same week sends only what did
    not go (--force sends everything again).
    """
    from jobctl.jobs.report import ReportArgs

    state: State = ctx.obj
    args = ReportArgs(
        on_date=on_date,
        to=to or [],
        format=fmt,
        output=output,
        no_send=no_send,
        sink=_stdout if output is None else None,
    )
    # A --no-send run delivers nothing: recorded as a dry run, it covers no weekly slot.
    options = opt.from_command(locals(), dry_run=no_send)
    outcome = state.app.run_job("report", options, args)
    stats = outcome.stats
    if "sent" in stats:
        earlier = f" ({stats['already_sent']} sent before)" if stats.get("already_sent") else ""
        render.say(f"report: {stats['sent']} sent, {stats['failed']} failed{earlier}")
    exit_with(outcome)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
