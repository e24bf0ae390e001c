"""The web console and JSON API of ``jobctl serve`` (optional extra ``jobctl[web]``).

One more face over the same library calls as the CLI (``jobctl.app.App``), never a
second implementation. The package's modules:

- ``app``: :func:`~jobctl.web.app.create_app` builds the FastAPI application;
- ``server``: runs it under uvicorn (what ``jobctl serve`` calls);
- ``security``: tokens, the session cookie, CSRF (FastAPI dependencies);
- ``login``: ``GET/POST /login``, ``POST /logout`` (the browser's session);
- ``api``: the JSON API (``/api/...``, ``/metrics``, ``/healthz``), in the shapes of
  the CLI's ``--json`` (:mod:`jobctl.shapes`, shared by both);
- ``guards``: the request-body limit (413) and the redaction of every response;
- ``requests``: the API's JSON bodies checked into plain values (422);
- ``background``: runs started from the web, as ``jobctl run`` child processes (the runner);
- ``pages``: the HTML pages (templates under ``templates/``, files under ``static/``).

Nothing here is imported by ``jobctl --help`` or any other command: only
``jobctl serve`` imports FastAPI, and :func:`require_web` says what to install when
it is missing.
"""

from __future__ import annotations

import importlib

from jobctl.errors import UsageError

#: The one-line message (exit 2) when the extra is not installed.
MISSING_EXTRA = "the web console needs the 'web' extra: pip install 'jobctl[web]'"


def require_web() -> None:
    """Raise UsageError (exit 2) unless FastAPI and uvicorn can be imported."""
    for module in ("fastapi", "uvicorn", "multipart"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise UsageError(MISSING_EXTRA) from None
