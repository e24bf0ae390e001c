"""``jobctl sync``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from jobctl.cli import options as opt
from jobctl.cli import render
from jobctl.cli.jobs import exit_with
from jobctl.cli.state import State


@contextmanager
def progress_reporter() -> Iterator[Callable[[str, int], None] | None]:
    """A live 'records read' line on a terminal; None (plain log lines) otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,.0f} records"),
        TimeElapsedColumn(),
        console=render.err,
        transient=True,
    ) as progress:
        tasks: dict[str, TaskID] = {}
        started: dict[str, float] = {}

        def report(what: str, records: int) -> None:
            now = time.monotonic()
            if what not in tasks:
                tasks[what] = progress.add_task(what, total=None)
                started[what] = now
            elapsed = now - started[what]
            rate = f" ({records / elapsed:,.0f}/s)" if elapsed > 0.2 else ""
            progress.update(tasks[what], completed=records, description=f"{what}{rate}")

        yield report


def sync_command(
    ctx: typer.Context,
    on_date: Annotated[
        str | None,
        typer.Option(
            "--date", help="The feed's date (YYYY-MM-DD) [default: per source, today or yesterday]."
        ),
    ] = None,
    source: Annotated[list[str] | None, typer.Option("--source", help="Only this source.")] = None,
    file: Annotated[str | None, typer.Option("--file", help="Read this file instead.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Read this URL instead.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compute the changes, apply none.")
    ] = False,
    params: opt.Params = None,
    wait: opt.Wait = False,
    wait_timeout: opt.WaitTimeout = None,
    retries: opt.Retries = None,
    retry_delay: opt.RetryDelay = None,
    timeout: opt.Timeout = None,
    trigger: opt.Trigger = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Run even if the slot is done, and re-read a feed known to be unchanged.",
        ),
    ] = False,
) -> None:
    """Ingest each configured feed into its table: new, updated, unchanged, removed, errors."""
    state: State = ctx.obj
    with progress_reporter() as progress:
        options = opt.from_command(
            locals(), dry_run=dry_run, extra={"progress": progress} if progress else {}
        )
        outcome = state.app.sync(options, sources=source or [], on_date=on_date, file=file, url=url)
    exit_with(outcome)


def register(app: typer.Typer) -> None:
    app.command("sync")(sync_command)
