"""Dates are days in a time zone: when one starts and ends there, and whether it is over.

A date names a day in the zone of what works on it (a snapshot set, a source):
2026-03-08 in America/Toronto runs from 05:00Z to 04:00Z the next day (23 hours).
A run recorded for a date counts as done for it (backfill skips it, gaps stop
listing it), so a date may be worked on only once its day has ended in every zone
it is read in; the host's own zone plays no part.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from jobctl.durations import format_duration
from jobctl.errors import UsageError


def bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    """``[start, end)`` of ``day`` in ``zone``, as aware datetimes of that zone."""
    tz = ZoneInfo(zone)
    return datetime.combine(day, time(), tz), datetime.combine(day + timedelta(days=1), time(), tz)


def last_ended(zones: Iterable[str], at: datetime) -> date:
    """The latest date whose day has ended, at the instant ``at``, in every one of ``zones``."""
    return min(at.astimezone(ZoneInfo(z)).date() for z in zones) - timedelta(days=1)


def check_over(
    day: date,
    zones: Iterable[str],
    *,
    now: datetime | None = None,
    what: str,
    force: bool = False,
) -> None:
    """Refuse (UsageError, exit 2) a date in the future, or still in progress unless ``force``.

    Judged in the zone where the day ends last, and named in the message with
    the moment it ends there.
    """
    now = now or datetime.now(UTC)
    zone = max(sorted(set(zones)), key=lambda z: bounds(day, z)[1])
    start, end = bounds(day, zone)
    if now < start:
        raise UsageError(
            f"{what} {day} is in the future: it starts at {start:%Y-%m-%d %H:%M %Z} in {zone}"
        )
    if now < end and not force:
        raise UsageError(
            f"{what} {day} has not ended in {zone}: it ends at {end:%Y-%m-%d %H:%M %Z}, "
            f"in {format_duration(end - now)}; a run for it would record a partial day as "
            "done (--force takes it anyway)"
        )
