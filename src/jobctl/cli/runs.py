"""``jobctl runs list`` and ``jobctl runs show``."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer

from jobctl.cli import render
from jobctl.cli.options import duration
from jobctl.cli.state import State
from jobctl.jobspec import RunStatus

runs_app = typer.Typer(help="The run ledger: what ran, when, how it ended.", no_args_is_help=True)


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Option("--job", help="Only this job.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Started within, e.g. 7d.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many (0: all).")] = 20,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide", help="Every column (trigger, partition, host), however wide the terminal."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON array on stdout.")] = False,
) -> None:
    """Runs, newest first. Columns that do not fit the terminal are left out (see --wide)."""
    state: State = ctx.obj
    rows = state.app.list_runs(
        job=job, status=status, since=duration(since, "--since"), limit=limit
    )
    rows = state.redactor.data(rows)  # rows stored before a secret was known, too
    if as_json:
        render.print_json(rows)
    elif rows:
        table = render.runs_table(rows, width=render.out.width, wide=wide)
        render.print_table(table, wide=wide)
    else:
        render.say("no runs match")


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(help="The run's id.", metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON object on stdout.")] = False,
) -> None:
    """Every field of a run: parameters, error and traceback, child runs, last log lines."""
    from rich.text import Text

    state: State = ctx.obj
    run = state.redactor.data(state.app.show_run(run_id))
    if as_json:
        render.print_json(run)
        return
    children = run.pop("children")
    tail = run.pop("log_tail")
    detail = run.pop("error_detail")
    if children and isinstance(run.get("stats"), dict):
        # A backfill keeps its children's outcomes in stats too: shown once, as the table.
        run["stats"] = {k: v for k, v in run["stats"].items() if k != "children"}
    pairs: list[tuple[str, Any]] = []
    for key, value in run.items():
        if key == "status":
            value = render.status_text(value)
        elif key in ("params", "stats"):
            value = json.dumps(value, indent=1, default=str) if value else "{}"
        elif key == "duration_ms":
            value = f"{value} ({render.ms(value)})" if value is not None else None
        pairs.append((key, value))
    render.out.print(render.key_values(pairs))
    if detail:
        render.out.print(Text("\ntraceback:", style="bold"))
        render.out.print(Text(detail.rstrip()), soft_wrap=True)
    if children:
        render.out.print()
        table = render.runs_table(
            children,
            width=render.out.width,
            title=f"child runs ({len(children)})",
            columns=render.CHILD_COLUMNS,
            extra=render.CHILD_EXTRA,
        )
        render.print_table(table)
        for child in children:
            if child["status"] != RunStatus.COMPLETED and child.get("error_message"):
                render.out.print(
                    Text(f"run {child['id']}: {child['error_message']}"), soft_wrap=True
                )
    if tail:
        render.out.print(Text(f"\nlast {len(tail)} log lines:", style="bold"))
        for line in tail:
            render.out.print(Text(line), soft_wrap=True)


@runs_app.command("gaps")
def runs_gaps(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="A job with a schedule.")],
    since: Annotated[str, typer.Option("--since", help="How far back, e.g. 30d.")] = "30d",
    as_json: Annotated[bool, typer.Option("--json", help="JSON array on stdout.")] = False,
) -> None:
    """Scheduled fire times (from the job's schedule) that have no completed run."""
    from zoneinfo import ZoneInfo

    state: State = ctx.obj
    window = duration(since, "--since")
    assert window is not None
    gaps = state.app.gaps(job, window)
    zone = ZoneInfo(state.settings.job(job).timezone)
    if as_json:
        render.print_json(
            [
                {
                    "job": job,
                    "scheduled_for": g.scheduled_for,
                    "local_time": g.scheduled_for.astimezone(zone).isoformat(),
                    "date": g.served_date.isoformat() if g.served_date else None,
                }
                for g in gaps
            ]
        )
        return
    if not gaps:
        render.say(f"no gaps: every {job} slot in the last {since} has a completed run")
        return
    for g in gaps:
        local = g.scheduled_for.astimezone(zone).strftime("%Y-%m-%d %a %H:%M %Z")
        served = f"  (date {g.served_date})" if g.served_date else ""
        render.out.print(f"{local}{served}")
    render.say(f"{len(gaps)} slot(s) of {job} without a completed run since {since} ago")


@runs_app.command("mark-crashed")
def runs_mark_crashed(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job whose unit failed.", metavar="JOB")],
    unit: Annotated[
        str | None, typer.Option("--unit", help="The failed unit (systemd's $MONITOR_UNIT).")
    ] = None,
    result: Annotated[
        str | None,
        typer.Option("--result", help="Its result ($MONITOR_SERVICE_RESULT), e.g. oom-kill."),
    ] = None,
    exit_status: Annotated[
        str | None,
        typer.Option("--exit-status", help="Its exit status or signal ($MONITOR_EXIT_STATUS)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON object on stdout.")] = False,
) -> None:
    """Record a crashed run: the OnFailure= hook of the systemd units (alerts included)."""
    state: State = ctx.obj
    report = state.app.mark_crashed(
        job, unit=unit or None, result=result or None, exit_status=exit_status or None
    )
    if as_json:
        render.print_json(dataclasses.asdict(report))
    else:
        render.say(state.redact(report.message), action="runs.mark_crashed")


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
