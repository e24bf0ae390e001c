"""The console's HTML pages (Runs, Run, Jobs, Schedules, Health): server-rendered
from the templates under ``templates/``, with the files of ``static/`` at ``/static``.

``router`` is included by :func:`jobctl.web.app.create_app` behind
:func:`jobctl.web.security.reader`; form handlers take
:func:`jobctl.web.security.writer` and call :func:`jobctl.web.security.check_csrf`.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
