"""Durations (``90s``, ``5m``, ``2h``, ``7d``) and ISO dates, parsed strictly.

Both parsers take whatever a user or a config file can hand them (any TOML value,
any command-line string) and either return a value that is safe to compute with or
raise :class:`UsageError` naming the bad value: never another exception. "Safe"
means finite, not negative, and small enough that adding it to a date or a
``datetime`` (or arming a timer with it) cannot overflow.
"""

from __future__ import annotations

import math
import re
from datetime import date, timedelta

from jobctl.errors import UsageError

# re.ASCII: ``\d`` would otherwise take any Unicode digit ("٣s"), and ``\s`` any space.
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*", re.ASCII)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
MAX_SECONDS = 100 * 365 * 86400
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The dates jobctl accepts. Wide enough for any real feed or backfill, and far
#: enough from ``date.min`` / ``date.max`` that a week or a month around the date,
#: or the date as midnight in any time zone, is still a valid date.
MIN_DATE = date(1000, 1, 1)
MAX_DATE = date(9998, 12, 31)
_SHOWN = 60


def shown(value: object) -> str:
    """``repr(value)`` cut to one short line: hostile values can be megabytes long."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def parse_duration(value: object, *, what: str = "duration", allow_zero: bool = True) -> timedelta:
    """``'90s'`` → 90 seconds; a plain number (from TOML) is seconds.

    Refused with a UsageError naming ``what`` and the value: anything that is not a
    number and a unit, a negative, infinite or NaN number, more than 100 years, and
    (``allow_zero=False``, for settings where zero means nothing, like a timeout) zero
    or less than a microsecond.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{what} {shown(value)} is not a finite number of seconds")
        if value < 0:
            raise UsageError(f"{what} {shown(value)} is negative")
        seconds = float(value) if value <= MAX_SECONDS else math.inf
    else:
        match = _DURATION.fullmatch(value) if isinstance(value, str) else None
        if not match:
            raise UsageError(
                f"{what} {shown(value)} is not a duration "
                "(a number and a unit: 500ms, 90s, 5m, 2h, 7d, 2w)"
            )
        number, unit = match.groups()
        seconds = float(number) * _UNITS[unit]  # inf for absurdly many digits
    if seconds > MAX_SECONDS:
        raise UsageError(f"{what} {shown(value)} is too long (at most 100 years)")
    delta = timedelta(seconds=seconds)
    if not allow_zero and delta <= timedelta(0):
        raise UsageError(f"{what} {shown(value)} must be more than zero")
    return delta


def format_duration(delta: timedelta | float | None) -> str:
    """Short human form: ``1.2s``, ``3m05s``, ``2h10m``, ``3d4h``."""
    if delta is None:
        return "-"
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    if seconds < 0:
        seconds = 0
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def parse_date(text: object, *, what: str = "date") -> date:
    """Strict ISO ``YYYY-MM-DD`` between MIN_DATE and MAX_DATE; ``2026-02-30`` is refused."""
    stripped = text.strip() if isinstance(text, str) else None
    if stripped is None or not _ISO_DATE.fullmatch(stripped):
        raise UsageError(f"{what} {shown(text)} is not an ISO date (YYYY-MM-DD)")
    try:
        day = date.fromisoformat(stripped)
    except ValueError as exc:
        raise UsageError(f"{what} {shown(text)} is not a valid date: {exc}") from None
    if not MIN_DATE <= day <= MAX_DATE:
        raise UsageError(f"{what} {shown(text)} is out of range ({MIN_DATE} to {MAX_DATE})")
    return day
