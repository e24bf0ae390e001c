"""Calendar periods (day, ISO week or configured week start, month): pure date arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

PeriodType = Literal["day", "week", "month"]
PERIOD_TYPES: tuple[PeriodType, ...] = ("day", "week", "month")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, order=True)
class Period:
    """A half-open range of dates ``[start, end)``."""

    type: PeriodType
    start: date
    end: date

    def __str__(self) -> str:
        if self.type == "day":
            return f"day {self.start}"
        return f"{self.type} {self.start}..{self.end - timedelta(days=1)}"


def period_containing(kind: PeriodType, day: date, week_start: int = 0) -> Period:
    """The period of ``kind`` that contains ``day`` (``week_start``: 0 = Monday)."""
    if kind == "day":
        return Period("day", day, day + timedelta(days=1))
    if kind == "week":
        start = day - timedelta(days=(day.weekday() - week_start) % 7)
        return Period("week", start, start + timedelta(days=7))
    start = day.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return Period("month", start, end)


def periods_closing_on(
    day: date, kinds: tuple[PeriodType, ...], week_start: int = 0
) -> list[Period]:
    """The day itself, plus each week / month whose last day is ``day``."""
    found = []
    for kind in kinds:
        period = period_containing(kind, day, week_start)
        if period.end == day + timedelta(days=1):
            found.append(period)
    return found
