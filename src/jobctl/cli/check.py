"""``jobctl check JOB``: one job's health as a monitoring plugin (Nagios, Icinga, Sensu).

The plugin convention owns the exit code here: 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN, and one status line on stdout. jobctl's usual exit 2 for a usage error
would read as CRITICAL, so for this command every usage or configuration problem
(an unknown option, a missing or bad argument, a bad config file, a database that
cannot be reached) is ``JOBCTL UNKNOWN - …``, exit 3. (The global options are
parsed before the command is known: a bad one there keeps jobctl's exit 2.)
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
import typer.core
from typer._click.exceptions import UsageError as ClickUsageError

from jobctl.cli.options import duration
from jobctl.cli.state import State
from jobctl.errors import JobctlError


def _unknown(message: str) -> typer.Exit:
    from jobctl.health import Plugin, plugin_line

    print(plugin_line(Plugin.UNKNOWN, message), flush=True)
    return typer.Exit(int(Plugin.UNKNOWN))


class PluginCommand(typer.core.TyperCommand):
    """A command whose usage errors are the plugin's UNKNOWN (exit 3), not exit 2."""

    def make_context(self, info_name: str | None, args: list[str], *a: Any, **kw: Any) -> Any:
        try:
            return super().make_context(info_name, args, *a, **kw)
        except ClickUsageError as exc:
            raise _unknown(exc.format_message()) from None


def check_command(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job to check.")],
    max_age: Annotated[
        str | None,
        typer.Option(
            "--max-age",
            help="WARNING when the last success is older than this (e.g. 26h), "
            "CRITICAL beyond twice this or when there is none.",
        ),
    ] = None,
) -> None:
    """Check one job, monitoring-plugin style: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    from jobctl.health import check

    state: State = ctx.obj
    try:
        result = check(state.app, job, duration(max_age, "--max-age"))
    except JobctlError as exc:
        raise _unknown(state.redact(str(exc))) from None
    print(result.line, flush=True)
    raise typer.Exit(int(result.code))


def register(app: typer.Typer) -> None:
    app.command("check", cls=PluginCommand)(check_command)
