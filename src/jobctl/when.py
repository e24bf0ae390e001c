"""When a one-off schedule runs: ``--at`` values, repeats and countdowns. Pure.

``--at`` takes an ISO-8601 date-time with an offset or ``Z`` (``2027-03-14T09:00Z``),
a local date-time without one (``2027-03-14 09:00``, in the job's zone), ``in 1h`` /
``in 30m`` / ``in 2 hours``, or a day and a wall time in the job's zone:
``today 17:00``, ``tomorrow 09:00``, ``monday 08:00`` (the next Monday whose 08:00 is
still ahead, today included).

Local times and daylight saving time:

* a local time the clocks skip (``2027-03-14 02:30`` in America/Toronto) is
  **refused** when given to ``--at``: the message says what it would have been;
* a local time that happens twice (the hour the clocks go back) is the **first** of
  the two (``fold=0``: still summer time);
* a repeat (``--every day|week|month``) keeps the first occurrence's wall time in the
  job's zone; an occurrence that falls in a skipped hour is **moved forward** by the
  gap (02:30 becomes 03:30 that day), since no one is there to be asked.

Imported by ``schedule run-due`` before it knows whether anything is due: the
standard library only (``tests/test_startup.py``).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from jobctl.durations import MAX_DATE, MIN_DATE, parse_duration, shown
from jobctl.errors import UsageError

#: How a schedule may repeat (``--every``).
EVERY = ("day", "week", "month")
#: A schedule is at least this far ahead when it is added (a CHECK in the table too).
MIN_AHEAD = timedelta(minutes=1)
#: And at most this far: beyond it a typo is likelier than a plan.
MAX_AHEAD = timedelta(days=100 * 365)
#: Under this a pending schedule is "imminent" (highlighted, counted by ``stats``).
IMMINENT = timedelta(minutes=5)
_MAX_TEXT = 100

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_TIME = re.compile(r"([a-z]+)\s+(\d{1,2}):(\d{2})", re.ASCII | re.IGNORECASE)
_IN = re.compile(r"in\s+(\d+(?:\.\d+)?)\s*([a-z]+)", re.ASCII | re.IGNORECASE)
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII | re.IGNORECASE,
)
_UNIT_WORDS = {
    "s": "s",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "m": "m",
    "min": "m",
    "mins": "m",
    "minute": "m",
    "minutes": "m",
    "h": "h",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "d": "d",
    "day": "d",
    "days": "d",
    "w": "w",
    "week": "w",
    "weeks": "w",
}


@dataclass(frozen=True)
class When:
    """A parsed ``--at``: the moment (UTC) and its wall time in the job's zone."""

    at: datetime
    #: Naive wall time in the zone: a repeat's anchor.
    local: datetime


def zone_of(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def parse_when(text: object, zone: str, now: datetime, *, what: str = "--at") -> When:
    """``text`` as a moment at least MIN_AHEAD after ``now``; UsageError naming it otherwise."""
    if not isinstance(text, str) or "\x00" in text or len(text) > _MAX_TEXT or not is_utf8(text):
        raise UsageError(
            f"{what} {shown(text)} is not a date-time (text of at most {_MAX_TEXT} characters)"
        )
    tz = zone_of(zone)
    stripped = text.strip()
    when = _relative(stripped, tz, now, what) or _absolute(stripped, tz, what)
    if when is None:
        raise UsageError(
            f"{what} {shown(text)} is not a date-time: give ISO-8601 with an offset or Z "
            "(2027-03-14T09:00Z), a local '2027-03-14 09:00', 'in 30m', 'tomorrow 09:00' "
            "or 'monday 08:00' (in the job's zone)"
        )
    ahead = when.at - now
    if ahead < MIN_AHEAD:
        past = "in the past" if ahead < timedelta(0) else "less than a minute ahead"
        raise UsageError(
            f"{what} {shown(text)} ({_iso(when.at)}) is {past}: a schedule must be at least "
            "1 minute in the future"
        )
    if ahead > MAX_AHEAD:
        raise UsageError(f"{what} {shown(text)} is more than 100 years ahead")
    return when


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes from argv that are not UTF-8
        return False
    return True


def _relative(text: str, tz: ZoneInfo, now: datetime, what: str) -> When | None:
    """``in 30m``, ``tomorrow 09:00``, ``monday 08:00``; None: not of these forms."""
    match = _IN.fullmatch(text)
    if match:
        number, unit = match.groups()
        short = _UNIT_WORDS.get(unit.lower())
        if short is None:
            raise UsageError(f"{what} {shown(text)}: unknown unit {unit!r} (use s, m, h, d, w)")
        delta = parse_duration(f"{number}{short}", what=what)
        at = now + delta
        return When(at, at.astimezone(tz).replace(tzinfo=None))
    match = _DAY_TIME.fullmatch(text)
    if not match:
        return None
    word, hour, minute = match.group(1).lower(), int(match.group(2)), int(match.group(3))
    if hour > 23 or minute > 59:
        raise UsageError(f"{what} {shown(text)}: {hour}:{minute:02d} is not a time of day")
    today = now.astimezone(tz).date()
    if word == "today":
        day = today
    elif word == "tomorrow":
        day = today + timedelta(days=1)
    elif word in _WEEKDAYS:
        day = today + timedelta(days=(_WEEKDAYS.index(word) - today.weekday()) % 7)
        if _local(datetime(day.year, day.month, day.day, hour, minute), tz, text, what).at <= now:
            day += timedelta(days=7)  # today's has passed: next week's
    else:
        return None
    return _local(datetime(day.year, day.month, day.day, hour, minute), tz, text, what)


def _absolute(text: str, tz: ZoneInfo, what: str) -> When | None:
    """ISO-8601, with an offset (or Z) or local in ``tz``; None: not ISO at all."""
    match = _ISO.fullmatch(text)
    if not match:
        return None
    year = int(match.group(1))
    if not MIN_DATE.year <= year <= MAX_DATE.year:
        raise UsageError(
            f"{what} {shown(text)} is out of range (years {MIN_DATE.year} to {MAX_DATE.year})"
        )
    try:
        parsed = datetime.fromisoformat(text.upper().replace(" ", "T", 1))
    except ValueError as exc:
        raise UsageError(f"{what} {shown(text)} is not a valid date-time: {exc}") from None
    if parsed.tzinfo is None:
        return _local(parsed, tz, text, what)
    at = parsed.astimezone(UTC)
    return When(at, at.astimezone(tz).replace(tzinfo=None))


def _local(local: datetime, tz: ZoneInfo, text: str, what: str) -> When:
    """A wall time in ``tz``: refused in a DST gap, the first of two in a DST overlap."""
    at, moved = resolve_local(local, tz)
    if moved:
        shifted = at.astimezone(tz).strftime("%H:%M")
        raise UsageError(
            f"{what} {shown(text)}: {local:%Y-%m-%d %H:%M} does not exist in {tz.key} "
            f"(the clocks skip that hour; it would be {shifted}): give another time or an offset"
        )
    return When(at, local)


def resolve_local(local: datetime, tz: ZoneInfo) -> tuple[datetime, bool]:
    """``local`` in ``tz`` as UTC (``fold=0``) and whether it fell in a gap (then moved
    forward by the gap, as ``fold=0`` does: 02:30 in a skipped hour is 03:30)."""
    aware = local.replace(tzinfo=tz, fold=0)
    at = aware.astimezone(UTC)
    return at, at.astimezone(tz).replace(tzinfo=None) != local


def occurrence_at(anchor: datetime, every: str, n: int, zone: str) -> datetime | None:
    """The ``n``-th repeat of the wall time ``anchor`` (UTC); None: past MAX_DATE.

    A month keeps the anchor's day, or the month's last day when it has fewer
    (Jan 31 → Feb 28 → Mar 31: counted from the anchor, never from the last one).
    """
    if every == "day":
        local = _plus_days(anchor, n)
    elif every == "week":
        local = _plus_days(anchor, 7 * n)
    elif every == "month":
        years, month0 = divmod(anchor.month - 1 + n, 12)
        year = anchor.year + years
        if year > MAX_DATE.year:
            return None
        day = min(anchor.day, calendar.monthrange(year, month0 + 1)[1])
        local = anchor.replace(year=year, month=month0 + 1, day=day)
    else:
        raise ValueError(f"every {every!r} is not one of {', '.join(EVERY)}")
    if local is None or local.date() > MAX_DATE:
        return None
    return resolve_local(local, zone_of(zone))[0]


def _plus_days(anchor: datetime, days: int) -> datetime | None:
    if days > (MAX_DATE - anchor.date()).days:
        return None
    return anchor + timedelta(days=days)


def next_occurrence(
    anchor: datetime,
    every: str,
    occurrence: int,
    zone: str,
    *,
    not_before: datetime,
    until: datetime | None,
) -> tuple[int, datetime] | None:
    """The first repeat after ``occurrence`` at or after ``not_before`` (missed ones, when
    the worker was down for days, are passed over), or None when it would be after
    ``until``."""
    n = occurrence + 1
    step = {"day": 1, "week": 7, "month": 28}[every]
    behind = (not_before - (occurrence_at(anchor, every, n, zone) or not_before)).days
    if behind > step:  # jump most of the way: a loop of years of days is not needed
        n += behind // step - 1
    while True:
        at = occurrence_at(anchor, every, n, zone)
        if at is None or (until is not None and at > until):
            return None
        if at >= not_before:
            return n, at
        n += 1


def countdown(delta: timedelta) -> str:
    """``45s``, ``15 min``, ``2h 30min``, ``3d 5h``; ``overdue 2 min`` once past."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return f"overdue {countdown(-delta)}"
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}min" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_utc(moment: datetime) -> str:
    """``2027-03-14T13:00:00Z``: how a schedule's time is shown in UTC."""
    return _iso(moment)


def local_text(moment: datetime, zone: str) -> str:
    """``2027-03-14 09:00 EDT``: how a schedule's time is shown in its zone."""
    return moment.astimezone(zone_of(zone)).strftime("%Y-%m-%d %H:%M %Z")


__all__ = [
    "EVERY",
    "IMMINENT",
    "MIN_AHEAD",
    "When",
    "countdown",
    "is_utf8",
    "iso_utc",
    "local_text",
    "next_occurrence",
    "occurrence_at",
    "parse_when",
    "resolve_local",
]
