"""Rendering at a given width (rich Console), and the sync progress in its three forms."""

from __future__ import annotations

import io
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

from jobctl.cli import render
from jobctl.cli.sync import PhaseLog, live_progress

HOST = "ip-172-31-22-10.ec2.internal"


def run_row(run_id: int, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": run_id,
        "job": "table_sizes",
        "status": "completed",
        "trigger": "backfill",
        "partition": "2026-11-22",
        "started_at": datetime(2026, 11, 23, 6, 0, 5, tzinfo=UTC),
        "duration_ms": 3_723_456,
        "records_new": 240_123,
        "records_updated": 12_345,
        "records_unchanged": 227_000,
        "records_errors": 7,
        "host": HOST,
    }
    row.update(over)
    return row


ROWS = [
    run_row(104_217),
    run_row(104_216, status="abandoned", duration_ms=61_000),
    run_row(104_215, job="sync", status="cancelled", trigger="schedule", duration_ms=None),
    run_row(9, status="failed", duration_ms=12),
]


def rendered(table: Any, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
    console.print(table)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in out.splitlines()]


def cells(row: dict[str, Any]) -> list[str]:
    """What a user needs of a run: each must be in its line, whole."""
    return [
        str(row["id"]),
        row["job"],
        row["status"],
        render.when(row["started_at"]),
        render.ms(row["duration_ms"]),
        render.records(row),
    ]


def test_runs_at_80_columns_keep_every_needed_value_whole() -> None:
    lines = rendered(render.runs_table(ROWS, width=80), 80)
    assert max(map(len, lines)) <= 80
    assert "…" not in "".join(lines)
    assert lines[0].split() == ["id", "job", "status", "started", "took", "new/upd/same/err"]
    for line, row in zip(lines[1:], ROWS, strict=True):
        for value in cells(row):
            assert value in line, (value, line)
    assert render.ms(3_723_456) in lines[1] and "1h" in lines[1]


def test_wider_terminal_adds_trigger_partition_host_in_that_order() -> None:
    at_100 = rendered(render.runs_table(ROWS, width=100), 100)
    assert "trigger" in at_100[0] and "host" not in at_100[0]
    assert max(map(len, at_100)) <= 100
    at_160 = rendered(render.runs_table(ROWS, width=160), 160)
    assert at_160[0].split() == [
        "id",
        "job",
        "partition",
        "status",
        "trigger",
        "started",
        "took",
        "new/upd/same/err",
        "host",
    ]
    assert all(HOST in line for line in at_160[1:])


def test_wide_shows_every_column_at_80() -> None:
    table = render.runs_table(ROWS, width=80, wide=True)
    lines = rendered(table, 200)
    assert "trigger" in lines[0] and "partition" in lines[0] and "host" in lines[0]
    for line, row in zip(lines[1:], ROWS, strict=True):
        assert HOST in line and row["trigger"] in line and row["partition"] in line


def test_only_a_very_long_job_name_is_shortened() -> None:
    rows = [run_row(1, job="a_job_name_that_is_far_too_long_to_fit_anywhere")]
    lines = rendered(render.runs_table(rows, width=80), 80)
    assert max(map(len, lines)) <= 80
    assert "a_job_name" in lines[1] and "…" in lines[1]
    for value in cells(rows[0])[2:]:
        assert value in lines[1]


def test_child_runs_lead_with_the_date() -> None:
    table = render.runs_table(
        ROWS, width=80, columns=render.CHILD_COLUMNS, extra=render.CHILD_EXTRA
    )
    lines = rendered(table, 80)
    assert lines[0].split()[:4] == ["id", "job", "partition", "status"]
    assert all("2026-11-22" in line for line in lines[1:])


def live_output(*calls: tuple[Any, ...], dry_run: bool = False) -> str:
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    with live_progress(console, dry_run=dry_run) as report:
        for call in calls:
            what, records, *phase = call
            if phase:
                report(what, records, phase=phase[0])
            else:
                report(what, records)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_live_line_shows_each_phase_with_the_final_count() -> None:
    out = live_output(
        ("pn", 0, "reading"),
        ("pn", 4_096),
        ("pn", 50_000, "applying"),
        ("pn", 50_000, "committing"),
    )
    assert "pn: reading 0 records" in out
    assert "pn: applying 50,000 records" in out
    assert "pn: committing 50,000 records" in out


def test_live_line_of_a_dry_run_says_rolling_back() -> None:
    out = live_output(("pn", 10, "applying"), ("pn", 10, "committing"), dry_run=True)
    assert "pn: rolling back (dry run) 10 records" in out and "committing" not in out


def test_phase_log_has_each_phase_and_its_timing(caplog: pytest.LogCaptureFixture) -> None:
    report = PhaseLog()
    with caplog.at_level(logging.DEBUG, logger="jobctl.cli.sync"):
        report("pn", 0, phase="downloading")
        report("pn", 0, phase="reading")
        report("pn", 4_096)
        time.sleep(0.02)
        report("pn", 50_000, phase="applying")
        report("pn", 50_000, phase="committing")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "pn: downloading"
    assert lines[1].startswith("pn: downloaded in ") and lines[1].endswith("s; reading")
    assert lines[2].startswith("pn: read 50,000 records in ") and lines[2].endswith("; applying")
    assert lines[3].startswith("pn: applied in ") and lines[3].endswith("; committing")
    assert len(lines) == 4  # a count while reading is logged every few seconds only
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}
