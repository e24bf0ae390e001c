"""The command line: parse, make one call, render. The only package importing Typer/rich.

``main`` is the one place where errors become exit codes.

Start-up stays small, because a cron tick that finds its job already running should
cost next to nothing: each command lives in its own module (``cli/sync.py`` …),
imported only when that command is run or its help is shown. ``jobctl --help``
lists the commands from ``COMMANDS`` below, ``--version`` imports none of them, and
nothing imported here pulls in SQLAlchemy, psycopg, httpx or rich
(``tests/test_startup.py`` checks both).
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core
import typer.main

from jobctl import __version__
from jobctl.cli.state import State
from jobctl.errors import ExitCode, JobctlError, exit_code_of

if TYPE_CHECKING:
    # Typer vendors click; these are only its types.
    from typer._click import Command, Context, HelpFormatter

#: Every command, in the order ``jobctl --help`` lists them: the module of
#: ``jobctl.cli`` whose ``register(app)`` adds it, and the first line of its help (what
#: ``--help`` shows without importing the module; tests/test_startup.py checks that it
#: matches the command's own help).
COMMANDS: dict[str, tuple[str, str]] = {
    "sync": (
        "sync",
        "Ingest each configured feed into its table: new, updated, unchanged, removed, errors.",
    ),
    "backfill": (
        "backfill",
        "Run sync and/or snapshot for every date in [--from, --to], one child run per date.",
    ),
    "snapshot": (
        "snapshot",
        "Compute snapshot sets for day / week / month periods (re-running replaces a period).",
    ),
    "cleanup": (
        "cleanup",
        "Delete rows older than each retention policy keeps, in bounded batches.",
    ),
    "report": (
        "report",
        "Render the week's report (job health, your sections) and send it to its recipients.",
    ),
    "run": (
        "jobs",
        "Run a job registered by your own code, through the runner (lock, ledger, retries).",
    ),
    "runs": ("runs", "The run ledger: what ran, when, how it ended."),
    "jobs": ("jobs", "Configured jobs."),
    "db": ("db", "The database schema (SQL migrations in sql/)."),
    "deploy": (
        "deploy",
        "Unit files, a crontab or CronJob manifests generated from the job schedules.",
    ),
    "schedule": (
        "schedule",
        "One-off future runs of a job, started by the per-minute worker (run-due).",
    ),
    "status": (
        "status",
        "Every job's health: ok, overdue, failing, running, stuck, disabled; "
        "exit 1 unless all are healthy.",
    ),
    "check": (
        "check",
        "Check one job, monitoring-plugin style: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    ),
    "metrics": ("metrics", "The run ledger as Prometheus metrics (text exposition format)."),
    "serve": (
        "serve",
        "Serve the web console and JSON API: runs, jobs, schedules, /metrics (the 'web' extra).",
    ),
}

#: How every command is built (as when they were all registered on ``app``).
_BUILD: dict[str, Any] = {
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
}


def load_commands(module: str) -> dict[str, Command]:
    """The click commands that ``jobctl.cli.<module>`` registers, built by Typer."""
    holder = typer.Typer(**_BUILD)
    importlib.import_module(f"jobctl.cli.{module}").register(holder)
    commands = dict(typer.main.get_group(holder).commands)
    pending: list[Command] = list(commands.values())
    while pending:
        command = pending.pop()
        plain_values(command.params)
        plain_help_option(command)
        pending.extend(getattr(command, "commands", {}).values())
    return commands


# -- option values without pydantic ---------------------------------------------
# Typer (0.2x) coerces every option value through a pydantic TypeAdapter, and
# builds one for each option of the command being run, given or not: importing
# pydantic and building those adapters is about a third of a skipped cron tick.
# jobctl's options are plain str, int, list[str] and Path. A value Typer would
# take as it is (a str for str, digits for int, ...) is taken here without pydantic;
# anything else goes to Typer's own coercion, so its results and error messages are
# Typer's. Only Typer's internals are touched: on a Typer without them, nothing
# changes (tests/test_startup.py compares both ways on many values).
try:
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
    from typer._param_types import coerce_cli_path
except ImportError:  # pragma: no cover - another Typer keeps its own way
    RuntimeParam = None  # type: ignore[assignment,misc]

_INT = re.compile(r"-?[0-9]{1,18}")

if RuntimeParam is not None:

    @dataclass(frozen=True)
    class PlainValue(RuntimeParam):
        """Typer's coercion, short-cut for the plain values it would take as they are."""

        descriptor: TypeDescriptor

        def _coerce_value(self, value: Any, param: Any, ctx: Context) -> Any:
            annotation, info = self.annotation, self.parameter_info
            if info.parser is None and not self.descriptor.is_choice:
                if annotation is str and type(value) is str:
                    return value
                if annotation is int and not info.clamp:
                    number = value if type(value) is int else None
                    if type(value) is str and _INT.fullmatch(value):
                        number = int(value)
                    if (
                        number is not None
                        and (info.min is None or number >= info.min)
                        and (info.max is None or number <= info.max)
                    ):
                        return number
                if (
                    annotation == list[str]
                    and isinstance(value, (list, tuple))
                    and all(type(item) is str for item in value)
                ):
                    return list(value)
                if annotation is Path and type(value) is str and self.descriptor.is_path:
                    # Typer makes the Path with pydantic, then checks it (exists, …);
                    # a ValueError there (a NUL byte) is pydantic's to report.
                    with contextlib.suppress(ValueError):
                        return coerce_cli_path(
                            Path(value),
                            info,
                            path_type=info.path_type or Path,
                            param=param,
                            ctx=ctx,
                        )
            return build_runtime_param(self.descriptor)._coerce_value(value, param, ctx)


def plain_help_option(command: Command) -> None:
    """The same for ``--help``, which Typer makes when the command is parsed."""
    made = command.get_help_option

    def get_help_option(ctx: Context) -> Any:
        option = made(ctx)
        plain_values([option] if option is not None else [])
        return option

    setattr(command, "get_help_option", get_help_option)  # noqa: B010 - this one command


def plain_values(params: Iterable[Any]) -> None:
    """Give each Typer parameter in ``params`` the pydantic-free short cut."""
    if RuntimeParam is None:  # pragma: no cover
        return
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if isinstance(descriptor, TypeDescriptor) and getattr(param, "_runtime_param", 0) is None:
            param._runtime_param = PlainValue(
                parameter_info=descriptor.parameter_info,
                annotation=descriptor.annotation,
                descriptor=descriptor,
            )


class LazyCommands(MutableMapping[str, "Command"]):
    """A group's commands by name: every name known up front, each command built
    (its module imported) on first access."""

    def __init__(self) -> None:
        self._built: dict[str, Command] = {}

    def built(self, name: str) -> Command | None:
        return self._built.get(name)

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            if name not in COMMANDS:
                raise KeyError(name)
            for built_name, command in load_commands(COMMANDS[name][0]).items():
                self._built.setdefault(built_name, command)
        return self._built[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self._built

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._built if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS) + sum(1 for name in self._built if name not in COMMANDS)


class LazyGroup(typer.core.TyperGroup):
    """The ``jobctl`` group: a command's module is imported when the command is used."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        plain_values(self.params)
        plain_help_option(self)
        self.lazy = LazyCommands()
        for name, command in self.commands.items():
            self.lazy[name] = command
        self.commands = self.lazy

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.lazy)

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        # As TyperGroup's, but a command not built yet is listed from COMMANDS.
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows = []
        for name in names:
            command = self.lazy.built(name) or typer.core.TyperCommand(
                name=name, help=COMMANDS[name][1]
            )
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    cls=LazyGroup,
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map every error to its exit code, in one place."""
    code: int
    state: State | None = None
    try:
        command = typer.main.get_command(app)
        with command.make_context("jobctl", list(sys.argv[1:] if argv is None else argv)) as ctx:
            try:
                result = command.invoke(ctx)
            finally:  # the global options' callback makes the State during invoke
                state = ctx.obj if isinstance(ctx.obj, State) else None
        code = int(result) if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        code = ExitCode.SIGINT
    except JobctlError as exc:
        _error(str(exc), state)
        code = int(exit_code_of(exc))
    except KeyboardInterrupt as exc:
        code = int(exit_code_of(exc))
    except Exception as exc:
        # Typer vendors click; its usage errors carry format_message() and exit_code.
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            _error(f"internal error: {type(exc).__name__}: {exc} (run with -v for details)", state)
            if state is not None and state.verbosity > 0:
                import traceback

                # Printed here, not re-raised: Python's own printing would skip redaction.
                sys.stderr.write(state.redact("".join(traceback.format_exception(exc))))
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
        if state.log_format == "json":  # every line on stderr is JSON then
            from jobctl.cli import render

            render.say(f"jobctl: error: {message}", level="error", action="error")
            return
    sys.stderr.write(f"jobctl: error: {message}\n")
