"""``jobctl serve``: the web console and JSON API (the optional ``web`` extra)."""

from __future__ import annotations

from typing import Annotated

import typer

from jobctl.cli.state import State


def serve_command(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            help="Address to listen on [default: [web] host, else 127.0.0.1]. Any address "
            "but loopback needs a token.",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="TCP port [default: [web] port, else 8080]."),
    ] = None,
) -> None:
    """Serve the web console and JSON API: runs, jobs, schedules, /metrics (the 'web' extra).

    Tokens: JOBCTL_WEB_TOKEN (name:secret, or a secret named "web") and/or
    JOBCTL_WEB_TOKEN_FILE (lines name:secret). Without one, only read-only access on
    a loopback address; every write needs a token (its name is recorded as who
    triggered or scheduled). Stops on SIGTERM or SIGINT, cancelling the runs it
    started.
    """
    from jobctl.config_web import check_bind, web_config
    from jobctl.web import require_web

    state: State = ctx.obj
    config = web_config(state.settings, host=host, port=port)
    check_bind(config)
    require_web()
    from jobctl.web.server import serve

    serve(state.app, config)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
