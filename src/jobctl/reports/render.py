"""Reports written out: text (80 columns), Markdown and HTML through Jinja2 templates,
JSON with stable keys.

The templates (``templates/report.{txt,md,html}.j2``) may be replaced one by one from
a directory of the operator's (``[report] templates``). HTML templates are
autoescaped (a value from a query can hold ``<script>``); text and Markdown are not
HTML, so escaping there would only garble them: Markdown cells go through
:func:`md_cell` instead. Undefined names in a template are errors, not blanks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from jobctl.db.health import JobHealth
from jobctl.durations import format_duration
from jobctl.errors import UsageError
from jobctl.reports.model import Report

__all__ = [
    "FORMATS",
    "TEMPLATE_NAMES",
    "Renderer",
    "cell",
    "duration",
    "health_tables",
    "md_cell",
    "numeric_columns",
    "text_table",
    "to_json",
]

FORMATS = ("text", "markdown", "html", "json")
#: The template of each templated format (JSON is not templated: its keys are a contract).
TEMPLATE_NAMES = {"text": "report.txt.j2", "markdown": "report.md.j2", "html": "report.html.j2"}
BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
#: The text format's width: what a terminal and a plain-text mail show unwrapped.
TEXT_WIDTH = 80
_GAP = 2
_ELLIPSIS = "…"


# --------------------------------------------------------------------------- values


def cell(value: Any, timezone: str = "UTC") -> str:
    """A value as a table shows it: ``None`` blank, an instant in the report's zone,
    a number as the database gave it (an integral float without ``.0``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        moment = value.astimezone(ZoneInfo(timezone)) if value.tzinfo else value
        return moment.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        return f"{value:.2f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def duration(ms: float | None) -> str:
    """``850 ms`` under a second, else as the CLI says durations (``12s``, ``4m05s``)."""
    if ms is None:
        return ""
    return f"{ms:.0f} ms" if ms < 1000 else format_duration(ms / 1000)


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def numeric_columns(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[bool]:
    """Which columns hold numbers only (right-aligned, their heading too)."""
    return [
        bool(rows) and all(_numeric(r[i]) or r[i] is None for r in rows)
        for i in range(len(columns))
    ]


def health_tables(
    health: Sequence[JobHealth], timezone: str
) -> list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]]:
    """The job-health part as two tables (runs; records moved), formatted the same in
    every format. Two because thirteen columns do not fit in 80."""
    runs = [
        (
            h.job,
            h.runs,
            h.completed,
            h.failed,
            h.skipped,
            h.interrupted,
            duration(h.p50_ms),
            duration(h.p95_ms),
            h.failure_streak,
        )
        for h in health
    ]
    records = [
        (
            h.job,
            h.records_new,
            h.records_updated,
            h.records_removed,
            h.records_deleted,
            cell(h.last_success, timezone) or "never",
        )
        for h in health
    ]
    return [
        (
            "Runs",
            ("job", "runs", "ok", "failed", "skipped", "cancelled", "p50", "p95", "streak"),
            runs,
        ),
        ("Records", ("job", "new", "updated", "removed", "deleted", "last success"), records),
    ]


# --------------------------------------------------------------------------- text tables


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + _ELLIPSIS


def _shrink(widths: list[int], budget: int) -> list[int]:
    """Narrow the widest columns first until the row fits ``budget``."""
    widths = list(widths)
    while sum(widths) > budget:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        others = sorted(widths, reverse=True)
        second = others[1] if len(others) > 1 else 0
        excess = sum(widths) - budget
        widths[widest] -= max(1, min(excess, widths[widest] - second))
    return widths


def text_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    timezone: str = "UTC",
    width: int = TEXT_WIDTH,
) -> str:
    """A plain-text table no wider than ``width``: long cells are cut with ``…``, numbers
    right-aligned; with too many columns to fit, one ``column: value`` block per row."""
    texts = [[cell(v, timezone) for v in row] for row in rows]
    count = len(columns)
    if not count:
        return ""
    budget = width - _GAP * (count - 1)
    if budget < 5 * count:
        return _records(columns, texts, width)
    right = numeric_columns(columns, rows)
    natural = [max([len(columns[i]), *(len(t[i]) for t in texts)]) for i in range(count)]
    widths = _shrink(natural, budget)

    def line(values: Sequence[str]) -> str:
        parts = [
            _fit(v, w).rjust(w) if r else _fit(v, w).ljust(w)
            for v, w, r in zip(values, widths, right, strict=True)
        ]
        return (" " * _GAP).join(parts).rstrip()

    out = [line(list(columns)), (" " * _GAP).join("-" * w for w in widths)]
    out += [line(t) for t in texts]
    return "\n".join(out)


def _records(columns: Sequence[str], texts: list[list[str]], width: int) -> str:
    label = min(max(len(c) for c in columns), width // 3)
    blocks = []
    for values in texts:
        lines = [
            f"{_fit(c, label).ljust(label)}  {_fit(v, width - label - 2)}"
            for c, v in zip(columns, values, strict=True)
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def md_cell(value: Any, timezone: str = "UTC") -> str:
    """A Markdown table cell: pipes, backslashes and markup characters escaped."""
    text = cell(value, timezone)
    for char in "\\|*_`[]<>#":
        text = text.replace(char, "\\" + char)
    return text


# --------------------------------------------------------------------------- JSON


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _health_json(h: JobHealth) -> dict[str, Any]:
    return {
        "job": h.job,
        "runs": h.runs,
        "completed": h.completed,
        "failed": h.failed,
        "skipped": h.skipped,
        "cancelled_or_abandoned": h.interrupted,
        "p50_duration_ms": h.p50_ms,
        "p95_duration_ms": h.p95_ms,
        "records_new": h.records_new,
        "records_updated": h.records_updated,
        "records_removed": h.records_removed,
        "records_deleted": h.records_deleted,
        "last_success": h.last_success.isoformat() if h.last_success else None,
        "failure_streak": h.failure_streak,
    }


def report_json(report: Report) -> dict[str, Any]:
    """One report as JSON-ready data (the keys are a contract: add, never rename)."""
    return {
        "title": report.title,
        "period": {
            "start": report.period.start.isoformat(),
            "end": report.period.end.isoformat(),
            "timezone": report.period.timezone,
            "label": report.period.label,
        },
        "generated_at": report.generated_at.isoformat(),
        "recipient": _jsonable(report.recipient) if report.recipient is not None else None,
        "job_health": (
            [_health_json(h) for h in report.job_health] if report.job_health is not None else None
        ),
        "sections": [
            {
                "title": s.title,
                "description": s.description,
                "columns": list(s.columns),
                "rows": [dict(zip(s.columns, map(_jsonable, row), strict=True)) for row in s.rows],
                "truncated": s.truncated,
            }
            for s in report.sections
        ],
    }


def to_json(reports: Sequence[Report]) -> str:
    """``{"reports": [...]}``: one entry per recipient (one without recipients)."""
    return json.dumps({"reports": [report_json(r) for r in reports]}, indent=2, sort_keys=True)


# --------------------------------------------------------------------------- templates


class Renderer:
    """The report templates: jobctl's own, or the operator's where their directory has one."""

    def __init__(self, templates: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if templates is not None:
            loaders.append(jinja2.FileSystemLoader(str(templates)))
        loaders.append(jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES)))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html", "htm", "html.j2"), default_for_string=False
            ),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters.update(cell=cell, md_cell=md_cell, duration=duration)
        self._subjects: dict[str, jinja2.Template] = {}
        self.env.globals.update(
            text_table=text_table,
            health_tables=health_tables,
            numeric_columns=numeric_columns,
            TEXT_WIDTH=TEXT_WIDTH,
        )

    def check(self, subject: str) -> None:
        """Compile every template and the subject: a UsageError names the file and line."""
        for name in TEMPLATE_NAMES.values():
            self._template(name)
        self._subject(subject)

    def _template(self, name: str) -> jinja2.Template:
        try:
            return self.env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise UsageError(
                f"report template {exc.filename or name}, line {exc.lineno}: {exc.message}"
            ) from None
        except jinja2.TemplateNotFound:
            raise UsageError(f"report template {name} not found") from None

    def _subject(self, subject: str) -> jinja2.Template:
        # Compiled once: a report to a thousand recipients renders it a thousand times.
        if subject in self._subjects:
            return self._subjects[subject]
        try:
            self._subjects[subject] = template = self.env.from_string(subject)
            return template
        except jinja2.TemplateSyntaxError as exc:
            raise UsageError(f"report.subject: {exc.message}") from None

    def render(self, fmt: str, reports: Sequence[Report]) -> str:
        """The reports in format ``fmt`` (a JobError-free UsageError on a template fault)."""
        if fmt == "json":
            return to_json(reports) + "\n"
        template = self._template(TEMPLATE_NAMES[fmt])
        try:
            return template.render(reports=list(reports), width=TEXT_WIDTH)
        except jinja2.TemplateError as exc:
            raise UsageError(f"report template {template.name}: {exc}") from None

    def subject(self, subject: str, report: Report) -> str:
        try:
            text = self._subject(subject).render(
                title=report.title, period=report.period, recipient=report.recipient or {}
            )
        except jinja2.TemplateError as exc:
            raise UsageError(f"report.subject: {exc}") from None
        return " ".join(text.split())  # one header line, whatever the template did
