"""``jobctl cleanup``: delete rows older than each retention policy keeps, in bounded batches.

::

    [cleanup.audit_log]
    table = "public.audit_log"      # schema.table
    column = "created_at"           # the timestamp compared with now - keep
    keep = "90d"
    where = "level <> 'error'"      # optional, the operator's own SQL, ANDed
    batch_size = 10000              # rows per delete transaction

    [retention]                     # the built-in policies' keep durations
    runs = "180d"                   # jobctl.runs: finished runs, children with them
    schedules = "30d"               # jobctl.scheduled: finished one-off schedules
    snapshots = { day = "90d", week = "730d", month = "1826d" }

Built-in policies, after the configured ones: ``runs``, ``schedules`` (finished
one-off schedules in ``jobctl.scheduled``) and ``snapshots.SET`` for every snapshot set (its rows
per period type by ``period_start``; a set's own ``retention = { day = "30d" }``
overrides ``[retention.snapshots]``; skipped until the set's table is created).

Every batch is its own short transaction through the run context (fenced: it
commits only while the run holds its lock), so a killed run leaves whole batches
deleted and nothing half-done. The cutoff is computed once, when the run starts.
A policy whose table or column is missing fails alone: the others still run, and
the run ends ``failed`` naming it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from jobctl.config import Settings
from jobctl.config_models import DEFAULT_BATCH_SIZE, SnapshotSet
from jobctl.errors import DatabaseError, DatabaseUnreachable, JobError, UsageError
from jobctl.jobspec import JobSpec, Planning, stored_params

if TYPE_CHECKING:  # the context brings SQLAlchemy: a skipped tick must not import it
    from jobctl.context import RunContext
    from jobctl.db.retention import Target

#: The table of one-off schedules (``jobctl schedule add``, sql/0006): its finished
#: rows (triggered, cancelled, failed) go after ``[retention] schedules``; pending
#: and running ones never (their ``finished_at`` is NULL: the table's CHECK).
SCHEDULES_TABLE = "jobctl.scheduled"
SCHEDULES_COLUMN = "finished_at"
SCHEDULES_FINISHED = "status IN ('triggered', 'cancelled', 'failed')"


@dataclass(frozen=True)
class Part:
    """One delete pass of a policy: ``table``'s rows with ``column`` older than ``keep``."""

    table: str
    column: str
    keep: timedelta
    #: SQL ANDed to the age test: the operator's (trusted config) or jobctl's own.
    where: str | None = None
    #: Compare with the cutoff's date in this zone (a snapshot's ``period_start``).
    zone: str | None = None
    #: Names the pass in the stats when a policy has several (a snapshot period type).
    label: str = ""

    def cutoff(self, now: datetime) -> datetime | date:
        moment = now - self.keep
        return moment.astimezone(ZoneInfo(self.zone)).date() if self.zone else moment


@dataclass(frozen=True)
class Policy:
    name: str
    parts: tuple[Part, ...]
    batch_size: int = DEFAULT_BATCH_SIZE
    #: A table jobctl creates later (a snapshot set's, the schedules'): skipped until then.
    optional: bool = False
    #: jobctl's own run ledger: deleted through the ledger (children with parents).
    runs: bool = False


@dataclass(frozen=True)
class CleanupArgs:
    """``jobctl cleanup``'s own arguments."""

    policies: Sequence[str] = ()


@dataclass(frozen=True)
class CleanupPlan:
    policies: tuple[Policy, ...]
    params: Mapping[str, str] = field(default_factory=dict, compare=False)


def _snapshot_policy(snapshot: SnapshotSet, settings: Settings) -> Policy:
    defaults = settings.retention.snapshots
    parts = tuple(
        Part(
            snapshot.table,
            "period_start",
            getattr(snapshot.retention, period) or getattr(defaults, period),
            # period is one of PERIOD_TYPES (checked at load): jobctl's SQL, not the file's
            where=f"period_type = '{period}'",
            zone=snapshot.timezone,
            label=period,
        )
        for period in snapshot.periods
    )
    return Policy(f"snapshots.{snapshot.name}", parts, optional=True)


def policies(settings: Settings) -> dict[str, Policy]:
    """Every policy by name: the configured ones, then the built-in ones."""
    found = {
        name: Policy(name, (Part(p.table, p.column, p.keep, p.where),), p.batch_size)
        for name, p in settings.cleanup.items()
    }
    retention = settings.retention
    found["runs"] = Policy("runs", (Part("jobctl.runs", "started_at", retention.runs),), runs=True)
    schedules = Part(SCHEDULES_TABLE, SCHEDULES_COLUMN, retention.schedules, SCHEDULES_FINISHED)
    found["schedules"] = Policy("schedules", (schedules,))
    for snapshot in settings.snapshots.values():
        policy = _snapshot_policy(snapshot, settings)
        found[policy.name] = policy
    return found


def plan(settings: Settings, args: CleanupArgs, planning: Planning) -> CleanupPlan:
    """Validate ``--policy`` (UsageError, exit 2, before any run row)."""
    available = policies(settings)
    for name in args.policies:
        if name not in available:
            raise UsageError(
                f"unknown cleanup policy {name!r} (configured: {', '.join(available)})"
            )
    names = list(dict.fromkeys(args.policies))
    if not names:  # every policy; stored as no params, as a tick's
        return CleanupPlan(tuple(available.values()))
    return CleanupPlan(tuple(available[n] for n in names), stored_params(policies=names))


def run(ctx: RunContext, plan_: CleanupPlan) -> None:
    from jobctl.db.retention import MissingTarget

    now = datetime.now(UTC)  # once: every batch of the run deletes against one cutoff
    results: dict[str, dict[str, Any]] = {}
    ctx.stats["policies"] = results
    failed: list[str] = []
    for policy in plan_.policies:
        ctx.check_lock()
        result: dict[str, Any] = {}
        results[policy.name] = result
        try:
            if policy.runs:
                _apply_runs(ctx, policy, now, result)
            else:
                _apply(ctx, policy, now, result)
        except DatabaseUnreachable:
            raise  # no other policy can reach the server either; exits 2 as always
        except (MissingTarget, DatabaseError) as exc:
            # This policy alone (a missing table, a failing where): the others still
            # run, and the run fails at the end naming it. A lost lock, a timeout or
            # a signal is none of these: it stops the run at once.
            ctx.log.error("policy %s failed: %s", policy.name, exc)
            result["error"] = str(exc)
            failed.append(f"{policy.name} ({exc})")
    if failed:
        what = "policy" if len(failed) == 1 else "policies"
        raise JobError(f"cleanup {what} failed: {'; '.join(failed)} (the other policies ran)")


def _apply(ctx: RunContext, policy: Policy, now: datetime, result: dict[str, Any]) -> None:
    from jobctl.db import retention

    result["table"] = policy.parts[0].table
    for part in policy.parts:
        target = retention.Target(part.table, part.column, part.cutoff(now), part.where)
        with ctx.transaction() as conn:
            if policy.optional and not retention.table_exists(conn, part.table):
                ctx.log.info("policy %s: skipped, table %s does not exist", policy.name, part.table)
                result["skipped"] = f"table {part.table} does not exist"
                return
            key = retention.key_columns(conn, target)
            preview = retention.preview(conn, target) if ctx.dry_run else None
        # The numbers go to the policy and, for a snapshot set, to the period too; as
        # they happen, so that a policy failing half-way still shows what it deleted.
        tallies = [result]
        if part.label:
            tallies.append(result.setdefault("periods", {}).setdefault(part.label, {}))
        tallies[-1]["cutoff"] = _text(target.cutoff)
        if preview is not None:
            _dry(ctx, policy, part, target.cutoff, *preview, tallies)
        else:
            _delete(ctx, policy, part, target, key, tallies)


def _count(tallies: list[dict[str, Any]], key: str, number: int) -> None:
    for tally in tallies:
        tally[key] = tally.get(key, 0) + number


def _longest(tallies: list[dict[str, Any]], ms: float) -> None:
    for tally in tallies:
        tally["longest_batch_ms"] = max(tally.get("longest_batch_ms", 0.0), round(ms, 1))


def _delete(
    ctx: RunContext,
    policy: Policy,
    part: Part,
    target: Target,
    key: tuple[str, ...],
    tallies: list[dict[str, Any]],
) -> None:
    from jobctl.db import retention

    _count(tallies, "deleted", 0)
    _count(tallies, "batches", 0)
    deleted = batches = 0
    with ctx.session() as session:
        while True:
            ctx.check_lock()  # between batches; each batch's commit is fenced too
            with session.transaction(f"cleanup of {part.table} failed") as conn:
                began = time.monotonic()
                count = retention.delete_batch(conn, target, key, policy.batch_size)
            # From the DELETE to its commit: how long the batch held its row locks.
            _longest(tallies, (time.monotonic() - began) * 1000)
            # Counted once committed: a killed run's last batch, rolled back, is not.
            batches += 1
            deleted += count
            ctx.counters.add({"deleted": count})
            _count(tallies, "deleted", count)
            _count(tallies, "batches", 1)
            if count < policy.batch_size:
                break
    ctx.log.info(
        "policy %s: deleted %d rows from %s with %s before %s (%d batches)",
        _named(policy, part),
        deleted,
        part.table,
        part.column,
        _text(target.cutoff),
        batches,
    )


def _dry(
    ctx: RunContext,
    policy: Policy,
    part: Part,
    cutoff: datetime | date,
    rows: int,
    oldest: Any,
    tallies: list[dict[str, Any]],
) -> None:
    kept = _text(oldest) if oldest is not None else None
    ctx.log.info(
        "policy %s: would delete %d rows from %s with %s before %s; oldest kept: %s",
        _named(policy, part),
        rows,
        part.table,
        part.column,
        _text(cutoff),
        kept or "none",
    )
    _count(tallies, "would_delete", rows)
    tallies[-1]["oldest_kept"] = kept


def _apply_runs(ctx: RunContext, policy: Policy, now: datetime, result: dict[str, Any]) -> None:
    cutoff = now - policy.parts[0].keep
    result.update(table="jobctl.runs", cutoff=_text(cutoff))
    if ctx.dry_run:
        top, rows, oldest = ctx.old_runs(cutoff)
        kept = _text(oldest) if oldest is not None else None
        ctx.log.info(
            "policy runs: would delete %d runs (%d rows with their children) started before"
            " %s; oldest kept: %s",
            top,
            rows,
            _text(cutoff),
            kept or "none",
        )
        result.update(would_delete=rows, oldest_kept=kept)
        return
    result.update(deleted=0, batches=0)
    while True:
        ctx.check_lock()
        parents, count = ctx.delete_old_runs(cutoff, policy.batch_size)
        ctx.counters.add({"deleted": count})
        _count([result], "deleted", count)
        _count([result], "batches", 1)
        if parents < policy.batch_size:
            break
    ctx.log.info(
        "policy runs: deleted %d rows started before %s (%d batches)",
        result["deleted"],
        _text(cutoff),
        result["batches"],
    )


def _named(policy: Policy, part: Part) -> str:
    return f"{policy.name} ({part.label})" if part.label else policy.name


def _text(value: object) -> str:
    return value.isoformat() if isinstance(value, (datetime, date)) else str(value)


SPEC = JobSpec(
    "cleanup",
    run,
    plan,
    default_args=CleanupArgs(),
    plan_type=CleanupPlan,
    description="Delete rows older than the retention policies keep, in bounded batches",
    builtin=True,
)
