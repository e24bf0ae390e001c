"""The run ledger (``jobctl.runs``): the one module that writes it.

Status changes out of ``running`` are guarded (``WHERE status = 'running'``) so
that a run marked ``abandoned`` by another process is never silently revived.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select, text, update

from jobctl import __version__
from jobctl.db.locks import HELD_SQL, NAMESPACE
from jobctl.db.tables import LEDGER_COLUMNS, runs

HOST = socket.gethostname()

COUNTER_FIELDS = (
    "records_total",
    "records_new",
    "records_updated",
    "records_unchanged",
    "records_errors",
    "records_removed",
    "records_deleted",
)


@dataclass(frozen=True)
class Holder:
    """Who holds a job's lock, for the 'skipped' message."""

    run_id: int | None
    host: str | None
    pid: int | None
    started_at: datetime | None
    age_seconds: float | None


def insert_run(
    conn: Connection,
    *,
    job: str,
    status: str,
    trigger: str,
    params: Mapping[str, Any] | None = None,
    partition: str | None = None,
    parent_id: int | None = None,
    scheduled_for: datetime | None = None,
    source: str | None = None,
    lock_backend_pid: int | None = None,
    lock_key: int | None = None,
    error_message: str | None = None,
    stats: Mapping[str, Any] | None = None,
) -> int:
    finished = status != "running"
    values: dict[str, Any] = {
        "job": job,
        "status": status,
        "trigger": trigger,
        "params": dict(params or {}),
        "partition": partition,
        "parent_id": parent_id,
        "scheduled_for": scheduled_for,
        "source": source,
        "host": HOST,
        "pid": os.getpid(),
        "jobctl_version": __version__,
        "lock_backend_pid": lock_backend_pid,
        "lock_key": lock_key,
        "error_message": error_message,
        "stats": dict(stats or {}),
        "heartbeat_at": func.now(),
        "attempts": 0,
        "log_tail": [],
    }
    if finished:
        values["finished_at"] = func.now()
        values["duration_ms"] = 0
    run_id = conn.execute(runs.insert().values(**values).returning(runs.c.id)).scalar_one()
    return int(run_id)


def heartbeat(conn: Connection, run_id: int, log_tail: Sequence[str] | None = None) -> bool:
    values: dict[str, Any] = {"heartbeat_at": func.now()}
    if log_tail is not None:
        values["log_tail"] = list(log_tail)
    result = conn.execute(
        update(runs).where(and_(runs.c.id == run_id, runs.c.status == "running")).values(**values)
    )
    return result.rowcount == 1


def finish_run(
    conn: Connection,
    run_id: int,
    *,
    status: str,
    attempts: int,
    counters: Mapping[str, int],
    stats: Mapping[str, Any],
    error_message: str | None,
    error_detail: str | None,
    log_tail: Sequence[str],
    source: str | None = None,
    partition: str | None = None,
) -> bool:
    """Close a running run; False if it was no longer ``running`` (e.g. abandoned)."""
    values: dict[str, Any] = {
        "status": status,
        "finished_at": func.now(),
        "duration_ms": func.greatest(
            0, func.floor(func.extract("epoch", func.clock_timestamp() - runs.c.started_at) * 1000)
        ),
        "attempts": attempts,
        "stats": dict(stats),
        "error_message": error_message,
        "error_detail": error_detail,
        "log_tail": list(log_tail),
        "heartbeat_at": func.now(),
    }
    for name in COUNTER_FIELDS:
        if name in counters:
            values[name] = int(counters[name])
    if source is not None:
        values["source"] = source
    if partition is not None:
        values["partition"] = partition
    result = conn.execute(
        update(runs).where(and_(runs.c.id == run_id, runs.c.status == "running")).values(**values)
    )
    return result.rowcount == 1


def sweep_abandoned(conn: Connection, job: str | None = None) -> list[int]:
    """Mark ``running`` rows whose lock is no longer held as ``abandoned``.

    A live run holds its job's advisory lock on the backend recorded in
    ``lock_backend_pid``; if that backend holds no such lock, the process died.
    """
    held = HELD_SQL.format(ns=NAMESPACE, key="r.lock_key", pid="r.lock_backend_pid")
    sql = (
        "UPDATE jobctl.runs r SET status = 'abandoned',"
        " finished_at = coalesce(r.heartbeat_at, r.started_at),"
        " duration_ms = greatest(0, floor(extract(epoch from"
        "   coalesce(r.heartbeat_at, r.started_at) - r.started_at) * 1000)),"
        " error_message = 'the process running it (host ' || r.host || ', pid ' || r.pid ||"
        "   ') died without finishing: its lock is no longer held'"
        f" WHERE r.status = 'running' AND NOT {held}"
    )
    params: dict[str, Any] = {}
    if job is not None:
        sql += " AND r.job = :job"
        params["job"] = job
    rows = conn.execute(text(sql + " RETURNING r.id"), params)
    return [int(r[0]) for r in rows]


def lock_holder(conn: Connection, job: str, key: int) -> Holder:
    """The running run whose backend holds the job's lock (best effort)."""
    held = HELD_SQL.format(ns=NAMESPACE, key=":key", pid="r.lock_backend_pid")
    row = conn.execute(
        text(
            "SELECT r.id, r.host, r.pid, r.started_at,"
            " extract(epoch FROM now() - r.started_at) AS age"
            f" FROM jobctl.runs r WHERE r.job = :job AND r.status = 'running' AND {held}"
            " ORDER BY r.started_at LIMIT 1"
        ),
        {"job": job, "key": key},
    ).first()
    if row is not None:
        return Holder(int(row.id), row.host, int(row.pid), row.started_at, float(row.age))
    # The holder took the lock but has not written its run row yet: its lock
    # connection's application_name ("jobctl HOST PID") still names it.
    session = conn.execute(
        text(
            "SELECT a.application_name, a.xact_start,"
            " extract(epoch FROM now() - a.xact_start) AS age"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = CAST(:ns AS oid)"
            " AND l.objid = CAST(:key AS oid) AND l.objsubid = 2 LIMIT 1"
        ),
        {"ns": NAMESPACE, "key": key},
    ).first()
    parts = (session.application_name or "").split() if session is not None else []
    if session is None or len(parts) != 3 or parts[0] != "jobctl" or not parts[2].isdigit():
        return Holder(None, None, None, None, None)
    age = float(session.age) if session.age is not None else None
    return Holder(None, parts[1], int(parts[2]), session.xact_start, age)


def completed_slot_run(conn: Connection, job: str, scheduled_for: datetime) -> int | None:
    row = conn.execute(
        select(runs.c.id)
        .where(
            runs.c.job == job, runs.c.scheduled_for == scheduled_for, runs.c.status == "completed"
        )
        .limit(1)
    ).first()
    return int(row.id) if row else None


def completed_slots(conn: Connection, job: str, since: datetime, until: datetime) -> set[datetime]:
    rows = conn.execute(
        select(runs.c.scheduled_for).where(
            runs.c.job == job,
            runs.c.status == "completed",
            runs.c.scheduled_for >= since,
            runs.c.scheduled_for < until,
        )
    )
    return {r.scheduled_for for r in rows}


def completed_partitions(conn: Connection, job: str, partitions: Sequence[str]) -> set[str]:
    rows = conn.execute(
        select(runs.c.partition).where(
            runs.c.job == job, runs.c.status == "completed", runs.c.partition.in_(list(partitions))
        )
    )
    return {r.partition for r in rows}


def list_runs(
    conn: Connection,
    *,
    job: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 20,
    parent_id: int | None = None,
) -> list[dict[str, Any]]:
    query = select(*[runs.c[name] for name in LEDGER_COLUMNS])
    if job:
        query = query.where(runs.c.job == job)
    if status:
        query = query.where(runs.c.status == status)
    if since:
        query = query.where(runs.c.started_at >= since)
    if parent_id is not None:
        query = query.where(runs.c.parent_id == parent_id).order_by(runs.c.id)
    else:
        query = query.order_by(runs.c.started_at.desc(), runs.c.id.desc())
    if limit:
        query = query.limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def get_run(conn: Connection, run_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
    return dict(row) if row else None


def running_now(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per job, the run currently holding its lock (after a sweep)."""
    rows = conn.execute(
        select(runs.c.id, runs.c.job, runs.c.host, runs.c.pid, runs.c.started_at)
        .where(runs.c.status == "running", runs.c.parent_id.is_(None))
        .order_by(runs.c.started_at)
    ).mappings()
    return {r["job"]: dict(r) for r in rows}


def last_runs(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per job: the last finished run and the last completed one."""
    rows = conn.execute(
        text(
            "SELECT DISTINCT ON (job) job, id, status, started_at, finished_at FROM jobctl.runs"
            " WHERE status NOT IN ('running', 'skipped') ORDER BY job, started_at DESC"
        )
    ).mappings()
    last = {r["job"]: dict(r) for r in rows}
    ok = conn.execute(
        text(
            "SELECT job, max(finished_at) AS at FROM jobctl.runs WHERE status = 'completed'"
            " GROUP BY job"
        )
    ).mappings()
    for r in ok:
        last.setdefault(r["job"], {})["last_success"] = r["at"]
    return last
