"""The contract between the runner and a job: what a job declares and what it is handed.

A job is a :class:`JobSpec`: a name, ``plan(settings, args, planning)`` that
validates the job's own command line against the configuration (a
:class:`jobctl.errors.UsageError` there exits 2 before any run row is written)
and returns a frozen plan, and ``run(ctx, plan)`` that does the work. The plan's
``params`` are stored with the run. A job starts another run through its context
only (``ctx.run_child(job, ChildRequest(...)) -> RunOutcome``): jobs never import
the runner, the ledger or the locks (``tests/test_layering.py``).

This module is imported by every job and by a skipped cron tick: it must stay
light (the standard library and ``jobctl.errors`` only; ``tests/test_startup.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from jobctl.errors import ExitCode, UsageError

if TYPE_CHECKING:
    # Only for the annotations: the context pulls in SQLAlchemy, the settings the
    # configuration parser, neither of which a skipped tick may import.
    from jobctl.config import Settings
    from jobctl.context import RunContext


class RunStatus(StrEnum):
    """A run's ``status`` in ``jobctl.runs`` (the values are the stored strings)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    ABANDONED = "abandoned"


class Trigger(StrEnum):
    """What started a run: its ``trigger`` in ``jobctl.runs`` (the stored strings)."""

    MANUAL = "manual"
    TIMER = "timer"
    CRON = "cron"
    SCHEDULE = "schedule"
    BACKFILL = "backfill"
    CATCHUP = "catchup"
    #: Started from the web console (``POST /api/jobs/{name}/runs``).
    WEB = "web"


#: The name the per-minute ``jobctl schedule run-due`` worker goes by in deployment files
#: (its units' ``OnFailure=`` hook names it like a job).
SCHEDULE_WORKER = "schedule-worker"

#: The triggers of a scheduler's tick: only they serve a schedule slot by themselves.
SLOT_TRIGGERS = frozenset({Trigger.TIMER, Trigger.CRON, Trigger.SCHEDULE})


class Plan(Protocol):
    """What a job's ``plan`` returns: frozen, validated, and the params to store."""

    @property
    def params(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class Planning:
    """What a plan is validated against besides the job's own arguments."""

    #: ``--force``: e.g. take a date whose day has not ended yet.
    force: bool = False
    #: The clock that decides which days have ended; None: the real clock.
    now: datetime | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class NoArgs:
    """The arguments of a job without a command of its own (``jobctl run NAME``)."""


@dataclass(frozen=True)
class NoPlan:
    """The plan of a job that has none: a user's ``@jobctl.job`` function."""

    params: Mapping[str, str] = field(default_factory=dict)


def stored_params(**values: str | Sequence[str] | bool | None) -> dict[str, str]:
    """The params a plan stores with its run: only the arguments given (not None, empty
    or False), a list comma-joined, True as ``"true"``."""
    params: dict[str, str] = {}
    for name, value in values.items():
        if not value:
            continue
        if value is True:
            params[name] = "true"
        elif isinstance(value, str):
            params[name] = value
        elif not isinstance(value, bool):
            params[name] = ",".join(value)
    return params


A = TypeVar("A")
P = TypeVar("P", bound=Plan)

#: Reports progress: (what, done so far[, total]); sync adds ``phase=``.
Progress = Callable[..., None]


@dataclass(frozen=True)
class JobSpec(Generic[A, P]):
    """A job: how to plan it from its arguments and how to run a plan."""

    name: str
    run: Callable[[RunContext, P], object]
    plan: Callable[[Settings, A, Planning], P]
    #: The arguments a run without any (a timer tick, ``jobctl run NAME``) plans
    #: with, inside the run; None: the job cannot run without its arguments.
    default_args: A | None = None
    #: What ``plan`` returns: a plan handed over (a child's) is checked against it.
    plan_type: type[P] | None = None
    description: str = ""
    builtin: bool = False
    #: True when the job's work depends on the date (catch-up ``all`` allowed).
    date_based: bool = False
    #: The date (``partition``) a run serving a slot works on; a completed run with that
    #: partition covers the slot too (e.g. ``jobctl snapshot --date D`` run by hand).
    served_date: Callable[[Settings, datetime], date | None] | None = None

    def default_plan(self, settings: Settings) -> P:
        """The plan of a run given no arguments (validated inside the run, as a tick's)."""
        if self.default_args is None:
            raise UsageError(f"job {self.name!r} needs its arguments: run it with its command")
        return self.plan(settings, self.default_args, Planning())

    def check_plan(self, plan: Plan) -> P:
        """``plan`` if it is one of this job's plans (a child's plan is built by its parent)."""
        if self.plan_type is not None and not isinstance(plan, self.plan_type):
            raise TypeError(
                f"job {self.name!r} takes a {self.plan_type.__name__}, not a {type(plan).__name__}"
            )
        return plan  # type: ignore[return-value]  # checked above when the type is known


@dataclass(frozen=True)
class ChildRequest:
    """A run a job asks its context for (``ctx.run_child``); backfill's per-date runs."""

    #: The child's plan, built by the parent (e.g. ``sync.plan(...)``); None: the
    #: child job's default plan, validated inside the child run.
    plan: Plan | None = None
    #: Stored with the child run (with the plan's own params).
    params: Mapping[str, str] = field(default_factory=dict)
    trigger: Trigger = Trigger.BACKFILL
    #: Wait for the child job's lock (up to ``wait_timeout``; None: for ever).
    wait: bool = True
    wait_timeout: timedelta | None = None
    force: bool = False
    partition: str | None = None
    scheduled_for: datetime | None = None
    #: Record the child as ``skipped`` with this reason instead of running it (e.g.
    #: backfill's dates that already have a completed run): the ledger still shows it.
    already_done: str | None = None


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: what the command prints and a parent reads of its child."""

    job: str
    run_id: int | None
    status: RunStatus
    exit_code: ExitCode
    message: str = ""
    counters: Mapping[str, int] = field(default_factory=dict)
    stats: Mapping[str, object] = field(default_factory=dict)
    scheduled_for: datetime | None = None
    partition: str | None = None
    duration_ms: int | None = None


#: What ``ctx.run_child`` calls: (job, request, parent run id) → the child's outcome.
StartChild = Callable[[str, ChildRequest, int], RunOutcome]


def _no_plan(settings: Settings, args: NoArgs, planning: Planning) -> NoPlan:
    return NoPlan()


def user_job_spec(
    name: str, fn: Callable[[RunContext], object], description: str, *, date_based: bool
) -> JobSpec[NoArgs, NoPlan]:
    """The spec of a user's ``@jobctl.job`` function: called as ``fn(ctx)``, as always."""

    def run(ctx: RunContext, plan: NoPlan) -> object:
        return fn(ctx)

    return JobSpec(
        name,
        run,
        _no_plan,
        default_args=NoArgs(),
        plan_type=NoPlan,
        description=description,
        date_based=date_based,
    )


__all__ = [
    "SCHEDULE_WORKER",
    "SLOT_TRIGGERS",
    "ChildRequest",
    "JobSpec",
    "NoArgs",
    "NoPlan",
    "Plan",
    "Planning",
    "Progress",
    "RunOutcome",
    "RunStatus",
    "StartChild",
    "Trigger",
    "stored_params",
    "user_job_spec",
]
