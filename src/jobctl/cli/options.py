"""Option types shared by commands (runner options, durations, dates)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobctl.durations import parse_duration, shown
from jobctl.errors import UsageError
from jobctl.params import parse_params as parse_params  # re-exported

if TYPE_CHECKING:
    from jobctl.runner import RunOptions  # imported in run_options: the runner is heavy

Params = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="KEY=VALUE passed to the job and stored with the run."),
]
Wait = Annotated[bool, typer.Option("--wait", help="Wait for the lock instead of skipping.")]
WaitTimeout = Annotated[
    str | None, typer.Option("--wait-timeout", help="Give up waiting after this (e.g. 10m).")
]
Retries = Annotated[
    int | None, typer.Option("--retries", min=0, help="Retries for transient errors.")
]
RetryDelay = Annotated[
    str | None, typer.Option("--retry-delay", help="First retry delay; doubles, with jitter.")
]
Timeout = Annotated[str | None, typer.Option("--timeout", help="Fail the run after this long.")]
Trigger = Annotated[
    str | None,
    typer.Option(
        "--trigger",
        help="manual|timer|cron|schedule|backfill|web [default: timer under "
        "systemd (INVOCATION_ID set), else manual].",
    ),
]
By = Annotated[
    str | None,
    typer.Option("--by", help="Who asked for the run (stored with it as requested_by)."),
]
Force = Annotated[
    bool, typer.Option("--force", help="Run even if this schedule slot already completed.")
]


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: Options where zero means nothing: a run that times out at once, runs "since now".
_MORE_THAN_ZERO = frozenset({"--timeout", "--since"})


def duration(value: str | None, option: str) -> timedelta | None:
    """An option's duration; zero is refused for the options in ``_MORE_THAN_ZERO``."""
    if value is None:
        return None
    return parse_duration(value, what=option, allow_zero=option not in _MORE_THAN_ZERO)


RUNNER_OPTIONS = (
    "params",
    "wait",
    "wait_timeout",
    "retries",
    "retry_delay",
    "timeout",
    "trigger",
    "force",
    "by",
)


def from_command(values: Mapping[str, Any], **extra: object) -> RunOptions:
    """RunOptions from a command's parsed arguments (its ``locals()``).

    Typer has no shared option groups, so every job command declares the runner
    options in its signature; this reads them back by name in one place.
    """
    given = {name: values.get(name) for name in RUNNER_OPTIONS}
    return run_options(
        params=given["params"],
        wait=bool(given["wait"]),
        wait_timeout=given["wait_timeout"],
        retries=given["retries"],
        retry_delay=given["retry_delay"],
        timeout=given["timeout"],
        trigger=given["trigger"],
        force=bool(given["force"]),
        by=given["by"],
        **extra,
    )


def run_options(
    *,
    params: list[str] | None,
    wait: bool,
    wait_timeout: str | None,
    retries: int | None,
    retry_delay: str | None,
    timeout: str | None,
    trigger: str | None,
    force: bool,
    by: str | None = None,
    **extra: object,
) -> RunOptions:
    from jobctl.runner import RunOptions

    if by is not None and (not by.strip() or len(by) > 200 or not _is_utf8(by) or "\x00" in by):
        raise UsageError(f"--by {shown(by)} must be a name of 1 to 200 characters of UTF-8 text")

    parsed_timeout = duration(timeout, "--timeout")
    return RunOptions(
        params=parse_params(params),
        wait=wait or wait_timeout is not None,
        wait_timeout=duration(wait_timeout, "--wait-timeout"),
        retries=retries,
        retry_delay=duration(retry_delay, "--retry-delay"),
        timeout=parsed_timeout,
        trigger=trigger,
        force=force,
        requested_by=by,
        **extra,  # type: ignore[arg-type]
    )
