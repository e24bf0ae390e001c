"""``jobctl metrics``: Prometheus exposition on stdout, or a node_exporter textfile."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from jobctl.cli.state import State


def metrics_command(
    ctx: typer.Context,
    textfile: Annotated[
        Path | None,
        typer.Option(
            "--textfile",
            help="Write to this file atomically (node_exporter's textfile collector, "
            "e.g. /var/lib/node_exporter/jobctl.prom) instead of stdout.",
        ),
    ] = None,
) -> None:
    """The run ledger as Prometheus metrics (text exposition format)."""
    from jobctl.metrics import exposition, write_textfile

    state: State = ctx.obj
    text = exposition(state.app)
    if textfile is None:
        sys.stdout.write(text)
    else:
        write_textfile(textfile, text)


def register(app: typer.Typer) -> None:
    app.command("metrics")(metrics_command)
