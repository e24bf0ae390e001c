"""The JSON API: the same library calls and the same shapes as the CLI's ``--json``.

======================================  =============================================
``GET /api/runs?job=&status=&since=&limit=20``  ``jobctl runs list --json``
``GET /api/runs/{id}``                 ``jobctl runs show ID --json``
``GET /api/jobs``                      ``jobctl jobs list --json``
``GET /api/status``                    ``jobctl status --json`` (200 whatever the health)
``POST /api/jobs/{name}/runs``         ``jobctl run NAME --trigger web --by WHO``: 202
``GET /api/schedules``                 ``jobctl schedule list --json``
``POST /api/schedules``                ``jobctl schedule add``: 201
``DELETE /api/schedules/{id}``         ``jobctl schedule cancel ID``
``GET /metrics``                       ``jobctl metrics``
``GET /healthz``                       the server is up and its database answers
``GET /api/openapi.json``              the API's OpenAPI schema
======================================  =============================================

Reads take :func:`~jobctl.web.security.reader`, writes
:func:`~jobctl.web.security.api_writer`. A library UsageError is answered 422 with its
message by :mod:`jobctl.web.app`. Handlers are plain functions: FastAPI runs them in
its thread pool, as the library calls block.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response

from jobctl.app import App
from jobctl.durations import parse_duration
from jobctl.errors import UsageError
from jobctl.shapes import dumps, job_json, schedule_json, status_json
from jobctl.web.security import Principal, api_writer, reader

router = APIRouter()

#: The most runs one request may ask for (``limit=0``, the CLI's "all", is refused).
MAX_LIMIT = 1000

Reader = Annotated[Principal | None, Depends(reader)]
Writer = Annotated[Principal, Depends(api_writer)]


def app_of(request: Request) -> App:
    app: App = request.app.state.app
    return app


def respond(data: Any, status_code: int = 200) -> Response:
    """``data`` as the CLI's ``--json`` writes it (datetimes in UTC with ``Z``)."""
    return Response(dumps(data), status_code=status_code, media_type="application/json")


# -- reads ---------------------------------------------------------------------------


@router.get("/api/runs")
def list_runs(
    request: Request,
    _: Reader,
    job: str | None = None,
    status: str | None = None,
    since: str | None = None,
    limit: int = 20,
) -> Response:
    """Runs, newest first (as ``jobctl runs list --json``)."""
    if not 0 < limit <= MAX_LIMIT:
        raise UsageError(f"limit {limit} must be between 1 and {MAX_LIMIT}")
    window = parse_duration(since, what="since", allow_zero=False) if since else None
    rows = app_of(request).list_runs(
        job=job or None, status=status or None, since=window, limit=limit
    )
    return respond(rows)


@router.get("/api/runs/{run_id}")
def show_run(request: Request, _: Reader, run_id: int) -> Response:
    """Every field of a run, its children and log tail (as ``jobctl runs show --json``)."""
    try:
        return respond(app_of(request).show_run(run_id))
    except UsageError as exc:
        raise HTTPException(404, exc.message) from None


@router.get("/api/jobs")
def list_jobs(request: Request, _: Reader) -> Response:
    """Each job: enabled, schedule, next fire times, last run (as ``jobctl jobs list --json``)."""
    return respond([job_json(info) for info in app_of(request).jobs_overview()])


@router.get("/api/status")
def status(request: Request, _: Reader) -> Response:
    """Every job's health (as ``jobctl status --json``); 200 whatever it says."""
    from jobctl.health import statuses

    now = datetime.now(UTC)
    return respond([status_json(s, now) for s in statuses(app_of(request), now)])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, _: Reader) -> Response:
    """The run ledger as Prometheus metrics (as ``jobctl metrics``)."""
    from jobctl.metrics import exposition

    return PlainTextResponse(
        exposition(app_of(request)), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


@router.get("/healthz")
def healthz(request: Request, _: Reader) -> Response:
    """200 ``{"ok": true}`` when the database answers; 503 otherwise."""
    app = app_of(request)
    with app.db.plain() as conn:
        conn.execute("SELECT 1")
    return respond({"ok": True})


@router.get("/api/openapi.json", include_in_schema=False)
def openapi(request: Request, _: Reader) -> Response:
    return respond(request.app.openapi())


# -- schedules -----------------------------------------------------------------------


@router.get("/api/schedules")
def list_schedules(
    request: Request,
    _: Reader,
    status: str | None = None,
    job: str | None = None,
    limit: int = 100,
) -> Response:
    """Schedules by due time, with a countdown (as ``jobctl schedule list --json``)."""
    from jobctl import scheduling

    if not 0 < limit <= MAX_LIMIT:
        raise UsageError(f"limit {limit} must be between 1 and {MAX_LIMIT}")
    rows = scheduling.list_schedules(app_of(request), status=status or None, job=job, limit=limit)
    now = datetime.now(UTC)
    return respond([schedule_json(r, now) for r in rows])


@router.post("/api/schedules", status_code=201)
def add_schedule(
    request: Request,
    who: Writer,
    body: Annotated[Any, Body()],
) -> Response:
    """Schedule a one-off run (as ``jobctl schedule add``); ``by`` is the token's name.

    Body: ``{"job": "sync", "at": "in 1h", "params": {"k": "v"}, "every": "day",
    "until": "..."}`` (``at`` as ``--at``: ISO-8601 with offset, ``in 1h``,
    ``tomorrow 09:00`` in the job's zone).
    """
    from jobctl import scheduling
    from jobctl.web.requests import schedule_request

    wanted = schedule_request(body)
    row = scheduling.add(
        app_of(request),
        wanted.job,
        wanted.at,
        wanted.params,
        by=who.name,
        every=wanted.every,
        until=wanted.until,
    )
    return respond(schedule_json(row, datetime.now(UTC)), status_code=201)


@router.delete("/api/schedules/{schedule_id}")
def cancel_schedule(request: Request, _: Writer, schedule_id: int) -> Response:
    """Cancel a pending schedule (as ``jobctl schedule cancel``)."""
    from jobctl import scheduling

    row = scheduling.cancel(app_of(request), schedule_id)
    return respond(schedule_json(row, datetime.now(UTC)))


# -- runs started from the web -------------------------------------------------------


@router.post("/api/jobs/{name}/runs", status_code=202)
def start_run(
    request: Request,
    name: str,
    who: Writer,
    body: Annotated[Any, Body()] = None,
) -> Response:
    """Start a run in the background through the runner (lock, ledger, retries, alerts).

    Body: ``{"params": {"KEY": "VALUE"}}`` (optional). 202 ``{"run_id": N, ...}`` once
    the run's row exists; 409 naming the holder when the job's lock is held; 404 for
    an unknown job; 422 for bad params (the CLI's messages).
    """
    from jobctl.web.background import WebRuns
    from jobctl.web.requests import run_request

    runs: WebRuns = request.app.state.runs
    started = runs.start(name, run_request(body), by=who.name)
    return respond(started.doc(), status_code=started.http_status)
