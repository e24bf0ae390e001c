"""``jobctl db upgrade`` and ``jobctl db status``."""

from __future__ import annotations

from typing import Annotated

import typer

from jobctl.cli import render
from jobctl.cli.state import State

db_app = typer.Typer(help="The database schema (SQL migrations in sql/).", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply the SQL migrations not yet applied (safe to run from several hosts at once)."""
    from jobctl.db.migrate import upgrade

    state: State = ctx.obj
    db = state.app.raw_db()
    applied = upgrade(db)
    where = "embedded database" if db.embedded else db.display_url
    if applied:
        for m in applied:
            render.say(f"applied {m.version:04d}_{m.name}")
    render.say(f"schema is up to date ({where})")


@db_app.command("status")
def db_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON array on stdout.")] = False,
) -> None:
    """Show each migration and whether it is applied."""
    from rich.table import Table

    from jobctl.db.migrate import status

    state: State = ctx.obj
    states = status(state.app.raw_db())
    if as_json:
        render.print_json([s.__dict__ for s in states])
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("version", "name", "applied", "checksum"):
        table.add_column(col)
    for s in states:
        table.add_row(
            f"{s.version:04d}",
            s.name,
            render.when(s.applied_at) if s.applied_at else "pending",
            "ok" if s.checksum_ok else "EDITED since applied",
        )
    render.out.print(table)
    pending = sum(1 for s in states if s.applied_at is None)
    if pending:
        render.say(f"{pending} migration(s) pending: run 'jobctl db upgrade'", level="warning")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
