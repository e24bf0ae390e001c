"""Where each job stands now, read from the run ledger: what ``status``, ``check`` and
``metrics`` are computed from.

Read only (``jobctl.db.ledger`` is the one module that writes ``jobctl.runs``). Dry
runs are left out of the last run and the last success (they applied nothing);
backfill children count under their own job, but only a top-level run is "running
now" (a child runs under its parent's lock). Every figure is over the retained ledger
(``cleanup`` keeps 180 days by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection


@dataclass(frozen=True)
class RunRef:
    """One run, as much of it as the health figures need."""

    id: int
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    duration_ms: int | None = None
    heartbeat_at: datetime | None = None
    host: str | None = None
    pid: int | None = None


@dataclass(frozen=True)
class JobState:
    """One job's last finished run, last success, run in progress and failure streak."""

    job: str
    last_finished: RunRef | None = None
    last_success: RunRef | None = None
    running: RunRef | None = None
    #: Failed or abandoned runs since the last completed one.
    failure_streak: int = 0


@dataclass(frozen=True)
class LedgerTotals:
    """Counts over the retained ledger, for ``metrics``."""

    #: (job, status) → runs
    runs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (job, kind) → records summed over completed, non-dry runs (kind: new, updated, …)
    records: dict[tuple[str, str], int] = field(default_factory=dict)


_KINDS = ("total", "new", "updated", "unchanged", "errors", "removed", "deleted")

# A loose index scan over (job, started_at): one index probe per job, not a read of
# every run.
_JOBS = """
WITH RECURSIVE t(job) AS (
    SELECT min(job) FROM jobctl.runs
    UNION ALL
    SELECT (SELECT min(r.job) FROM jobctl.runs r WHERE r.job > t.job) FROM t
     WHERE t.job IS NOT NULL
)
SELECT job FROM t WHERE job IS NOT NULL
"""

# Per job, index range scans of a few entries each: its last finished run and its last
# completed one (the newest of an index range on (job, started_at, id), or on (job,
# status, started_at, id)), its running top-level run (the partial index of running
# runs), and its failures since its last success, counted from (job, status,
# started_at) alone: the range after the success (an OR there would read them all).
# ``{before}``: an upper bound on started_at, or nothing.
_STATE = """
SELECT j.job,
       fin.id, fin.status, fin.started_at, fin.finished_at, fin.duration_ms,
       ok.id, ok.started_at, ok.finished_at, ok.duration_ms,
       cur.id, cur.started_at, cur.heartbeat_at, cur.host, cur.pid,
       (SELECT count(*) FROM jobctl.runs f
         WHERE f.job = j.job AND NOT f.dry_run AND f.status IN ('failed', 'abandoned')
           AND f.started_at > coalesce(ok.started_at, '-infinity'){before_f})
FROM unnest(%(jobs)s::text[]) AS j(job)
LEFT JOIN LATERAL (
    SELECT r.id, r.status, r.started_at, r.finished_at, r.duration_ms FROM jobctl.runs r
     WHERE r.job = j.job AND r.status NOT IN ('running', 'skipped') AND NOT r.dry_run{before}
     ORDER BY r.started_at DESC, r.id DESC LIMIT 1
) fin ON true
LEFT JOIN LATERAL (
    SELECT r.id, r.started_at, r.finished_at, r.duration_ms FROM jobctl.runs r
     WHERE r.job = j.job AND r.status = 'completed' AND NOT r.dry_run{before}
     ORDER BY r.started_at DESC, r.id DESC LIMIT 1
) ok ON true
LEFT JOIN LATERAL (
    SELECT r.id, r.started_at, r.heartbeat_at, r.host, r.pid FROM jobctl.runs r
     WHERE r.job = j.job AND r.status = 'running' AND r.parent_id IS NULL{before}
     ORDER BY r.started_at LIMIT 1
) cur ON true
"""

_BEFORE = " AND {alias}.started_at < %(as_of)s"

# Kept by the triggers of sql/0008 in the transaction of every change to jobctl.runs:
# the same figures as a count over the whole ledger, without reading it.
_RUNS = "SELECT job, status, runs FROM jobctl.run_totals WHERE runs <> 0"

_RECORDS = (
    "SELECT job, "
    + ", ".join(f"records_{k}" for k in _KINDS)
    + " FROM jobctl.run_totals WHERE status = 'completed' AND done_runs > 0"
)


def jobs_with_runs(conn: Connection) -> set[str]:
    """Every job the retained ledger has a run of."""
    return {str(r[0]) for r in conn.exec_driver_sql(_JOBS).fetchall()}


def _ref(row: tuple[Any, ...], status: str | None = None) -> RunRef | None:
    if row[0] is None:
        return None
    return RunRef(int(row[0]), status or str(row[1]), *row[2 if status is None else 1 :])


def job_states(
    conn: Connection, names: Iterable[str], as_of: datetime | None = None
) -> dict[str, JobState]:
    """The state of each job in ``names`` (a job without runs: all None, streak 0): now,
    or as the runs started before ``as_of`` left it (the report's period end)."""
    found: dict[str, JobState] = {}
    params: dict[str, Any] = {"jobs": sorted(set(names))}
    before = before_f = ""
    if as_of is not None:
        before, before_f = _BEFORE.format(alias="r"), _BEFORE.format(alias="f")
        params["as_of"] = as_of
    query = _STATE.format(before=before, before_f=before_f)
    rows = conn.exec_driver_sql(query, params).fetchall()
    for row in rows:
        job = str(row[0])
        fin = row[1:6]
        ok = row[6:10]
        cur_id, cur_started, cur_beat, cur_host, cur_pid = row[10:15]
        running = None
        if cur_id is not None:
            running = RunRef(
                int(cur_id),
                "running",
                cur_started,
                heartbeat_at=cur_beat,
                host=cur_host,
                pid=None if cur_pid is None else int(cur_pid),
            )
        found[job] = JobState(
            job,
            last_finished=_ref(tuple(fin)),
            last_success=_ref(tuple(ok), "completed"),
            running=running,
            failure_streak=int(row[15]),
        )
    return found


def ledger_totals(conn: Connection) -> LedgerTotals:
    """Runs by job and status, records by job and kind, over the retained ledger."""
    runs = {
        (str(job), str(status)): int(n) for job, status, n in conn.exec_driver_sql(_RUNS).fetchall()
    }
    records: dict[tuple[str, str], int] = {}
    for row in conn.exec_driver_sql(_RECORDS).fetchall():
        for kind, value in zip(_KINDS, row[1:], strict=True):
            records[(str(row[0]), kind)] = int(value)
    return LedgerTotals(runs, records)


def has_runs(conn: Connection, job: str) -> bool:
    # Ordered as an index is: a range of (job, started_at, id), never a scan of the
    # ledger that stops at the job's first run (which the planner may prefer).
    row = conn.exec_driver_sql(
        "SELECT 1 FROM jobctl.runs WHERE job = %(job)s ORDER BY started_at DESC, id DESC LIMIT 1",
        {"job": job},
    ).fetchone()
    return row is not None


def table_exists(conn: Connection, name: str) -> bool:
    """Whether ``name`` (``schema.table``) exists: a table another version may not have."""
    row = conn.exec_driver_sql("SELECT to_regclass(%(name)s)", {"name": name}).fetchone()
    return bool(row and row[0] is not None)


def schedule_stats(conn: Connection, window: timedelta) -> dict[str, Any] | None:
    """``jobctl.db.scheduled.stats`` over ``window`` on this transaction's connection;
    None on a database without the one-off schedules' table."""
    if not table_exists(conn, "jobctl.scheduled"):
        return None
    from jobctl.db import scheduled

    raw = conn.connection.driver_connection  # scheduled.py speaks psycopg
    return scheduled.stats(raw, window)  # type: ignore[arg-type]
