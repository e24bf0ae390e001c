"""``jobctl status``: every job's health; exit 0 only when all are healthy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobctl.cli import render
from jobctl.cli.state import State

if TYPE_CHECKING:
    from jobctl.health import JobStatus

STATE_STYLE = {
    "ok": "green",
    "running": "cyan",
    "disabled": "dim",
    "overdue": "yellow",
    "failing": "bold red",
    "stuck": "magenta",
}


def status_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON array on stdout.")] = False,
) -> None:
    """Every job's health: ok, overdue, failing, running, stuck, disabled; exit 1 unless all are healthy.

    Exit 0 when every job is ok, running or disabled; 1 when one is overdue, failing
    or stuck.
    """  # noqa: E501 - the first line is what ``jobctl --help`` shows
    from jobctl.health import exit_code, statuses
    from jobctl.shapes import status_json

    state: State = ctx.obj
    now = datetime.now(UTC)
    found = statuses(state.app, now)
    if as_json:
        render.print_json([status_json(s, now) for s in found])
    else:
        render.out.print(_table(found, now))
    raise typer.Exit(exit_code(found))


def _table(found: list[JobStatus], now: datetime) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("job", no_wrap=True, max_width=20, overflow="ellipsis")
    table.add_column("state", no_wrap=True)
    table.add_column("last run", no_wrap=True)
    table.add_column("last ok", no_wrap=True)
    table.add_column("why", overflow="fold")
    for s in found:
        last = s.last_run
        table.add_row(
            s.job,
            Text(str(s.state), style=STATE_STYLE.get(str(s.state), "")),
            f"{last.id} {last.status}" if last else "-",
            render.ago(s.last_success.finished_at if s.last_success else None, now),
            s.reason,
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("status")(status_command)
