"""A job's cron expression in an IANA zone as a line for Debian's cron on a UTC host.

Debian's cron (Vixie cron 3.0) fires in the daemon's local time and has no
``CRON_TZ``. The generated crontab assumes the host clock is UTC (the usual server
setting) and converts each zone itself: a job at hour H in a zone whose offset is
-4 or -5 hours fires at both UTC hours H+4 and H+5, and a *guard* in front of the
command (``[ "$(TZ=zone date +%H)" = HH ]``) lets through only the tick whose local
hour is H. So the job runs at its local wall time all year, whatever the offset.

On the DST days that gives the ``k8s`` flavour of jobctl.schedule: a local time that
does not exist (02:30 on spring-forward day) matches neither tick, the job does not
run that day; a local time that happens twice (01:30 on fall-back day) matches both
ticks, the job is started twice (see deploy/README.md for what the runner does then).

Zones whose offsets are not whole hours, and expressions whose UTC hours would fall
on another UTC day while their day fields are restricted, cannot be written this way:
that is a UsageError naming the job and the other deployments that can run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from jobctl.errors import UsageError
from jobctl.schedule import MACROS

#: How many years of a zone's rules decide its offsets (from this year on).
_YEARS = 3


@dataclass(frozen=True)
class CronLine:
    """The five time fields on a UTC host, and the shell test run before the command
    (None: no guard needed)."""

    schedule: str
    guard: str | None


def zone_offsets(zone: ZoneInfo, today: date) -> list[int]:
    """The zone's UTC offsets in minutes over the next years, e.g. [-300, -240]."""
    offsets = set()
    day = datetime(today.year, 1, 1, 12, tzinfo=UTC)
    for _ in range(366 * _YEARS):
        offset = day.astimezone(zone).utcoffset()
        assert offset is not None  # an aware datetime from a ZoneInfo always has one
        offsets.add(int(offset.total_seconds()) // 60)
        day += timedelta(days=1)
    return sorted(offsets)


def _hour_list(hours: list[int]) -> str:
    return ",".join(str(h) for h in hours)


def utc_line(job: str, expr: str, zone_name: str, today: date) -> CronLine:
    """The crontab line of job ``job`` (``expr`` read in ``zone_name``) for a UTC host."""
    fields = MACROS.get(expr.strip().lower(), expr).split()
    zone = ZoneInfo(zone_name)
    offsets = zone_offsets(zone, today)
    if offsets == [0]:
        return CronLine(" ".join(fields), None)

    def cannot(why: str) -> UsageError:
        return UsageError(
            f"job {job!r} ({expr!r} in {zone_name}) cannot be written for Debian cron "
            f"on a UTC host: {why}; deploy it with systemd or k8s, or set its timezone to UTC"
        )

    if any(o % 60 for o in offsets):
        raise cannot("the zone's UTC offset is not a whole number of hours")
    sim = CronSim(" ".join(fields), datetime(2000, 1, 1))
    hours = sorted(sim.hours)
    days_restricted = fields[2:] != ["*", "*", "*"]
    if len(hours) == 24:
        if days_restricted:
            raise cannot("it runs every hour on given days, which are other days in UTC")
        # Every hour is every hour in any whole-hour zone: the same instants.
        return CronLine(" ".join(fields), None)
    shifted = [h - o // 60 for h in hours for o in offsets]
    if days_restricted and any(not 0 <= s < 24 for s in shifted):
        raise cannot("its hours fall on another day in UTC while its days are restricted")
    utc_hours = sorted({s % 24 for s in shifted})
    local = "|".join(f"{h:02d}" for h in hours)
    # `%` starts stdin in a crontab command: written `\%`.
    now = f"TZ={zone.key} date +\\%H"
    guard = f'[ "$({now})" = {local} ]' if len(hours) == 1 else f"{now} | grep -qxE '{local}'"
    return CronLine(" ".join([fields[0], _hour_list(utc_hours), *fields[2:]]), guard)
