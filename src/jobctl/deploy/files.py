"""The deployment files, rendered from the Jinja2 templates in ``templates/``.

The environment is not the report one (jobctl.reports.render): reports autoescape HTML
and let the operator replace templates; these files are plain text whose every value
comes from the validated config, and whose templates are part of jobctl's contract
(``jobctl deploy --check`` compares with them). Both use StrictUndefined: a misspelt
name is an error, never a blank line in a unit file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from jobctl.config import Settings
from jobctl.deploy import CRONTAB, DeployedJob
from jobctl.deploy.cron import utc_line
from jobctl.schedule import to_systemd_oncalendar

TEMPLATES = Path(__file__).parent / "templates"
ALERT_UNIT = "jobctl-alert@.service"
#: The web console's unit / Deployment + Service, written when ``[web] enabled``.
WEB_UNIT = "jobctl-web"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=False,  # unit files, crontab and YAML: not HTML
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # JSON strings are YAML strings: every value in a manifest is quoted safely.
    env.filters["q"] = lambda value: json.dumps(value, ensure_ascii=False)
    env.filters["span"] = _span
    return env


def _span(value: timedelta) -> str:
    """A time span as systemd writes it: ``3h``, ``90min``, ``45s``."""
    seconds = int(value.total_seconds())
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _render(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)


def _delay(job: DeployedJob) -> timedelta | None:
    """RandomizedDelaySec=: spreads hosts' starts where a few minutes change nothing
    (a job run at most hourly); none for frequent jobs and the worker, which must stay
    within their minute."""
    if job.interval < timedelta(hours=1):
        return None
    return min(timedelta(minutes=5), job.interval / 12)


def _systemd(settings: Settings, jobs: list[DeployedJob]) -> dict[str, str]:
    files = {}
    for job in jobs:
        calendar = to_systemd_oncalendar(job.cron, job.zone)
        context = {"job": job, "deploy": settings.deploy, "alert_unit": ALERT_UNIT}
        files[f"{job.unit}.service"] = _render("systemd/job.service.j2", **context)
        files[f"{job.unit}.timer"] = _render(
            "systemd/job.timer.j2", calendar=calendar, delay=_delay(job), **context
        )
    files[ALERT_UNIT] = _render("systemd/alert@.service.j2", deploy=settings.deploy)
    files["jobctl.sysusers"] = _render("systemd/jobctl.sysusers.j2", deploy=settings.deploy)
    if settings.web.enabled:
        from jobctl.config_web import is_loopback

        files[f"{WEB_UNIT}.service"] = _render(
            "systemd/web.service.j2",
            deploy=settings.deploy,
            web=settings.web,
            loopback=is_loopback(settings.web.host),
            privileged_port=settings.web.port < 1024,
        )
    return files


def _cron(settings: Settings, jobs: list[DeployedJob], today: date) -> dict[str, str]:
    lines = [(job, utc_line(job.name, job.cron, job.zone, today)) for job in jobs]
    bin_dir = str(Path(settings.deploy.executable).parent)
    path = ":".join(dict.fromkeys([bin_dir, "/usr/local/bin", "/usr/bin", "/bin"]))
    text = _render("crontab.j2", lines=lines, deploy=settings.deploy, path=path)
    return {CRONTAB: text}


def _k8s(settings: Settings, jobs: list[DeployedJob]) -> dict[str, str]:
    files = {}
    for job in jobs:
        # A tick later than this is dropped: at most half the time to the next one, and
        # at most an hour (a Job that starts hours late serves a stale slot anyway).
        deadline = int(min(job.interval / 2, timedelta(hours=1)).total_seconds())
        files[f"{job.unit}.yaml"] = _render(
            "k8s/cronjob.yaml.j2", job=job, deploy=settings.deploy, deadline=deadline
        )
    files["configmap.yaml"] = _render(
        "k8s/configmap.yaml.j2", deploy=settings.deploy, config=_config_text(settings)
    )
    if settings.web.enabled:
        context = {"deploy": settings.deploy, "web": settings.web}
        files[f"{WEB_UNIT}.yaml"] = _render("k8s/web.yaml.j2", **context)
        files[f"{WEB_UNIT}-service.yaml"] = _render("k8s/web-service.yaml.j2", **context)
    return files


def _config_text(settings: Settings) -> Mapping[str, Any]:
    """The config file itself, for the ConfigMap: the same file that made the CronJobs."""
    path = settings.config_path
    text = "" if path is None else path.read_text(encoding="utf-8")
    lines = text.splitlines()
    # A YAML block scalar keeps every line as it is, unless the first one is indented.
    block = bool(lines) and not lines[0][:1].isspace() and "\t" not in text
    return {"block": block, "lines": lines, "text": text}


def render_files(
    target: str, settings: Settings, jobs: list[DeployedJob], today: date
) -> dict[str, str]:
    if target == "systemd":
        return _systemd(settings, jobs)
    if target == "cron":
        return _cron(settings, jobs, today)
    return _k8s(settings, jobs)
