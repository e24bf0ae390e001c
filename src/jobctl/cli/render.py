"""Rendering: one result, two forms (a rich table on a terminal, JSON for machines).

stdout carries data, stderr carries talk. Colour is decided once by rich: none
off a TTY, none with ``NO_COLOR``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from jobctl.durations import format_duration

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)

STATUS_STYLE = {
    "completed": "green",
    "failed": "bold red",
    "running": "cyan",
    "cancelled": "yellow",
    "skipped": "dim",
    "abandoned": "magenta",
}


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (date, timedelta)):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, indent=2, ensure_ascii=False) + "\n")


def status_text(status: str | None) -> Text:
    return Text(status or "-", style=STATUS_STYLE.get(status or "", ""))


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%m-%d %H:%M:%S")


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "never"
    now = now or datetime.now(UTC)
    return format_duration(now - moment) + " ago"


def ms(value: int | None) -> str:
    return "-" if value is None else format_duration(value / 1000)


def records(row: Mapping[str, Any]) -> str:
    return "{}/{}/{}/{}".format(
        row["records_new"], row["records_updated"], row["records_unchanged"], row["records_errors"]
    )


def runs_table(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title, box=None, pad_edge=False, header_style="bold")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("job", overflow="ellipsis", max_width=14, no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("trigger", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("new/upd/same/err", justify="right", no_wrap=True)
    table.add_column("host", overflow="ellipsis", max_width=12, no_wrap=True)
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["job"],
            status_text(row["status"]),
            row["trigger"],
            when(row["started_at"]),
            ms(row["duration_ms"]),
            records(row),
            row["host"],
        )
    return table


def key_values(pairs: Iterable[tuple[str, Any]]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in pairs:
        if isinstance(value, Text):
            table.add_row(key, value)
        else:
            table.add_row(key, Text("-" if value is None else str(value)))
    return table
