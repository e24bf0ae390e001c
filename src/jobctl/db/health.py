"""Figures over the run ledger for a period: what the report's job-health part shows.

Read only (``jobctl.db.ledger`` is the one module that writes ``jobctl.runs``). A run
belongs to the period its ``started_at`` falls in; dry runs are left out (they moved
nothing), backfill children count under their own job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobctl.db.job_state import job_states

if TYPE_CHECKING:
    from sqlalchemy import Connection


@dataclass(frozen=True)
class JobHealth:
    """One job's runs in a period, and its state at the period's end."""

    job: str
    runs: int
    completed: int
    failed: int
    skipped: int
    #: cancelled or abandoned
    interrupted: int
    #: Durations of the runs that did work (every status but skipped and running), ms.
    p50_ms: float | None
    p95_ms: float | None
    records_new: int
    records_updated: int
    records_removed: int
    records_deleted: int
    #: The latest completed run's end, up to the period's end (before the period too).
    last_success: datetime | None
    #: Failed or abandoned runs since the last completed one, at the period's end.
    failure_streak: int


_PERIOD = """
SELECT job,
       count(*),
       count(*) FILTER (WHERE status = 'completed'),
       count(*) FILTER (WHERE status = 'failed'),
       count(*) FILTER (WHERE status = 'skipped'),
       count(*) FILTER (WHERE status IN ('cancelled', 'abandoned')),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms)
           FILTER (WHERE status NOT IN ('skipped', 'running')),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)
           FILTER (WHERE status NOT IN ('skipped', 'running')),
       coalesce(sum(records_new), 0),
       coalesce(sum(records_updated), 0),
       coalesce(sum(records_removed), 0),
       coalesce(sum(records_deleted), 0)
FROM jobctl.runs
WHERE started_at >= %(start)s AND started_at < %(end)s AND NOT dry_run
GROUP BY job
"""

#: A job that ran this long before the period but not in it is listed too, with zero
#: runs: a job that went quiet is news. (One that stopped longer ago is not, unless
#: it is configured.)
RECENT = timedelta(days=28)

_RECENT = """
SELECT DISTINCT job FROM jobctl.runs
WHERE started_at >= %(since)s AND started_at < %(start)s AND NOT dry_run
"""


def job_health(
    conn: Connection, start: datetime, end: datetime, also: Iterable[str] = ()
) -> list[JobHealth]:
    """Every job with runs in ``[start, end)`` or in the :data:`RECENT` weeks before it,
    and the jobs in ``also`` (the configured ones), by name."""
    figures = {
        row[0]: row[1:]
        for row in conn.exec_driver_sql(_PERIOD, {"start": start, "end": end}).fetchall()
    }
    recent = conn.exec_driver_sql(_RECENT, {"since": start - RECENT, "start": start})
    names = sorted(set(figures) | {r[0] for r in recent} | set(also))
    # Its state at the period's end: the same read as ``status``'s, as of ``end``.
    state = {
        job: (s.last_success.finished_at if s.last_success else None, s.failure_streak)
        for job, s in job_states(conn, names, as_of=end).items()
    }
    found = []
    for name in names:
        runs, done, failed, skipped, interrupted, p50, p95, new, upd, rem, dele = figures.get(
            name, (0, 0, 0, 0, 0, None, None, 0, 0, 0, 0)
        )
        last_success, streak = state.get(name, (None, 0))
        found.append(
            JobHealth(
                name,
                int(runs),
                int(done),
                int(failed),
                int(skipped),
                int(interrupted),
                None if p50 is None else float(p50),
                None if p95 is None else float(p95),
                int(new),
                int(upd),
                int(rem),
                int(dele),
                last_success,
                streak,
            )
        )
    return found
