"""``jobctl deploy systemd|cron|k8s``: the deployment files, from the config."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from jobctl.cli import render
from jobctl.cli.state import State


def deploy_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="systemd, cron or k8s.", metavar="TARGET")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the files into this directory (each atomically)."),
    ] = None,
    check: Annotated[
        Path | None,
        typer.Option(
            "--check",
            help="Compare with the files in this directory; exit 1 listing those that differ.",
        ),
    ] = None,
) -> int:
    """Unit files, a crontab or CronJob manifests generated from the job schedules.

    Every enabled [jobs.NAME] with a schedule, and the schedule worker; without --out
    or --check the files are printed on stdout."""
    state: State = ctx.obj
    result = state.app.deploy(target, out=out, check=check)
    for note in result.notes:
        render.say(note, level="warning", action="deploy.note")
    if check is not None:
        for line in result.differences:
            print(line)
        if result.differences:
            render.say(
                f"{len(result.differences)} file(s) differ from the config: regenerate them "
                f"with `jobctl deploy {target} --out {check}`",
                level="error",
                action="deploy.check",
            )
            return 1
        render.say(f"{check}: every file matches the config", action="deploy.check")
    elif out is not None:
        render.say(f"wrote {len(result.written)} file(s) to {out}", action="deploy.write")
    else:
        many = len(result.files) > 1
        for name, text in result.files.items():
            if many:
                sys.stdout.write(f"#### {name}\n")
            sys.stdout.write(text)
    return 0


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy_command)
