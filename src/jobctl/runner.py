"""The one path every job takes.

resolve config → (disabled? record ``skipped``) → take the job's advisory lock
(or wait for it) → mark dead runs ``abandoned`` → slot checks (already done,
missed) → insert the ``running`` row → attempts (retry transient errors with
exponential back-off and jitter, overall timeout, SIGTERM/SIGINT) → record
counters, status, error, traceback and log tail → release the lock.

A heartbeat thread refreshes ``heartbeat_at`` (and the log tail) while the run
executes and checks that the lock's connection is still alive; if it is lost,
the run is stopped (the statement in flight is cancelled on the server),
because another host may now take the lock. Stopping is not what keeps two runs
apart, though: every transaction the job opens through its context is *fenced*
(``ledger.fence``) and commits only while the run still holds its lock.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobctl.config import JobConfig, Settings
from jobctl.db import ledger
from jobctl.db.engine import Database
from jobctl.db.locks import JobLock
from jobctl.durations import format_duration
from jobctl.errors import (
    DatabaseError,
    ExitCode,
    JobctlError,
    JobError,
    LockLost,
    RunCancelled,
    UsageError,
    exit_code_of,
)
from jobctl.interrupts import Interruption, Interrupts
from jobctl.jobspec import (
    SCHEDULE_WORKER,
    SLOT_TRIGGERS,
    ChildRequest,
    Plan,
    Progress,
    RunOutcome,
    RunStatus,
    Trigger,
)
from jobctl.logs import TailHandler
from jobctl.redact import Redactor, url_secrets
from jobctl.registry import AnyJob, resolve_job

if TYPE_CHECKING:
    # Imported when a run starts: a run that is skipped (lock held, slot done) never
    # needs the job context or the retry machinery.
    from tenacity import RetryCallState, Retrying

    from jobctl.context import RunContext

log = logging.getLogger("jobctl.runner")

#: How long a run waits for a second database connection after taking its lock.
#: The lock pins one server connection for the whole run; behind a pooler with
#: no connection to spare, every further one would queue until the pooler gives up.
SPARE_CONNECTION_WAIT = 15.0
LOST_LOCK = (
    "lost the job's lock (its database connection was closed or the server restarted); "
    "stopped, and its uncommitted work rolled back, so that two copies never run"
)

#: Kept for callers of the tuples these enums replace.
TRIGGERS = tuple(Trigger)


@dataclass(frozen=True)
class RunOptions:
    """How to run a job this time (command-line runner options)."""

    params: Mapping[str, str] = field(default_factory=dict)
    wait: bool = False
    wait_timeout: timedelta | None = None
    retries: int | None = None
    retry_delay: timedelta | None = None
    timeout: timedelta | None = None
    trigger: str | None = None
    force: bool = False
    dry_run: bool = False
    partition: str | None = None
    scheduled_for: datetime | None = None
    parent_id: int | None = None
    now: datetime | None = None
    #: The job's validated plan (``App.run_job``, a parent's child request); its
    #: params are stored with the run. None: the job's default plan, made in the run.
    plan: Plan | None = None
    #: Live progress for the job (a terminal's line or bar); None: plain log lines.
    progress: Progress | None = None
    #: Record the run as ``skipped`` with this reason instead of running it.
    already_done: str | None = None
    #: Who asked for the run (``--by``: a web token's name, a schedule's creator).
    requested_by: str | None = None


def default_trigger(env: Mapping[str, str]) -> Trigger:
    """``timer`` under systemd (it sets ``INVOCATION_ID``), else ``manual``."""
    return Trigger.TIMER if env.get("INVOCATION_ID") else Trigger.MANUAL


@dataclass(frozen=True)
class Invocation:
    """One run being made: everything the steps between the lock and the record share."""

    spec: AnyJob
    cfg: JobConfig
    options: RunOptions
    trigger: Trigger
    #: Stored with the run: the job's configured params, the command's, the plan's.
    params: Mapping[str, str]
    slot: datetime | None
    now: datetime
    lock: JobLock
    interrupt: Interrupts

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def log_level(self) -> int:
        # The command prints the outcome of a top-level run; a child's is only logged.
        return logging.DEBUG if self.options.parent_id is None else logging.INFO


@dataclass(frozen=True)
class Ending:
    """How the attempts ended, before it is recorded."""

    status: RunStatus
    code: ExitCode
    message: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class CrashReport:
    """What ``mark_crashed`` did about a failed systemd unit."""

    job: str
    #: runs found ``running`` with their process gone, now ``abandoned`` (and alerted)
    abandoned: list[int]
    #: the ``failed`` run recorded for a unit that failed before jobctl recorded one
    failed_run: int | None
    message: str


#: The exit status of a run jobctl recorded and alerted itself (failed, interrupted by
#: SIGINT or SIGTERM: a stop of the unit on its timeout records the run cancelled).
_RECORDED_EXITS = ("1", "130", "143")


class Runner:
    """Runs jobs by name; one instance per invocation (or per test)."""

    def __init__(self, settings: Settings, db: Database, jobs: Mapping[str, AnyJob]) -> None:
        self.settings = settings
        self.db = db
        self.jobs = jobs
        self.spare_connection_wait = SPARE_CONNECTION_WAIT
        # The one redaction of this runner's output: log tail, error texts, runs.source.
        self.secrets = Redactor([*settings.secrets(), *url_secrets(db.url)])
        #: The pings sent so far by each run still open (see _ping): stored on its row.
        self._pings: dict[int, dict[str, str]] = {}

    # -- the public entry point ------------------------------------------------
    def run(self, name: str, options: RunOptions | None = None) -> RunOutcome:
        _freeze_start_up()
        inv = self._invocation(name, options or RunOptions())
        if not inv.cfg.enabled:
            reason = f"job {name!r} is disabled ({_enabled_hint(name)})"
            return self._skip(inv, reason, ExitCode.OK, None)
        if inv.options.already_done:
            return self._skip(inv, inv.options.already_done, ExitCode.OK, inv.slot)
        if inv.slot is None and inv.trigger in SLOT_TRIGGERS and inv.cfg.schedule:
            inv = replace(inv, slot=self._slot_for(inv.cfg, inv.now))
        inv.interrupt.install()
        try:
            return self._with_lock(inv)
        finally:
            inv.lock.release()
            inv.interrupt.restore()

    # -- before the run row ----------------------------------------------------
    def mark_crashed(
        self, job: str, *, unit: str | None, result: str | None, exit_status: str | None
    ) -> CrashReport:
        """A systemd unit of ``job`` failed (its OnFailure= hook): make the ledger say so.

        A run whose process was killed (OOM, SIGKILL, timeout) is still ``running`` with
        its lock gone: the sweep marks it ``abandoned`` and alerts, as every sweep does.
        The sweep covers every job, because the schedule worker's unit runs other jobs.
        Otherwise, unless jobctl exited with a status it records itself (1, 130, 143), the
        unit failed before jobctl recorded anything (a bad ExecStart=, exit 2, a crash
        at start-up): a ``failed`` run says so, and the job's alerts are sent for it.
        """
        worker = job == SCHEDULE_WORKER
        if not worker:
            resolve_job(job, self.jobs, self.settings)  # an unknown name: UsageError, no row
        unit = unit or f"systemd unit of {job}"
        how = ", ".join(
            f"{k} {v}" for k, v in (("result", result), ("exit status", exit_status)) if v
        )
        with self.db.begin() as conn:
            dead = ledger.sweep_abandoned(conn)
        alert_after_sweep(self.settings, self.db, dead, self._clean)
        if dead:
            message = f"{unit} failed ({how}): run(s) {', '.join(map(str, dead))} abandoned"
            return CrashReport(job, dead, None, message)
        if exit_status in _RECORDED_EXITS and result == "exit-code":
            message = f"{unit} failed ({how}): jobctl recorded the run and its alerts itself"
            return CrashReport(job, [], None, message)
        if worker:
            # Not a job: no run row to record and no channels of its own. What it was
            # running was swept above; its schedule rows are settled by the next tick.
            message = f"{unit} failed ({how or 'no result given'}); no run of it was running"
            log.error("%s", message, extra={"action": "runs.mark_crashed"})
            return CrashReport(job, [], None, message)
        error = f"{unit} failed ({how or 'no result given'}) before jobctl recorded a run"
        with self.db.begin() as conn:
            run_id = ledger.insert_run(
                conn, job=job, status=RunStatus.FAILED, trigger=Trigger.TIMER, error_message=error
            )
        self._alerts(job, run_id, RunStatus.FAILED)
        return CrashReport(job, [], run_id, f"recorded failed run {run_id}: {error}")

    def _invocation(self, name: str, options: RunOptions) -> Invocation:
        spec = resolve_job(name, self.jobs, self.settings)
        cfg = self.settings.job(name)
        trigger = options.trigger or default_trigger(self.settings.env)
        if trigger not in TRIGGERS:
            raise UsageError(f"trigger {trigger!r} is not one of {', '.join(TRIGGERS)}")
        plan_params = options.plan.params if options.plan is not None else {}
        return Invocation(
            spec=spec,
            cfg=cfg,
            options=options,
            trigger=Trigger(trigger),
            params={**cfg.params, **options.params, **plan_params},
            slot=options.scheduled_for,
            now=options.now or datetime.now(UTC),
            lock=JobLock(self.db, name),
            interrupt=Interrupts(),
        )

    def _skip(
        self,
        inv: Invocation,
        reason: str,
        code: ExitCode,
        slot: datetime | None,
        status: RunStatus = RunStatus.SKIPPED,
    ) -> RunOutcome:
        """Record a run that does not start: one finished row, and its reason logged."""
        # Plain SQL (no SQLAlchemy): a skip is most of what a busy timer does.
        with self.db.plain() as conn:
            run_id = ledger.insert_run(
                conn,
                job=inv.name,
                status=status,
                trigger=inv.trigger,
                params=self.secrets.data(inv.params),
                partition=inv.options.partition,
                parent_id=inv.options.parent_id,
                scheduled_for=slot,
                error_message=reason,
                requested_by=inv.options.requested_by,
            )
        log.log(
            inv.log_level,
            "%s: %s (run %s): %s",
            inv.name,
            status,
            run_id,
            reason,
            extra={"action": f"run.{status}", "run_id": run_id, "job": inv.name},
        )
        return RunOutcome(inv.name, run_id, status, code, reason, scheduled_for=slot)

    def _with_lock(self, inv: Invocation) -> RunOutcome:
        """Take the job's lock (or record why not), then run under it."""
        options, interrupt = inv.options, inv.interrupt
        interrupt.arm()
        try:
            acquired = inv.lock.acquire(options.wait_timeout if options.wait else None)
            if options.wait and options.wait_timeout is None and not acquired:
                acquired = inv.lock.acquire(timedelta(days=3650))
        except Interruption as stop:
            interrupt.disarm()
            cause = stop.cause
            name_of = cause.signal_name if isinstance(cause, RunCancelled) else str(cause)
            reason = f"interrupted by {name_of} while waiting for the lock"
            return self._skip(inv, reason, exit_code_of(cause), inv.slot, RunStatus.CANCELLED)
        interrupt.disarm()
        if not acquired:
            return self._skip(inv, self._held_message(inv), ExitCode.LOCKED, inv.slot)
        wait = self.spare_connection_wait
        if not self.db.embedded and not self.db.spare_connection_within(wait, keep=True):
            inv.lock.release()  # gives its server connection back, so the row can be written
            message = _pool_message(inv.name, wait)
            failed = self._skip(inv, message, ExitCode.FAILED, inv.slot, RunStatus.FAILED)
            # No /start was sent; the check still hears that this tick failed, and the
            # job's channels that it did (a failed run like any other).
            if failed.run_id is not None:
                ending = Ending(RunStatus.FAILED, ExitCode.FAILED, message)
                if not inv.options.dry_run:
                    self._alerts(inv.name, failed.run_id, RunStatus.FAILED)
                self._end_ping(inv, failed.run_id, ending)
            return failed
        return self._run_locked(inv)

    def _held_message(self, inv: Invocation) -> str:
        """Who holds the lock, for the skip's message."""
        name, lock = inv.name, inv.lock
        with self.db.plain() as conn:
            dead = ledger.sweep_abandoned(conn, name)
            holder = ledger.lock_holder(conn, name, lock.key)
            # A jobctl run that has just taken the lock writes its row within
            # milliseconds: wait briefly so the message can name its run. Any
            # other holder (a session whose application_name is not "jobctl
            # HOST PID", or one that took the lock over 2 s ago and still has
            # no row) will not write one: no skip waits for it.
            for _ in range(10):
                if (
                    holder.run_id is not None
                    or holder.pid is None
                    or holder.age_seconds is None
                    or holder.age_seconds >= 2.0
                ):
                    break
                time.sleep(0.05)
                holder = ledger.lock_holder(conn, name, lock.key)
        alert_after_sweep(self.settings, self.db, dead, self._clean)
        options = inv.options
        waited = f" after waiting {format_duration(options.wait_timeout)}" if options.wait else ""
        return _holder_message(name, holder) + waited

    def _slot_for(self, cfg: JobConfig, now: datetime) -> datetime | None:
        from jobctl.schedule import parse_schedule

        assert cfg.schedule is not None
        return parse_schedule(cfg.schedule, cfg.timezone, self.settings.scheduler).slot_for(now)

    # -- under the lock --------------------------------------------------------
    def _run_locked(self, inv: Invocation) -> RunOutcome:
        run_id, reason = self._open_run(inv)
        if reason is not None:
            log.log(
                inv.log_level,
                "%s: skipped (run %s): %s",
                inv.name,
                run_id,
                reason,
                extra={"action": "run.skipped", "run_id": run_id},
            )
            return RunOutcome(
                inv.name, run_id, RunStatus.SKIPPED, ExitCode.OK, reason, scheduled_for=inv.slot
            )
        # After the row is committed (the ping names its run) and before any work, a
        # catch-up's included: the check measures the whole tick.
        self._ping(inv, run_id, "start")
        if (
            inv.cfg.catchup == "all"
            and inv.slot is not None
            and inv.options.parent_id is None
            and inv.trigger in SLOT_TRIGGERS
        ):
            children = self._catch_up(inv, inv.slot, run_id)
            cancelled = [c for c in children if c.status == RunStatus.CANCELLED]
            if cancelled:
                first = cancelled[0]
                self._finish_unstarted(run_id, RunStatus.CANCELLED, first.message)
                self._end_ping(
                    inv, run_id, Ending(RunStatus.CANCELLED, first.exit_code, first.message)
                )
                return RunOutcome(
                    inv.name,
                    run_id,
                    RunStatus.CANCELLED,
                    first.exit_code,
                    first.message,
                    scheduled_for=inv.slot,
                )
        return self._execute(inv, run_id)

    def _open_run(self, inv: Invocation) -> tuple[int, str | None]:
        """Sweep dead runs, check the slot, insert the row: ``running``, or ``skipped``
        with the reason."""
        name = inv.name
        # Plain SQL unless the slot is checked (ledger.completed_slot_run reads
        # through SQLAlchemy): a run of a given date loads no SQLAlchemy.
        checks_slot = inv.slot is not None and not inv.options.force
        if checks_slot:  # on a connection of its own: never three open at once
            self.db.close_kept()
        with self.db.begin() if checks_slot else self.db.plain() as conn:
            dead = ledger.sweep_abandoned(conn, name)
            if dead:
                log.warning(
                    "%s: marked run(s) %s abandoned (their process died)",
                    name,
                    ", ".join(map(str, dead)),
                    extra={"action": "run.abandoned"},
                )
            reason = self._slot_reason(conn, inv)
            runs_now = reason is None
            run_id = ledger.insert_run(
                conn,
                job=name,
                status=RunStatus.RUNNING if runs_now else RunStatus.SKIPPED,
                trigger=inv.trigger,
                params=self.secrets.data(inv.params),
                partition=inv.options.partition,
                parent_id=inv.options.parent_id,
                scheduled_for=inv.slot,
                lock_backend_pid=inv.lock.backend_pid if runs_now else None,
                lock_key=inv.lock.key if runs_now else None,
                error_message=reason,
                dry_run=inv.options.dry_run,
                requested_by=inv.options.requested_by,
            )
        alert_after_sweep(self.settings, self.db, dead, self._clean)
        return run_id, reason

    def _slot_reason(self, conn: Any, inv: Invocation) -> str | None:
        """Why the run's slot needs no run (done already, or missed); None: it does."""
        slot, cfg = inv.slot, inv.cfg
        if slot is None or inv.options.force:
            return None
        done = ledger.completed_slot_run(conn, inv.name, slot)
        if done is not None:
            return f"slot already done (run {done} completed the {_iso(slot)} slot)"
        late = inv.now - slot
        if (
            cfg.catchup == "none"
            # only a tick can be late; a slot handed over (backfill --missing,
            # catch-up) is being filled on purpose
            and inv.options.scheduled_for is None
            and cfg.misfire_grace is not None
            and late > cfg.misfire_grace
        ):
            return (
                f"missed: the {_iso(slot)} slot is {format_duration(late)} "
                f"old, over misfire_grace {format_duration(cfg.misfire_grace)}"
            )
        return None

    def _execute(self, inv: Invocation, run_id: int) -> RunOutcome:
        """The attempts, under a heartbeat and a log tail, then the record."""
        attempts = _Attempts(self, inv, run_id)
        with self._log_tail() as tail:
            beat = _Heartbeat(self, run_id, inv.lock, tail, inv.interrupt)
            clock = time.monotonic()
            # In the log tail: the run's stored lines start with its start.
            log.info(
                "%s: run %s started (trigger %s%s)",
                inv.name,
                run_id,
                inv.trigger,
                f", slot {_iso(inv.slot)}" if inv.slot else "",
                extra={"action": "run.started", "run_id": run_id},
            )
            try:
                end = attempts.run()
            finally:
                beat.stop()
            if end.status == RunStatus.COMPLETED and (
                inv.interrupt.lock_lost or not inv.lock.ping()
            ):
                # A job with no database work has nothing fenced: its end still counts
                # only if the lock held to the end.
                end = Ending(RunStatus.FAILED, ExitCode.FAILED, LOST_LOCK)
            log.log(
                logging.INFO if end.status == RunStatus.COMPLETED else logging.ERROR,
                "%s: run %s %s%s",
                inv.name,
                run_id,
                end.status,
                f": {end.message}" if end.message else "",
                extra={"action": f"run.{end.status}", "run_id": run_id},
            )
            beat.join()
        return self._record(inv, run_id, attempts, end, tail, clock)

    @contextmanager
    def _log_tail(self) -> Iterator[TailHandler]:
        """The run's log lines (INFO at least, whatever the command's verbosity),
        kept for the ledger's ``log_tail``."""
        tail = TailHandler(self.settings.log_tail_lines, self.secrets)
        root = logging.getLogger("jobctl")
        root.addHandler(tail)
        saved_level = root.level
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
        try:
            yield tail
        finally:
            root.removeHandler(tail)
            root.setLevel(saved_level)

    def _record(
        self,
        inv: Invocation,
        run_id: int,
        attempts: _Attempts,
        end: Ending,
        tail: TailHandler,
        clock: float,
    ) -> RunOutcome:
        """Write the run's end (counters, status, error, log tail) and say how it ended."""
        from jobctl.context import Counters

        ctx = attempts.ctx
        counters = ctx.counters if ctx is not None else Counters()
        stats = dict(ctx.stats) if ctx is not None else {}
        if end.status != RunStatus.COMPLETED and ctx is not None:
            stats.setdefault("records_before_failure", counters.total)
        partition = ctx.partition if ctx is not None else None
        source = self.secrets.url(ctx.source) if ctx is not None and ctx.source else None
        if run_id in self._pings:
            stats["pings"] = dict(self._pings[run_id])
        recorded = False
        try:
            with self.db.plain() as conn:
                still_ours = ledger.finish_run(
                    conn,
                    run_id,
                    status=end.status,
                    attempts=attempts.count,
                    counters=counters.as_columns(),
                    stats=self.secrets.data(stats),
                    error_message=end.message,
                    error_detail=end.detail,
                    log_tail=tail.snapshot(),
                    source=source,
                    partition=partition,
                )
            if not still_ours:
                # the process that marked it abandoned alerts for it (after its sweep)
                end = _abandoned(inv.name, run_id, end)
            recorded = still_ours
        except DatabaseError as exc:
            log.error("%s: could not record the end of run %s: %s", inv.name, run_id, exc)
        if recorded and not inv.options.dry_run:
            # After the end is recorded: an alert tells what the ledger says.
            alerts = self._alerts(inv.name, run_id, end.status)
            if alerts is not None:
                stats["alerts"] = alerts
            # Last: a ping holds the lock for seconds at worst, and tells the ledger's end.
            pings = self._end_ping(inv, run_id, end)
            if pings is not None:
                stats["pings"] = pings
        self._pings.pop(run_id, None)
        return RunOutcome(
            inv.name,
            run_id,
            end.status,
            end.code,
            end.message or "",
            counters.as_dict(),
            stats,
            inv.slot,
            partition if ctx is not None else inv.options.partition,
            int((time.monotonic() - clock) * 1000),
        )

    def _alerts(self, job: str, run_id: int, status: RunStatus) -> dict[str, Any] | None:
        """Alerts for a run that ended ``failed`` or ``completed`` (see jobctl.notify.alerts),
        recorded in its ``stats["alerts"]``. Whatever goes wrong here is logged: it never
        changes the run's outcome."""
        if status not in (RunStatus.FAILED, RunStatus.COMPLETED) or not self.settings.channels:
            return None
        try:
            from jobctl.notify import alerts

            hook = alerts.on_failure if status == RunStatus.FAILED else alerts.on_success
            result = hook(self.settings, self.db, self._clean, job, run_id)
            if result is not None:
                with self.db.begin() as conn:
                    ledger.note_stats(conn, run_id, {"alerts": result})
            return result
        except Exception as exc:
            log.error(
                "%s: alerts for run %s failed: %s",
                job,
                run_id,
                self._clean(f"{type(exc).__name__}: {exc}"),
                extra={"action": "alert.failed", "run_id": run_id, "job": job},
            )
            return None

    def _pinged(self, inv: Invocation) -> str | None:
        """The job's ping URL, when this run pings (see jobctl.notify.pings)."""
        if inv.options.dry_run or inv.options.parent_id is not None:
            return None
        return inv.cfg.ping_url

    def _ping(
        self, inv: Invocation, run_id: int, kind: str, message: str | None = None
    ) -> dict[str, str] | None:
        """Send one ping about the run; the run's pings so far (None: it does not ping).
        Only then is the HTTP stack imported; whatever happens is logged, never raised."""
        url = self._pinged(inv)
        if url is None:
            return None
        sent = self._pings.setdefault(run_id, {})
        try:
            from jobctl.notify import pings

            sent[kind] = pings.send(kind, url, inv.name, run_id, self._clean, message)
        except Exception as exc:
            sent[kind] = self._clean(f"failed: {type(exc).__name__}: {exc}")
            log.error(
                "%s: %s ping for run %s %s",
                inv.name,
                kind,
                run_id,
                sent[kind],
                extra={"action": "ping.failed", "run_id": run_id, "job": inv.name},
            )
        return sent

    def _end_ping(self, inv: Invocation, run_id: int, end: Ending) -> dict[str, Any] | None:
        """The success or ``/fail`` ping of a run whose end is recorded, added to its
        ``stats["pings"]``. A failure to store that is logged: the run has ended."""
        if end.status == RunStatus.COMPLETED:
            sent = self._ping(inv, run_id, "success")
        else:
            sent = self._ping(inv, run_id, "fail", f"{end.status}: {end.message or ''}")
        if sent is None:
            return None
        self._pings.pop(run_id, None)
        try:
            with self.db.begin() as conn:
                ledger.note_stats(conn, run_id, {"pings": sent})
        except Exception as exc:
            log.error(
                "%s: could not record the pings of run %s: %s",
                inv.name,
                run_id,
                self._clean(f"{type(exc).__name__}: {exc}"),
                extra={"action": "ping.failed", "run_id": run_id, "job": inv.name},
            )
        return dict(sent)

    def _finish_unstarted(self, run_id: int, status: RunStatus, message: str) -> None:
        with self.db.plain() as conn:
            ledger.finish_run(
                conn,
                run_id,
                status=status,
                attempts=0,
                counters={},
                stats={},
                error_message=message,
                error_detail=None,
                log_tail=[],
            )

    def _start_child(self, job: str, request: ChildRequest, parent_id: int) -> RunOutcome:
        """A job's ``ctx.run_child``: the request as runner options, under this run."""
        options = RunOptions(
            params=request.params,
            wait=request.wait,
            wait_timeout=request.wait_timeout,
            trigger=request.trigger,
            force=request.force,
            partition=request.partition,
            scheduled_for=request.scheduled_for,
            parent_id=parent_id,
            plan=request.plan,
            already_done=request.already_done,
        )
        return self.run(job, options)

    def _catch_up(self, inv: Invocation, slot: datetime, run_id: int) -> list[RunOutcome]:
        """``catchup = "all"``: run the missed slots in the window, oldest first, as children."""
        from jobctl.gaps import missing

        spec, cfg = inv.spec, inv.cfg
        if not spec.date_based:
            log.warning(
                "%s: catchup = all needs a job whose work depends on the date; "
                "running the latest slot only",
                spec.name,
            )
            return []
        with self.db.begin() as conn:
            gaps = missing(conn, self.settings, spec, cfg, inv.now - cfg.catchup_window, slot)
        if gaps:
            log.info(
                "%s: catching up %d missed slot(s) first",
                spec.name,
                len(gaps),
                extra={"action": "run.catchup", "run_id": run_id},
            )
        outcomes: list[RunOutcome] = []
        for gap in gaps:
            child = replace(
                inv.options,
                scheduled_for=gap.scheduled_for,
                parent_id=run_id,
                force=False,
                partition=None,
            )
            outcomes.append(self._run_locked(replace(inv, options=child, slot=gap.scheduled_for)))
            if outcomes[-1].status == RunStatus.CANCELLED:
                break
        return outcomes

    def _heartbeat(
        self,
        run_id: int,
        lock: JobLock,
        tail: TailHandler,
        stop: threading.Event,
        interrupt: Interrupts,
    ) -> None:
        interval = max(self.settings.heartbeat.total_seconds(), 0.2)
        while not stop.wait(interval):
            if not lock.ping():
                log.error(
                    "run %s: lost the job's lock (its database connection dropped); stopping",
                    run_id,
                    extra={"action": "run.lock_lost", "run_id": run_id},
                )
                interrupt.on_lock_lost(LOST_LOCK)
                return
            try:
                with self.db.plain() as conn:
                    ledger.heartbeat(conn, run_id, tail.snapshot())
            except JobctlError as exc:
                log.warning("run %s: heartbeat failed: %s", run_id, exc)

    def _clean(self, text: str) -> str:
        return self.secrets.text(text)


class _Heartbeat:
    """The thread refreshing ``heartbeat_at`` and the log tail while the run executes."""

    def __init__(
        self,
        runner: Runner,
        run_id: int,
        lock: JobLock,
        tail: TailHandler,
        interrupt: Interrupts,
    ) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=runner._heartbeat,
            args=(run_id, lock, tail, self._stop, interrupt),
            name=f"jobctl-heartbeat-{run_id}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        self._thread.join(timeout=5)


class _Attempts:
    """The attempt loop: a context per attempt, transient errors retried (tenacity)
    with exponential back-off and jitter, the overall timeout and signals armed."""

    def __init__(self, runner: Runner, inv: Invocation, run_id: int) -> None:
        self.runner = runner
        self.inv = inv
        self.run_id = run_id
        self.count = 0
        self.ctx: RunContext | None = None
        # Every transaction the job opens through its context commits only while
        # this run still holds its lock.
        self.run_db = runner.db.fenced(self._fence)
        self.job_log = logging.getLogger(f"jobctl.job.{inv.name}")

    def _fence(self, conn: Any) -> None:
        if self.inv.interrupt.lock_lost or not ledger.fence(conn, self.run_id):
            raise LockLost(LOST_LOCK)

    def _check_lock(self) -> None:
        if self.inv.interrupt.lock_lost or not self.inv.lock.ping():
            raise LockLost(LOST_LOCK)

    def run(self) -> Ending:
        """Every attempt until one succeeds or retrying stops; how they ended."""
        inv, cfg = self.inv, self.inv.cfg
        interrupt = inv.interrupt
        try:
            interrupt.set_timeout(inv.options.timeout or cfg.timeout)
            interrupt.arm()
            retries = self.retries
            if retries:
                self._retrying(retries)(self.attempt)
            else:  # one attempt, nothing to retry: no retry machinery (tenacity) to load
                self.attempt()
        except (Interruption, Exception) as exc:
            return failure(exc, self.runner._clean)
        finally:
            interrupt.disarm()
            interrupt.clear_timeout()
        return Ending(RunStatus.COMPLETED, ExitCode.OK)

    def attempt(self) -> None:
        from jobctl.context import RunContext

        inv, options = self.inv, self.inv.options
        inv.interrupt.arm()
        self.count += 1
        ctx = RunContext(
            run_id=self.run_id,
            job=inv.name,
            params=dict(inv.params),
            settings=self.runner.settings,
            config=inv.cfg,
            db=self.run_db,
            log=self.job_log,
            trigger=inv.trigger,
            partition=options.partition,
            scheduled_for=inv.slot,
            attempt=self.count,
            force=options.force,
            dry_run=options.dry_run,
            progress=options.progress,
            _start_child=self.runner._start_child,
            _check_lock=self._check_lock,
            _jobs=self.runner.jobs,
        )
        self.ctx = ctx
        ok = False
        try:
            spec = inv.spec
            # A tick has no plan yet: the job's default one, validated in the run.
            plan = (
                spec.check_plan(options.plan)
                if options.plan is not None
                else spec.default_plan(ctx.settings)
            )
            _apply_result(ctx, spec.run(ctx, plan))
            ok = True
        finally:
            if ok:
                # Not while committing: a signal then would record a run as
                # cancelled whose work the server may have committed.
                inv.interrupt.disarm()
            ctx._finish(ok)

    @property
    def retries(self) -> int:
        cfg, options = self.inv.cfg, self.inv.options
        return cfg.retries if options.retries is None else options.retries

    def _retrying(self, retries: int) -> Retrying:
        from tenacity import Retrying, retry_if_exception, stop_after_attempt
        from tenacity import wait_exponential_jitter as jittered

        cfg, options = self.inv.cfg, self.inv.options
        delay = cfg.retry_delay if options.retry_delay is None else options.retry_delay
        seconds = delay.total_seconds()
        return Retrying(
            stop=stop_after_attempt(retries + 1),
            wait=jittered(multiplier=seconds, max=max(seconds * 32, 1.0), jitter=seconds),
            retry=retry_if_exception(is_transient),
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0
        log.warning(
            "%s: attempt %d failed (%s); retrying in %s",
            self.inv.name,
            retry_state.attempt_number,
            self.runner._clean(str(exc)),
            format_duration(wait),
            extra={"action": "run.retry", "run_id": self.run_id},
        )


def alert_after_sweep(
    settings: Settings, db: Database, dead: list[int], clean: Callable[[str], str] | None = None
) -> None:
    """Alerts and ``/fail`` pings for the runs a sweep just marked ``abandoned`` (every
    sweep calls this with what it returned). Only then are the notify modules imported;
    a failure is logged."""
    pinging = bool(settings.ping_urls())
    if not dead or not (settings.channels or pinging):
        return
    if clean is None:
        clean = Redactor([*settings.secrets(), *url_secrets(db.url)]).text
    if settings.channels:
        try:
            from jobctl.notify.alerts import after_sweep

            after_sweep(settings, db, clean, dead)
        except Exception as exc:
            failed = clean(f"{type(exc).__name__}: {exc}")
            log.error("alerts for abandoned run(s) failed: %s", failed)
    if pinging:
        try:
            from jobctl.notify import pings

            pings.after_sweep(settings, db, clean, dead)
        except Exception as exc:
            failed = clean(f"{type(exc).__name__}: {exc}")
            log.error(
                "pings for abandoned run(s) failed: %s", failed, extra={"action": "ping.failed"}
            )


_frozen = False


def _freeze_start_up() -> None:
    """Once per process, before its first run: move everything allocated so far (the
    modules, classes and settings of the start-up) out of the garbage collector's
    reach. They live until the process exits anyway; unfrozen, every full collection
    walks them again, and so does the interpreter's last one at exit: 20-100 ms of
    a process that runs one job. What a run allocates is collected as usual."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()


def _abandoned(job: str, run_id: int, end: Ending) -> Ending:
    """A run another process marked ``abandoned`` while it ran (its lock was lost)."""
    message = (
        f"run {run_id} was marked abandoned by another process while it ran "
        "(its lock connection was lost)"
    )
    log.error("%s: %s", job, message, extra={"action": "run.abandoned"})
    return replace(end, status=RunStatus.ABANDONED, code=ExitCode.FAILED, message=message)


def is_transient(exc: BaseException) -> bool:
    """What the runner retries: a job error that says a retry may help."""
    return isinstance(exc, JobError) and exc.transient


def failure(exc: BaseException, clean: Callable[[str], str]) -> Ending:
    """How an error that ended the attempts is recorded; its exit code is its own."""
    if isinstance(exc, Interruption):
        cause = exc.cause
        if isinstance(cause, RunCancelled):
            return Ending(RunStatus.CANCELLED, exit_code_of(cause), str(cause))
        return Ending(RunStatus.FAILED, exit_code_of(cause), clean(str(cause)), _trace(exc, clean))
    if isinstance(exc, RunCancelled):  # a child run was cancelled: so is its parent
        return Ending(RunStatus.CANCELLED, exit_code_of(exc), str(exc))
    if isinstance(exc, JobctlError):
        message = str(exc)
    else:
        # A user job's own error (a driver error with its SQL, say): its first line is the
        # message, the whole of it is in the traceback (``runs show``).
        from jobctl.db.errors import driver_error, first_line

        kind, text = type(driver_error(exc)).__name__, first_line(exc)
        message = kind if text == kind else f"{kind}: {text}"
    return Ending(RunStatus.FAILED, exit_code_of(exc), clean(message), _trace(exc, clean))


def _trace(exc: BaseException, clean: Callable[[str], str]) -> str:
    return clean("".join(traceback.format_exception(exc)))


def _apply_result(ctx: RunContext, result: Any) -> None:
    from jobctl.context import Counters

    if result is None:
        return
    if isinstance(result, Counters):
        ctx.counters = result
    elif isinstance(result, Mapping):
        ctx.counters.add({k: v for k, v in result.items() if isinstance(v, int)})
    else:
        raise JobError(f"job returned {type(result).__name__}; expected None, Counters or a dict")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _enabled_hint(name: str) -> str:
    import re

    return f"jobs.{name}.enabled or JOBCTL_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}_ENABLED"


def _pool_message(job: str, waited: float) -> str:
    return (
        f"job {job!r} could not open a second database connection within "
        f"{format_duration(waited)} while holding its lock: the connection "
        "pool (PgBouncer?) is too small. Every concurrently running job needs two server "
        "connections, one for its lock and one for its work: set the pool size "
        "(default_pool_size / pool_size) to at least 2 x the jobs that may run at once"
    )


def _holder_message(job: str, holder: ledger.Holder) -> str:
    if holder.run_id is None and holder.pid is not None:
        return (
            f"job {job!r} is already running: a run starting on host {holder.host} "
            f"(pid {holder.pid}), lock held for {format_duration(holder.age_seconds)}"
        )
    if holder.run_id is None:
        return f"job {job!r} is already running (its lock is held; the holder is just starting)"
    return (
        f"job {job!r} is already running: run {holder.run_id} on host {holder.host} "
        f"(pid {holder.pid}), started {format_duration(holder.age_seconds)} ago"
    )


__all__ = [
    "CrashReport",
    "Invocation",
    "RunOptions",
    "RunOutcome",
    "Runner",
    "alert_after_sweep",
    "default_trigger",
]
