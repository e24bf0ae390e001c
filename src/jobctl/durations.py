"""Durations (``90s``, ``5m``, ``2h``, ``7d``) and ISO dates, parsed strictly."""

from __future__ import annotations

import re
from datetime import date, timedelta

from jobctl.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
MAX_SECONDS = 100 * 365 * 86400
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    """``'90s'`` → 90 seconds. Raises UsageError naming the bad value."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return timedelta(seconds=float(text))
    match = _DURATION.match(str(text))
    if not match:
        raise UsageError(
            f"{what} {text!r} is not a duration (use a number and a unit: 90s, 5m, 2h, 7d)"
        )
    value, unit = match.groups()
    seconds = float(value) * _UNITS[unit]
    if seconds > MAX_SECONDS:
        raise UsageError(f"{what} {text!r} is too long (at most 100 years)")
    return timedelta(seconds=seconds)


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


def parse_date(text: str, *, what: str = "date") -> date:
    """Strict ISO ``YYYY-MM-DD``; ``2026-02-30`` is refused with a clear message."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(text).strip()):
        raise UsageError(f"{what} {text!r} is not an ISO date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(str(text).strip())
    except ValueError as exc:
        raise UsageError(f"{what} {text!r} is not a valid date: {exc}") from None
