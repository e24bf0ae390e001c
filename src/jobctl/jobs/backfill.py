"""``jobctl backfill``: re-run sync and/or snapshot for every date of a range.

One parent run; one child run per (job, date), oldest date first, sync before
snapshot. Each child takes the job's own lock (waiting for it, so a timer run is
never overlapped) and releases it before the next child. Dates that already have
a completed run of that job are skipped unless ``--force``; ``--missing`` takes
exactly the slots ``runs gaps`` reports. A dry run never counts as done.

Dates are days in the zone of what reads them (each snapshot set's, each
date-dependent source's), never the host's: ``--to`` must have ended in all of
them, or the half day would be computed and then skipped as done forever
(``--force`` takes it anyway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from jobctl.config import Settings
from jobctl.config_types import BACKFILL_JOBS
from jobctl.context import RunContext
from jobctl.days import check_over
from jobctl.durations import parse_date
from jobctl.errors import ExitCode, JobError, RunCancelled, UsageError
from jobctl.jobspec import (
    ChildRequest,
    JobSpec,
    Plan,
    Planning,
    RunOutcome,
    RunStatus,
    Trigger,
    stored_params,
)

CHILD_LOCK_WAIT = timedelta(hours=6)


@dataclass(frozen=True)
class Child:
    job: str
    day: date
    scheduled_for: datetime | None = None


@dataclass(frozen=True)
class BackfillPlan:
    start: date
    end: date
    jobs: tuple[str, ...]
    missing: bool = False
    force: bool = False
    continue_on_error: bool = False
    sync_sources: tuple[str, ...] = ()
    children: tuple[Child, ...] = field(default=())
    #: The clock the range was validated against; None: the real clock.
    now: datetime | None = None
    #: Stored with the run (``--from``, ``--to``, the jobs, ``--missing``).
    params: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class BackfillArgs:
    """``jobctl backfill``'s own arguments."""

    start: str
    end: str
    jobs: Sequence[str] = ()
    missing: bool = False
    continue_on_error: bool = False


def _settings_section(settings: Settings) -> tuple[tuple[str, ...] | None, int]:
    return settings.backfill.jobs, settings.backfill.max_days


def plan(
    settings: Settings,
    *,
    start: str,
    end: str,
    jobs: Sequence[str] = (),
    missing: bool = False,
    force: bool = False,
    continue_on_error: bool = False,
    now: datetime | None = None,
) -> BackfillPlan:
    """Validate the range and the jobs (UsageError, exit 2, before any run row).

    ``now`` (default: the real clock) decides which dates have ended.
    """
    from jobctl.jobs.snapshot import snapshot_sets
    from jobctl.jobs.sync import sources_of

    first = parse_date(start, what="--from")
    last = parse_date(end, what="--to")
    if first > last:
        raise UsageError(f"--from {first} is after --to {last}")
    configured, max_days = _settings_section(settings)
    days = (last - first).days + 1
    if days > max_days:
        raise UsageError(
            f"the range {first}..{last} is {days} days, over the maximum of {max_days} "
            "(backfill.max_days in jobctl.toml)"
        )
    for job in jobs:
        if job not in BACKFILL_JOBS:
            raise UsageError(f"--job {job!r}: backfill runs {' and '.join(BACKFILL_JOBS)}")
    if settings.config_path is None:
        raise settings.nothing_configured(
            "sources and snapshot sets", "[sources.NAME]/[snapshots.NAME]"
        )
    sources = sources_of(settings)
    dated = tuple(name for name, s in sources.items() if s.date_dependent)
    if "sync" in jobs and not dated:
        full = ", ".join(sources) or "none configured"
        raise UsageError(
            "sync cannot be backfilled: no source's location or content depends on the date "
            f"({{date}} in its url or path); full-snapshot feeds ({full}) only have today's "
            "version"
        )
    chosen = tuple(dict.fromkeys(jobs)) if jobs else configured
    if chosen is None:
        chosen = tuple(
            j
            for j, ok in (("sync", bool(dated)), ("snapshot", bool(snapshot_sets(settings))))
            if ok
        )
    chosen = tuple(j for j in BACKFILL_JOBS if j in chosen)  # sync before snapshot
    if not chosen:
        raise UsageError("nothing to backfill: configure a date-dependent source or a snapshot set")
    if missing:
        for job in chosen:
            if not settings.job(job).schedule:
                raise UsageError(
                    f"--missing needs a schedule for job {job!r} (jobs.{job}.schedule)"
                )
    zones = [settings.timezone]
    if "snapshot" in chosen:
        zones += [s.timezone for s in snapshot_sets(settings).values()]
    if "sync" in chosen:
        zones += [sources[name].timezone for name in dated]
    # --from is not later than --to: if --to has ended, every date of the range has.
    check_over(last, zones, now=now, what="--to", force=force)
    return BackfillPlan(first, last, chosen, missing, force, continue_on_error, dated, now=now)


def plan_args(settings: Settings, args: BackfillArgs, planning: Planning) -> BackfillPlan:
    """The command's plan (:func:`plan`), with the params stored with its run.

    ``--force`` applies to the children's dates, not to the backfill's own slot.
    """
    planned = plan(
        settings,
        start=args.start,
        end=args.end,
        jobs=args.jobs,
        missing=args.missing,
        force=planning.force,
        continue_on_error=args.continue_on_error,
        now=planning.now,
    )
    params = stored_params(
        **{"from": args.start}, to=args.end, jobs=planned.jobs, missing=args.missing
    )
    return replace(planned, params=params)


def _children(ctx: RunContext, plan_: BackfillPlan) -> list[Child]:
    if not plan_.missing:
        return [
            Child(job, plan_.start + timedelta(days=n))
            for n in range((plan_.end - plan_.start).days + 1)
            for job in plan_.jobs
        ]
    zone = ZoneInfo(ctx.settings.timezone)
    window_start = datetime.combine(plan_.start - timedelta(days=2), time(), zone)
    window_end = datetime.combine(plan_.end + timedelta(days=3), time(), zone)
    found: list[Child] = []
    for job in plan_.jobs:
        cfg = ctx.settings.job(job)
        if not cfg.schedule:
            raise UsageError(f"--missing needs a schedule for job {job!r} (jobs.{job}.schedule)")
        gaps = ctx.missing_slots(
            job,
            window_start.astimezone(UTC),
            min(window_end.astimezone(UTC), plan_.now or datetime.now(UTC)),
        )
        for gap in gaps:
            day = (
                (_sync_date(ctx.settings, plan_, gap.scheduled_for) if job == "sync" else None)
                or gap.served_date
                or gap.scheduled_for.astimezone(ZoneInfo(cfg.timezone)).date()
            )
            if plan_.start <= day <= plan_.end:
                found.append(Child(job, day, gap.scheduled_for))
    return sorted(found, key=lambda c: (c.day, BACKFILL_JOBS.index(c.job)))


def _sync_date(settings: Settings, plan_: BackfillPlan, slot: datetime) -> date | None:
    """The date the backfilled (date-dependent) sources read for a sync tick at ``slot``.

    A tick reads each source for its own default date (``today`` / ``yesterday``
    in the source's zone); a full-snapshot source with another default date must
    not shift the date a missed daily export is re-read for.
    """
    from jobctl.jobs.sync import common_day, sources_of

    sources = sources_of(settings)
    return common_day((sources[name] for name in plan_.sync_sources), slot)


def run(ctx: RunContext, plan_: BackfillPlan) -> None:
    ctx.partition = f"{plan_.start}..{plan_.end}"
    children = _children(ctx, plan_)
    done: set[tuple[str, str]] = set()
    if not plan_.force and not plan_.missing:
        for job in plan_.jobs:
            days = [c.day.isoformat() for c in children if c.job == job]
            done.update((job, day) for day in ctx.completed_partitions(job, days))
    results: list[dict[str, Any]] = []
    ctx.stats["children"] = results
    failures = 0
    total = len(children)
    ctx.log.info(
        "backfill %s..%s: %d child run(s) of %s",
        plan_.start,
        plan_.end,
        total,
        ", ".join(plan_.jobs),
    )
    for n, child in enumerate(children, 1):
        if ctx.progress is not None:
            ctx.progress("backfill", n - 1, total)
        day = child.day.isoformat()
        outcome = ctx.run_child(child.job, _request(ctx, plan_, child, (child.job, day) in done))
        results.append(
            {
                "date": day,
                "job": child.job,
                "run_id": outcome.run_id,
                "status": outcome.status,
                "message": outcome.message,
                "records": outcome.counters,
                "duration_ms": outcome.duration_ms,
            }
        )
        if outcome.status == RunStatus.COMPLETED:
            ctx.counters.add({k: v for k, v in outcome.counters.items() if k != "total"})
            ctx.counters.total += 1
        ctx.log.info("backfill %d/%d: %s %s %s", n, total, child.job, day, outcome.status)
        if outcome.status == RunStatus.CANCELLED:
            raise RunCancelled(
                "SIGINT" if outcome.exit_code == ExitCode.SIGINT else "SIGTERM", outcome.exit_code
            )
        if _failed(outcome):
            failures += 1
            if not plan_.continue_on_error:
                ctx.log.error(
                    "backfill: stopping at the first failure (%s %s); --continue-on-error goes on",
                    child.job,
                    day,
                )
                break
    if ctx.progress is not None:
        ctx.progress("backfill", total, total)
    if failures:
        raise JobError(f"{failures} of {total} child run(s) failed")


def _failed(outcome: RunOutcome) -> bool:
    """A child that counts as a failed date (its lock never came free counts too)."""
    return (
        outcome.status in (RunStatus.FAILED, RunStatus.ABANDONED)
        or outcome.exit_code == ExitCode.LOCKED
    )


def _request(ctx: RunContext, plan_: BackfillPlan, child: Child, done: bool) -> ChildRequest:
    """The child run of ``child``: its plan, or a skip if its date is already done."""
    day = child.day.isoformat()
    request = ChildRequest(
        trigger=Trigger.BACKFILL,
        wait=True,
        wait_timeout=CHILD_LOCK_WAIT,
        force=plan_.force,
        partition=day,
        scheduled_for=child.scheduled_for,
        params={"date": day},
    )
    if done:
        reason = (
            f"already done: a completed run exists for {day} "
            "(dry runs do not count; --force re-runs it)"
        )
        return replace(request, already_done=reason)
    return replace(request, plan=_child_plan(ctx.settings, plan_, child.job, day))


def _child_plan(settings: Settings, plan_: BackfillPlan, job: str, day: str) -> Plan:
    from jobctl.jobs import snapshot, sync

    # The range was checked against the same clock and --force already.
    if job == "sync":
        return sync.plan(
            settings, names=plan_.sync_sources, on_date=day, force=plan_.force, now=plan_.now
        )
    return snapshot.plan(settings, on_date=day, force=plan_.force, now=plan_.now)


SPEC = JobSpec(
    "backfill",
    run,
    plan_args,
    plan_type=BackfillPlan,
    description="Re-run sync and/or snapshot over a range of dates",
    builtin=True,
)
