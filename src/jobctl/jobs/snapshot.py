"""``jobctl snapshot``: compute named snapshot sets for day / week / month periods.

::

    [snapshots.permits_by_ward]
    table = "snap_permits_by_ward"
    key = ["ward"]
    periods = ["day", "week", "month"]
    week_start = "monday"          # ISO weeks by default
    requires_sync = true           # the day must have a completed sync first
    query = '''
      SELECT data->>'WARD' AS ward, count(*) AS permits
      FROM permits WHERE (data->>'ISSUED_DATE')::date >= :period_start
                     AND (data->>'ISSUED_DATE')::date <  :period_end
      GROUP BY 1'''

Default run: yesterday's day, plus the week / month that ended yesterday. Dates are
days in each set's zone: a date that has not ended there is refused (``--force``
takes it), and the default date is one that has ended in every zone involved.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, cast

from jobctl.config import Settings
from jobctl.config_models import SnapshotSet
from jobctl.context import Counters, RunContext
from jobctl.days import check_over, last_ended
from jobctl.db.snapshots import replace_period, snapshot_transaction
from jobctl.durations import parse_date
from jobctl.errors import JobError, UsageError
from jobctl.jobspec import JobSpec, Planning, stored_params
from jobctl.periods import (
    PERIOD_TYPES,
    Period,
    PeriodType,
    period_containing,
    periods_closing_on,
)


def snapshot_sets(settings: Settings) -> dict[str, SnapshotSet]:
    return dict(settings.snapshots)


@dataclass(frozen=True)
class SnapshotPlan:
    sets: tuple[SnapshotSet, ...]
    date: date | None = None
    periods: tuple[PeriodType, ...] = ()  # empty: the defaults (day + just-closed periods)
    #: Stored with the run (``--date``, ``--set``, ``--period`` as given).
    params: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SnapshotArgs:
    """``jobctl snapshot``'s own arguments."""

    sets: Sequence[str] = ()
    on_date: str | None = None
    periods: Sequence[str] = ()


def plan(
    settings: Settings,
    *,
    names: Sequence[str] = (),
    on_date: str | None = None,
    periods: Sequence[str] = (),
    force: bool = False,
    now: datetime | None = None,
) -> SnapshotPlan:
    """Validate the command line (UsageError, exit 2, before any run row).

    ``--date`` must be a day that has ended in the zone of every chosen set, as
    of ``now`` (the real clock by default); ``force`` takes one still in progress.
    """
    available = snapshot_sets(settings)
    if not available:
        raise settings.nothing_configured("snapshot sets", "[snapshots.NAME]")
    for name in names:
        if name not in available:
            raise UsageError(f"unknown snapshot set {name!r} (configured: {', '.join(available)})")
    for p in periods:
        if p not in PERIOD_TYPES:
            raise UsageError(f"--period {p!r} is not one of {', '.join(PERIOD_TYPES)}")
    chosen = tuple(available[n] for n in names) if names else tuple(available.values())
    day = None
    if on_date is not None:
        day = parse_date(on_date, what="--date")
        check_over(day, [s.timezone for s in chosen], now=now, what="--date", force=force)
    return SnapshotPlan(chosen, day, tuple(cast(PeriodType, p) for p in dict.fromkeys(periods)))


def plan_args(settings: Settings, args: SnapshotArgs, planning: Planning) -> SnapshotPlan:
    """The command's plan (:func:`plan`), with the params stored with its run."""
    planned = plan(
        settings,
        names=args.sets,
        on_date=args.on_date,
        periods=args.periods,
        force=planning.force,
        now=planning.now,
    )
    params = stored_params(date=args.on_date, sets=args.sets, periods=args.periods)
    return replace(planned, params=params)


def _zones(settings: Settings, sets: Sequence[SnapshotSet]) -> list[str]:
    return [settings.timezone, *(s.timezone for s in sets)]


def default_date(ctx: RunContext, sets: Sequence[SnapshotSet]) -> date:
    """Yesterday in the configured zone, relative to the slot the run serves if any.

    Earlier if a set's own zone is behind so that day has not ended there yet:
    a run without ``--date`` never works on a day in progress.
    """
    return last_ended(_zones(ctx.settings, sets), ctx.scheduled_for or datetime.now(UTC))


def periods_for(snapshot: SnapshotSet, day: date, asked: Sequence[PeriodType]) -> list[Period]:
    if asked:
        return [
            period_containing(k, day, snapshot.week_start) for k in asked if k in snapshot.periods
        ]
    return periods_closing_on(day, snapshot.periods, snapshot.week_start)


def run(ctx: RunContext, plan_: SnapshotPlan) -> None:
    day = plan_.date or default_date(ctx, plan_.sets)
    ctx.partition = day.isoformat()
    results: dict[str, Any] = {}
    # Every set's precondition first: a run that fails on one writes no period of any set.
    for snapshot in plan_.sets:
        if snapshot.requires_sync:
            _require_sync(ctx, snapshot, day)
    # Every period of every set in one transaction: a run that fails or is killed
    # half-way leaves every snapshot table as it was.
    try:
        with snapshot_transaction(ctx.db, dry_run=ctx.dry_run) as conn:
            for snapshot in plan_.sets:
                for period in periods_for(snapshot, day, plan_.periods):
                    ctx.check_lock()  # between periods; the commit itself is fenced
                    started = time.monotonic()
                    counts = replace_period(
                        conn,
                        table=snapshot.table,
                        key=snapshot.key,
                        query=snapshot.query,
                        period=period,
                        timezone=snapshot.timezone,
                        run_id=ctx.run_id,
                    )
                    seconds = time.monotonic() - started
                    ctx.counters.add(
                        {
                            "total": counts.rows,
                            "new": counts.new,
                            "updated": counts.updated,
                            "unchanged": counts.unchanged,
                            "deleted": counts.deleted,
                        }
                    )
                    results.setdefault(snapshot.name, []).append(
                        {
                            "period": period.type,
                            "start": period.start.isoformat(),
                            "end": period.end.isoformat(),
                            "rows": counts.rows,
                            "new": counts.new,
                            "updated": counts.updated,
                            "unchanged": counts.unchanged,
                            "deleted": counts.deleted,
                            "seconds": round(seconds, 3),
                        }
                    )
                    ctx.log.info(
                        "%s: %s: %d rows (%d new, %d updated, %d unchanged, %d deleted) in %.2fs",
                        snapshot.name,
                        period,
                        counts.rows,
                        counts.new,
                        counts.updated,
                        counts.unchanged,
                        counts.deleted,
                        seconds,
                    )
                ctx.stats["snapshots"] = results
    except BaseException:
        ctx.counters = Counters()
        ctx.stats["rolled_back"] = "no period was written: the run shares one transaction"
        raise


def _require_sync(ctx: RunContext, snapshot: SnapshotSet, day: date) -> None:
    # A dry-run sync applied nothing: it does not count (completed_partitions).
    done = ctx.completed_partitions("sync", [day.isoformat()])
    if not done:
        raise JobError(
            f"snapshot set {snapshot.name!r} needs a completed sync for {day} and there is "
            f"none; run 'jobctl sync --date {day}' first (or set requires_sync = false)"
        )


def served_date(settings: Settings, slot: datetime) -> date:
    """A snapshot tick works on yesterday, in the configured zone, as of its slot
    (the date :func:`default_date` picks for a run of every set)."""
    return last_ended(_zones(settings, list(snapshot_sets(settings).values())), slot)


SPEC = JobSpec(
    "snapshot",
    run,
    plan_args,
    default_args=SnapshotArgs(),
    plan_type=SnapshotPlan,
    description="Roll facts up into day / week / month snapshot tables",
    builtin=True,
    date_based=True,
    served_date=served_date,
)
