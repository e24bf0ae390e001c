"""The library object behind the CLI: settings → database → jobs → runner.

Every command opens one ``App``, calls one method and renders what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from jobctl.errors import UsageError
from jobctl.jobspec import RunStatus
from jobctl.registry import Jobs, all_jobs

if TYPE_CHECKING:
    from pathlib import Path

    # The database layer (SQLAlchemy, psycopg) and the runner are imported by the
    # methods that use them: a command pays only for what it touches.
    from sqlalchemy import Connection

    from jobctl.config import Settings
    from jobctl.db.engine import Database
    from jobctl.deploy import DeployResult
    from jobctl.gaps import Gap
    from jobctl.runner import CrashReport, Runner, RunOptions, RunOutcome

T = TypeVar("T")


@dataclass(frozen=True)
class JobInfo:
    name: str
    description: str
    builtin: bool
    enabled: bool
    schedule: str | None
    schedule_words: str | None
    timezone: str
    next_fire_times: list[datetime]
    last_status: str | None
    last_run_id: int | None
    last_success: datetime | None
    running: Mapping[str, Any] | None
    #: Days in the coming year when the schedule meets a DST gap or repeat of its zone,
    #: and what the configured scheduler then does (``schedule.DstNote``).
    dst_notes: list[Any] = field(default_factory=list)


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def db(self) -> Database:
        from jobctl.db.engine import open_database
        from jobctl.db.migrate import ensure_schema

        db = open_database(self.settings.database_url, self.settings.data_dir)
        ensure_schema(db)
        return db

    def keep_connections(self, size: int) -> None:
        """Reuse up to ``size`` database connections from now on (a long-lived server,
        whose every request would otherwise open one)."""
        self.__dict__["db"] = self.db.pooled(size)

    def raw_db(self) -> Database:
        """The database without the automatic upgrade (for ``db status``)."""
        from jobctl.db.engine import open_database

        return open_database(self.settings.database_url, self.settings.data_dir)

    @cached_property
    def jobs(self) -> Jobs:
        return all_jobs(self.settings.jobs_module, self.settings.jobs_path)

    def _alert_abandoned(self, dead: list[int]) -> None:
        """A sweep's abandoned runs alert like failed ones (nothing to do when none)."""
        if dead:
            from jobctl.runner import alert_after_sweep

            alert_after_sweep(self.settings, self.db, dead)

    def read_ledger(self, read: Callable[[Connection], T]) -> T:
        """``read(conn)`` after runs left by dead processes are marked abandoned (and
        alerted), in one transaction: what the health commands see is current."""
        from jobctl.db import ledger

        with self.db.begin() as conn:
            dead = ledger.sweep_abandoned(conn)
            found = read(conn)
        self._alert_abandoned(dead)
        return found

    def runner(self) -> Runner:
        from jobctl.runner import Runner

        return Runner(self.settings, self.db, self.jobs)

    def run(self, name: str, options: RunOptions) -> RunOutcome:
        """Run a job with no arguments of its own (``jobctl run NAME``, a timer tick):
        a job that has a plan makes its default one inside the run."""
        return self.runner().run(name, options)

    def run_job(self, name: str, options: RunOptions, args: object) -> RunOutcome:
        """Run a job with its command's arguments: the job's ``plan`` validates them
        against the configuration first (UsageError, exit 2, before any run row),
        and the plan's params are stored with the run."""
        from jobctl.jobspec import Planning
        from jobctl.registry import builtin_jobs, resolve_job

        # Planned before the database is opened or the user's jobs module imported:
        # a bad argument is told as it is, not hidden behind a database down.
        builtin = builtin_jobs()
        spec = builtin[name] if name in builtin else resolve_job(name, self.jobs, self.settings)
        planning = Planning(force=options.force, now=options.now, dry_run=options.dry_run)
        plan = spec.plan(self.settings, args, planning)
        return self.run(name, replace(options, plan=plan))

    def gaps(self, job: str, since: timedelta, now: datetime | None = None) -> list[Gap]:
        from jobctl.db import ledger
        from jobctl.gaps import missing

        now = now or datetime.now(UTC)
        cfg = self.settings.job(job)
        if job not in self.jobs and job not in self.settings.jobs:
            from jobctl.registry import resolve

            resolve(job, self.jobs, self.settings.jobs)
        if not cfg.schedule:
            raise UsageError(f"job {job!r} has no schedule (set jobs.{job}.schedule)")
        with self.db.begin() as conn:
            dead = ledger.sweep_abandoned(conn, job)
            gaps = missing(conn, self.settings, self.jobs.get(job), cfg, now - since, now)
        self._alert_abandoned(dead)
        return gaps

    # -- audit -------------------------------------------------------------
    def list_runs(
        self, *, job: str | None, status: str | None, since: timedelta | None, limit: int
    ) -> list[dict[str, Any]]:
        from jobctl.db import ledger

        if status and status not in STATUSES:
            raise UsageError(f"status {status!r} is not one of {', '.join(RunStatus)}")
        if limit < 0:
            raise UsageError(f"limit {limit} must be 0 (no limit) or more")
        after = datetime.now(UTC) - since if since else None
        with self.db.begin() as conn:
            dead = ledger.sweep_abandoned(conn)
            found = ledger.list_runs(conn, job=job, status=status, since=after, limit=limit)
        self._alert_abandoned(dead)
        return found

    def deploy(self, target: str, *, out: Path | None, check: Path | None) -> DeployResult:
        """``jobctl deploy``: pure rendering from the settings; no database."""
        from jobctl.deploy import deploy

        return deploy(target, self.settings, out=out, check=check)

    def mark_crashed(
        self, job: str, *, unit: str | None, result: str | None, exit_status: str | None
    ) -> CrashReport:
        """``jobctl runs mark-crashed``: the OnFailure= hook of the systemd units."""
        return self.runner().mark_crashed(job, unit=unit, result=result, exit_status=exit_status)

    def show_run(self, run_id: int) -> dict[str, Any]:
        from jobctl.db import ledger

        if not 0 < run_id < 2**63:
            raise UsageError(f"run {run_id} does not exist")
        with self.db.begin() as conn:
            dead = ledger.sweep_abandoned(conn)
            run = ledger.get_run(conn, run_id)
            if run is None:
                raise UsageError(f"run {run_id} does not exist")
            run["children"] = ledger.list_runs(conn, parent_id=run_id, limit=0)
        self._alert_abandoned(dead)
        run.pop("lock_backend_pid", None)
        run.pop("lock_key", None)
        return run

    def jobs_overview(self, now: datetime | None = None) -> list[JobInfo]:
        from jobctl.db import ledger
        from jobctl.schedule import dst_notes, parse_schedule

        now = now or datetime.now(UTC)
        with self.db.begin() as conn:
            dead = ledger.sweep_abandoned(conn)
            running = ledger.running_now(conn)
            last = ledger.last_runs(conn)
        self._alert_abandoned(dead)
        names = list(self.jobs) + [n for n in self.settings.jobs if n not in self.jobs]
        infos = []
        for name in names:
            cfg = self.settings.job(name)
            spec = self.jobs.get(name)
            words, nxt, notes = None, [], []
            if cfg.schedule:
                sched = parse_schedule(cfg.schedule, cfg.timezone, self.settings.scheduler)
                words, nxt = sched.describe(), sched.next_fire_times(now, 3)
                notes = dst_notes(sched, now)
            info = last.get(name, {})
            infos.append(
                JobInfo(
                    name=name,
                    description=(
                        cfg.description
                        or (spec.description if spec else "")
                        or ("" if spec else "(no code registers this job)")
                    ),
                    builtin=bool(spec and spec.builtin),
                    enabled=cfg.enabled,
                    schedule=cfg.schedule,
                    schedule_words=words,
                    timezone=cfg.timezone,
                    next_fire_times=nxt,
                    last_status=info.get("status"),
                    last_run_id=info.get("id"),
                    last_success=info.get("last_success"),
                    running=running.get(name),
                    dst_notes=notes,
                )
            )
        return infos

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()


#: The stored strings of every run status (``runs list --status`` accepts them).
STATUSES = frozenset(RunStatus)
