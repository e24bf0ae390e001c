"""A report as data: its period, the job-health part, the sections' tables.

Plain values only (no database, no templates), so that every format renders the same
figures and a test can compare them with its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from jobctl.db.health import JobHealth


@dataclass(frozen=True)
class ReportPeriod:
    """A half-open range of dates ``[start, end)`` in a time zone (an ISO week)."""

    start: date
    end: date
    timezone: str

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    @property
    def label(self) -> str:
        year, week, _ = self.start.isocalendar()
        if self.end - self.start == timedelta(days=7) and self.start.isoweekday() == 1:
            return f"week {year}-W{week:02d} ({self.start} to {self.last_day})"
        return f"{self.start} to {self.last_day}"

    def bounds(self) -> tuple[datetime, datetime]:
        """The period's first and end instants: local midnights (a DST day is 23 or 25 h)."""
        zone = ZoneInfo(self.timezone)
        return (
            datetime.combine(self.start, time(0), tzinfo=zone),
            datetime.combine(self.end, time(0), tzinfo=zone),
        )

    def binds(self) -> dict[str, date]:
        return {"period_start": self.start, "period_end": self.end}


@dataclass(frozen=True)
class SectionTable:
    """A section's query result: its columns, the rows shown, whether more were left out."""

    title: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[Any, ...]]
    description: str = ""
    #: The query returned more rows than ``max_rows``: the rest are not listed.
    truncated: bool = False


@dataclass(frozen=True)
class Report:
    """One report: for the whole team, or for one recipient (their row's columns)."""

    title: str
    period: ReportPeriod
    generated_at: datetime
    sections: Sequence[SectionTable] = ()
    #: None: the job-health part is not shown.
    job_health: Sequence[JobHealth] | None = None
    recipient: Mapping[str, Any] | None = field(default=None)
    #: Where it goes by e-mail: the recipient's address (None: the channels' own lists).
    address: str | None = None
