"""The FastAPI application of ``jobctl serve``: :func:`create_app`.

It stores the library object and the server's configuration on ``fastapi_app.state``
(``.app``: :class:`jobctl.app.App`, ``.config``: :class:`~jobctl.config_web.WebConfig`,
``.guard``: :class:`~jobctl.web.security.Guard`, ``.redactor``,
``.runs``: :class:`~jobctl.web.background.WebRuns`) and includes the routers:
:mod:`jobctl.web.api` (JSON), :mod:`jobctl.web.login` (the session),
:mod:`jobctl.web.pages` (HTML, behind :func:`~jobctl.web.security.reader`) and the
files of ``static/`` at ``/static``.

Errors are answered here, in one place, as the CLI's errors are mapped to exit codes
in ``cli.main``: a :class:`~jobctl.errors.UsageError` is 422 ``{"detail": "<the CLI's
one-line message>"}``, a database error 503, a request body over
``WebConfig.max_body`` 413; a 401 on a browser's page request becomes a redirect to
``/login``. Every response body passes through the redactor (:mod:`jobctl.web.guards`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from jobctl.config_web import check_bind
from jobctl.errors import DatabaseError, JobctlError, UsageError
from jobctl.redact import Redactor
from jobctl.web import api, login, pages
from jobctl.web.guards import BodyLimit, RedactBodies
from jobctl.web.security import Guard, reader

if TYPE_CHECKING:
    from jobctl.app import App
    from jobctl.config_web import WebConfig

STATIC = Path(__file__).parent / "static"


def create_app(app: App, config: WebConfig) -> FastAPI:
    """The console over ``app`` (one App, shared by every request), served as ``config`` says."""
    from jobctl.web.background import WebRuns

    check_bind(config)

    @asynccontextmanager
    async def lifespan(web: FastAPI) -> AsyncIterator[None]:
        yield
        # The server is stopping (SIGTERM, SIGINT): its runs are cancelled and recorded.
        await run_in_threadpool(web.state.runs.close)

    web = FastAPI(
        title="jobctl",
        lifespan=lifespan,
        description="Runs, jobs and one-off schedules of jobctl (the same calls as the CLI).",
        # Swagger UI and ReDoc load scripts from a CDN: the schema alone is served, by
        # api.router, behind the same token as the rest.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    redactor = Redactor([*app.settings.secrets(), *config.secrets()])
    web.state.app = app
    web.state.config = config
    web.state.guard = Guard(config)
    web.state.redactor = redactor
    web.state.runs = WebRuns(app)
    web.include_router(api.router)
    web.include_router(login.router)
    web.include_router(pages.router, dependencies=[Depends(reader)])
    web.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    _answer_errors(web)
    # Outermost last: the body limit sees the request first, the redactor every answer.
    web.add_middleware(BodyLimit, max_body=config.max_body)
    web.add_middleware(RedactBodies, redactor=redactor)
    return web


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _wants_page(request: Request) -> bool:
    """A browser asking for a page (not the API, not a script): told to log in."""
    path = request.url.path
    api_path = path.startswith("/api/") or path in ("/metrics", "/healthz")
    html = "text/html" in request.headers.get("accept", "")
    return request.method == "GET" and html and not api_path


def _answer_errors(web: FastAPI) -> None:
    @web.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401 and _wants_page(request):
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else "")
            )
            return RedirectResponse(f"/login?next={target}", status_code=303)
        return _detail(exc.status_code, exc.detail, dict(exc.headers or {}))

    @web.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return _detail(422, validation_message(exc.errors()))

    @web.exception_handler(JobctlError)
    async def jobctl_error(request: Request, exc: JobctlError) -> Response:
        if isinstance(exc, UsageError):
            return _detail(422, exc.message)
        if isinstance(exc, DatabaseError):
            return _detail(503, exc.message)
        return _detail(500, exc.message)


def validation_message(errors: Any) -> str:
    """FastAPI's validation errors as one line, in the CLI's manner (the first one)."""
    for error in errors:
        where = [str(part) for part in error.get("loc", ()) if part not in ("body", "query")]
        name = ".".join(where) or "the request body"
        message = str(error.get("msg", "is not valid"))
        if error.get("type") == "json_invalid":
            return "the request body is not valid JSON"
        if error.get("type") == "missing":
            return f"{name} is required"
        return f"{name}: {message[:1].lower()}{message[1:]}"
    return "the request is not valid"
