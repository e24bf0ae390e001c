"""The console's HTML pages: Runs, Run, Jobs, Schedules (add, cancel) and Health.

``router`` is included by :func:`jobctl.web.app.create_app` behind
:func:`jobctl.web.security.reader`; the two forms take
:func:`jobctl.web.security.writer` and check the CSRF token (hidden field ``csrf``)
before anything else. Each page makes the library calls its CLI command makes —
:meth:`App.list_runs` (``runs list``), :meth:`App.show_run` (``runs show``),
:meth:`App.jobs_overview` (``jobs list``), :func:`jobctl.health.statuses`
(``status``), :mod:`jobctl.scheduling` (``schedule add|list|cancel``) — and renders
what they return (templates: :mod:`jobctl.web.html`). A :class:`UsageError` is shown
as the CLI's one-line message on the page, with status 422, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from jobctl import __version__
from jobctl.durations import parse_duration
from jobctl.errors import JobctlError, UsageError
from jobctl.jobspec import RunStatus
from jobctl.web import html
from jobctl.web.security import Principal, check_csrf, csrf_token, reader, writer
from jobctl.when import EVERY, IMMINENT, iso_utc, local_text

if TYPE_CHECKING:
    from jobctl.app import App
    from jobctl.db.scheduled import Scheduled
    from jobctl.redact import Redactor

router = APIRouter(include_in_schema=False)

Reader = Annotated[Principal | None, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]

#: Runs per page offered by the Runs page (any from 1 to MAX_LIMIT is taken).
PAGE_SIZES = (20, 50, 100, 200)
DEFAULT_LIMIT = 20  # as `runs list --limit`
MAX_LIMIT = 500
#: How far back the pager goes (runs skipped + shown): further back, narrow the filters.
MAX_DEPTH = 10_000
#: Schedules listed (as ``schedule list``'s default limit, doubled for a page).
SCHEDULE_LIMIT = 200
#: Seconds between two reloads of a page that shows what changes by itself.
REFRESH = 30
SCHEDULE_STATUSES = ("pending", "running", "triggered", "cancelled", "failed")


def _app(request: Request) -> App:
    app: App = request.app.state.app
    return app


def _context(request: Request, principal: Principal | None, **values: Any) -> dict[str, Any]:
    """What every page's template gets (base.html), then the page's own ``values``."""
    now = datetime.now(UTC)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    context: dict[str, Any] = {
        "principal": principal,
        "here": here,
        "now": now,
        "now_text": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "version": __version__,
        "asset_version": html.asset_version(),
        "redact": _cached_redaction(request.app.state.redactor),
        "refresh": 0,
        "error": None,
        "notice": None,
    }
    context.update(values)
    return context


@lru_cache(maxsize=4)
def _cached_redaction(redactor: Redactor) -> Callable[[str], str]:
    """The server's redaction of one string, memoised: a page prints the same values
    ("completed", a host name) many times, and the redactor's secrets never change."""
    return lru_cache(maxsize=8192)(redactor.text)


def _job_names(app: App) -> list[str]:
    """Configured and registered jobs (registered: when the jobs module imports)."""
    names = set(app.settings.jobs)
    # A broken jobs module: the configured ones (the Jobs page says what is wrong).
    with suppress(JobctlError):
        names |= set(app.jobs)
    return sorted(names)


@router.get("/")
def home() -> Response:
    return RedirectResponse("/runs", status_code=303)


# -- runs ---------------------------------------------------------------------------


@router.get("/runs")
def runs_page(
    request: Request,
    principal: Reader,
    job: str = "",
    status: str = "",
    since: str = "",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    """``runs list --job --status --since``, newest first, one page of ``limit``."""
    app = _app(request)
    form = {"job": job, "status": status, "since": since, "limit": limit}
    rows: list[dict[str, Any]] = []
    error, code, more = None, 200, False
    try:
        if limit * page > MAX_DEPTH:
            raise UsageError(
                f"page {page} is more than {MAX_DEPTH} runs back: narrow the filters "
                "(job, status, since)"
            )
        # ``--since`` as the CLI reads it: a duration, zero refused.
        window = parse_duration(since, what="--since", allow_zero=False) if since else None
        # One more than the page: whether there is an older one.
        found = app.list_runs(
            job=job or None, status=status or None, since=window, limit=limit * page + 1
        )
        more = len(found) > limit * page
        rows = found[limit * (page - 1) : limit * page]
    except UsageError as exc:
        error, code = str(exc), 422

    def url(to_page: int) -> str:
        query = {k: v for k, v in form.items() if v and (k != "limit" or v != DEFAULT_LIMIT)}
        return "/runs?" + urlencode({**query, **({"page": to_page} if to_page > 1 else {})})

    context = _context(
        request,
        principal,
        title="Runs",
        nav="runs",
        refresh=REFRESH,
        error=error,
        form=form,
        rows=rows,
        page=page,
        first=limit * (page - 1) + 1,
        last=limit * (page - 1) + len(rows),
        newer_url=url(page - 1) if page > 1 else None,
        older_url=url(page + 1) if more and limit * (page + 1) <= MAX_DEPTH else None,
        too_deep=more and limit * (page + 1) > MAX_DEPTH,
        run_statuses=list(RunStatus),
        page_sizes=PAGE_SIZES,
        job_names=_job_names(app),
    )
    return html.render("runs.html", context, code)


@router.get("/runs/{run_id}")
def run_page(request: Request, principal: Reader, run_id: int) -> Response:
    """``runs show ID``: every field, the error and traceback, children, log tail."""
    try:
        run = _app(request).show_run(run_id)
    except UsageError as exc:  # run N does not exist
        context = _context(request, principal, title=f"Run {run_id}", nav="runs", back="/runs")
        context["error"] = str(exc)
        return html.render("error.html", context, 404)
    children = run.pop("children")
    log_tail = run.pop("log_tail", None) or []
    if children and isinstance(run.get("stats"), dict):
        # A backfill keeps its children's outcomes in stats too: shown once, as the table.
        run["stats"] = {k: v for k, v in run["stats"].items() if k != "children"}
    fields = [(key, value) for key, value in run.items() if key != "error_detail"]
    context = _context(
        request,
        principal,
        title=f"Run {run['id']} ({run['job']})",
        nav="runs",
        refresh=5 if run["status"] == RunStatus.RUNNING else 0,
        run=run,
        fields=fields,
        children=children,
        log_tail=log_tail,
    )
    return html.render("run.html", context)


# -- jobs and health ----------------------------------------------------------------


@router.get("/jobs")
def jobs_page(request: Request, principal: Reader) -> Response:
    """``jobs list``, with each job's health as ``status`` says it."""
    from jobctl.health import statuses

    app = _app(request)
    now = datetime.now(UTC)
    infos = app.jobs_overview(now)
    health = {s.job: s for s in statuses(app, now)}
    context = _context(
        request,
        principal,
        title="Jobs",
        nav="jobs",
        refresh=REFRESH,
        jobs=infos,
        health=health,
        now=now,
    )
    return html.render("jobs.html", context)


@router.get("/health")
def health_page(request: Request, principal: Reader) -> Response:
    """What ``jobctl status`` says (and whether it would exit 0)."""
    from jobctl.health import statuses

    now = datetime.now(UTC)
    found = statuses(_app(request), now)
    context = _context(
        request,
        principal,
        title="Health",
        nav="health",
        refresh=REFRESH,
        statuses=found,
        unhealthy=sum(1 for s in found if not s.healthy),
        now=now,
    )
    return html.render("health.html", context)


# -- schedules ----------------------------------------------------------------------


@dataclass
class _AddForm:
    """The schedule form's fields, as typed (shown again with an error)."""

    job: str = ""
    date: str = ""
    time: str = ""
    every: str = ""
    params: str = ""


def _added(row: Scheduled) -> str:
    """What ``schedule add`` says on stderr."""
    repeat = f", every {row.every}" if row.every else ""
    local = local_text(row.run_at, row.timezone)
    return (
        f"schedule {row.id}: {row.job} at {iso_utc(row.run_at)} ({local} in {row.timezone}){repeat}"
    )


def _schedules(
    request: Request,
    principal: Principal | None,
    *,
    status: str = "",
    job: str = "",
    form: _AddForm | None = None,
    error: str | None = None,
    notice_for: tuple[str, int] | None = None,
    code: int = 200,
) -> Response:
    from jobctl import scheduling

    app = _app(request)
    form = form or _AddForm(job=job)
    rows: list[Scheduled] = []
    try:
        rows = scheduling.list_schedules(
            app, status=status or None, job=job or None, limit=SCHEDULE_LIMIT
        )
    except UsageError as exc:
        error, code = error or str(exc), 422
    notice = None
    if notice_for is not None:
        what, schedule_id = notice_for
        for row in rows:
            if row.id == schedule_id:
                notice = (
                    _added(row)
                    if what == "added"
                    else f"schedule {row.id}: {row.job} at {iso_utc(row.run_at)} cancelled"
                )
    names = _job_names(app)
    default_zone = app.settings.timezone
    context = _context(
        request,
        principal,
        title="Schedules",
        nav="schedules",
        refresh=60,
        error=error,
        notice=notice,
        rows=rows,
        filters={"status": status, "job": job},
        form=form,
        form_zone=app.settings.job(form.job).timezone if form.job in names else default_zone,
        default_zone=default_zone,
        job_zones=[(name, app.settings.job(name).timezone) for name in names],
        schedule_statuses=SCHEDULE_STATUSES,
        every_choices=EVERY,
        imminent=IMMINENT,
        can_write=principal is not None,
        csrf=csrf_token(request) if principal is not None else "",
    )
    return html.render("schedules.html", context, code)


@router.get("/schedules")
def schedules_page(
    request: Request,
    principal: Reader,
    status: str = "",
    job: str = "",
    added: int | None = None,
    cancelled: int | None = None,
) -> Response:
    """``schedule list`` with a live countdown, and the form that ``schedule add``s."""
    notice = ("added", added) if added else ("cancelled", cancelled) if cancelled else None
    return _schedules(request, principal, status=status, job=job, notice_for=notice)


@router.post("/schedules")
def add_schedule(
    request: Request,
    principal: Writer,
    csrf: Annotated[str, Form()] = "",
    job: Annotated[str, Form()] = "",
    date: Annotated[str, Form()] = "",
    time: Annotated[str, Form()] = "",
    every: Annotated[str, Form()] = "",
    params: Annotated[str, Form()] = "",
) -> Response:
    """``schedule add JOB --at 'DATE TIME' [--param K=V]... [--every E] --by NAME``:
    the date and time are a wall time in the job's zone, as ``--at`` reads one."""
    from jobctl import scheduling

    # The CLI's --param parser (same rules, same messages).
    from jobctl.params import parse_params

    check_csrf(request, csrf)
    form = _AddForm(job.strip(), date.strip(), time.strip(), every, params)
    # One KEY=VALUE a line, each as one --param (blank lines are none).
    lines = [line.removesuffix("\r") for line in params.split("\n") if line.strip()]
    try:
        row = scheduling.add(
            _app(request),
            form.job,
            f"{form.date} {form.time}".strip(),
            parse_params(lines),
            by=principal.name,
            every=every or None,
        )
    except UsageError as exc:
        return _schedules(request, principal, form=form, error=str(exc), code=422)
    return RedirectResponse(f"/schedules?added={row.id}", status_code=303)


@router.post("/schedules/{schedule_id}/cancel")
def cancel_schedule(
    request: Request,
    principal: Writer,
    schedule_id: int,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """``schedule cancel ID``: a pending schedule only (else the CLI's message, 422)."""
    from jobctl import scheduling

    check_csrf(request, csrf)
    try:
        scheduling.cancel(_app(request), schedule_id)
    except UsageError as exc:
        return _schedules(request, principal, error=str(exc), code=422)
    return RedirectResponse(f"/schedules?cancelled={schedule_id}", status_code=303)


__all__ = ["router"]
