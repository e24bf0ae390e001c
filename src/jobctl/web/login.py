"""The browser's session: ``GET /login`` (a form to paste a token into), ``POST /login``
(sets the signed, HttpOnly, SameSite=Strict session cookie) and ``POST /logout``.

These routes need no token themselves (they are how a browser gets one in); the form
carries a CSRF token and ``POST /login`` checks it and the request's ``Origin``. The
page is small, self-contained HTML (no template, script or external asset).
"""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from jobctl.web.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SESSION_SECONDS,
    check_csrf,
    csrf_token,
    guard_of,
)

router = APIRouter()

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>jobctl: log in</title>
<style>body{{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input{{font:inherit;width:100%;box-sizing:border-box;margin:.3rem 0 1rem}}
.error{{color:#b00020}}</style></head>
<body><h1>jobctl</h1>
<p>Paste a token of this server (<code>JOBCTL_WEB_TOKEN</code>, or a line of
<code>JOBCTL_WEB_TOKEN_FILE</code>) to read and act as its name.</p>
{error}
<form method="post" action="/login">
<input type="hidden" name="{csrf_field}" value="{csrf}">
<input type="hidden" name="next" value="{next}">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form></body></html>
"""


def safe_next(target: str | None) -> str:
    """A redirect target on this server only (``/runs``), never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_page(request: Request, *, next_url: str, error: str = "", status: int = 200) -> Response:
    body = _PAGE.format(
        error=f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "",
        csrf_field=CSRF_FIELD,
        csrf=html.escape(csrf_token(request)),
        next=html.escape(safe_next(next_url)),
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/login", include_in_schema=False)
def login_form(request: Request, next: str = "/") -> Response:
    return login_page(request, next_url=next)


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    token: Annotated[str, Form(max_length=4096)],
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    check_csrf(request, csrf)
    guard = guard_of(request)
    principal = guard.check_bearer(token.strip())
    if principal is None:
        return login_page(request, next_url=next, error="That token is not valid.", status=401)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        guard.new_session(principal.name),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", include_in_schema=False)
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
