"""Rendering: one result, two forms (a rich table on a terminal, JSON for machines).

stdout carries data, stderr carries talk. Colour is decided once, here: none off
a TTY, and with ``NO_COLOR`` no escape code at all (rich alone would still send
bold and dim). With ``--log-format json`` every line of talk on stderr is JSON.

rich is imported on first use, not at import time: ``jobctl --help`` and the
commands that print nothing should not pay for it. ``render.out`` / ``render.err``
are the two consoles, made on first access (module ``__getattr__``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobctl.durations import format_duration
from jobctl.jobspec import RunStatus

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

STATUS_STYLE: dict[str, str] = {
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "bold red",
    RunStatus.RUNNING: "cyan",
    RunStatus.CANCELLED: "yellow",
    RunStatus.SKIPPED: "dim",
    RunStatus.ABANDONED: "magenta",
}

_consoles: dict[str, Console] = {}


def _make_console(stderr: bool, width: int | None = None) -> Console:
    from rich.console import Console

    options: dict[str, Any] = {"stderr": stderr, "highlight": False, "width": width}
    if not stderr:
        options["soft_wrap"] = False
    console = Console(**options)
    if console.no_color:
        # rich's NO_COLOR drops colours but keeps bold, dim, underline: no colour
        # system means no style escape at all.
        console = Console(**options, color_system=None)
    return console


def __getattr__(name: str) -> Console:
    if name in ("out", "err"):
        if name not in _consoles:
            _consoles[name] = _make_console(stderr=name == "err")
        return _consoles[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def json_logs() -> bool:
    """True under ``--log-format json`` (read from the handler that set-up installed)."""
    from jobctl.logs import JsonFormatter

    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger("jobctl").handlers)


def live_allowed() -> bool:
    """A live (animated) line on stderr: only on a TTY, never with NO_COLOR or JSON logs."""
    return sys.stderr.isatty() and not __getattr__("err").no_color and not json_logs()


#: What rich rewrites in printed text (tabs expanded, these control codes dropped).
_REWRITTEN = frozenset("\t\x07\x08\x0b\x0c\x0d")


def write_plain(text: str) -> bool:
    """Write ``text`` and a newline on stderr, as ``err.print(Text(text), soft_wrap=True)``
    would off a terminal; False (nothing written) where only rich can say it the same.

    rich writes the text as it is when stderr is not a terminal and nothing makes it
    one (``FORCE_COLOR``, ``TTY_COMPATIBLE``), unless the text holds a tab or a
    control code that rich rewrites. A command that prints only its outcome line
    (a skipped tick) then never imports rich.
    """
    from jobctl.config import terminal_forced

    if terminal_forced():
        return False
    if not _REWRITTEN.isdisjoint(text):
        return False
    if sys.stderr.isatty():
        return False
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
    return True


def print_json(data: Any) -> None:
    from jobctl.shapes import dumps

    sys.stdout.write(dumps(data, indent=2) + "\n")


def say(message: str, *, level: str = "info", style: str = "", **fields: Any) -> None:
    """One line of talk on stderr: text, or a JSON log line under ``--log-format json``."""
    if json_logs():
        doc: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "logger": "jobctl.cli",
            "message": message,
            **fields,
        }
        from jobctl.shapes import dumps

        sys.stderr.write(dumps(doc) + "\n")
        sys.stderr.flush()
        return
    from rich.text import Text

    __getattr__("err").print(Text(message, style=style), soft_wrap=True)


def status_text(status: str | None) -> Text:
    from rich.text import Text

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


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[Mapping[str, Any]], str]
    justify: str = "left"


_RUN_COLUMNS: dict[str, _Column] = {
    "id": _Column("id", lambda r: str(r["id"]), "right"),
    "job": _Column("job", lambda r: str(r["job"])),
    "partition": _Column("partition", lambda r: r.get("partition") or "-"),
    "status": _Column("status", lambda r: r["status"] or "-"),
    "trigger": _Column("trigger", lambda r: r["trigger"] or "-"),
    "started": _Column("started", lambda r: when(r["started_at"])),
    "took": _Column("took", lambda r: ms(r["duration_ms"]), "right"),
    "records": _Column("new/upd/same/err", records, "right"),
    "host": _Column("host", lambda r: r.get("host") or "-"),
}
_RUN_ORDER = tuple(_RUN_COLUMNS)

#: ``runs list``: what a user needs at 80 columns, then what is added when it fits.
LIST_COLUMNS = ("id", "job", "status", "started", "took", "records")
LIST_EXTRA = ("trigger", "partition", "host")
#: Child runs of a backfill: the date is what tells them apart.
CHILD_COLUMNS = ("id", "job", "partition", "status", "took", "records")
CHILD_EXTRA = ("started", "trigger", "host")

_GAP = 2  # between two columns (padding 1 + 1, no padding at the table's edges)
_MIN_JOB = 6  # the job name is the one value shortened (with an ellipsis) to fit


def runs_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    width: int,
    wide: bool = False,
    title: str | None = None,
    columns: Sequence[str] = LIST_COLUMNS,
    extra: Sequence[str] = LIST_EXTRA,
) -> Table:
    """The runs as a table that fits ``width`` without cutting a value a user needs.

    ``columns`` are always shown, whole (only a very long job name is shortened);
    each of ``extra``, in order, is added if the table still fits. ``wide`` shows
    every column whatever the width (print the table without a width limit).
    """
    from rich.cells import cell_len
    from rich.table import Table

    cells = {
        name: [_RUN_COLUMNS[name].cell(row) for row in rows]
        for name in (*columns, *extra)
        if name in _RUN_COLUMNS
    }
    natural = {
        name: max([cell_len(_RUN_COLUMNS[name].header), *map(cell_len, values)])
        for name, values in cells.items()
    }

    def total(names: Iterable[str]) -> int:
        chosen = list(names)
        return sum(natural[n] for n in chosen) + _GAP * (len(chosen) - 1)

    chosen = [n for n in columns if n in natural]
    for name in extra:
        if name in natural and name not in chosen and (wide or total([*chosen, name]) <= width):
            chosen.append(name)
    chosen.sort(key=_RUN_ORDER.index)
    job_width = natural.get("job", 0)
    if not wide and "job" in chosen and total(chosen) > width:
        job_width = max(_MIN_JOB, job_width - (total(chosen) - width))

    table = Table(title=title, box=None, pad_edge=False, header_style="bold")
    for name in chosen:
        column = _RUN_COLUMNS[name]
        table.add_column(
            column.header,
            justify=column.justify,  # type: ignore[arg-type]
            no_wrap=True,
            overflow="ellipsis",
            max_width=job_width if name == "job" else None,
            min_width=None if name == "job" else natural[name],
        )
    for index, row in enumerate(rows):
        table.add_row(
            *(
                status_text(row["status"]) if name == "status" else cells[name][index]
                for name in chosen
            )
        )
    return table


def print_table(table: Table, *, wide: bool = False) -> None:
    """``table`` on stdout; ``wide``: every cell whole, lines longer than the terminal."""
    console = __getattr__("out")
    if wide:
        needed = _make_console(stderr=False, width=100_000).measure(table).maximum
        if needed > console.width:
            console = _make_console(stderr=False, width=needed)
    console.print(table)


def key_values(pairs: Iterable[tuple[str, Any]]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in pairs:
        if isinstance(value, Text):
            table.add_row(key, value)
        else:
            table.add_row(key, Text("-" if value is None else str(value)))
    return table
