"""``jobctl sync``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from jobctl.cli import options as opt
from jobctl.cli import render
from jobctl.cli.jobs import exit_with
from jobctl.cli.state import State

if TYPE_CHECKING:
    from rich.console import Console

Reporter = Callable[..., None]
log = logging.getLogger("jobctl.cli.sync")

# The phases jobs/sync.py reports (``ctx.progress(source, records, phase=...)``):
# downloading, reading, applying, committing; a call without a phase is a count while
# reading. Records are read and staged (COPY) in one pass; "applying" is the merge in
# the database, "committing" the end of the run's one transaction.
LOG_EVERY = 5.0  # seconds between two "reading" lines when the progress is logged


@contextmanager
def progress_reporter(*, verbose: bool = False, dry_run: bool = False) -> Iterator[Reporter | None]:
    """A live line per source on a terminal; under ``-v`` elsewhere, debug log lines
    with each phase's timing; else None (the sync logs its own plain lines)."""
    if render.live_allowed():
        with live_progress(render.err, dry_run=dry_run) as report:
            yield report
    elif verbose:
        yield PhaseLog(dry_run=dry_run)
    else:
        yield None


def _phase_name(phase: str, dry_run: bool) -> str:
    return "rolling back (dry run)" if phase == "committing" and dry_run else phase


@contextmanager
def live_progress(console: Console, *, dry_run: bool = False) -> Iterator[Reporter]:
    """``source  phase  N records (rate)  elapsed``, refreshed in place until the run ends."""
    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        tasks: dict[str, TaskID] = {}
        phases: dict[str, tuple[str, float]] = {}

        def report(what: str, records: int, phase: str = "reading") -> None:
            now = time.monotonic()
            if what not in tasks:
                tasks[what] = progress.add_task(what, total=None)
            before, since = phases.get(what, ("", now))
            if phase != before:
                phases[what] = (phase, now)
                since = now
            elapsed = now - since
            count = f" {records:,} records" if phase != "downloading" else ""
            rate = f" ({records / elapsed:,.0f}/s)" if phase == "reading" and elapsed > 0.2 else ""
            progress.update(
                tasks[what],
                completed=records,
                description=f"{what}: {_phase_name(phase, dry_run)}{count}{rate}",
                # a new phase shows at once: the count it shows is then the final one
                refresh=phase != before,
            )

        yield report


class PhaseLog:
    """The progress as debug log lines (``-v`` off a terminal): each phase, when it
    started, how long the one before took; the count read every few seconds."""

    def __init__(self, *, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.phase: dict[str, tuple[str, float]] = {}
        self.last_line: dict[str, float] = {}

    def __call__(self, what: str, records: int, phase: str = "reading") -> None:
        now = time.monotonic()
        before, since = self.phase.get(what, ("", now))
        if phase == before:
            if now - self.last_line.get(what, since) >= LOG_EVERY:
                self.last_line[what] = now
                per_second = records / max(now - since, 1e-6)
                log.debug("%s: %s: %d records so far (%d/s)", what, phase, records, per_second)
            return
        self.phase[what] = (phase, now)
        self.last_line[what] = now
        name = _phase_name(phase, self.dry_run)
        if not before:
            log.debug("%s: %s", what, name)
            return
        took = now - since
        done = DONE.get(before, before).format(records=records)
        rate = f" ({records / took:,.0f}/s)" if before == "reading" and took > 0 else ""
        log.debug("%s: %s in %.1fs%s; %s", what, done, took, rate, name)


DONE = {"downloading": "downloaded", "reading": "read {records:,} records", "applying": "applied"}


def sync_command(
    ctx: typer.Context,
    on_date: Annotated[
        str | None,
        typer.Option(
            "--date", help="The feed's date (YYYY-MM-DD) [default: per source, today or yesterday]."
        ),
    ] = None,
    source: Annotated[list[str] | None, typer.Option("--source", help="Only this source.")] = None,
    file: Annotated[str | None, typer.Option("--file", help="Read this file instead.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Read this URL instead.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compute the changes, apply none.")
    ] = False,
    params: opt.Params = None,
    wait: opt.Wait = False,
    wait_timeout: opt.WaitTimeout = None,
    retries: opt.Retries = None,
    retry_delay: opt.RetryDelay = None,
    timeout: opt.Timeout = None,
    trigger: opt.Trigger = None,
    by: opt.By = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help=(
                "Run even if the slot is done, re-read a feed known to be unchanged, apply a "
                "feed over max_removed_ratio, and take a --date not yet ended."
            ),
        ),
    ] = False,
) -> None:
    """Ingest each configured feed into its table: new, updated, unchanged, removed, errors."""
    from jobctl.jobs.sync import SyncArgs

    state: State = ctx.obj
    args = SyncArgs(sources=source or [], on_date=on_date, file=file, url=url)
    with progress_reporter(verbose=state.verbosity > 0, dry_run=dry_run) as progress:
        options = opt.from_command(locals(), dry_run=dry_run, progress=progress)
        outcome = state.app.run_job("sync", options, args)
    exit_with(outcome)


def register(app: typer.Typer) -> None:
    app.command("sync")(sync_command)
