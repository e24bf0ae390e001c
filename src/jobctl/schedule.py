"""Cron expression + IANA time zone → fire times, slots and gaps. Pure: no I/O.

A *fire time* is an instant (aware, UTC) at which the scheduler starts the job.
Which instants those are on daylight-saving days depends on the scheduler, so a
:class:`Schedule` carries a *flavour*, and ``runs gaps`` agrees with what really fires:

================  ==============================  =====================================
flavour           wall time that does not exist   wall time that happens twice
                  (spring forward)                (fall back)
================  ==============================  =====================================
``systemd``       skipped                         fires once, at the first occurrence
``cron``          as Debian cron / ``cronsim``:   as Debian cron / ``cronsim``: a job at
                  a job at a fixed time runs at   a fixed time runs once (first); a job
                  the first minute that exists    with ``*`` in its minute or hour field
                  (02:30 → 03:00); a ``*`` job    runs in both hours
                  skips it
``k8s``           skipped                         fires at both occurrences
================  ==============================  =====================================

``systemd`` is what ``systemd-analyze calendar`` computes for the equivalent
``OnCalendar=`` (the search walks wall-clock time forward from the last elapse,
so the repeated hour is never visited again). ``k8s`` is a CronJob with
``timeZone:``: the controller asks robfig/cron v3 ``SpecSchedule.Next``, which
advances in absolute time and matches the wall-clock fields, so a nonexistent
time never matches (its own test: ``30 2 11 Mar`` → next year) and a repeated one
matches twice (``30 1 04 Nov`` from 01:45 EDT → 01:30 EST).

Every day without a UTC-offset change is computed arithmetically (fast: a year of
an every-minute job in well under a second); only the two transition days a year
take the per-flavour path. ``cron`` delegates those days to ``cronsim`` itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Literal, cast, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import ExpressionDescriptor, Options
from cronsim import CronSim, CronSimError

from jobctl.errors import UsageError

Flavour = Literal["systemd", "cron", "k8s"]
FLAVOURS: tuple[str, ...] = get_args(Flavour)

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_ONE_DAY = timedelta(days=1)
_ONE_SECOND = timedelta(seconds=1)
#: How far ``next_fire_times`` looks ahead: 9 years covers ``0 0 29 2 *`` across 2100.
_FORWARD_DAYS = 366 * 9
#: How far ``previous_fire_time`` / ``slot_for`` look back.
_BACKWARD_DAYS = 400
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # systemd names, ISO order


@dataclass(frozen=True)
class _Spec:
    """A validated 5-field expression, with what the fast path needs precomputed."""

    expr5: str
    sim: CronSim  # parsed fields; only its pure ``match_day`` is used
    months: frozenset[int]
    walls: tuple[tuple[int, int], ...]  # (hour, minute), ascending
    offsets: tuple[timedelta, ...]  # the same wall times as offsets from local midnight


@lru_cache(maxsize=256)
def _compile(expr: str) -> _Spec:
    text = " ".join(expr.split())
    expr5 = MACROS.get(text.lower(), text)
    if text.startswith("@") and text.lower() not in MACROS:
        raise UsageError(
            f"cron expression {expr!r} is invalid: unknown macro "
            f"(use {', '.join(MACROS)} or five fields)"
        )
    fields = expr5.split()
    if len(fields) != 5:
        raise UsageError(
            f"cron expression {expr!r} is invalid: expected 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    try:
        sim = CronSim(expr5, datetime(2000, 1, 1))
    except (CronSimError, ValueError, IndexError, KeyError) as exc:
        raise UsageError(f"cron expression {expr!r} is invalid: {str(exc).lower()}") from exc
    hours = sorted(sim.hours)
    minutes = sorted(sim.minutes)
    walls = tuple((h, m) for h in hours for m in minutes)
    return _Spec(
        expr5=expr5,
        sim=sim,
        months=frozenset(sim.months),
        walls=walls,
        offsets=tuple(timedelta(hours=h, minutes=m) for h, m in walls),
    )


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as exc:
        raise UsageError(
            f"time zone {tz!r} is not a known IANA zone (e.g. UTC, Europe/Paris)"
        ) from exc


def _aware_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _midnight_utc(d: date, tz: ZoneInfo) -> datetime:
    """The first instant of local date ``d`` (a nonexistent midnight → the transition)."""
    return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """A job's schedule: a 5-field cron expression (or macro) read in an IANA zone."""

    expr: str
    tz: ZoneInfo
    flavour: Flavour = "systemd"

    def __post_init__(self) -> None:
        if isinstance(self.tz, str):  # tolerate Schedule("0 6 * * *", "Europe/Paris")
            object.__setattr__(self, "tz", _zone(self.tz))
        _compile(self.expr)
        if self.flavour not in FLAVOURS:
            raise UsageError(
                f"scheduler flavour {self.flavour!r} is unknown (use {', '.join(FLAVOURS)})"
            )

    @property
    def _spec(self) -> _Spec:
        return _compile(self.expr)

    # -- one local day ---------------------------------------------------------------

    def _day_fires(self, d: date) -> list[datetime]:
        """Fire times (UTC, ascending) whose wall-clock date in ``self.tz`` is ``d``."""
        spec = self._spec
        if d.month not in spec.months or not spec.sim.match_day(d):
            return []
        tz = self.tz
        start = datetime(d.year, d.month, d.day, tzinfo=tz)
        off = start.utcoffset()
        nxt = d + _ONE_DAY
        if off is not None and off == datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).utcoffset():
            base = datetime(d.year, d.month, d.day, tzinfo=UTC) - off
            return [base + o for o in spec.offsets]
        return self._transition_day_fires(d)

    def _transition_day_fires(self, d: date) -> list[datetime]:
        tz = self.tz
        if self.flavour == "cron":
            # Debian cron's quirks, exactly as cronsim implements them.
            day_start = _midnight_utc(d, tz)
            day_end = _midnight_utc(d + _ONE_DAY, tz)
            found: list[datetime] = []
            for fire in CronSim(self._spec.expr5, (day_start - _ONE_SECOND).astimezone(tz)):
                instant = fire.astimezone(UTC)
                if instant >= day_end:
                    break
                if instant >= day_start:
                    found.append(instant)
            return found
        out: list[datetime] = []
        for hour, minute in self._spec.walls:
            wall = datetime(d.year, d.month, d.day, hour, minute, tzinfo=tz)
            first = wall.astimezone(UTC)  # fold=0: the earlier reading
            back = first.astimezone(tz)
            if (back.date(), back.hour, back.minute) != (d, hour, minute):
                continue  # does not exist (spring forward): systemd and k8s skip it
            out.append(first)
            if self.flavour == "k8s":
                second = wall.replace(fold=1).astimezone(UTC)
                if second != first:  # repeated (fall back): robfig/cron fires again
                    out.append(second)
        out.sort()
        return out

    # -- public API ------------------------------------------------------------------

    def fire_times(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Fire times ``start <= f < end`` as aware UTC datetimes, ascending."""
        start_u = _aware_utc(start, "start")
        end_u = _aware_utc(end, "end")
        return self._forward(start_u, end_u, None)

    def _forward(
        self, start_u: datetime, end_u: datetime | None, max_days: int | None
    ) -> Iterator[datetime]:
        if end_u is not None and start_u >= end_u:
            return
        tz = self.tz
        day = start_u.astimezone(tz).date() - _ONE_DAY
        last_day = end_u.astimezone(tz).date() if end_u is not None else date.max
        if max_days is not None:
            last_day = min(last_day, day + timedelta(days=max_days))
        last_day = min(last_day, date.max - _ONE_DAY)
        while day <= last_day:
            for fire in self._day_fires(day):
                if end_u is not None and fire >= end_u:
                    return
                if fire >= start_u:
                    yield fire
            day += _ONE_DAY

    def next_fire_times(self, after: datetime, n: int = 3) -> list[datetime]:
        """The next ``n`` fire times strictly after ``after`` (fewer if none in 9 years)."""
        after_u = _aware_utc(after, "after")
        out: list[datetime] = []
        if n <= 0:
            return out
        for fire in self._forward(after_u, None, _FORWARD_DAYS):
            if fire > after_u:
                out.append(fire)
                if len(out) >= n:
                    break
        return out

    def previous_fire_time(self, at: datetime) -> datetime | None:
        """The latest fire time ``<= at`` (UTC), looking back at most ~400 days."""
        at_u = _aware_utc(at, "at")
        day = at_u.astimezone(self.tz).date() + _ONE_DAY
        floor = max(day - timedelta(days=_BACKWARD_DAYS), date.min + _ONE_DAY)
        while day >= floor:
            for fire in reversed(self._day_fires(day)):
                if fire <= at_u:
                    return fire
            day -= _ONE_DAY
        return None

    def slot_for(self, at: datetime) -> datetime | None:
        """The slot a tick started at ``at`` serves, or None.

        That is the latest fire time ``<= at`` provided ``at`` is before the fire time
        that follows it. (With the latest fire time that always holds; a tick later
        than that serves the newer slot.) None when no fire time lies in the look-back.
        """
        at_u = _aware_utc(at, "at")
        slot = self.previous_fire_time(at_u)
        if slot is None:
            return None
        following = self.next_fire_times(slot, 1)
        if following and at_u >= following[0]:
            return None
        return slot

    def describe(self) -> str:
        """The schedule in words, e.g. ``At 06:00, Monday through Friday (America/Toronto)``."""
        spec = self._spec
        options = Options(use_24hour_time_format=True, locale_code="en_US")
        try:
            words = str(ExpressionDescriptor(spec.expr5, options).get_description())
        except (ValueError, IndexError, KeyError, TypeError, AttributeError):
            words = spec.expr5
        if not spec.sim.day_and:
            words += " (either day field matching)"
        return f"{words} ({self.tz.key})"


@dataclass(frozen=True)
class DstNote:
    """A day on which some of a schedule's wall-clock times do not exist (``gap``,
    clocks go forward) or happen twice (``repeat``, clocks go back), and what the
    schedule's flavour does about it."""

    day: date
    kind: Literal["gap", "repeat"]
    #: The times concerned: ``02:30``, or ``60 times from 02:00 to 02:59``
    times: str
    zone: str
    flavour: str
    #: ``skipped``, ``runs at 03:00 instead``, ``runs once, at the first (EDT)``, …
    effect: str

    def short(self) -> str:
        return f"DST {self.day:%m-%d}: {self.times} {self.effect}"

    def __str__(self) -> str:
        what = "does not exist" if self.kind == "gap" else "happens twice"
        if self.kind == "gap" and "times" in self.times:
            what = "do not exist"
        elif "times" in self.times:
            what = "happen twice"
        return (
            f"{self.day.isoformat()}: {self.times} {what} in {self.zone}; "
            f"under {self.flavour} the job {self.effect}"
        )


def _times(walls: list[datetime]) -> str:
    if len(walls) <= 3:
        return ", ".join(f"{w:%H:%M}" for w in walls)
    return f"{len(walls)} times from {walls[0]:%H:%M} to {walls[-1]:%H:%M}"


def _local(instants: Iterable[datetime], tz: ZoneInfo) -> str:
    return ", ".join(f"{i.astimezone(tz):%H:%M} {i.astimezone(tz).tzname()}" for i in instants)


def dst_notes(schedule: Schedule, start: datetime, days: int = 366) -> list[DstNote]:
    """The days in the ``days`` after ``start`` on which ``schedule`` meets a gap or a
    repeat of its zone, with what its flavour then does (the same computation as
    :meth:`Schedule.fire_times`: systemd and k8s skip a missing time, cron runs a
    fixed time at the first minute that exists; a repeated time fires once under
    systemd, twice under k8s, as cronsim says under cron)."""
    tz = schedule.tz
    spec = schedule._spec
    first_day = _aware_utc(start, "start").astimezone(tz).date()
    notes: list[DstNote] = []
    for i in range(days + 1):
        d = first_day + timedelta(days=i)
        if d >= date.max - _ONE_DAY:
            break
        nxt = d + _ONE_DAY
        if (
            datetime(d.year, d.month, d.day, tzinfo=tz).utcoffset()
            == datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).utcoffset()
        ):
            continue
        if d.month not in spec.months or not spec.sim.match_day(d):
            continue
        notes.extend(_transition_notes(schedule, d))
    return notes


def _transition_notes(schedule: Schedule, d: date) -> list[DstNote]:
    tz = schedule.tz
    gaps: list[datetime] = []
    repeats: list[datetime] = []
    expected: set[datetime] = set()
    for hour, minute in schedule._spec.walls:
        wall = datetime(d.year, d.month, d.day, hour, minute, tzinfo=tz)
        first = wall.astimezone(UTC)
        back = first.astimezone(tz)
        if (back.date(), back.hour, back.minute) != (d, hour, minute):
            gaps.append(wall)
            continue
        second = wall.replace(fold=1).astimezone(UTC)
        expected.update((first, second))
        if second != first:
            repeats.append(wall)
    fires = set(schedule._transition_day_fires(d))
    notes = []
    if gaps:
        moved = sorted(fires - expected)
        effect = f"runs at {_local(moved, tz)} instead" if moved else "is skipped"
        notes.append(DstNote(d, "gap", _times(gaps), tz.key, schedule.flavour, effect))
    if repeats:
        instants = [(w.astimezone(UTC), w.replace(fold=1).astimezone(UTC)) for w in repeats]
        twice = all(a in fires and b in fires for a, b in instants)
        once = [a if a in fires else b for a, b in instants if (a in fires) != (b in fires)]
        if twice:
            a, b = instants[0]
            effect = f"runs twice, at {_local([a], tz)} and {_local([b], tz)}"
        elif once and len(once) == len(instants):
            effect = f"runs once, at {_local(once[:1], tz)}"
        else:
            effect = "runs once or twice depending on the time"
        notes.append(DstNote(d, "repeat", _times(repeats), tz.key, schedule.flavour, effect))
    return notes


def parse_schedule(expr: str, tz: str, flavour: str = "systemd") -> Schedule:
    """Validate expression, zone and flavour; raise UsageError naming the bad value."""
    if not isinstance(expr, str) or not expr.strip():
        raise UsageError(f"cron expression {expr!r} is invalid: it is empty")
    zone = _zone(tz)
    if flavour not in FLAVOURS:
        raise UsageError(f"scheduler flavour {flavour!r} is unknown (use {', '.join(FLAVOURS)})")
    return Schedule(expr.strip(), zone, cast(Flavour, flavour))


def missing_slots(expected: Iterable[datetime], covered: Iterable[datetime]) -> list[datetime]:
    """Expected fire times with no covering run (exact instant equality), ascending, UTC."""
    done = {_aware_utc(c, "covered slot") for c in covered}
    wanted = {_aware_utc(e, "expected slot") for e in expected}
    return sorted(wanted - done)


# -- OnCalendar= ---------------------------------------------------------------------


def _compress(values: list[int], lo: int, hi: int) -> str:
    """Sorted integers → systemd calendar syntax (``*``, ``a/s``, ``a..b/s``, ``a..b``, lists)."""
    if values == list(range(lo, hi + 1)):
        return "*"
    if len(values) >= 3:
        step = values[1] - values[0]
        if step > 1 and all(b - a == step for a, b in pairwise(values)):
            if values[-1] + step > hi:
                return f"{values[0]:02d}/{step}"
            return f"{values[0]:02d}..{values[-1]:02d}/{step}"
    parts: list[str] = []
    run: list[int] = []
    for v in [*values, -10]:
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if len(run) >= 3:
            parts.append(f"{run[0]:02d}..{run[-1]:02d}")
        else:
            parts.extend(f"{r:02d}" for r in run)
        run = [v]
    return ",".join(parts)


def _weekday_names(isodays: list[int]) -> str:
    parts: list[str] = []
    run: list[int] = []
    for v in [*isodays, -10]:
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if len(run) >= 3:
            parts.append(f"{_WEEKDAYS[run[0] - 1]}..{_WEEKDAYS[run[-1] - 1]}")
        else:
            parts.extend(_WEEKDAYS[r - 1] for r in run)
        run = [v]
    return ",".join(parts)


def to_systemd_oncalendar(expr: str, tz: str) -> str:
    """``'0 6 * * 1-5'`` + ``America/Toronto`` → ``'Mon..Fri *-*-* 06:00:00 America/Toronto'``."""
    zone = _zone(tz)
    spec = _compile(expr)
    sim = spec.sim

    def cannot(why: str) -> UsageError:
        return UsageError(f"cron expression {expr!r} cannot be written as OnCalendar=: {why}")

    if not sim.day_and:
        raise cannot(
            "day-of-month and day-of-week are both restricted (cron runs when either "
            "matches, OnCalendar= only when both do)"
        )
    minute = _compress(sorted(sim.minutes), 0, 59)
    hour = _compress(sorted(sim.hours), 0, 23)
    month = _compress(sorted(sim.months), 1, 12)

    dom_items = sim.days
    if CronSim.LAST_WEEKDAY in dom_items:
        raise cannot("'LW' (last weekday of the month) has no OnCalendar= form")
    if CronSim.LAST in dom_items:
        if dom_items != {CronSim.LAST}:
            raise cannot("'L' mixed with other days of the month has no OnCalendar= form")
        date_part = f"*-{month}~01"
    else:
        date_part = f"*-{month}-{_compress(sorted(dom_items), 1, 31)}"

    dow_items = sim.weekdays
    specials = [w for w in dow_items if isinstance(w, tuple)]
    if specials:
        if len(dow_items) != 1 or date_part != f"*-{month}-*":
            raise cannot("'#' or 'L' in day-of-week is supported only alone, with '*' days")
        weekday, nth = specials[0]
        name = _WEEKDAYS[(weekday or 7) - 1]
        if nth == CronSim.LAST:
            date_part = f"*-{month}~07/1"
        else:
            first = (nth - 1) * 7 + 1
            date_part = f"*-{month}-{first:02d}..{min(first + 6, 31):02d}"
        weekdays = name
    else:
        isodays = sorted({(w or 7) for w in dow_items if isinstance(w, int)})
        weekdays = "" if isodays == list(range(1, 8)) else _weekday_names(isodays)

    prefix = f"{weekdays} " if weekdays else ""
    return f"{prefix}{date_part} {hour}:{minute}:00 {zone.key}"
