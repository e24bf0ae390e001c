"""Which schedule slots of a job have no completed run covering them.

A slot is covered by a completed run that served it (``scheduled_for``), or — for
a job that works on dates — by a completed run for the date the slot works on
(``partition``), such as ``jobctl snapshot --date D`` run by hand or a backfill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Connection

from jobctl.config import JobConfig, Settings
from jobctl.db import ledger
from jobctl.registry import AnyJob
from jobctl.schedule import parse_schedule


@dataclass(frozen=True)
class Gap:
    scheduled_for: datetime
    served_date: date | None


def missing(
    conn: Connection,
    settings: Settings,
    spec: AnyJob | None,
    cfg: JobConfig,
    start: datetime,
    end: datetime,
) -> list[Gap]:
    """Fire times in ``[start, end)`` with no completed run covering them, oldest first."""
    assert cfg.schedule is not None
    schedule = parse_schedule(cfg.schedule, cfg.timezone, settings.scheduler)
    expected = list(schedule.fire_times(start, end))
    if not expected:
        return []
    done = ledger.completed_slots(conn, cfg.name, start, end)
    served: dict[datetime, date | None] = {}
    if spec is not None and spec.served_date is not None:
        served = {slot: spec.served_date(settings, slot) for slot in expected}
    dates = sorted({d.isoformat() for d in served.values() if d is not None})
    parts = ledger.completed_partitions(conn, cfg.name, dates) if dates else set()
    gaps = []
    for slot in expected:
        day = served.get(slot)
        if slot in done or (day is not None and day.isoformat() in parts):
            continue
        gaps.append(Gap(slot, day))
    return gaps
