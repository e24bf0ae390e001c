"""The JSON shapes of jobctl's results, shared by the CLI's ``--json`` and the web API.

One function per result: a job (``jobs list``), a job's health (``status``), a one-off
schedule (``schedule list``); runs are the ledger's dicts as they are. :func:`dumps`
is the one encoder (datetimes in UTC with ``Z``, dates and durations as strings,
decimals as numbers). Neither face shapes a result itself, so both say the same.
Pure: no database, no Typer, no FastAPI.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobctl.app import JobInfo
    from jobctl.db.scheduled import Scheduled
    from jobctl.health import JobStatus


def default(value: Any) -> Any:
    """``json.dumps``'s ``default``: the values jobctl's results hold besides JSON's own."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (date, timedelta)):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(data: Any, *, indent: int | None = None) -> str:
    return json.dumps(data, default=default, indent=indent, ensure_ascii=False)


def plain(data: Any) -> Any:
    """``data`` with every value JSON has no type for made a string or number, as
    :func:`dumps` writes it (for a redactor, which reads strings only)."""
    return json.loads(dumps(data))


def job_json(info: JobInfo) -> dict[str, Any]:
    """A job as ``jobctl jobs list --json`` and ``GET /api/jobs`` show it."""
    return {
        "name": info.name,
        "description": info.description,
        "builtin": info.builtin,
        "enabled": info.enabled,
        "schedule": info.schedule,
        "schedule_words": info.schedule_words,
        "timezone": info.timezone,
        "next_fire_times": info.next_fire_times,
        "last_status": info.last_status,
        "last_run_id": info.last_run_id,
        "last_success": info.last_success,
        "running": info.running,
        "dst_warnings": [str(n) for n in info.dst_notes],
    }


def status_json(status: JobStatus, now: datetime) -> dict[str, Any]:
    """A job's health as ``jobctl status --json`` and ``GET /api/status`` show it."""
    doc = dataclasses.asdict(status)
    doc["state"] = str(status.state)
    doc["healthy"] = status.healthy
    age = status.success_age(now)
    doc["last_success_age_seconds"] = None if age is None else round(age.total_seconds(), 3)
    doc["grace_seconds"] = None if status.grace is None else status.grace.total_seconds()
    del doc["grace"]
    return doc


def schedule_json(row: Scheduled, now: datetime) -> dict[str, Any]:
    """A one-off schedule as ``jobctl schedule list --json`` and ``/api/schedules`` show it."""
    from jobctl.when import countdown, local_text

    doc = dataclasses.asdict(row)
    doc.pop("claim_backend_pid")
    doc["seconds_until"] = int((row.run_at - now).total_seconds())
    doc["countdown"] = countdown(row.run_at - now) if row.status == "pending" else None
    doc["local"] = local_text(row.run_at, row.timezone)
    return doc
