"""The report formats on their own: widths, escaping, stable JSON, the operator's templates."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from jobctl.db.health import JobHealth
from jobctl.errors import UsageError
from jobctl.reports.model import Report, ReportPeriod, SectionTable
from jobctl.reports.render import Renderer, cell, duration, md_cell, text_table

PERIOD = ReportPeriod(date(2026, 11, 23), date(2026, 11, 30), "America/Toronto")
NOW = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
HEALTH = [
    JobHealth("sync", 10, 8, 1, 1, 0, 1500.0, 64000.0, 120, 7, 3, 0, NOW, 0),
    JobHealth("cleanup", 1, 0, 1, 0, 0, 200.0, 200.0, 0, 0, 0, 0, None, 4),
]


def report(**kw: object) -> Report:
    defaults: dict[str, object] = {
        "title": "Weekly",
        "period": PERIOD,
        "generated_at": NOW,
        "sections": [],
        "job_health": HEALTH,
    }
    return Report(**{**defaults, **kw})  # type: ignore[arg-type]


def test_period_label_and_local_midnights() -> None:
    assert PERIOD.label == "week 2026-W48 (2026-11-23 to 2026-11-29)"
    start, end = PERIOD.bounds()
    assert start.isoformat() == "2026-11-23T00:00:00-05:00"
    assert end.isoformat() == "2026-11-30T00:00:00-05:00"
    # the week of the autumn change is 169 hours long in Toronto
    dst = ReportPeriod(date(2026, 10, 26), date(2026, 11, 2), "America/Toronto").bounds()
    hours = (dst[1].astimezone(UTC) - dst[0].astimezone(UTC)).total_seconds() / 3600
    assert hours == 169


def test_cells_and_durations() -> None:
    assert cell(None) == "" and cell(True) == "yes" and cell(3.0) == "3" and cell(2.345) == "2.35"
    assert cell(Decimal("12.50")) == "12.50"
    assert cell(datetime(2026, 11, 30, 13, 5, tzinfo=UTC), "America/Toronto") == "2026-11-30 08:05"
    assert cell("two\nlines\ttabbed") == "two lines tabbed"
    assert cell({"a": 1}) == '{"a":1}'
    assert [duration(v) for v in (None, 850, 12_340, 245_000, 7_380_000)] == [
        "",
        "850 ms",
        "12s",
        "4m05s",
        "2h03m",
    ]
    assert md_cell("a|b*c") == "a\\|b\\*c"


def test_text_tables_never_pass_80_columns() -> None:
    columns = ("wine", "vintage", "notes", "bottles")
    rows = [("Château " + "x" * 90, 2015, "long " * 40, 12), ("Rioja", 2019, "", 3)]
    table = text_table(columns, rows)
    lines = table.splitlines()
    assert max(map(len, lines)) <= 80
    assert lines[0].startswith("wine") and "…" in lines[2]
    assert lines[3].endswith(" 3")  # numbers right-aligned
    # too many columns to fit: one block per row, still 80 wide
    wide = text_table([f"column_{i}" for i in range(20)], [tuple(range(20))])
    assert max(map(len, wide.splitlines())) <= 80 and "column_19  19" in wide


def test_text_report_shows_health_and_sections_within_80_columns() -> None:
    section = SectionTable("Bottles", ("wine", "bottles"), [("Barolo", 6), ("Rioja", 12)])
    text = Renderer().render("text", [report(sections=[section])])
    assert max(map(len, text.splitlines())) <= 80
    assert "week 2026-W48 (2026-11-23 to 2026-11-29) (America/Toronto)" in text
    assert "JOB HEALTH" in text and "BOTTLES" in text
    sync = next(line for line in text.splitlines() if line.startswith("sync "))
    assert sync.split() == ["sync", "10", "8", "1", "1", "0", "1.5s", "1m04s", "0"]
    assert "2026-11-30 08:00" in text  # last success, in the report's zone
    assert "never" in text  # cleanup never succeeded


def test_html_escapes_values_and_loads_nothing() -> None:
    section = SectionTable("<Notes>", ("note",), [("<script>alert(1)</script>",)])
    html = Renderer().render("html", [report(sections=[section])])
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;Notes&gt;" in html
    for external in ("src=", "href=", "<link", "@import", "url("):
        assert external not in html


def test_markdown_escapes_cells() -> None:
    section = SectionTable("Pipes", ("a|b",), [("x|y",)])
    md = Renderer().render("markdown", [report(sections=[section], job_health=None)])
    assert "| a\\|b |" in md and "| x\\|y |" in md and "Job health" not in md


def test_json_has_stable_keys_and_exact_numbers() -> None:
    section = SectionTable("S", ("n", "price", "day"), [(1, Decimal("9.95"), date(2026, 11, 24))])
    data = json.loads(Renderer().render("json", [report(sections=[section])]))
    (one,) = data["reports"]
    assert sorted(one) == sorted(
        ["title", "period", "generated_at", "recipient", "job_health", "sections"]
    )
    assert one["period"] == {
        "start": "2026-11-23",
        "end": "2026-11-30",
        "timezone": "America/Toronto",
        "label": "week 2026-W48 (2026-11-23 to 2026-11-29)",
    }
    assert one["sections"][0]["rows"] == [{"n": 1, "price": 9.95, "day": "2026-11-24"}]
    assert one["job_health"][0]["p95_duration_ms"] == 64000.0
    assert one["job_health"][1]["last_success"] is None


def test_an_operators_template_replaces_only_its_own_format(tmp_path: Path) -> None:
    (tmp_path / "report.txt.j2").write_text(
        "{% for r in reports %}Hello {{ r.recipient['name'] }}: {{ r.period.start }}{% endfor %}"
    )
    renderer = Renderer(tmp_path)
    one = report(recipient={"name": "Ann <ann>"})
    assert renderer.render("text", [one]) == "Hello Ann <ann>: 2026-11-23"
    assert "Ann &lt;ann&gt;" in renderer.render("html", [one])  # jobctl's own, escaped
    assert renderer.subject("Cellar: {{ recipient.name }}\n{{ period.label }}", one) == (
        "Cellar: Ann <ann> week 2026-W48 (2026-11-23 to 2026-11-29)"
    )


def test_a_broken_template_is_a_usage_error_naming_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "report.html.j2").write_text("<p>\n{% for x in %}\n")
    with pytest.raises(UsageError, match=r"report.html.j2, line 2: "):
        Renderer(tmp_path).check("{{ title }}")
    with pytest.raises(UsageError, match=r"report.subject: "):
        Renderer().check("{{ title")
    (tmp_path / "report.html.j2").write_text("{{ nothing_by_that_name }}")
    with pytest.raises(UsageError, match="nothing_by_that_name"):
        Renderer(tmp_path).render("html", [report()])
