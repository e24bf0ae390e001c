"""Deployment files generated from jobctl.toml: systemd units, a crontab, CronJobs.

One config is the source of truth: each enabled ``[jobs.NAME]`` with a ``schedule``
becomes a systemd ``.service`` + ``.timer``, a crontab line and a CronJob, plus the
schedule worker (``jobctl schedule run-due`` every minute), and the web console
(``jobctl serve``) when ``[web] enabled``. The ``[deploy]`` table says
what the schedules do not (install paths, user, image, resources, namespace).

Pure except :func:`write`: :func:`render` returns file names and contents, so
``--check`` compares them with a directory and a test compares them with deploy/.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Literal, get_args

from jobctl.config import Settings
from jobctl.config_models import JobConfig
from jobctl.errors import UsageError
from jobctl.jobspec import SCHEDULE_WORKER

Target = Literal["systemd", "cron", "k8s"]
TARGETS: tuple[str, ...] = get_args(Target)
#: The crontab's file name in its directory (installed as /etc/cron.d/jobctl).
CRONTAB = "crontab.example"
WORKER = SCHEDULE_WORKER
#: Built-in jobs a timer can start without arguments (backfill needs --from/--to).
_BUILTIN_COMMANDS = ("sync", "snapshot", "cleanup", "report")
_SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
#: A CronJob's name may have 52 characters (its Jobs get a suffix).
_MAX_NAME = 52


@dataclass(frozen=True)
class DeployedJob:
    """One scheduled thing as every deployment names and starts it."""

    name: str  # the job's name in jobctl.toml (WORKER for the schedule worker)
    unit: str  # jobctl-<slug>: unit, CronJob and syslog tag
    argv: tuple[str, ...]  # jobctl's arguments, before --trigger
    cron: str
    zone: str
    words: str  # the schedule in words
    takes_trigger: bool = True
    #: shortest time between two fires: decides RandomizedDelaySec= and the deadline
    interval: timedelta = timedelta(days=1)
    #: a backstop run time for the unit / the Job (jobctl's own `timeout` comes first)
    max_runtime: timedelta = timedelta(hours=3)

    def args(self, trigger: str) -> list[str]:
        """jobctl's arguments; ``trigger`` says which scheduler started the run."""
        extra = ("--trigger", trigger) if self.takes_trigger else ()
        return [*self.argv, *extra]

    def command(self, trigger: str) -> str:
        return " ".join(self.args(trigger))


@dataclass(frozen=True)
class Rendered:
    files: Mapping[str, str]
    #: what the operator should know (disabled jobs left out, ...), for stderr
    notes: list[str] = field(default_factory=list)


def _slug(name: str) -> str:
    slug = name.lower().replace("_", "-")
    if not _SLUG.match(slug) or len(f"jobctl-{slug}") > _MAX_NAME:
        raise UsageError(
            f"job {name!r} cannot be deployed: its name must be letters, digits, '-' or '_' "
            f"(at most {_MAX_NAME - 7} characters) to name a unit and a CronJob"
        )
    return slug


def _interval(expr: str, zone: str) -> timedelta:
    from jobctl.schedule import parse_schedule

    schedule = parse_schedule(expr, zone)
    fires = schedule.next_fire_times(datetime(2026, 1, 5, tzinfo=UTC), 20)
    return min((b - a for a, b in pairwise(fires)), default=timedelta(days=1))


def _max_runtime(cfg: JobConfig) -> timedelta:
    backstop = timedelta(hours=3)
    if cfg.timeout is None:
        return backstop
    # Every attempt may use the whole timeout; twice that leaves jobctl room to end first.
    return max(backstop, cfg.timeout * (cfg.retries + 1) * 2)


def deployed_jobs(settings: Settings) -> tuple[list[DeployedJob], list[str]]:
    """The enabled scheduled jobs and the worker, by unit name; and the notes."""
    from jobctl.schedule import parse_schedule

    jobs: dict[str, DeployedJob] = {}
    notes = []
    for name, cfg in sorted(settings.jobs.items()):
        if cfg.schedule is None:
            continue
        if not cfg.enabled:
            notes.append(f"jobs.{name} is disabled: no files for it (enable it to deploy it)")
            continue
        if name == "backfill":
            raise UsageError(
                "jobs.backfill.schedule: backfill needs --from/--to, it cannot be timed"
            )
        argv = (name,) if name in _BUILTIN_COMMANDS else ("run", name)
        unit = f"jobctl-{_slug(name)}"
        web = settings.web.enabled and unit == "jobctl-web"  # the console's unit
        if unit in jobs or unit == f"jobctl-{WORKER}" or web:
            raise UsageError(f"job {name!r} would be deployed as {unit}, a name already in use")
        jobs[unit] = DeployedJob(
            name=name,
            unit=unit,
            argv=argv,
            cron=cfg.schedule,
            zone=cfg.timezone,
            words=parse_schedule(cfg.schedule, cfg.timezone).describe(),
            interval=_interval(cfg.schedule, cfg.timezone),
            max_runtime=_max_runtime(cfg),
        )
    worker = DeployedJob(
        name=WORKER,
        unit=f"jobctl-{WORKER}",
        argv=("schedule", "run-due"),
        cron="* * * * *",
        zone="UTC",
        words="every minute",
        takes_trigger=False,
        interval=timedelta(minutes=1),
    )
    return [*jobs.values(), worker], notes


def render(target: str, settings: Settings, today: date | None = None) -> Rendered:
    """The files of deployment ``target`` for this configuration."""
    from jobctl.deploy import files as templates

    if target not in TARGETS:
        raise UsageError(f"unknown deployment {target!r} (use {', '.join(TARGETS)})")
    jobs, notes = deployed_jobs(settings)
    files = templates.render_files(target, settings, jobs, today or date.today())
    return Rendered(files, notes)


def _ours(target: str, path: Path) -> bool:
    """Whether a file in a checked directory is one ``jobctl deploy`` would write."""
    if target == "systemd":
        return path.name.startswith("jobctl") and path.suffix in (".service", ".timer", ".sysusers")
    if target == "k8s":
        return path.suffix == ".yaml"
    return path.name == CRONTAB


def differences(rendered: Rendered, target: str, directory: Path) -> list[str]:
    """The files of ``directory`` that differ from ``rendered``: changed, missing, or
    left over (a disabled or removed job's files), sorted."""
    if not directory.is_dir():
        raise UsageError(f"--check {directory}: not a directory")
    differ = []
    for name, text in rendered.files.items():
        path = directory / name
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            differ.append(f"{path}: missing")
            continue
        if current != text:
            differ.append(f"{path}: differs")
    for path in directory.iterdir():
        if path.is_file() and _ours(target, path) and path.name not in rendered.files:
            differ.append(f"{path}: not generated from the config")
    return sorted(differ)


def write(rendered: Rendered, directory: Path) -> list[Path]:
    """Write every file atomically (a temp file in the same directory, then rename):
    a timer or cron reading the directory never sees half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered.files.items():
        path = directory / name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(path)
    return written


@dataclass(frozen=True)
class DeployResult:
    files: Mapping[str, str]
    notes: list[str]
    written: list[Path] = field(default_factory=list)
    #: ``--check``: one line per file that differs (empty: all match)
    differences: list[str] = field(default_factory=list)


def deploy(
    target: str, settings: Settings, *, out: Path | None = None, check: Path | None = None
) -> DeployResult:
    """Render ``target``'s files, then write them to ``out`` or compare them with ``check``."""
    if out is not None and check is not None:
        raise UsageError("give --out or --check, not both")
    rendered = render(target, settings)
    written = write(rendered, out) if out is not None else []
    differ = differences(rendered, target, check) if check is not None else []
    return DeployResult(rendered.files, rendered.notes, written, differ)
