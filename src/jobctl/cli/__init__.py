"""The command line: parse, make one call, render. The only package importing Typer/rich.

``main`` is the one place where errors become exit codes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from jobctl import __version__
from jobctl.cli.state import State
from jobctl.errors import ExitCode, JobctlError

app = typer.Typer(
    name="jobctl",
    help="Run an application's recurring data jobs against PostgreSQL: locked, audited, "
    "repeatable. The OS schedules (cron, systemd, Kubernetes); jobctl is what each tick runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        print(f"jobctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def global_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", envvar="JOBCTL_CONFIG", help="Config file [default: ./jobctl.toml]."
        ),
    ] = None,
    env_file: Annotated[
        Path | None, typer.Option("--env-file", help="Dotenv file [default: ./.env if present].")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="DATABASE_URL",
            show_envvar=True,
            help="PostgreSQL URL; without one jobctl uses its embedded server.",
        ),
    ] = None,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="More logging.")] = 0,
    quiet: Annotated[int, typer.Option("-q", "--quiet", count=True, help="Less logging.")] = 0,
    log_format: Annotated[
        str, typer.Option("--log-format", help="Log lines on stderr: text or json.")
    ] = "text",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    if log_format not in ("text", "json"):
        raise typer.BadParameter(
            f"{log_format!r} is not one of text, json", param_hint="--log-format"
        )
    ctx.obj = State(config, env_file, database_url, verbose - quiet, log_format)


def _register() -> None:
    from jobctl.cli import backfill, db, jobs, runs, snapshot, sync

    sync.register(app)
    backfill.register(app)
    snapshot.register(app)
    runs.register(app)
    jobs.register(app)
    db.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map every error to its exit code, in one place."""
    code: int
    state: State | None = None
    try:
        command = typer.main.get_command(app)
        with command.make_context("jobctl", list(sys.argv[1:] if argv is None else argv)) as ctx:
            state = ctx.obj if isinstance(ctx.obj, State) else None
            result = command.invoke(ctx)
        code = int(result) if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        code = ExitCode.SIGINT
    except JobctlError as exc:
        _error(str(exc), state)
        code = int(exc.exit_code)
    except KeyboardInterrupt:
        code = ExitCode.SIGINT
    except Exception as exc:
        # Typer vendors click; its usage errors carry format_message() and exit_code.
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            _error(f"internal error: {type(exc).__name__}: {exc} (run with -v for details)", state)
            if state is not None and state.verbosity > 0:
                raise
            code = ExitCode.FAILED
        else:
            message = " ".join(str(exc.format_message()).split())
            code = int(exc.exit_code)
            _error(f"{message} (see 'jobctl --help')" if code == 2 else message, state)
    finally:
        if state is not None:
            state.close()
    sys.exit(code)


def _error(message: str, state: State | None) -> None:
    if state is not None:
        message = state.redact(message)
    sys.stderr.write(f"jobctl: error: {message}\n")
