"""``jobctl.alert_state``: per job, its streak of consecutive failures and the last
alert sent about it. The one module that reads or writes that table.

Every change is one guarded statement, so that two hosts (a run that fails on one
while another sweeps an abandoned run of the same job) never both send one alert:

* :func:`count_failure` adds a failed run to the streak, once per run id;
* :func:`claim` takes the right to send an alert as a compare-and-set on the state
  the decision was made from: of two processes that saw the same state, one wins;
* :func:`release` gives a claim back when its alert reached no channel, so that the
  next failure tries again instead of the alert being lost;
* :func:`end_streak` resets the streak at a completed run and returns the streak
  it ended, to the one process whose statement reset it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection


@dataclass(frozen=True)
class Streak:
    """A job's alert state as one statement left (or found) it."""

    job: str
    failures: int
    first_failed_at: datetime | None
    last_alert_kind: str | None
    last_alert_at: datetime | None
    #: The server's clock when the statement ran: the decision's "now".
    now: datetime


_COLUMNS = "failures, first_failed_at, last_alert_kind, last_alert_at"


def _streak(job: str, row: Any) -> Streak:
    failures, first, kind, at, now = row
    return Streak(job, int(failures), first, kind, at, now)


def count_failure(conn: Connection, job: str, run_id: int) -> Streak | None:
    """Add the failed (or abandoned) run ``run_id`` to the job's streak; the new state.

    None: this run was already counted (by this process or another one).
    """
    row = conn.exec_driver_sql(
        "INSERT INTO jobctl.alert_state AS s (job, failures, first_failed_at, last_failed_run)"
        " VALUES (%(job)s, 1, now(), %(run)s)"
        " ON CONFLICT (job) DO UPDATE SET failures = s.failures + 1,"
        "   first_failed_at = coalesce(s.first_failed_at, now()),"
        "   last_failed_run = excluded.last_failed_run, updated_at = now()"
        " WHERE s.last_failed_run IS DISTINCT FROM excluded.last_failed_run"
        f" RETURNING {_COLUMNS}, now()",
        {"job": job, "run": run_id},
    ).fetchone()
    return _streak(job, row) if row is not None else None


def claim(conn: Connection, seen: Streak, kind: str, run_id: int) -> bool:
    """Record that alert ``kind`` is sent now for ``run_id``, if the job's last alert is
    still the one ``seen`` had; False: another process changed it first (and sends)."""
    result = conn.exec_driver_sql(
        "UPDATE jobctl.alert_state SET last_alert_kind = %(kind)s, last_alert_at = now(),"
        " last_alert_run = %(run)s, updated_at = now()"
        " WHERE job = %(job)s AND failures > 0"
        " AND last_alert_kind IS NOT DISTINCT FROM %(seen_kind)s"
        " AND last_alert_at IS NOT DISTINCT FROM %(seen_at)s",
        {
            "kind": kind,
            "run": run_id,
            "job": seen.job,
            "seen_kind": seen.last_alert_kind,
            "seen_at": seen.last_alert_at,
        },
    )
    return result.rowcount == 1


def release(conn: Connection, seen: Streak, kind: str, run_id: int) -> bool:
    """Undo :func:`claim` of ``kind`` for ``run_id`` (its delivery failed on every channel):
    the job's last alert is again the one ``seen`` had, so the next failure sends it
    anew. Guarded: a claim made since by another process is left alone."""
    result = conn.exec_driver_sql(
        "UPDATE jobctl.alert_state SET last_alert_kind = %(seen_kind)s,"
        " last_alert_at = %(seen_at)s, last_alert_run = NULL, updated_at = now()"
        " WHERE job = %(job)s AND last_alert_kind = %(kind)s AND last_alert_run = %(run)s",
        {
            "kind": kind,
            "run": run_id,
            "job": seen.job,
            "seen_kind": seen.last_alert_kind,
            "seen_at": seen.last_alert_at,
        },
    )
    return result.rowcount == 1


def end_streak(conn: Connection, job: str) -> Streak | None:
    """Reset the job's streak (a run completed); the streak it ended, or None when
    there was none (or another process ended it first)."""
    # FOR UPDATE: a concurrent reset waits here, then finds failures = 0 and returns nothing.
    row = conn.exec_driver_sql(
        f"WITH old AS (SELECT job, {_COLUMNS} FROM jobctl.alert_state"
        "   WHERE job = %(job)s AND failures > 0 FOR UPDATE)"
        " UPDATE jobctl.alert_state s SET failures = 0, first_failed_at = NULL,"
        "   last_alert_kind = NULL, last_alert_at = NULL, last_alert_run = NULL,"
        "   updated_at = now()"
        " FROM old WHERE s.job = old.job"
        " RETURNING old.failures, old.first_failed_at, old.last_alert_kind,"
        " old.last_alert_at, now()",
        {"job": job},
    ).fetchone()
    return _streak(job, row) if row is not None else None


def get(conn: Connection, job: str) -> Streak | None:
    """The job's state as it is (for ``runs show``-like readers and tests)."""
    row = conn.exec_driver_sql(
        f"SELECT {_COLUMNS}, now() FROM jobctl.alert_state WHERE job = %(job)s", {"job": job}
    ).fetchone()
    return _streak(job, row) if row is not None else None
