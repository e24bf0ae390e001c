"""Is each job healthy? What ``jobctl status`` and ``jobctl check`` compute. No terminal.

A job is in one of these states (checked in this order):

============  ======  ==========================================================
state         status  when
              exit
============  ======  ==========================================================
disabled      0       ``enabled = false`` in its ``[jobs.NAME]`` table
stuck         1       a run is in progress (its lock is held) but its heartbeat
                      is older than :func:`stuck_after` (4 heartbeat intervals,
                      at least a minute): the process hangs
running       0       a run is in progress with a fresh heartbeat
failing       1       its last finished run failed or was abandoned
overdue       1       it has a schedule, and its last success finished before the
                      latest slot that is *due*: a fire time at least a grace ago
                      (:func:`grace_for`), or it never succeeded and such a slot
                      exists
ok            0       none of the above (a job without a schedule is never overdue)
============  ======  ==========================================================

``jobctl status`` exits 0 when every job is healthy (ok, running or disabled) and 1
otherwise. The jobs are those configured (``[jobs.NAME]``) and every job the run
ledger has runs of: the user's jobs module is not imported, since a job that is not
configured has no schedule, and without runs it can be neither failing nor stuck.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING

from jobctl.db.job_state import JobState, RunRef
from jobctl.jobspec import RunStatus

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from jobctl.app import App
    from jobctl.config import JobConfig, Settings


class Health(StrEnum):
    OK = "ok"
    OVERDUE = "overdue"
    FAILING = "failing"
    RUNNING = "running"
    STUCK = "stuck"
    DISABLED = "disabled"


HEALTHY = frozenset({Health.OK, Health.RUNNING, Health.DISABLED})

#: How late a tick may start after its slot, when the job sets no ``misfire_grace``.
DEFAULT_MISFIRE_GRACE = timedelta(minutes=5)
#: How long a run may take, when the job sets no ``timeout``.
DEFAULT_RUN_ALLOWANCE = timedelta(hours=1)
#: Heartbeats missed before a running run is called stuck.
STUCK_BEATS = 4


def grace_for(cfg: JobConfig) -> timedelta:
    """How long after a fire time its run may still be missing without alarm: the
    tick's lateness (``misfire_grace``, default 5 min) plus the longest the run may
    take (``timeout`` × attempts plus the retry delays; default 1 h)."""
    attempts = cfg.retries + 1
    run = (cfg.timeout or DEFAULT_RUN_ALLOWANCE) * attempts + cfg.retry_delay * cfg.retries
    return (cfg.misfire_grace or DEFAULT_MISFIRE_GRACE) + run


def stuck_after(heartbeat: timedelta) -> timedelta:
    return max(heartbeat * STUCK_BEATS, timedelta(minutes=1))


@dataclass(frozen=True)
class JobStatus:
    job: str
    state: Health
    #: One sentence saying why (e.g. "last success 3h ago (run 412)").
    reason: str
    enabled: bool
    schedule: str | None
    timezone: str
    #: The latest due slot (a schedule's fire time at least ``grace`` ago).
    due_slot: datetime | None
    grace: timedelta | None
    last_run: RunRef | None
    last_success: RunRef | None
    running: RunRef | None
    failure_streak: int
    #: The job's state apart from being disabled (what ``check`` looks at).
    failing: bool = False
    overdue: bool = False
    stuck: bool = False

    @property
    def healthy(self) -> bool:
        return self.state in HEALTHY

    def success_age(self, now: datetime) -> timedelta | None:
        done = self.last_success.finished_at if self.last_success else None
        return None if done is None else max(now - done, timedelta(0))


def _ago(moment: datetime | None, now: datetime) -> str:
    from jobctl.durations import format_duration

    return "never" if moment is None else format_duration(now - moment) + " ago"


def _success_words(state: JobState | JobStatus, now: datetime) -> str:
    ok = state.last_success
    if ok is None:
        return "never succeeded"
    return f"last success {_ago(ok.finished_at, now)} (run {ok.id})"


def _due_slot(cfg: JobConfig, flavour: str, now: datetime) -> tuple[datetime | None, timedelta]:
    from jobctl.schedule import parse_schedule

    grace = grace_for(cfg)
    assert cfg.schedule is not None
    schedule = parse_schedule(cfg.schedule, cfg.timezone, flavour)
    return schedule.previous_fire_time(now - grace), grace


def assess(
    cfg: JobConfig, state: JobState, now: datetime, *, heartbeat: timedelta, flavour: str
) -> JobStatus:
    """The health of one job from its ledger state (pure: ``now`` is given)."""
    due, grace = (None, None)
    if cfg.schedule:
        due, grace = _due_slot(cfg, flavour, now)
    last = state.last_finished
    failing = last is not None and last.status in (RunStatus.FAILED, RunStatus.ABANDONED)
    ok_at = state.last_success.finished_at if state.last_success else None
    overdue = due is not None and (ok_at is None or ok_at < due)
    run = state.running
    beat = (run.heartbeat_at or run.started_at) if run else None
    stuck = beat is not None and now - beat > stuck_after(heartbeat)
    success = _success_words(state, now)
    if not cfg.enabled:
        health, reason = Health.DISABLED, f"disabled; {success}"
    elif run is not None and stuck:
        health = Health.STUCK
        reason = (
            f"run {run.id} (host {run.host}, pid {run.pid}) has not sent a heartbeat for "
            f"{_ago(beat, now).removesuffix(' ago')}"
        )
    elif run is not None:
        health, reason = Health.RUNNING, f"run {run.id} started {_ago(run.started_at, now)}"
    elif failing:
        assert last is not None
        streak = f", {state.failure_streak} in a row" if state.failure_streak > 1 else ""
        health = Health.FAILING
        reason = f"run {last.id} {last.status} {_ago(last.finished_at, now)}{streak}; {success}"
    elif overdue:
        assert due is not None
        health = Health.OVERDUE
        reason = f"{success}; slot {_iso(due)} has no success"
    else:
        health, reason = Health.OK, success
    return JobStatus(
        job=state.job,
        state=health,
        reason=reason,
        enabled=cfg.enabled,
        schedule=cfg.schedule,
        timezone=cfg.timezone,
        due_slot=due,
        grace=grace,
        last_run=last,
        last_success=state.last_success,
        running=run,
        failure_streak=state.failure_streak,
        failing=failing,
        overdue=overdue,
        stuck=stuck,
    )


def job_names(settings: Settings, with_runs: Iterable[str]) -> list[str]:
    """The jobs ``status`` and ``metrics`` cover: configured ones and those with runs."""
    return sorted(set(settings.jobs) | set(with_runs))


def assess_all(
    settings: Settings, states: Mapping[str, JobState], now: datetime
) -> list[JobStatus]:
    return [
        assess(
            settings.job(name),
            states[name],
            now,
            heartbeat=settings.heartbeat,
            flavour=settings.scheduler,
        )
        for name in sorted(states)
    ]


def statuses(app: App, now: datetime | None = None) -> list[JobStatus]:
    """Every job's health (see the module docstring for which jobs), by name."""
    from jobctl.db.job_state import job_states, jobs_with_runs

    now = now or datetime.now(UTC)
    settings = app.settings

    def read(conn: Connection) -> dict[str, JobState]:
        return job_states(conn, job_names(settings, jobs_with_runs(conn)))

    return assess_all(settings, app.read_ledger(read), now)


def exit_code(found: Iterable[JobStatus]) -> int:
    """0 when every job is healthy, else 1."""
    return 0 if all(s.healthy for s in found) else 1


# -- jobctl check: the monitoring-plugin convention -----------------------------------


class Plugin(IntEnum):
    """Exit codes of a Nagios / Icinga / Sensu check (monitoring-plugins guidelines)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class CheckResult:
    code: Plugin
    #: ``JOBCTL OK - sync: last success 3h ago (run 412) | age=10800s;93600;187200;0``
    line: str


def plugin_line(code: Plugin, text: str, perfdata: str = "") -> str:
    """One status line: ``JOBCTL <STATE> - <text>[ | <perfdata>]`` (no newline in it)."""
    text = " ".join(text.split())
    return f"JOBCTL {code.name} - {text}" + (f" | {perfdata}" if perfdata else "")


def judge(status: JobStatus, now: datetime, max_age: timedelta | None) -> CheckResult:
    """The check's verdict on one job (pure).

    CRITICAL: the last finished run failed or was abandoned, a run is stuck, or (with
    ``max_age``) the last success is older than twice ``max_age`` or there is none.
    WARNING: the last success is older than ``max_age``, or the job is overdue for its
    schedule (see the module docstring). OK otherwise. Disabled changes nothing: a
    check on a disabled job still says how old its data is.
    """
    age = status.success_age(now)
    words = [_success_words(status, now)]
    code = Plugin.OK
    if max_age is not None and (age is None or age > max_age * 2):
        code = Plugin.CRITICAL
        words.append(f"older than 2 x --max-age {_fmt(max_age)}" if age else "")
    elif max_age is not None and age is not None and age > max_age:
        code = Plugin.WARNING
        words.append(f"older than --max-age {_fmt(max_age)}")
    if status.overdue and status.due_slot is not None:
        code = max(code, Plugin.WARNING)
        words.append(f"overdue: slot {_iso(status.due_slot)} has no success")
    if status.failing and status.last_run is not None:
        code = Plugin.CRITICAL
        last = status.last_run
        words.insert(0, f"run {last.id} {last.status} {_ago(last.finished_at, now)}")
    if status.running is not None:
        if status.stuck:
            code = Plugin.CRITICAL
        words.append(status.reason if status.stuck else f"run {status.running.id} running")
    if not status.enabled:
        words.append("disabled")
    warn = crit = ""
    if max_age is not None:
        warn, crit = str(_secs(max_age)), str(_secs(max_age * 2))
    value = "U" if age is None else f"{_secs(age)}s"
    perf = f"age={value};{warn};{crit};0 failures={status.failure_streak};;;0"
    text = f"{status.job}: " + "; ".join(w for w in words if w)
    return CheckResult(code, plugin_line(code, text, perf))


def _secs(delta: timedelta) -> int:
    return int(delta.total_seconds())


def _fmt(delta: timedelta) -> str:
    from jobctl.durations import format_duration

    return format_duration(delta)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def check(
    app: App, job: str, max_age: timedelta | None, now: datetime | None = None
) -> CheckResult:
    """``jobctl check JOB``: UNKNOWN for a job jobctl does not know (not configured,
    not built in, no runs, not registered by the jobs module)."""
    from jobctl.db.job_state import has_runs, job_states
    from jobctl.registry import builtin_names

    now = now or datetime.now(UTC)
    settings = app.settings
    if max_age is not None and max_age <= timedelta(0):
        return CheckResult(
            Plugin.UNKNOWN, plugin_line(Plugin.UNKNOWN, f"--max-age {_fmt(max_age)} must be > 0")
        )

    def read(conn: Connection) -> tuple[bool, dict[str, JobState]]:
        return has_runs(conn, job), job_states(conn, [job])

    known, states = app.read_ledger(read)
    # The user's module is imported only for a name nothing else knows.
    known = known or job in settings.jobs or job in builtin_names() or job in app.jobs
    if not known:
        return CheckResult(
            Plugin.UNKNOWN,
            plugin_line(Plugin.UNKNOWN, f"{job}: no such job (not configured, no runs)"),
        )
    status = assess(
        settings.job(job),
        states[job],
        now,
        heartbeat=settings.heartbeat,
        flavour=settings.scheduler,
    )
    return judge(status, now, max_age)
