"""``[sources.NAME]`` tables of ``jobctl.toml``, read into frozen objects.

::

    [sources.permits]
    url = "https://data.example.org/permits.json?token=${FEED_TOKEN}"   # or path = "..."
    # or query = "SELECT ... WHERE created_at >= :date AND created_at < :date + 1"
    # database_url = "${OTHER_DB}"   # query: another database (default: jobctl's)
    format = "json"            # json | ndjson | csv | json-object
    record_path = "item"       # json: where the records are ("item" = top-level array)
    key = ["PERMIT_NUM", "REVISION_NUM"]
    table = "permits"          # target table (optionally schema.table)
    complete = true            # absent records get removed_at
    date = "today"             # default --date: today | yesterday
    fields = { permit_num = "PERMIT_NUM" }   # optional selection / renaming
    exclude = ["", "_id"]      # or: drop volatile columns (exclusive with fields)
    types = { est_cost = "float" }
    headers = { Accept = "application/json" }
    token = "${FEED_TOKEN}"    # sent as Authorization: Bearer …
    timeout = "60s"
    retries = 3
    max_error_ratio = 0.01
    max_removed_ratio = 0.5    # refuse to mark more than half the table removed
    error_when = { result = "error" }   # json / json-object: an error inside HTTP 200
    error_message = "message"
    retry_on_error_body = false
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from jobctl.config import (
    Complaint,
    check_database_url,
    check_timezone,
    named_section,
    table_name,
)
from jobctl.durations import parse_duration
from jobctl.errors import ConfigError, UsageError
from jobctl.sources.parse import FORMATS
from jobctl.sources.records import TYPES
from jobctl.sources.sql import BOUND, READ_KEYWORDS, parse_query

_KEYS = {
    "url",
    "path",
    "query",
    "database_url",
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
    "max_removed_ratio",
    "exclude",
    "error_when",
    "error_message",
    "retry_on_error_body",
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
    #: A complete feed that would mark more than this fraction of the table's active
    #: rows (of the date's, for a date-dependent source) removed fails unless --force.
    max_removed_ratio: float = 0.5
    #: Top-level fields dropped from every record before it is hashed and stored.
    exclude: tuple[str, ...] = ()
    #: An API's error answered with HTTP 200: dotted path → value, all must match.
    error_when: Mapping[str, Any] | None = None
    error_message: str | None = None
    retry_on_error_body: bool = False
    encoding: str = "utf-8"
    delimiter: str = ","
    conditional: bool = True
    checks: tuple[Check, ...] = ()
    description: str = ""
    #: Set explicitly, or implied by ``{date}`` in the location: the date is part of the key.
    date_key: bool = False
    #: A SQL source: the query (as written) whose rows are the records; see
    #: :mod:`jobctl.sources.sql`. ``:date`` in it implies ``date_key``.
    query: str | None = None
    #: The database the query runs on (None: the jobctl database).
    database_url: str | None = None
    #: A query's statement_timeout (each DECLARE / FETCH): ``timeout`` when given.
    statement_timeout: timedelta | None = None

    @property
    def location(self) -> str:
        return self.url or self.path or ""

    @property
    def date_dependent(self) -> bool:
        """Whether the feed's location or content depends on the date."""
        return self.date_key or "{date" in self.location or _binds_date(self.query)


def _binds_date(query: str | None) -> bool:
    return query is not None and "date" in parse_query(query).params


#: Settings of url / path sources that mean nothing for a query.
_FILE_ONLY = (
    "format",
    "record_path",
    "encoding",
    "delimiter",
    "headers",
    "token",
    "conditional",
    "error_when",
    "error_message",
    "retry_on_error_body",
    "retries",
    "backoff",
)


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
    if "query" in t:
        _query(t, bad, kwargs)
    elif ("url" in t) == ("path" in t):
        raise bad("url", "give exactly one of url, path or query")
    if "database_url" in t and "query" not in t:
        raise bad("database_url", "only means something with query")
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
    keyless_ok = key_fields == [] and (
        "{date" in location or t.get("date_key") is True or _binds_date(kwargs.get("query"))
    )
    if not keyless_ok and (
        not key_fields
        or not isinstance(key_fields, list)
        or not all(isinstance(k, str) and k for k in key_fields)
    ):
        raise bad(
            "key",
            'must name one or more key fields, e.g. key = ["id"] (key = [] only for a '
            "source whose location depends on {date}, or whose query binds :date: then the "
            "date is the key)",
        )
    kwargs["key"] = tuple(key_fields)
    kwargs["table"] = table_name(t.get("table"), bad)
    for flag in ("complete", "conditional", "date_key", "retry_on_error_body"):
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
                # a zero timeout fails every request; a zero backoff retries at once
                kwargs[key] = parse_duration(t[key], what="duration", allow_zero=key == "backoff")
            except UsageError as exc:
                raise bad(key, str(exc)) from None
    if "query" in t and "timeout" in t:  # unbounded unless asked: a report may be slow
        kwargs["statement_timeout"] = kwargs["timeout"]
    if "retries" in t:
        if not isinstance(t["retries"], int) or isinstance(t["retries"], bool) or t["retries"] < 0:
            raise bad("retries", f"{t['retries']!r} is not a whole number >= 0")
        kwargs["retries"] = t["retries"]
    for key in ("max_error_ratio", "max_removed_ratio"):
        if key in t:
            ratio = t[key]
            if (
                not isinstance(ratio, (int, float))
                or isinstance(ratio, bool)
                or not 0 <= ratio <= 1
            ):
                raise bad(key, f"{ratio!r} is not a number between 0 and 1")
            kwargs[key] = float(ratio)
    if "exclude" in t:
        exclude = t["exclude"]
        if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
            raise bad("exclude", f'{exclude!r} is not a list of field names, e.g. ["", "_id"]')
        if "fields" in t:
            raise bad("exclude", "give fields or exclude, not both (fields already selects)")
        dropped_keys = [k for k in key_fields if k in exclude]
        if dropped_keys:
            raise bad("exclude", f"{dropped_keys[0]!r} is a key field; it cannot be excluded")
        kwargs["exclude"] = tuple(dict.fromkeys(exclude))
    _error_body(t, fmt, bad, kwargs)
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


def _query(t: Any, bad: Complaint, kwargs: dict[str, Any]) -> None:
    """``query`` / ``database_url``: a SQL source (see :mod:`jobctl.sources.sql`)."""
    for other in ("url", "path"):
        if other in t:
            raise bad("query", f"give exactly one of url, path or query (not query and {other})")
    query = t["query"]
    if not isinstance(query, str) or not query.strip():
        raise bad("query", f"{query!r} is not a non-empty string")
    parsed = parse_query(query)
    if parsed.first_word not in READ_KEYWORDS:
        raise bad(
            "query",
            f"starts with {parsed.first_word or '(nothing)'!r}: a sync only reads, so the "
            f"query must start with {', '.join(READ_KEYWORDS)}",
        )
    unknown = [p for p in parsed.params if p not in BOUND]
    if unknown:
        raise bad("query", f"binds :{unknown[0]}; the only parameter a sync fills is :date")
    if "{date" in query:
        raise bad("query", "{date} is not filled in a query: bind the date as :date")
    if t.get("date_key") is True and "date" not in parsed.params:
        raise bad(
            "date_key",
            "the query does not bind :date, so every date would get the same rows "
            "(add e.g. WHERE created_at >= :date AND created_at < :date + 1)",
        )
    for key in _FILE_ONLY:
        if key in t:
            raise bad(key, "only means something for a url or path source, not a query")
    kwargs["query"] = query
    if "database_url" in t:
        url = t["database_url"]
        if not isinstance(url, str) or not url:
            raise bad("database_url", "is not a non-empty string")
        try:
            check_database_url(url, key="", origin=None)
        except ConfigError as exc:
            raise bad("database_url", exc.message) from None
        kwargs["database_url"] = url


def _error_body(t: Any, fmt: str, bad: Complaint, kwargs: dict[str, Any]) -> None:
    """``error_when`` / ``error_message``: how an API's error answered with HTTP 200 looks."""
    if "error_when" in t:
        when = t["error_when"]
        scalar = (str, int, float, bool)
        if (
            not isinstance(when, dict)
            or not when
            or not all(isinstance(k, str) and k for k in when)
            or not all(isinstance(v, scalar) for v in when.values())
        ):
            raise bad(
                "error_when",
                f'{when!r} is not a table of field = value, e.g. {{ result = "error" }}',
            )
        if fmt not in ("json", "json-object"):
            raise bad("error_when", f"needs format json or json-object, not {fmt!r}")
        kwargs["error_when"] = dict(when)
    if "error_message" in t:
        message = t["error_message"]
        if not isinstance(message, str) or not message:
            raise bad("error_message", f"{message!r} is not a field name (a non-empty string)")
        if "error_when" not in t:
            raise bad("error_message", "only means something with error_when")
        kwargs["error_message"] = message
    if t.get("retry_on_error_body") is True and "error_when" not in t:
        raise bad("retry_on_error_body", "only means something with error_when")


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
