"""The run ledger (``jobctl.runs``): the one module that writes it.

Status changes out of ``running`` are guarded (``WHERE status = 'running'``) so
that a run marked ``abandoned`` by another process is never silently revived.

What a skipped tick does (``insert_run``, ``sweep_abandoned``, ``lock_holder``) is
plain SQL that runs on a psycopg connection (``Database.plain``) as well as on a
SQLAlchemy one; the rest is SQLAlchemy Core, imported by the functions that use it,
so that a tick whose job is already running never loads SQLAlchemy.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from jobctl import __version__
from jobctl.db.errors import translate
from jobctl.db.locks import HELD_SQL, NAMESPACE
from jobctl.jobspec import RunStatus, Trigger

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Connection


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


def _execute(conn: Connection | psycopg.Connection[Any], sql: str, params: Any) -> Any:
    """Run plain SQL (psycopg's ``%(name)s`` placeholders) on either kind of connection."""
    if isinstance(conn, psycopg.Connection):
        return conn.execute(sql, params)
    return conn.exec_driver_sql(sql, params)


def insert_run(
    conn: Connection | psycopg.Connection[Any],
    *,
    job: str,
    status: RunStatus,
    trigger: Trigger,
    params: Mapping[str, Any] | None = None,
    partition: str | None = None,
    parent_id: int | None = None,
    scheduled_for: datetime | None = None,
    source: str | None = None,
    lock_backend_pid: int | None = None,
    lock_key: int | None = None,
    error_message: str | None = None,
    stats: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    requested_by: str | None = None,
) -> int:
    values: dict[str, Any] = {
        "job": job,
        "status": status,
        "trigger": trigger,
        "params": Jsonb(dict(params or {})),
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
        "stats": Jsonb(dict(stats or {})),
        "dry_run": dry_run,
        "requested_by": requested_by,
    }
    columns = [*values, "heartbeat_at", "attempts", "log_tail"]
    row = [f"%({name})s" for name in values] + ["now()", "0", "ARRAY[]::text[]"]
    if status != RunStatus.RUNNING:
        columns += ["finished_at", "duration_ms"]
        row += ["now()", "0"]
    sql = f"INSERT INTO jobctl.runs ({', '.join(columns)}) VALUES ({', '.join(row)}) RETURNING id"
    return int(_execute(conn, sql, values).fetchone()[0])


def heartbeat(
    conn: Connection | psycopg.Connection[Any], run_id: int, log_tail: Sequence[str] | None = None
) -> bool:
    # Plain SQL, as every write of a run's own row: a run never needs SQLAlchemy.
    sql = "UPDATE jobctl.runs SET heartbeat_at = now()"
    params: dict[str, Any] = {"id": run_id}
    if log_tail is not None:
        sql += ", log_tail = %(log_tail)s"
        params["log_tail"] = list(log_tail)
    sql += " WHERE id = %(id)s AND status = 'running'"
    return int(_execute(conn, sql, params).rowcount) == 1


def finish_run(
    conn: Connection | psycopg.Connection[Any],
    run_id: int,
    *,
    status: RunStatus,
    attempts: int,
    counters: Mapping[str, int],
    stats: Mapping[str, Any],
    error_message: str | None,
    error_detail: str | None,
    log_tail: Sequence[str],
    source: str | None = None,
    partition: str | None = None,
) -> bool:
    """Close a running run; False if it was no longer ``running`` (e.g. abandoned).

    Plain SQL (either kind of connection): the end of every run is written without
    SQLAlchemy."""
    values: dict[str, Any] = {
        "status": status,
        "attempts": attempts,
        "stats": Jsonb(dict(stats)),
        "error_message": error_message,
        "error_detail": error_detail,
        "log_tail": list(log_tail),
    }
    for name in COUNTER_FIELDS:
        if name in counters:
            values[name] = int(counters[name])
    if source is not None:
        values["source"] = source
    if partition is not None:
        values["partition"] = partition
    assignments = [f"{name} = %({name})s" for name in values]
    assignments += [
        "finished_at = now()",
        "duration_ms = greatest(0, floor(extract(epoch FROM clock_timestamp() - started_at)"
        " * 1000))",
        "heartbeat_at = now()",
    ]
    sql = (
        f"UPDATE jobctl.runs SET {', '.join(assignments)}"
        " WHERE id = %(run_id)s AND status = 'running'"
    )
    return int(_execute(conn, sql, {**values, "run_id": run_id}).rowcount) == 1


def sweep_abandoned(
    conn: Connection | psycopg.Connection[Any], job: str | None = None
) -> list[int]:
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
        sql += " AND r.job = %(job)s"
        params["job"] = job
    rows = _execute(conn, sql + " RETURNING r.id", params).fetchall()
    return [int(r[0]) for r in rows]


#: The runs cleanup may delete: top-level runs that finished before the cutoff and have
#: no child still running (a child goes with its parent: ``ON DELETE CASCADE``; a
#: ``running`` row, live or not yet swept, is never deleted).
_OLD_RUNS = (
    "SELECT r.id FROM jobctl.runs r"
    " WHERE r.parent_id IS NULL AND r.status <> 'running' AND r.started_at < %(cutoff)s"
    " AND NOT EXISTS (SELECT 1 FROM jobctl.runs c"
    "   WHERE c.parent_id = r.id AND c.status = 'running')"
)


def delete_old_runs(
    conn: Connection | psycopg.Connection[Any], cutoff: datetime, limit: int
) -> tuple[int, int]:
    """Delete up to ``limit`` old top-level runs (see ``_OLD_RUNS``) with their children:
    (top-level runs deleted, rows deleted with their children)."""
    sql = (
        f"WITH doomed AS ({_OLD_RUNS} ORDER BY r.id LIMIT %(limit)s),"
        " children AS (DELETE FROM jobctl.runs WHERE parent_id IN (SELECT id FROM doomed)"
        "   RETURNING 1),"
        " parents AS (DELETE FROM jobctl.runs WHERE id IN (SELECT id FROM doomed) RETURNING 1)"
        " SELECT (SELECT count(*) FROM parents), (SELECT count(*) FROM children)"
    )
    parents, children = _execute(conn, sql, {"cutoff": cutoff, "limit": limit}).fetchone()
    return int(parents), int(parents) + int(children)


def old_runs(
    conn: Connection | psycopg.Connection[Any], cutoff: datetime
) -> tuple[int, int, datetime | None]:
    """What :func:`delete_old_runs` would delete: (top-level runs, rows with their
    children, the oldest ``started_at`` kept)."""
    sql = (
        f"WITH doomed AS ({_OLD_RUNS})"
        " SELECT (SELECT count(*) FROM doomed),"
        " (SELECT count(*) FROM jobctl.runs WHERE id IN (SELECT id FROM doomed)"
        "   OR parent_id IN (SELECT id FROM doomed)),"
        " (SELECT min(started_at) FROM jobctl.runs WHERE id NOT IN (SELECT id FROM doomed)"
        "   AND (parent_id IS NULL OR parent_id NOT IN (SELECT id FROM doomed)))"
    )
    top, rows, oldest = _execute(conn, sql, {"cutoff": cutoff}).fetchone()
    return int(top), int(rows), oldest


def lock_holder(conn: Connection | psycopg.Connection[Any], job: str, key: int) -> Holder:
    """The running run whose backend holds the job's lock (best effort)."""
    held = HELD_SQL.format(ns=NAMESPACE, key="%(key)s", pid="r.lock_backend_pid")
    row = _execute(
        conn,
        "SELECT r.id, r.host, r.pid, r.started_at,"
        " extract(epoch FROM now() - r.started_at) AS age"
        f" FROM jobctl.runs r WHERE r.job = %(job)s AND r.status = 'running' AND {held}"
        " ORDER BY r.started_at LIMIT 1",
        {"job": job, "key": key},
    ).fetchone()
    if row is not None:
        run_id, host, pid, started_at, age = row
        return Holder(int(run_id), host, int(pid), started_at, float(age))
    # The holder took the lock but has not written its run row yet: its lock
    # connection's application_name ("jobctl HOST PID") still names it.
    session = _execute(
        conn,
        "SELECT a.application_name, a.xact_start,"
        " extract(epoch FROM now() - a.xact_start) AS age"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = CAST(%(ns)s AS oid)"
        " AND l.objid = CAST(%(key)s AS oid) AND l.objsubid = 2 LIMIT 1",
        {"ns": NAMESPACE, "key": key},
    ).fetchone()
    if session is None:
        return Holder(None, None, None, None, None)
    application_name, xact_start, age = session
    parts = (application_name or "").split()
    if len(parts) != 3 or parts[0] != "jobctl" or not parts[2].isdigit():
        return Holder(None, None, None, None, None)
    return Holder(
        None, parts[1], int(parts[2]), xact_start, float(age) if age is not None else None
    )


def _done() -> ColumnElement[bool]:
    """What makes a run count as done for its slot or date: completed, and not a dry
    run (a dry run is recorded `completed` but applied nothing)."""
    from sqlalchemy import and_, literal_column, not_

    from jobctl.db.tables import runs

    # Literals, as the partial index of done slots (sql/0008) states them.
    return and_(runs.c.status == literal_column("'completed'"), not_(runs.c.dry_run))


def completed_slot_run(conn: Connection, job: str, scheduled_for: datetime) -> int | None:
    from sqlalchemy import select

    from jobctl.db.tables import runs

    row = conn.execute(
        select(runs.c.id)
        .where(runs.c.job == job, runs.c.scheduled_for == scheduled_for, _done())
        .limit(1)
    ).first()
    return int(row.id) if row else None


def completed_slots(conn: Connection, job: str, since: datetime, until: datetime) -> set[datetime]:
    from sqlalchemy import select

    from jobctl.db.tables import runs

    rows = conn.execute(
        select(runs.c.scheduled_for).where(
            runs.c.job == job,
            _done(),
            runs.c.scheduled_for >= since,
            runs.c.scheduled_for < until,
        )
    )
    return {r.scheduled_for for r in rows}


def completed_partitions(conn: Connection, job: str, partitions: Sequence[str]) -> set[str]:
    from sqlalchemy import select

    from jobctl.db.tables import runs

    rows = conn.execute(
        select(runs.c.partition).where(
            runs.c.job == job, _done(), runs.c.partition.in_(list(partitions))
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
    from sqlalchemy import select

    from jobctl.db.tables import LEDGER_COLUMNS, runs

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
    from sqlalchemy import select

    from jobctl.db.tables import runs

    row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
    return dict(row) if row else None


def running_now(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per job, the run currently holding its lock (after a sweep)."""
    from sqlalchemy import select

    from jobctl.db.tables import runs

    rows = conn.execute(
        select(runs.c.id, runs.c.job, runs.c.host, runs.c.pid, runs.c.started_at)
        .where(runs.c.status == RunStatus.RUNNING, runs.c.parent_id.is_(None))
        .order_by(runs.c.started_at)
    ).mappings()
    return {r["job"]: dict(r) for r in rows}


#: Per job of the ledger (a loose index scan: one probe of (job, started_at, id) per
#: job), the newest of two index ranges: its last finished run (a dry run too) and its
#: last completed non-dry one.
_LAST_RUNS = """
WITH RECURSIVE t(job) AS (
    SELECT min(job) FROM jobctl.runs
    UNION ALL
    SELECT (SELECT min(r.job) FROM jobctl.runs r WHERE r.job > t.job) FROM t
     WHERE t.job IS NOT NULL
)
SELECT t.job, fin.id, fin.status, fin.started_at, fin.finished_at,
       ok.finished_at AS last_success
FROM t
LEFT JOIN LATERAL (
    SELECT r.id, r.status, r.started_at, r.finished_at FROM jobctl.runs r
     WHERE r.job = t.job AND r.status NOT IN ('running', 'skipped')
     ORDER BY r.started_at DESC, r.id DESC LIMIT 1
) fin ON true
LEFT JOIN LATERAL (
    SELECT r.finished_at FROM jobctl.runs r
     WHERE r.job = t.job AND r.status = 'completed' AND NOT r.dry_run
     ORDER BY r.started_at DESC, r.id DESC LIMIT 1
) ok ON true
WHERE t.job IS NOT NULL AND fin.id IS NOT NULL
"""


def last_runs(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per job: the last finished run, and when its last completed one (dry runs apart)
    ended: the run ``status`` calls its last success."""
    from sqlalchemy import text

    found: dict[str, dict[str, Any]] = {}
    for r in conn.execute(text(_LAST_RUNS)).mappings():
        found[r["job"]] = {k: r[k] for k in ("job", "id", "status", "started_at", "finished_at")}
        if r["last_success"] is not None:
            found[r["job"]]["last_success"] = r["last_success"]
    return found


def fence_statement(run_id: int) -> str:
    """The guarded update that fences a run's own work transaction.

    Run inside the job's transaction just before it commits: it matches (and
    row-locks) the run's row only while the row is ``running`` and the backend
    recorded for it still holds the job's lock. A run that takes the lock after
    this one lost it marks this row ``abandoned`` first (``sweep_abandoned``);
    that update waits on the row lock taken here, so either this transaction
    commits before the new run starts its work, or this statement sees the lock
    gone (or the row abandoned), matches nothing, and the work is rolled back.
    """
    held = HELD_SQL.format(ns=NAMESPACE, key="r.lock_key", pid="r.lock_backend_pid")
    return (
        "UPDATE jobctl.runs r SET heartbeat_at = now()"
        f" WHERE r.id = {int(run_id)} AND r.status = 'running' AND {held}"
    )


def fence(conn: Connection | psycopg.Connection[Any], run_id: int) -> bool:
    """True if the run still owns its lock (its row is now locked until commit)."""
    statement = fence_statement(run_id)
    what = "cannot check the run's lock before commit"
    if isinstance(conn, psycopg.Connection):
        try:
            return conn.execute(statement).rowcount == 1
        except psycopg.Error as exc:
            raise translate(exc, what) from exc
    # A SQLAlchemy connection: SQLAlchemy is loaded already (a plain one never loads it).
    from sqlalchemy.exc import DBAPIError

    try:
        return conn.exec_driver_sql(statement).rowcount == 1
    except (psycopg.Error, DBAPIError) as exc:
        raise translate(exc, what) from exc


def note_stats(conn: Connection, run_id: int, stats: Mapping[str, Any]) -> None:
    """Merge ``stats`` into a finished run's ``stats`` (what its alerts did, written
    after the run's end was recorded)."""
    from sqlalchemy import cast, literal, update
    from sqlalchemy.dialects.postgresql import JSONB

    from jobctl.db.tables import runs

    conn.execute(
        update(runs)
        .where(runs.c.id == run_id)
        .values(stats=runs.c.stats.op("||")(cast(literal(dict(stats), JSONB), JSONB)))
    )
