"""``jobctl status``: every job's health; exit 0 only when all are healthy."""

from __future__ import annotations

from dataclasses import asdict
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

    state: State = ctx.obj
    now = datetime.now(UTC)
    found = statuses(state.app, now)
    if as_json:
        render.print_json([_json(s, now) for s in found])
    else:
        render.out.print(_table(found, now))
    raise typer.Exit(exit_code(found))


def _json(status: JobStatus, now: datetime) -> dict[str, Any]:
    doc = asdict(status)
    doc["state"] = str(status.state)
    doc["healthy"] = status.healthy
    age = status.success_age(now)
    doc["last_success_age_seconds"] = None if age is None else round(age.total_seconds(), 3)
    doc["grace_seconds"] = None if status.grace is None else status.grace.total_seconds()
    del doc["grace"]
    return doc


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
