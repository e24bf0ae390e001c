"""``jobctl.report_deliveries``: which reports went where, per period. The one module
that reads or writes that table.

A report run records each delivery right after the server (SMTP or webhook) took it,
in a transaction of its own fenced by the run's lock; a run retried or started again
for the same period skips what is recorded. A process killed between a delivery and
its record sends that one again on the next run: at least once, never one per retry.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection

#: A delivery's place: (channel name, recipient address or "" for a webhook).
Delivery = tuple[str, str]


def delivered(conn: Connection, period_start: date, period_end: date) -> set[Delivery]:
    """The deliveries already recorded for the period."""
    rows = conn.exec_driver_sql(
        "SELECT channel, recipient FROM jobctl.report_deliveries"
        " WHERE period_start = %(start)s AND period_end = %(end)s",
        {"start": period_start, "end": period_end},
    )
    return {(str(channel), str(recipient)) for channel, recipient in rows}


def record(
    conn: Connection,
    period_start: date,
    period_end: date,
    deliveries: Iterable[Delivery],
    run_id: int,
) -> None:
    """Record deliveries of the period by run ``run_id`` (a repeat overwrites: --force)."""
    rows = [
        {"start": period_start, "end": period_end, "channel": c, "recipient": r, "run": run_id}
        for c, r in deliveries
    ]
    if not rows:
        return
    conn.exec_driver_sql(
        "INSERT INTO jobctl.report_deliveries"
        " (period_start, period_end, channel, recipient, run_id)"
        " VALUES (%(start)s, %(end)s, %(channel)s, %(recipient)s, %(run)s)"
        " ON CONFLICT (period_start, period_end, channel, recipient)"
        " DO UPDATE SET run_id = excluded.run_id, sent_at = now()",
        rows,
    )
