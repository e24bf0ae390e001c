"""``jobctl backfill``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobctl.cli import options as opt
from jobctl.cli import render
from jobctl.cli.jobs import exit_with
from jobctl.cli.state import State

if TYPE_CHECKING:  # rich is imported where it is used (only on a terminal, for the bar)
    from rich.progress import TaskID
    from rich.table import Table


@contextmanager
def progress_bar() -> Iterator[Callable[..., None] | None]:
    if not render.live_allowed():
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=render.err,
        transient=True,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def report(what: str, done: int, total: int | None = None) -> None:
            if what not in tasks:
                tasks[what] = progress.add_task(what, total=total)
            progress.update(tasks[what], completed=done, total=total)

        yield report


def summary(children: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title="backfill", box=None, pad_edge=False, header_style="bold")
    for col, justify in (
        ("date", "left"),
        ("job", "left"),
        ("status", "left"),
        ("took", "right"),
        ("new/upd/same/err", "right"),
        ("run", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for c in children:
        r = c.get("records") or {}
        records = "{}/{}/{}/{}".format(
            r.get("new", 0), r.get("updated", 0), r.get("unchanged", 0), r.get("errors", 0)
        )
        table.add_row(
            c["date"],
            c["job"],
            render.status_text(c["status"]),
            render.ms(c.get("duration_ms")),
            records,
            str(c.get("run_id") or "-"),
        )
    return table


def backfill_command(
    ctx: typer.Context,
    start: Annotated[str, typer.Option("--from", help="First date (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option("--to", help="Last date (YYYY-MM-DD), included.")],
    job: Annotated[
        list[str] | None,
        typer.Option(
            "--job", help="sync and/or snapshot [default: backfill.jobs, else both as configured]."
        ),
    ] = None,
    missing: Annotated[
        bool, typer.Option("--missing", help="Only the slots 'jobctl runs gaps' reports.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Re-run dates that already have a completed run, and take a --to date "
            "whose day has not ended yet in the zones that read it.",
        ),
    ] = False,
    continue_on_error: Annotated[
        bool, typer.Option("--continue-on-error", help="Go on after a failed date.")
    ] = False,
    params: opt.Params = None,
    wait: opt.Wait = False,
    wait_timeout: opt.WaitTimeout = None,
    timeout: opt.Timeout = None,
    trigger: opt.Trigger = None,
    by: opt.By = None,
) -> None:
    """Run sync and/or snapshot for every date in [--from, --to], one child run per date."""
    from jobctl.jobs.backfill import BackfillArgs

    state: State = ctx.obj
    args = BackfillArgs(start, end, job or [], missing, continue_on_error)
    with progress_bar() as progress:
        options = opt.from_command(locals(), progress=progress)
        outcome = state.app.run_job("backfill", options, args)
    children = outcome.stats.get("children")
    if isinstance(children, list) and children:
        render.out.print(summary(children))
    exit_with(outcome)


def register(app: typer.Typer) -> None:
    app.command("backfill")(backfill_command)
