"""One-off schedules: add, list, cancel, stats, and the per-minute worker (``run-due``).

The rules live here; the table's SQL in :mod:`jobctl.db.scheduled`; the times in
:mod:`jobctl.when`; the command line in :mod:`jobctl.cli.schedule`.

The worker (``jobctl schedule run-due``) takes no lock of its own: several workers
on several hosts are safe because each row is claimed with ``FOR UPDATE SKIP
LOCKED`` and held by its claim lock (see :mod:`jobctl.db.scheduled`), and each run
goes through the runner and its job's lock like any other. For every due row,
oldest first:

* the run is started through the runner (``trigger = schedule``, the row's params,
  its time as the run's slot). A started run, whatever its end, marks the row
  ``triggered`` with the run's id and status: a failed run alerts on its own and is
  in the ledger, so the worker still exits 0;
* the job busy (its lock held, exit 75): the row goes back to ``pending`` and the
  next tick tries again, until ``[schedule] deadline`` (default 1 h) after its time,
  then ``failed`` with the holder's message. A row found more than the deadline late
  (no worker ran) is ``failed`` too, not run late;
* the job cannot be run (unknown now, its configuration invalid): ``failed`` with
  the message; the other rows still run;
* a worker killed mid-run (SIGKILL, OOM, host lost) leaves its row ``running`` with
  its claim lock gone: the next tick marks the dead run ``abandoned`` (as every
  command does) and the row ``triggered`` with it, or, when the worker died before
  starting a run, ``pending`` again (due at once). A row is never run twice while
  its first worker lives, and never lost.

Exit code of ``run-due``: 0 when it went through every due row (whatever the runs'
ends); 130/143 when interrupted (the run in progress is recorded ``cancelled`` and
the remaining rows wait for the next tick); 2 when the database cannot be reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobctl.durations import format_duration, shown
from jobctl.errors import DatabaseUnreachable, ExitCode, JobctlError, UsageError
from jobctl.when import EVERY, MIN_AHEAD, is_utf8, next_occurrence, parse_when

if TYPE_CHECKING:
    from jobctl.app import App
    from jobctl.db.scheduled import Claim, Scheduled

#: The most a schedule's params may hold, keys and values together.
MAX_PARAMS_BYTES = 64 * 1024
_MAX_NAME = 200
#: A repeat's next occurrence is at least this far ahead of the server's clock (the
#: table's CHECK asks MIN_AHEAD of its created_at, which is a little later).
_NEXT_MARGIN = timedelta(seconds=5)


@dataclass(frozen=True)
class Handled:
    """What ``run-due`` did with one row."""

    id: int
    job: str
    status: str
    run_id: int | None = None
    run_status: str | None = None
    message: str | None = None
    next_id: int | None = None


@dataclass(frozen=True)
class DueReport:
    handled: list[Handled]
    exit_code: ExitCode = ExitCode.OK


def _text(value: str, what: str) -> str:
    if "\x00" in value or len(value) > _MAX_NAME or not is_utf8(value):
        raise UsageError(
            f"{what} {shown(value)} must be UTF-8 text of at most {_MAX_NAME} characters"
        )
    return value


def check_job(app: App, job: str, params: Mapping[str, str]) -> None:
    """The job exists and can run with these params (UsageError otherwise): what
    ``schedule add`` and a run started from the web console check before writing."""
    from jobctl.registry import builtin_jobs, resolve_job

    builtin = builtin_jobs()
    if job in builtin:
        if params:
            raise UsageError(
                f"built-in job {job!r} takes no --param (a schedule runs its default plan, as "
                f"a timer tick does; its options are those of 'jobctl {job}')"
            )
        # Planned as the run will plan it: a configuration it cannot run with is
        # refused now, not at the scheduled time.
        builtin[job].default_plan(app.settings)
        return
    resolve_job(job, app.jobs, app.settings)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in params.items())
    if size > MAX_PARAMS_BYTES:
        raise UsageError(f"--param values are {size} bytes; at most {MAX_PARAMS_BYTES}")


def add(
    app: App,
    job: str,
    at: str,
    params: Mapping[str, str],
    *,
    by: str | None = None,
    every: str | None = None,
    until: str | None = None,
    now: datetime | None = None,
) -> Scheduled:
    """Add a pending schedule; UsageError (no row written) for anything invalid."""
    from jobctl.db import scheduled

    now = now or datetime.now(UTC)
    _text(job, "job")
    if by is not None:
        _text(by, "--by")
    if every is not None and every not in EVERY:
        raise UsageError(f"--every {shown(every)} is not one of {', '.join(EVERY)}")
    if until is not None and every is None:
        raise UsageError("--until needs --every (it ends a repeat)")
    zone = app.settings.job(job).timezone
    when = parse_when(at, zone, now)
    end = parse_when(until, zone, now, what="--until").at if until is not None else None
    if end is not None and end < when.at:
        raise UsageError(f"--until {shown(until)} is before --at {shown(at)}")
    check_job(app, job, params)
    new = scheduled.NewSchedule(
        job=job,
        params=dict(params),
        run_at=when.at,
        timezone=zone,
        created_at=now,
        created_by=by,
        every=every,
        until=end,
        anchor_local=when.local if every else None,
    )
    with app.db.plain() as conn:
        found = scheduled.get(conn, scheduled.insert(conn, new))
    assert found is not None
    return found


def list_schedules(
    app: App, *, status: str | None, job: str | None, limit: int = 0
) -> list[Scheduled]:
    from jobctl.db import scheduled

    if status is not None and status not in scheduled.STATUSES:
        raise UsageError(f"--status {shown(status)} is not one of {', '.join(scheduled.STATUSES)}")
    if limit < 0:
        raise UsageError(f"--limit {limit} must be 0 (no limit) or more")
    with app.db.plain() as conn:
        return scheduled.list_rows(conn, status=status, job=job, limit=limit)


def cancel(app: App, schedule_id: int) -> Scheduled:
    """Cancel a pending schedule; anything else is a UsageError saying its status."""
    from jobctl.db import scheduled

    if not 0 < schedule_id < 2**63:
        raise UsageError(f"schedule {schedule_id} does not exist")
    with app.db.plain() as conn:
        row, status = scheduled.cancel(conn, schedule_id)
    if row is None:
        if status is None:
            raise UsageError(f"schedule {schedule_id} does not exist")
        raise UsageError(f"schedule {schedule_id} is {status}, not pending: it cannot be cancelled")
    return row


def stats(app: App, since: timedelta) -> dict[str, Any]:
    from jobctl.db import scheduled

    with app.db.plain() as conn:
        return scheduled.stats(conn, since)


# -- the worker ------------------------------------------------------------------


def run_due(app: App) -> DueReport:
    """Settle dead workers' rows, then run every due row once, oldest first."""
    from jobctl.db import scheduled

    with app.db.plain() as conn:
        if not scheduled.has_work(conn):  # most minutes: one query, no SQLAlchemy
            return DueReport([])
    handled = _settle_dead(app)
    tried: list[int] = []
    while True:
        claim = scheduled.claim_next(app.db, tried)
        if claim is None:
            return DueReport(handled)
        tried.append(claim.row.id)
        try:
            done, code = _run_claimed(app, claim)
        finally:
            claim.lock.release()
        handled.append(done)
        if code in (ExitCode.SIGINT, ExitCode.SIGTERM):
            return DueReport(handled, code)  # stopped: the rest wait for the next tick


def _settle_dead(app: App) -> list[Handled]:
    from jobctl.db import ledger, scheduled
    from jobctl.runner import alert_after_sweep

    handled: list[Handled] = []
    dead_runs: list[int] = []
    with app.db.plain() as conn:
        for row in scheduled.dead_claims(conn):
            dead_runs += ledger.sweep_abandoned(conn, row.job)
            run = scheduled.started_run(conn, row)
            worker = f"its worker ({row.claimed_by}) died"
            if run is not None:
                message = f"{worker} during run {run[0]}, which ended {run[1]}"
            else:
                message = f"{worker} before starting a run; due again"
            settled = scheduled.settle_dead(conn, row, run, message)
            if settled is None:
                continue
            next_id = _repeat(conn, settled) if settled.status == "triggered" else None
            run_id, run_status = run if run is not None else (None, None)
            handled.append(
                Handled(row.id, row.job, settled.status, run_id, run_status, message, next_id)
            )
    alert_after_sweep(app.settings, app.db, dead_runs)
    return handled


def _run_claimed(app: App, claim: Claim) -> tuple[Handled, ExitCode]:
    from jobctl.db import scheduled
    from jobctl.runner import RunOptions

    row = claim.row
    deadline = app.settings.schedule.deadline
    late = (claim.row.claimed_at or row.run_at) - row.run_at
    if late > deadline:
        # The last tick's reason when there was one (its job was busy), else no tick ran.
        why = row.error_message or "no worker ran until then"
        reason = f"not started within {format_duration(deadline)} of its time: {why}"
        return _end(app, claim, "failed", error=reason), ExitCode.OK
    if not claim.lock.ping():  # the claim lock is gone: the next tick settles the row
        return Handled(row.id, row.job, "running", message="lost its claim lock"), ExitCode.OK
    options = RunOptions(
        trigger="schedule",
        params=dict(row.params),
        scheduled_for=row.run_at,
        requested_by=row.created_by,
    )
    try:
        outcome = app.run(row.job, options)
    except DatabaseUnreachable:
        raise  # no other row can run either; exits 2 (the claim lock goes with it)
    except JobctlError as exc:  # this row alone (its job gone, its config invalid)
        return _end(app, claim, "failed", error=str(exc)), ExitCode.OK
    if outcome.exit_code == ExitCode.LOCKED:
        with app.db.plain() as conn:
            back = scheduled.release_busy(conn, claim, outcome.message, deadline)
            next_id = _repeat(conn, back) if back is not None and back.status == "failed" else None
        status = back.status if back is not None else "running"
        message = back.error_message if back is not None else outcome.message
        return Handled(row.id, row.job, status, outcome.run_id, None, message, next_id), ExitCode.OK
    done = _end(
        app,
        claim,
        "triggered",
        run_id=outcome.run_id,
        run_status=str(outcome.status),
        error=outcome.message or None,
    )
    return done, outcome.exit_code


def _end(
    app: App,
    claim: Claim,
    status: str,
    *,
    run_id: int | None = None,
    run_status: str | None = None,
    error: str | None = None,
) -> Handled:
    from jobctl.db import scheduled

    row = claim.row
    with app.db.plain() as conn:
        ended = scheduled.finish(
            conn, claim, status, run_id=run_id, run_status=run_status, error=error
        )
        next_id = _repeat(conn, ended) if ended is not None else None
    if ended is None:  # settled by another worker meanwhile (its claim lock was lost)
        return Handled(row.id, row.job, "running", run_id, run_status, "no longer this claim")
    return Handled(row.id, row.job, status, run_id, run_status, error, next_id)


def _repeat(conn: Any, row: Scheduled) -> int | None:
    """A repeating row that ended: its next occurrence (same wall time in its zone)."""
    from jobctl.db import scheduled

    if row.every is None or row.anchor_local is None:
        return None
    not_before = scheduled.server_now(conn) + MIN_AHEAD + _NEXT_MARGIN
    found = next_occurrence(
        row.anchor_local,
        row.every,
        row.occurrence,
        row.timezone,
        not_before=not_before,
        until=row.until,
    )
    if found is None:
        return None
    occurrence, at = found
    new = scheduled.NewSchedule(
        job=row.job,
        params=dict(row.params),
        run_at=at,
        timezone=row.timezone,
        created_at=at,  # not written: the server's now is (see insert_next)
        created_by=row.created_by,
        every=row.every,
        until=row.until,
        anchor_local=row.anchor_local,
        occurrence=occurrence,
        previous_id=row.id,
    )
    return scheduled.insert_next(conn, new)


__all__ = ["DueReport", "Handled", "add", "cancel", "list_schedules", "run_due", "stats"]
