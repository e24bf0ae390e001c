"""``[sources.NAME]`` tables of ``jobctl.toml``, read into frozen objects.

::

    [sources.permits]
    url = "https://data.example.org/permits.json?token=${FEED_TOKEN}"   # or path = "..."
    format = "json"            # json | ndjson | csv | json-object
    record_path = "item"       # json: where the records are ("item" = top-level array)
    key = ["PERMIT_NUM", "REVISION_NUM"]
    table = "permits"          # target table (optionally schema.table)
    complete = true            # absent records get removed_at
    date = "today"             # default --date: today | yesterday
    fields = { permit_num = "PERMIT_NUM" }   # optional selection / renaming
    types = { est_cost = "float" }
    headers = { Accept = "application/json" }
    token = "${FEED_TOKEN}"    # sent as Authorization: Bearer …
    timeout = "60s"
    retries = 3
    max_error_ratio = 0.01
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from jobctl.config import check_timezone, named_section, table_name
from jobctl.durations import parse_duration
from jobctl.errors import ConfigError, UsageError
from jobctl.sources.parse import FORMATS
from jobctl.sources.records import TYPES

_KEYS = {
    "url",
    "path",
    "format",
    "record_path",
    "key",
    "table",
    "complete",
    "date",
    "timezone",
    "fields",
    "types",
    "headers",
    "token",
    "timeout",
    "connect_timeout",
    "retries",
    "backoff",
    "max_error_ratio",
    "encoding",
    "delimiter",
    "conditional",
    "checks",
    "description",
    "date_key",
    "backfill",
}


@dataclass(frozen=True)
class Check:
    """A data-quality check: a SQL query returning one number, with bounds."""

    name: str
    sql: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class SourceConfig:
    name: str
    table: str
    key: tuple[str, ...]
    format: Literal["json", "ndjson", "csv", "json-object"] = "json"
    url: str | None = None
    path: str | None = None
    record_path: str = "item"
    complete: bool = True
    date: Literal["today", "yesterday"] = "today"
    timezone: str = "UTC"
    fields: Mapping[str, str] | None = None
    types: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    token: str | None = None
    timeout: timedelta = timedelta(seconds=60)
    connect_timeout: timedelta = timedelta(seconds=10)
    retries: int = 3
    backoff: timedelta = timedelta(seconds=1)
    max_error_ratio: float = 0.01
    encoding: str = "utf-8"
    delimiter: str = ","
    conditional: bool = True
    checks: tuple[Check, ...] = ()
    description: str = ""
    #: Set explicitly, or implied by ``{date}`` in the location: the date is part of the key.
    date_key: bool = False

    @property
    def location(self) -> str:
        return self.url or self.path or ""

    @property
    def date_dependent(self) -> bool:
        """Whether the feed's location or content depends on the date."""
        return self.date_key or "{date" in self.location


def parse_sources(raw: Any, *, origin: str, default_tz: str) -> dict[str, SourceConfig]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("must be a table of [sources.NAME] tables", key="sources", origin=origin)
    return {
        name: _parse_one(name, table, origin=origin, default_tz=default_tz)
        for name, table in raw.items()
    }


def _parse_one(name: str, t: Any, *, origin: str, default_tz: str) -> SourceConfig:
    bad = named_section("sources", name, t, _KEYS, origin)
    prefix = f"sources.{name}"
    if not re.match(r"^[A-Za-z0-9_.-]+$", name):
        raise bad("", "source names may hold letters, digits, '_', '-' and '.' only")
    kwargs: dict[str, Any] = {"name": name, "timezone": t.get("timezone", default_tz)}
    if ("url" in t) == ("path" in t):
        raise bad("url", "give exactly one of url or path")
    for key in ("url", "path", "record_path", "encoding", "delimiter", "description", "token"):
        if key in t:
            if not isinstance(t[key], str) or (key != "token" and not t[key]):
                raise bad(key, f"{t[key]!r} is not a non-empty string")
            kwargs[key] = t[key]
    if "url" in t and not re.match(r"^https?://", t["url"]):
        raise bad("url", "must start with http:// or https://")
    fmt = t.get("format", "json")
    if fmt not in FORMATS:
        raise bad("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    kwargs["format"] = fmt
    if "delimiter" in t and len(t["delimiter"]) != 1:
        raise bad("delimiter", f"{t['delimiter']!r} must be one character")
    key_fields = t.get("key")
    if isinstance(key_fields, str):
        key_fields = [key_fields]
    location = str(t.get("url") or t.get("path") or "")
    # One record per date (an analytics API's daily summary): the date alone is the key.
    keyless_ok = key_fields == [] and ("{date" in location or t.get("date_key") is True)
    if not keyless_ok and (
        not key_fields
        or not isinstance(key_fields, list)
        or not all(isinstance(k, str) and k for k in key_fields)
    ):
        raise bad(
            "key",
            'must name one or more key fields, e.g. key = ["id"] (key = [] only for a '
            "source whose location depends on {date}: then the date is the key)",
        )
    kwargs["key"] = tuple(key_fields)
    kwargs["table"] = table_name(t.get("table"), bad)
    for flag in ("complete", "conditional", "date_key"):
        if flag in t:
            if not isinstance(t[flag], bool):
                raise bad(flag, f"{t[flag]!r} is not true or false")
            kwargs[flag] = t[flag]
    if "date" in t:
        if t["date"] not in ("today", "yesterday"):
            raise bad("date", f"{t['date']!r} is not one of today, yesterday")
        kwargs["date"] = t["date"]
    check_timezone(kwargs["timezone"], key=f"{prefix}.timezone", origin=origin)
    for key in ("fields", "types", "headers"):
        if key in t:
            value = t[key]
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise bad(key, 'must be a table of name = "string"')
            kwargs[key] = dict(value)
    for name_, type_ in (kwargs.get("types") or {}).items():
        if type_ not in TYPES:
            raise bad(f"types.{name_}", f"{type_!r} is not one of {', '.join(TYPES)}")
    for key in ("timeout", "connect_timeout", "backoff"):
        if key in t:
            try:
                kwargs[key] = parse_duration(t[key], what="duration")
            except UsageError as exc:
                raise bad(key, str(exc)) from None
    if "retries" in t:
        if not isinstance(t["retries"], int) or isinstance(t["retries"], bool) or t["retries"] < 0:
            raise bad("retries", f"{t['retries']!r} is not a whole number >= 0")
        kwargs["retries"] = t["retries"]
    if "max_error_ratio" in t:
        ratio = t["max_error_ratio"]
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
            raise bad("max_error_ratio", f"{ratio!r} is not a number between 0 and 1")
        kwargs["max_error_ratio"] = float(ratio)
    if "checks" in t:
        kwargs["checks"] = tuple(_check(c, i, prefix, origin) for i, c in enumerate(t["checks"]))
    try:
        "".join(kwargs.get("url") or kwargs.get("path") or "").format(date="2026-01-01")
    except (KeyError, IndexError, ValueError) as exc:
        raise bad(
            "url" if "url" in t else "path",
            f"template has an unknown placeholder {exc}; only {{date}} is filled",
        ) from None
    return SourceConfig(**kwargs)


def _check(c: Any, i: int, prefix: str, origin: str) -> Check:
    key = f"{prefix}.checks[{i}]"
    if not isinstance(c, dict) or not isinstance(c.get("sql"), str):
        raise ConfigError(
            "must be a table with name, sql and min and/or max", key=key, origin=origin
        )
    for bound in ("min", "max"):
        if bound in c and (not isinstance(c[bound], (int, float)) or isinstance(c[bound], bool)):
            raise ConfigError(f"{bound} {c[bound]!r} is not a number", key=key, origin=origin)
    return Check(str(c.get("name", f"check_{i}")), c["sql"], c.get("min"), c.get("max"))
