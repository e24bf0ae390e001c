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

import logging
import threading
import time
import traceback
from collections.abc import Mapping
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
)
from jobctl.interrupts import Interruption, Interrupts
from jobctl.logs import TailHandler
from jobctl.redact import Redactor, url_secrets
from jobctl.registry import JobSpec, resolve

if TYPE_CHECKING:
    # Imported in _execute: a run that is skipped (lock held, slot done) never needs
    # the job context or the retry machinery.
    from tenacity import RetryCallState

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

TRIGGERS = ("manual", "timer", "cron", "schedule", "backfill", "catchup")
SLOT_TRIGGERS = ("timer", "cron", "schedule")


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
    #: Job-specific inputs that are not stored as params (e.g. sync's ``--file``).
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunOutcome:
    job: str
    run_id: int | None
    status: str
    exit_code: ExitCode
    message: str = ""
    counters: Mapping[str, int] = field(default_factory=dict)
    stats: Mapping[str, Any] = field(default_factory=dict)
    scheduled_for: datetime | None = None
    partition: str | None = None
    duration_ms: int | None = None


def default_trigger(env: Mapping[str, str]) -> str:
    """``timer`` under systemd (it sets ``INVOCATION_ID``), else ``manual``."""
    return "timer" if env.get("INVOCATION_ID") else "manual"


class Runner:
    """Runs jobs by name; one instance per invocation (or per test)."""

    def __init__(self, settings: Settings, db: Database, jobs: Mapping[str, JobSpec]) -> None:
        self.settings = settings
        self.db = db
        self.jobs = jobs
        self.spare_connection_wait = SPARE_CONNECTION_WAIT
        # The one redaction of this runner's output: log tail, error texts, runs.source.
        self.secrets = Redactor([*settings.secrets(), *url_secrets(db.url)])

    # -- the public entry point ------------------------------------------------
    def run(self, name: str, options: RunOptions | None = None) -> RunOutcome:
        options = options or RunOptions()
        no_config = None
        if self.settings.config_path is None:
            no_config = str(self.settings.looked_for or "jobctl.toml")
        spec = resolve(name, self.jobs, self.settings.jobs, no_config=no_config)
        cfg = self.settings.job(name)
        trigger = options.trigger or default_trigger(self.settings.env)
        if trigger not in TRIGGERS:
            raise UsageError(f"trigger {trigger!r} is not one of {', '.join(TRIGGERS)}")
        now = options.now or datetime.now(UTC)
        params = {**cfg.params, **options.params}

        def skip(
            reason: str, code: ExitCode, slot: datetime | None = None, status: str = "skipped"
        ) -> RunOutcome:
            # Plain SQL (no SQLAlchemy): a skip is most of what a busy timer does.
            with self.db.plain() as conn:
                run_id = ledger.insert_run(
                    conn,
                    job=name,
                    status=status,
                    trigger=trigger,
                    params=self.secrets.data(params),
                    partition=options.partition,
                    parent_id=options.parent_id,
                    scheduled_for=slot,
                    error_message=reason,
                )
            # The command prints the outcome of a top-level run; a child's is only logged.
            log.log(
                logging.DEBUG if options.parent_id is None else logging.INFO,
                "%s: %s (run %s): %s",
                name,
                status,
                run_id,
                reason,
                extra={"action": f"run.{status}", "run_id": run_id, "job": name},
            )
            return RunOutcome(name, run_id, status, code, reason, scheduled_for=slot)

        if not cfg.enabled:
            return skip(f"job {name!r} is disabled ({_enabled_hint(name)})", ExitCode.OK)
        if options.extra.get("skip_reason"):
            return skip(str(options.extra["skip_reason"]), ExitCode.OK, options.scheduled_for)

        slot = options.scheduled_for
        if slot is None and trigger in SLOT_TRIGGERS and cfg.schedule:
            slot = self._slot_for(cfg, now)

        interrupt = Interrupts()
        interrupt.install()
        lock = JobLock(self.db, name)
        try:
            interrupt.arm()
            try:
                acquired = lock.acquire(options.wait_timeout if options.wait else None)
                if options.wait and options.wait_timeout is None and not acquired:
                    acquired = lock.acquire(timedelta(days=3650))
            except Interruption as stop:
                interrupt.disarm()
                cause = stop.cause
                name_of = cause.signal_name if isinstance(cause, RunCancelled) else str(cause)
                return skip(
                    f"interrupted by {name_of} while waiting for the lock",
                    cause.exit_code,
                    slot,
                    status="cancelled",
                )
            interrupt.disarm()
            if not acquired:
                with self.db.plain() as conn:
                    ledger.sweep_abandoned(conn, name)
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
                waited = (
                    f" after waiting {format_duration(options.wait_timeout)}"
                    if options.wait
                    else ""
                )
                return skip(_holder_message(name, holder) + waited, ExitCode.LOCKED, slot)
            wait = self.spare_connection_wait
            if not self.db.embedded and not self.db.spare_connection_within(wait):
                lock.release()  # gives its server connection back, so the row can be written
                return skip(_pool_message(name, wait), ExitCode.FAILED, slot, status="failed")
            return self._run_locked(spec, cfg, options, trigger, params, slot, now, lock, interrupt)
        finally:
            lock.release()
            interrupt.restore()

    # -- internals -------------------------------------------------------------
    def _slot_for(self, cfg: JobConfig, now: datetime) -> datetime | None:
        from jobctl.schedule import parse_schedule

        assert cfg.schedule is not None
        return parse_schedule(cfg.schedule, cfg.timezone, self.settings.scheduler).slot_for(now)

    def _run_locked(
        self,
        spec: JobSpec,
        cfg: JobConfig,
        options: RunOptions,
        trigger: str,
        params: dict[str, str],
        slot: datetime | None,
        now: datetime,
        lock: JobLock,
        interrupt: Interrupts,
    ) -> RunOutcome:
        name = spec.name
        with self.db.begin() as conn:
            dead = ledger.sweep_abandoned(conn, name)
            if dead:
                log.warning(
                    "%s: marked run(s) %s abandoned (their process died)",
                    name,
                    ", ".join(map(str, dead)),
                    extra={"action": "run.abandoned"},
                )
            reason = None
            if slot is not None and not options.force:
                done = ledger.completed_slot_run(conn, name, slot)
                if done is not None:
                    reason = f"slot already done (run {done} completed the {_iso(slot)} slot)"
                elif (
                    cfg.catchup == "none"
                    # only a tick can be late; a slot handed over (backfill --missing,
                    # catch-up) is being filled on purpose
                    and options.scheduled_for is None
                    and cfg.misfire_grace is not None
                    and now - slot > cfg.misfire_grace
                ):
                    reason = (
                        f"missed: the {_iso(slot)} slot is {format_duration(now - slot)} "
                        f"old, over misfire_grace {format_duration(cfg.misfire_grace)}"
                    )
            runs_now = reason is None
            run_id = ledger.insert_run(
                conn,
                job=name,
                status="running" if runs_now else "skipped",
                trigger=trigger,
                params=self.secrets.data(params),
                partition=options.partition,
                parent_id=options.parent_id,
                scheduled_for=slot,
                lock_backend_pid=lock.backend_pid if runs_now else None,
                lock_key=lock.key if runs_now else None,
                error_message=reason,
                dry_run=options.dry_run,
            )
        if reason is not None:
            log.log(
                logging.DEBUG if options.parent_id is None else logging.INFO,
                "%s: skipped (run %s): %s",
                name,
                run_id,
                reason,
                extra={"action": "run.skipped", "run_id": run_id},
            )
            return RunOutcome(name, run_id, "skipped", ExitCode.OK, reason, scheduled_for=slot)
        if (
            cfg.catchup == "all"
            and slot is not None
            and options.parent_id is None
            and trigger in SLOT_TRIGGERS
        ):
            children = self._catch_up(
                spec, cfg, options, trigger, params, slot, now, run_id, lock, interrupt
            )
            cancelled = [c for c in children if c.status == "cancelled"]
            if cancelled:
                self._finish_unstarted(run_id, "cancelled", cancelled[0].message)
                return RunOutcome(
                    name,
                    run_id,
                    "cancelled",
                    cancelled[0].exit_code,
                    cancelled[0].message,
                    scheduled_for=slot,
                )
        return self._execute(spec, cfg, options, trigger, params, slot, run_id, lock, interrupt)

    def _execute(
        self,
        spec: JobSpec,
        cfg: JobConfig,
        options: RunOptions,
        trigger: str,
        params: dict[str, str],
        slot: datetime | None,
        run_id: int,
        lock: JobLock,
        interrupt: Interrupts,
    ) -> RunOutcome:
        from tenacity import (
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            wait_exponential_jitter,
        )

        from jobctl.context import Counters, RunContext

        name = spec.name
        tail = TailHandler(self.settings.log_tail_lines, self.secrets)
        root = logging.getLogger("jobctl")
        root.addHandler(tail)
        saved_level = root.level
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
        job_log = logging.getLogger(f"jobctl.job.{name}")
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat,
            args=(run_id, lock, tail, stop, interrupt),
            name=f"jobctl-heartbeat-{run_id}",
            daemon=True,
        )
        beat.start()
        retries = cfg.retries if options.retries is None else options.retries
        delay = cfg.retry_delay if options.retry_delay is None else options.retry_delay
        timeout = options.timeout or cfg.timeout
        state: dict[str, Any] = {"attempts": 0, "ctx": None}
        clock = time.monotonic()
        status, code, message, detail = "completed", ExitCode.OK, None, None
        log.info(
            "%s: run %s started (trigger %s%s)",
            name,
            run_id,
            trigger,
            f", slot {_iso(slot)}" if slot else "",
            extra={"action": "run.started", "run_id": run_id},
        )

        def fence(conn: Any) -> None:
            if interrupt.lock_lost or not ledger.fence(conn, run_id):
                raise LockLost(LOST_LOCK)

        def check_lock() -> None:
            if interrupt.lock_lost or not lock.ping():
                raise LockLost(LOST_LOCK)

        run_db = self.db.fenced(fence)

        def attempt() -> RunContext:
            interrupt.arm()
            state["attempts"] += 1
            ctx = RunContext(
                run_id=run_id,
                job=name,
                params=dict(params),
                settings=self.settings,
                config=cfg,
                db=run_db,
                log=job_log,
                trigger=trigger,
                partition=options.partition,
                scheduled_for=slot,
                attempt=state["attempts"],
                force=options.force,
                dry_run=options.dry_run,
                progress=options.extra.get("progress"),
                _start_child=self._start_child,
                _check_lock=check_lock,
            )
            ctx.stats.update(options.extra.get("stats", {}))
            state["ctx"] = ctx
            ok = False
            try:
                result = spec.fn(ctx, **dict(options.extra.get("kwargs", {})))
                _apply_result(ctx, result)
                ok = True
            finally:
                if ok:
                    # Not while committing: a signal then would record a run as
                    # cancelled whose work the server may have committed.
                    interrupt.disarm()
                ctx._finish(ok)
            return ctx

        def before_sleep(retry_state: RetryCallState) -> None:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            wait = retry_state.next_action.sleep if retry_state.next_action else 0
            log.warning(
                "%s: attempt %d failed (%s); retrying in %s",
                name,
                retry_state.attempt_number,
                self._clean(str(exc)),
                format_duration(wait),
                extra={"action": "run.retry", "run_id": run_id},
            )

        retrying = Retrying(
            stop=stop_after_attempt(retries + 1),
            wait=wait_exponential_jitter(
                multiplier=delay.total_seconds(),
                max=max(delay.total_seconds() * 32, 1.0),
                jitter=delay.total_seconds(),
            ),
            retry=retry_if_exception(lambda e: isinstance(e, JobError) and e.transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            interrupt.set_timeout(timeout)
            interrupt.arm()
            ctx = retrying(attempt)
        except Interruption as stopped:
            exc, detail = stopped.cause, self._clean("".join(traceback.format_exception(stopped)))
            if isinstance(exc, RunCancelled):
                status, code, message, detail = "cancelled", exc.exit_code, str(exc), None
            else:
                status, code, message = "failed", exc.exit_code, self._clean(str(exc))
        except RunCancelled as exc:  # a child run was cancelled: so is its parent
            status, code, message = "cancelled", exc.exit_code, str(exc)
        except JobctlError as exc:
            status, message = "failed", self._clean(str(exc))
            code = ExitCode.USAGE if isinstance(exc, UsageError) else ExitCode.FAILED
            detail = self._clean("".join(traceback.format_exception(exc)))
        except Exception as exc:
            status, code = "failed", ExitCode.FAILED
            message = self._clean(f"{type(exc).__name__}: {exc}")
            detail = self._clean("".join(traceback.format_exception(exc)))
        finally:
            interrupt.disarm()
            interrupt.clear_timeout()
            stop.set()
        ctx = state["ctx"]
        if status == "completed" and (interrupt.lock_lost or not lock.ping()):
            # A job with no database work has nothing fenced: its end still counts
            # only if the lock held to the end.
            status, code, message = "failed", ExitCode.FAILED, LOST_LOCK
        counters = ctx.counters if ctx is not None else Counters()
        stats = dict(ctx.stats) if ctx is not None else {}
        if status != "completed" and ctx is not None:
            stats.setdefault("records_before_failure", counters.total)
        level = logging.INFO if status == "completed" else logging.ERROR
        log.log(
            level,
            "%s: run %s %s%s",
            name,
            run_id,
            status,
            f": {message}" if message else "",
            extra={"action": f"run.{status}", "run_id": run_id},
        )
        beat.join(timeout=5)
        root.removeHandler(tail)
        root.setLevel(saved_level)
        source = self.secrets.url(ctx.source) if ctx is not None and ctx.source else None
        try:
            with self.db.begin() as conn:
                still_ours = ledger.finish_run(
                    conn,
                    run_id,
                    status=status,
                    attempts=state["attempts"],
                    counters=counters.as_columns(),
                    stats=self.secrets.data(stats),
                    error_message=message,
                    error_detail=detail,
                    log_tail=tail.snapshot(),
                    source=source,
                    partition=ctx.partition if ctx is not None else None,
                )
            if not still_ours:
                status, code = "abandoned", ExitCode.FAILED
                message = (
                    f"run {run_id} was marked abandoned by another process while it ran "
                    "(its lock connection was lost)"
                )
                log.error("%s: %s", name, message, extra={"action": "run.abandoned"})
        except DatabaseError as exc:
            log.error("%s: could not record the end of run %s: %s", name, run_id, exc)
        return RunOutcome(
            name,
            run_id,
            status,
            code,
            message or "",
            counters.as_dict(),
            stats,
            slot,
            ctx.partition if ctx is not None else options.partition,
            int((time.monotonic() - clock) * 1000),
        )

    def _finish_unstarted(self, run_id: int, status: str, message: str) -> None:
        with self.db.begin() as conn:
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

    def _start_child(self, job: str, options: RunOptions, parent_id: int) -> RunOutcome:
        return self.run(job, replace(options, parent_id=parent_id))

    def _catch_up(
        self,
        spec: JobSpec,
        cfg: JobConfig,
        options: RunOptions,
        trigger: str,
        params: dict[str, str],
        slot: datetime,
        now: datetime,
        run_id: int,
        lock: JobLock,
        interrupt: Interrupts,
    ) -> list[RunOutcome]:
        """``catchup = "all"``: run the missed slots in the window, oldest first, as children."""
        from jobctl.gaps import missing

        if not spec.date_based:
            log.warning(
                "%s: catchup = all needs a job whose work depends on the date; "
                "running the latest slot only",
                spec.name,
            )
            return []
        with self.db.begin() as conn:
            gaps = missing(conn, self.settings, spec, cfg, now - cfg.catchup_window, slot)
        if gaps:
            log.info(
                "%s: catching up %d missed slot(s) first",
                spec.name,
                len(gaps),
                extra={"action": "run.catchup", "run_id": run_id},
            )
        outcomes = []
        for gap in gaps:
            child = replace(
                options,
                scheduled_for=gap.scheduled_for,
                parent_id=run_id,
                force=False,
                partition=None,
            )
            outcomes.append(
                self._run_locked(
                    spec, cfg, child, trigger, params, gap.scheduled_for, now, lock, interrupt
                )
            )
            if outcomes[-1].status == "cancelled":
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
                with self.db.begin() as conn:
                    ledger.heartbeat(conn, run_id, tail.snapshot())
            except JobctlError as exc:
                log.warning("run %s: heartbeat failed: %s", run_id, exc)

    def _clean(self, text: str) -> str:
        return self.secrets.text(text)


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


__all__ = ["RunOptions", "RunOutcome", "Runner", "default_trigger"]
