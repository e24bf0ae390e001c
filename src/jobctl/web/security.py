"""Who may use the console: bearer tokens, the browser's session cookie, CSRF tokens.

The rules (README "Web console: security"):

- read-only access without a token only when the server is bound to loopback (and
  the request's ``Host`` names loopback too, so a DNS-rebinding page cannot read it);
- every write, and every request on any other bind, needs a token: an
  ``Authorization: Bearer <secret>`` header, or the session cookie that
  ``POST /login`` sets after the user pastes a token into the ``/login`` form;
- a write authenticated by the cookie also carries the CSRF token of that session:
  forms in a hidden field named ``csrf`` (the handler calls :func:`check_csrf`), the
  JSON API in an ``X-CSRF-Token`` header (:func:`api_writer`);
- secrets are compared with :func:`hmac.compare_digest`, never echoed.

FastAPI dependencies offered here: :func:`reader` (``Principal | None``),
:func:`writer` and :func:`api_writer` (``Principal``), :func:`csrf_token` (``str``).
:class:`Principal` ``.name`` is the token's name: who triggered or scheduled.

The session cookie is ``name~expires~signature``, signed with a key derived from that
token's secret: removing or changing a token ends its sessions, and a restart of the
server keeps them. CSRF tokens are derived from the session cookie the same way (a
browser without a session gets one derived from a per-process key, for ``/login``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from jobctl.config_web import TOKEN_NAME, WebConfig, is_loopback

SESSION_COOKIE = "jobctl_session"
#: The hidden form field that carries the CSRF token.
CSRF_FIELD = "csrf"
#: The header that carries it on a cookie-authenticated JSON API write.
CSRF_HEADER = "X-CSRF-Token"
#: How long a browser session lasts.
SESSION_SECONDS = 12 * 3600

NEEDS_TOKEN = "this needs a token: send 'Authorization: Bearer <token>' or log in at /login"
NO_TOKENS = (
    "writes need a token, and this server has none: set JOBCTL_WEB_TOKEN or "
    "JOBCTL_WEB_TOKEN_FILE and restart jobctl serve"
)


@dataclass(frozen=True)
class Principal:
    """Who is making a request: the token's name, and how it was presented."""

    name: str
    via: Literal["bearer", "session"] = "bearer"


def _unauthorized(detail: str = NEEDS_TOKEN) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


class Guard:
    """The tokens of one server, and the keys derived from them."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self._tokens = [(t.name, t.secret.encode()) for t in config.tokens]
        self._anonymous_key = secrets.token_bytes(32)

    @property
    def has_tokens(self) -> bool:
        return bool(self._tokens)

    @property
    def anonymous_reads(self) -> bool:
        return self.config.loopback

    def _session_key(self, name: str) -> bytes | None:
        for known, secret in self._tokens:
            if known == name:
                return hashlib.sha256(b"jobctl-web-session\0" + secret).digest()
        return None

    def check_bearer(self, secret: str) -> Principal | None:
        """The token whose secret this is (every token compared, in constant time)."""
        given = secret.encode()
        found = None
        for name, known in self._tokens:
            if hmac.compare_digest(given, known):
                found = name
        return Principal(found) if found is not None else None

    def new_session(self, name: str, now: float | None = None) -> str:
        """A session cookie value for token ``name``."""
        key = self._session_key(name)
        if key is None:
            raise ValueError(f"no token named {name!r}")
        expires = int((time.time() if now is None else now) + SESSION_SECONDS)
        return f"{name}~{expires}~{_sign(key, f'session~{name}~{expires}')}"

    def check_session(self, cookie: str, now: float | None = None) -> Principal | None:
        parts = cookie.split("~")
        if len(parts) != 3:
            return None
        name, expires, signature = parts
        key = self._session_key(name) if TOKEN_NAME.match(name) else None
        if key is None or not expires.isdigit():
            return None
        if not hmac.compare_digest(signature, _sign(key, f"session~{name}~{expires}")):
            return None
        if int(expires) < (time.time() if now is None else now):
            return None
        return Principal(name, via="session")

    def csrf_for(self, cookie: str | None) -> str:
        """The CSRF token of a session (or of a browser that has none yet)."""
        if cookie is not None and self.check_session(cookie) is not None:
            key = self._session_key(cookie.split("~")[0])
            assert key is not None
            return _sign(key, f"csrf~{cookie}")
        return _sign(self._anonymous_key, "csrf~anonymous")

    def identify(self, request: Request) -> Principal | None:
        """The request's principal; 401 for a bearer token that is not one of ours."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            principal = self.check_bearer(value.strip()) if scheme.lower() == "bearer" else None
            if principal is None:
                raise _unauthorized("the token is not valid (Authorization: Bearer <token>)")
            return principal
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.check_session(cookie) if cookie else None


def _sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def guard_of(request: Request) -> Guard:
    guard: Guard = request.app.state.guard
    return guard


def _host_is_loopback(request: Request) -> bool:
    host = request.headers.get("host", "")
    name = urlsplit(f"//{host}").hostname or ""
    return is_loopback(name)


def reader(request: Request) -> Principal | None:
    """Dependency of every page and read endpoint: the principal, or None for an
    anonymous reader on a loopback bind; 401 when a token is needed and missing or
    wrong, 403 for an anonymous request whose Host is not loopback."""
    guard = guard_of(request)
    principal = guard.identify(request)
    if principal is None:
        if not guard.anonymous_reads:
            raise _unauthorized()
        if not _host_is_loopback(request):
            raise HTTPException(
                403, "anonymous reads are served to loopback host names only (send a token)"
            )
    return principal


def writer(request: Request) -> Principal:
    """Dependency of every write: the token's principal (bearer or session cookie).

    A form handler that gets a session principal must also call :func:`check_csrf`.
    """
    guard = guard_of(request)
    if not guard.has_tokens:
        raise HTTPException(403, NO_TOKENS)
    principal = guard.identify(request)
    if principal is None:
        raise _unauthorized()
    return principal


def api_writer(request: Request) -> Principal:
    """:func:`writer` for the JSON API: a session-cookie write carries ``X-CSRF-Token``."""
    principal = writer(request)
    if principal.via == "session":
        check_csrf(request, request.headers.get(CSRF_HEADER, ""))
    return principal


def csrf_token(request: Request) -> str:
    """Dependency: the CSRF token to put in a form's hidden ``csrf`` field."""
    return guard_of(request).csrf_for(request.cookies.get(SESSION_COOKIE))


def check_csrf(request: Request, value: str) -> None:
    """403 unless ``value`` is this browser's CSRF token and the request comes from
    this console's own pages (``Origin``, when the browser sends one)."""
    origin = request.headers.get("origin")
    host = request.headers.get("host", "").lower()
    if origin is not None and urlsplit(origin).netloc.lower() != host:  # "null" too
        raise HTTPException(403, "the request comes from another site (Origin)")
    if not hmac.compare_digest(value.encode(), csrf_token(request).encode()):
        raise HTTPException(403, "the form is stale or forged (CSRF token): reload the page")
