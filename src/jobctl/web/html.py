"""The console's HTML: the Jinja2 templates of ``templates/``, their filters, and the
response every page is sent as. No database, no request handling (that is
:mod:`jobctl.web.pages`).

Every value a template prints goes through the server's :class:`~jobctl.redact.Redactor`
before it is escaped (Jinja's ``finalize``): a secret is masked wherever it comes from
(a run's error, a health reason, a schedule's params), and an escaped form of it
(``&amp;``) can never slip past a redaction of the finished page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from markupsafe import Markup
from starlette.responses import HTMLResponse

from jobctl.durations import format_duration
from jobctl.when import countdown, iso_utc

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

#: The pages load their own stylesheet and script, and nothing from anywhere else.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Every printed string through the page's redactor (markup from a macro or a
    filter was made of values that went through it already)."""
    if isinstance(value, str) and not isinstance(value, Markup):
        redact: Callable[[str], str] | None = context.get("redact")
        return redact(value) if redact is not None else value
    return value


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else iso_utc(moment)


def _utc(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _local(moment: datetime | None, zone: str) -> str:
    """``Mon 2027-03-15 09:00 EDT``: a moment as the wall clock of ``zone`` shows it."""
    if moment is None:
        return "-"
    return moment.astimezone(ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M %Z")


def _took(ms: int | None) -> str:
    return "-" if ms is None else format_duration(ms / 1000)


def _ago(moment: datetime | None, now: datetime) -> str:
    return "never" if moment is None else format_duration(max(now - moment, timedelta(0))) + " ago"


def _records(row: Mapping[str, Any]) -> str:
    keys = ("records_new", "records_updated", "records_unchanged", "records_errors")
    return "/".join(str(row.get(k) if row.get(k) is not None else "-") for k in keys)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value) if value.tzinfo else value.isoformat()
    return str(value)


def _pretty(value: Any) -> str:
    """A run's params or stats as indented JSON (``{}`` when empty, as ``runs show``)."""
    if not value:
        return "{}"
    return json.dumps(value, indent=1, default=_json_default, ensure_ascii=False)


def _plain(value: Any) -> str:
    """A run field as ``runs show --json`` writes it (datetimes in UTC with Z)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        finalize=_finalize,
        trim_blocks=False,
        auto_reload=False,
    )
    env.filters.update(
        iso=_iso,
        utc=_utc,
        local=_local,
        took=_took,
        ago=_ago,
        records=_records,
        pretty=_pretty,
        plain=_plain,
        countdown=countdown,
    )
    return env


@cache
def asset_version() -> str:
    """A digest of the static files: their URLs change when they do (cache busting)."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.glob("*")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def render(name: str, context: Mapping[str, Any], status: int = 200) -> HTMLResponse:
    """Template ``name`` as an HTML response with the console's security headers."""
    body = environment().get_template(name).render(context)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


__all__ = ["SECURITY_HEADERS", "STATIC", "TEMPLATES", "asset_version", "environment", "render"]
