"""``jobctl.scheduled``: one-off scheduled runs. The one module that reads or writes it.

Plain SQL on psycopg connections (``Database.plain``): ``schedule run-due`` runs
every minute and, most minutes, finds nothing due; it never needs SQLAlchemy.

A row's life (see sql/0006_scheduled.sql)::

    pending --claim--> running --finish--> triggered | failed
       ^                  |
       +---- busy job ----+  (back to pending until the deadline, then failed)
    pending --cancel--> cancelled

A worker claims a due row in a short transaction (``FOR UPDATE SKIP LOCKED``: two
workers never claim one row) and, before that transaction commits, takes the row's
*claim lock* (:data:`~jobctl.db.locks.SCHEDULE_NAMESPACE`, the row id) on a
dedicated connection that it keeps until the row is finished. The row lock is not
held while the job runs; the claim lock is, so "``running`` and nobody holds its
claim lock" means exactly "its worker died" (:func:`dead_claims`), and a live
worker's row is never taken from it. Every change out of ``running`` is guarded by
the claimer's identity.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from jobctl.db.engine import Database
from jobctl.db.errors import translate
from jobctl.db.ledger import HOST
from jobctl.db.locks import HELD_SQL, SCHEDULE_NAMESPACE, JobLock, claim_key
from jobctl.durations import format_duration
from jobctl.errors import UsageError

Conn = psycopg.Connection[Any]

#: The statuses of a row (the stored strings); ``running``: claimed by a worker.
STATUSES = ("pending", "running", "triggered", "cancelled", "failed")
FINISHED = ("triggered", "cancelled", "failed")

_COLUMNS = (
    "id, job, params, run_at, timezone, created_at, created_by, status, every, until,"
    " anchor_local, occurrence, previous_id, claimed_by, claimed_at, claim_backend_pid,"
    " attempts, run_id, run_status, error_message, finished_at"
)
_CLAIM_HELD = HELD_SQL.format(
    ns=SCHEDULE_NAMESPACE, key="s.id & 2147483647", pid="s.claim_backend_pid"
)


@dataclass(frozen=True)
class Scheduled:
    """One row of ``jobctl.scheduled``."""

    id: int
    job: str
    params: Mapping[str, str]
    run_at: datetime
    timezone: str
    created_at: datetime
    created_by: str | None
    status: str
    every: str | None
    until: datetime | None
    anchor_local: datetime | None
    occurrence: int
    previous_id: int | None
    claimed_by: str | None
    claimed_at: datetime | None
    claim_backend_pid: int | None
    attempts: int
    run_id: int | None
    run_status: str | None
    error_message: str | None
    finished_at: datetime | None


@dataclass(frozen=True)
class NewSchedule:
    """What :func:`insert` writes."""

    job: str
    params: Mapping[str, str]
    run_at: datetime
    timezone: str
    created_at: datetime
    created_by: str | None = None
    every: str | None = None
    until: datetime | None = None
    anchor_local: datetime | None = None
    occurrence: int = 0
    previous_id: int | None = None


def worker_name() -> str:
    """``claimed_by`` of this process: ``HOST PID``."""
    return f"{HOST} {os.getpid()}"


def _rows(cursor: Any) -> list[Scheduled]:
    return [Scheduled(*row) for row in cursor.fetchall()]


def _values(new: NewSchedule) -> dict[str, Any]:
    return {
        "job": new.job,
        "params": Jsonb(dict(new.params)),
        "run_at": new.run_at,
        "timezone": new.timezone,
        "created_at": new.created_at,
        "created_by": new.created_by,
        "every": new.every,
        "until": new.until,
        "anchor_local": new.anchor_local,
        "occurrence": new.occurrence,
        "previous_id": new.previous_id,
    }


def insert(conn: Conn, new: NewSchedule) -> int:
    """A new pending row; UsageError when one of the same job at that moment is live,
    or when it is not a minute ahead of ``created_at`` (the table's CHECK)."""
    values = _values(new)
    names = ", ".join(values)
    placeholders = ", ".join(f"%({name})s" for name in values)
    try:
        with conn.transaction():  # a savepoint: the caller's transaction survives a refusal
            row = conn.execute(
                f"INSERT INTO jobctl.scheduled ({names}) VALUES ({placeholders}) RETURNING id",
                values,
            ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "scheduled_pending_key":
            other = conn.execute(
                "SELECT id FROM jobctl.scheduled WHERE job = %(job)s AND run_at = %(run_at)s"
                " AND status IN ('pending', 'running')",
                values,
            ).fetchone()
            raise UsageError(
                f"job {new.job!r} already has schedule {other[0] if other else '?'} at that "
                "time; cancel it first or pick another time"
            ) from None
        raise translate(exc, "could not add the schedule") from exc
    except psycopg.errors.CheckViolation as exc:
        raise UsageError(
            f"could not add the schedule: {exc.diag.constraint_name} refused it "
            "(a schedule is at least 1 minute ahead; --until is not before --at)"
        ) from None
    except psycopg.Error as exc:
        raise translate(exc, "could not add the schedule") from exc
    assert row is not None
    return int(row[0])


def get(conn: Conn, schedule_id: int) -> Scheduled | None:
    cursor = conn.execute(
        f"SELECT {_COLUMNS} FROM jobctl.scheduled WHERE id = %(id)s", {"id": schedule_id}
    )
    found = _rows(cursor)
    return found[0] if found else None


def list_rows(
    conn: Conn, *, status: str | None = None, job: str | None = None, limit: int = 0
) -> list[Scheduled]:
    """Rows by due time (the next first), filtered; ``limit`` 0: all."""
    where, params = ["true"], {"status": status, "job": job, "limit": limit or None}
    if status is not None:
        where.append("status = %(status)s")
    if job is not None:
        where.append("job = %(job)s")
    cursor = conn.execute(
        f"SELECT {_COLUMNS} FROM jobctl.scheduled WHERE {' AND '.join(where)}"
        " ORDER BY run_at, id LIMIT %(limit)s",
        params,
    )
    return _rows(cursor)


def cancel(conn: Conn, schedule_id: int) -> tuple[Scheduled | None, str | None]:
    """Cancel a pending row: (the row, None); else (None, its status, or None if none)."""
    cursor = conn.execute(
        "UPDATE jobctl.scheduled SET status = 'cancelled', finished_at = now()"
        f" WHERE id = %(id)s AND status = 'pending' RETURNING {_COLUMNS}",
        {"id": schedule_id},
    )
    done = _rows(cursor)
    if done:
        return done[0], None
    row = conn.execute(
        "SELECT status FROM jobctl.scheduled WHERE id = %(id)s", {"id": schedule_id}
    ).fetchone()
    return None, (str(row[0]) if row else None)


def has_work(conn: Conn) -> bool:
    """Whether a worker has anything to do: a due row, or a claim whose worker died."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM jobctl.scheduled"
        "   WHERE status = 'pending' AND run_at <= now())"
        " OR EXISTS (SELECT 1 FROM jobctl.scheduled s"
        f"   WHERE s.status = 'running' AND NOT {_CLAIM_HELD})"
    ).fetchone()
    return bool(row and row[0])


@dataclass
class Claim:
    """A row this worker claimed, and the claim lock it holds until it finishes it."""

    row: Scheduled
    lock: JobLock
    worker: str


def claim_next(db: Database, skip: Sequence[int]) -> Claim | None:
    """Claim the oldest due pending row not in ``skip``; None when there is none.

    The row is locked (``SKIP LOCKED``: rows another worker is claiming are passed
    over), its claim lock taken, and it is marked ``running`` in one short transaction.
    """
    worker = worker_name()
    with db.plain() as conn:
        rows = _rows(
            conn.execute(
                f"SELECT {_COLUMNS} FROM jobctl.scheduled"
                " WHERE status = 'pending' AND run_at <= now() AND id <> ALL(%(skip)s)"
                " ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                {"skip": list(skip)},
            )
        )
        if not rows:
            return None
        row = rows[0]
        lock = JobLock(
            db, f"schedule {row.id}", namespace=SCHEDULE_NAMESPACE, key=claim_key(row.id)
        )
        if not lock.try_acquire():  # its last claimer has not let go yet: next tick
            lock.close()
            return claim_next(db, [*skip, row.id])
        try:
            claimed = _rows(
                conn.execute(
                    "UPDATE jobctl.scheduled SET status = 'running', claimed_by = %(worker)s,"
                    " claimed_at = now(), claim_backend_pid = %(pid)s"
                    f" WHERE id = %(id)s RETURNING {_COLUMNS}",
                    {"worker": worker, "pid": lock.backend_pid, "id": row.id},
                )
            )
        except BaseException:
            lock.close()
            raise
    return Claim(claimed[0], lock, worker)


def finish(
    conn: Conn,
    claim: Claim,
    status: str,
    *,
    run_id: int | None = None,
    run_status: str | None = None,
    error: str | None = None,
) -> Scheduled | None:
    """Mark a claimed row ``triggered`` or ``failed``; None: it is no longer this claim's."""
    cursor = conn.execute(
        "UPDATE jobctl.scheduled SET status = %(status)s, finished_at = now(),"
        " run_id = %(run_id)s, run_status = %(run_status)s, error_message = %(error)s"
        " WHERE id = %(id)s AND status = 'running' AND claimed_by = %(worker)s"
        f" AND claim_backend_pid = %(pid)s RETURNING {_COLUMNS}",
        {
            "status": status,
            "run_id": run_id,
            "run_status": run_status,
            "error": error,
            "id": claim.row.id,
            "worker": claim.worker,
            "pid": claim.row.claim_backend_pid,
        },
    )
    done = _rows(cursor)
    return done[0] if done else None


def release_busy(conn: Conn, claim: Claim, reason: str, deadline: timedelta) -> Scheduled | None:
    """A claimed row whose job was busy: ``pending`` again (one more attempt), or
    ``failed`` with the reason once ``deadline`` after its time has passed."""
    cursor = conn.execute(
        "UPDATE jobctl.scheduled SET attempts = attempts + 1,"
        " status = CASE WHEN now() >= run_at + %(deadline)s THEN 'failed' ELSE 'pending' END,"
        " finished_at = CASE WHEN now() >= run_at + %(deadline)s THEN now() END,"
        " error_message = CASE WHEN now() >= run_at + %(deadline)s"
        "   THEN 'not started within ' || %(shown)s || ' of its time: ' || %(reason)s"
        "   ELSE %(reason)s END,"
        " claimed_by = NULL, claimed_at = NULL, claim_backend_pid = NULL"
        " WHERE id = %(id)s AND status = 'running' AND claimed_by = %(worker)s"
        f" AND claim_backend_pid = %(pid)s RETURNING {_COLUMNS}",
        {
            "deadline": deadline,
            "shown": format_duration(deadline),
            "reason": reason,
            "id": claim.row.id,
            "worker": claim.worker,
            "pid": claim.row.claim_backend_pid,
        },
    )
    done = _rows(cursor)
    return done[0] if done else None


def dead_claims(conn: Conn) -> list[Scheduled]:
    """``running`` rows whose claim lock nobody holds (their worker died), locked
    for the caller to settle (``SKIP LOCKED``: another worker may be settling one)."""
    cursor = conn.execute(
        f"SELECT {_COLUMNS} FROM jobctl.scheduled s"
        f" WHERE s.status = 'running' AND NOT {_CLAIM_HELD}"
        " ORDER BY s.run_at, s.id FOR UPDATE SKIP LOCKED"
    )
    return _rows(cursor)


def started_run(conn: Conn, row: Scheduled) -> tuple[int, str] | None:
    """The run a claim started (id, status), if any: the schedule's runs are those of
    its job, trigger ``schedule``, serving its time as their slot, since its claim. A
    ``skipped`` run (the job was busy) started nothing."""
    found = conn.execute(
        "SELECT id, status FROM jobctl.runs WHERE job = %(job)s AND trigger = 'schedule'"
        " AND scheduled_for = %(run_at)s AND started_at >= %(claimed_at)s"
        " AND status <> 'skipped' ORDER BY id DESC LIMIT 1",
        {"job": row.job, "run_at": row.run_at, "claimed_at": row.claimed_at},
    ).fetchone()
    return (int(found[0]), str(found[1])) if found else None


def settle_dead(
    conn: Conn, row: Scheduled, run: tuple[int, str] | None, message: str
) -> Scheduled | None:
    """A dead worker's row: ``triggered`` with the run it started, else ``pending``."""
    if run is not None:
        sql = (
            "UPDATE jobctl.scheduled SET status = 'triggered', finished_at = now(),"
            " run_id = %(run_id)s, run_status = %(run_status)s, error_message = %(message)s"
        )
    else:
        sql = (
            "UPDATE jobctl.scheduled SET status = 'pending', error_message = %(message)s,"
            " claimed_by = NULL, claimed_at = NULL, claim_backend_pid = NULL"
        )
    cursor = conn.execute(
        sql + " WHERE id = %(id)s AND status = 'running'"
        f" AND claim_backend_pid = %(pid)s RETURNING {_COLUMNS}",
        {
            "run_id": run[0] if run else None,
            "run_status": run[1] if run else None,
            "message": message,
            "id": row.id,
            "pid": row.claim_backend_pid,
        },
    )
    done = _rows(cursor)
    return done[0] if done else None


def insert_next(conn: Conn, new: NewSchedule) -> int | None:
    """A repeat's next occurrence, once (unique ``previous_id``); None: not written
    (it exists already, or the job has another live schedule at that moment)."""
    values = _values(new)
    # created_at: the server's now (the CHECK compares the two); the caller picked a
    # run_at at least MIN_AHEAD after the server's now plus a margin.
    del values["created_at"]
    names = ", ".join(values)
    placeholders = ", ".join(f"%({name})s" for name in values)
    row = conn.execute(
        f"INSERT INTO jobctl.scheduled ({names}) VALUES ({placeholders})"
        " ON CONFLICT DO NOTHING RETURNING id",
        values,
    ).fetchone()
    return int(row[0]) if row else None


def server_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def stats(conn: Conn, since: timedelta) -> dict[str, Any]:
    """One-off schedules for ``schedule stats`` and ``jobctl metrics``.

    * ``by_status``: every pending and running row, and the rows that finished
      (triggered, cancelled, failed) in the last ``since``;
    * ``imminent``: pending rows due within 5 minutes (not yet due);
    * ``overdue``: pending rows already due (no worker has taken them yet);
    * ``success_rate``: of the rows that finished in the window other than cancelled
      ones, the share whose run completed (None when there are none).
    """
    row = conn.execute(
        "SELECT"
        " count(*) FILTER (WHERE status = 'pending'),"
        " count(*) FILTER (WHERE status = 'running'),"
        " count(*) FILTER (WHERE status = 'triggered' AND finished_at >= now() - %(since)s),"
        " count(*) FILTER (WHERE status = 'cancelled' AND finished_at >= now() - %(since)s),"
        " count(*) FILTER (WHERE status = 'failed' AND finished_at >= now() - %(since)s),"
        " count(*) FILTER (WHERE status = 'pending' AND run_at > now()"
        "   AND run_at < now() + interval '5 minutes'),"
        " count(*) FILTER (WHERE status = 'pending' AND run_at <= now()),"
        " count(*) FILTER (WHERE status = 'triggered' AND run_status = 'completed'"
        "   AND finished_at >= now() - %(since)s),"
        " min(run_at) FILTER (WHERE status = 'pending')"
        " FROM jobctl.scheduled",
        {"since": since},
    ).fetchone()
    assert row is not None
    pending, running, triggered, cancelled, failed, imminent, overdue, completed, nxt = row
    ended = triggered + failed
    return {
        "since_seconds": int(since.total_seconds()),
        "by_status": {
            "pending": pending,
            "running": running,
            "triggered": triggered,
            "cancelled": cancelled,
            "failed": failed,
        },
        "imminent": imminent,
        "overdue": overdue,
        "completed": completed,
        "success_rate": round(completed / ended, 4) if ended else None,
        "next_run_at": nxt,
    }


__all__ = [
    "FINISHED",
    "STATUSES",
    "Claim",
    "NewSchedule",
    "Scheduled",
    "cancel",
    "claim_next",
    "dead_claims",
    "finish",
    "get",
    "has_work",
    "insert",
    "insert_next",
    "list_rows",
    "release_busy",
    "settle_dead",
    "started_run",
    "stats",
]
