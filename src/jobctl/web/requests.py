"""The JSON bodies of the API's writes, checked into plain values.

Each bad value is a :class:`~jobctl.errors.UsageError` whose message reads like the
CLI's for the same mistake (``--param 'a' is not KEY=VALUE`` becomes ``params: ...``),
answered 422 before anything is written. Pure: no database, no FastAPI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobctl.durations import shown
from jobctl.errors import UsageError

#: Keys the bodies may have; anything else is refused (a typo must not be ignored).
SCHEDULE_KEYS = ("job", "at", "params", "every", "until")
RUN_KEYS = ("params",)


@dataclass(frozen=True)
class ScheduleRequest:
    job: str
    at: str
    params: dict[str, str] = field(default_factory=dict)
    every: str | None = None
    until: str | None = None


@dataclass(frozen=True)
class RunRequest:
    params: dict[str, str] = field(default_factory=dict)


def _keys(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise UsageError(f"unknown field {shown(unknown[0])} (known: {', '.join(allowed)})")


def _text(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise UsageError(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise UsageError(f"{key} must be a string, not {type(value).__name__}")
    return value


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in the JSON)
        return False
    return "\x00" not in text


def params_of(value: Any) -> dict[str, str]:
    """``{"KEY": "VALUE"}`` as ``--param KEY=VALUE`` takes them (values are strings)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"params must be an object of KEY: VALUE strings, not {shown(value)}")
    params: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise UsageError(f"params.{key}: the value must be a string, not {shown(item)}")
        if not key.strip() or "=" in key or key != key.strip():
            raise UsageError(f"params {shown(key)}: a key is not empty, has no '=' nor edge spaces")
        if not _utf8(key) or not _utf8(item):
            raise UsageError(f"params.{key} is not valid UTF-8 text without NUL")
        params[key] = item
    return params


def schedule_request(body: Any) -> ScheduleRequest:
    """``POST /api/schedules``: ``{"job", "at", "params"?, "every"?, "until"?}``."""
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    _keys(body, SCHEDULE_KEYS)
    job = _text(body, "job", required=True)
    at = _text(body, "at", required=True)
    assert job is not None and at is not None
    return ScheduleRequest(
        job=job,
        at=at,
        params=params_of(body.get("params")),
        every=_text(body, "every") or None,
        until=_text(body, "until") or None,
    )


def run_request(body: Any) -> RunRequest:
    """``POST /api/jobs/{name}/runs``: ``{"params"?}`` (no body: no params)."""
    if body is None:
        return RunRequest()
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    _keys(body, RUN_KEYS)
    return RunRequest(params=params_of(body.get("params")))
