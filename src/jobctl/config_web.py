"""The web console's configuration: the ``[web]`` table and the access tokens.

``[web]`` in jobctl.toml (every key optional)::

    [web]
    enabled = true        # jobctl deploy writes a jobctl-web unit / Deployment
    host = "127.0.0.1"    # jobctl serve's default --host
    port = 8080           # jobctl serve's default --port

Tokens never live in the file: ``JOBCTL_WEB_TOKEN`` holds one (``name:secret``, or a
plain secret named "web"), ``JOBCTL_WEB_TOKEN_FILE`` names a file of ``name:secret``
lines (``#`` comments and blank lines allowed). Both are read from the settings'
environment (real environment over ``.env``) by :func:`web_config`, the one place;
the token's name is who a web-triggered run or schedule is recorded as.

Kept apart from config_models, like config_deploy: a web setting touches one module.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from jobctl.config_types import ENVIRONMENT as _ENVIRONMENT
from jobctl.config_types import Port, _custom, _text
from jobctl.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from jobctl.config import Settings

TOKEN_VAR = "JOBCTL_WEB_TOKEN"
TOKEN_FILE_VAR = "JOBCTL_WEB_TOKEN_FILE"
#: The name of a ``JOBCTL_WEB_TOKEN`` written without one.
DEFAULT_TOKEN_NAME = "web"
#: A token's name: recorded as ``requested_by``, shown on pages, written in a cookie.
TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
#: Shorter secrets can be guessed; they are refused when the tokens are read.
MIN_SECRET = 16
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: What ``jobctl serve`` binds without ``--host``, and what makes a host "loopback".
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def _host(value: object) -> str:
    text = _text(value).strip()
    if not text or not re.match(r"^[A-Za-z0-9.:\[\]-]+$", text):
        raise ValueError(f"{text!r} is not a host name or an IP address to bind")
    return text.strip("[]")


if TYPE_CHECKING:
    Host = str
else:
    Host = _custom("Host", str, _host)


class WebTable(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[web]`` in jobctl.toml."""

    #: ``jobctl deploy`` writes the console's unit / Deployment + Service.
    enabled: bool = False
    host: Host = DEFAULT_HOST
    port: Port = DEFAULT_PORT


@dataclass(frozen=True)
class WebToken:
    name: str
    secret: str = ""

    def __repr__(self) -> str:  # never the secret
        return f"WebToken(name={self.name!r})"


@dataclass(frozen=True)
class WebConfig:
    """What ``jobctl serve`` runs with: where it listens and who may use it."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tokens: tuple[WebToken, ...] = ()
    #: Largest request body accepted (413 above).
    max_body: int = 64 * 1024

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def secrets(self) -> list[str]:
        return [t.secret for t in self.tokens]


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _token(line: str, *, key: str, origin: str, named: bool) -> WebToken:
    name, sep, secret = line.partition(":")
    if not sep:
        if named:
            raise ConfigError("write each token as name:secret", key=key, origin=origin)
        name, secret = DEFAULT_TOKEN_NAME, line
    name, secret = name.strip(), secret.strip()
    if not TOKEN_NAME.match(name):
        raise ConfigError(
            f"token name {name[:64]!r} may hold letters, digits, '_', '.', '@' and '-' only "
            "(at most 64)",
            key=key,
            origin=origin,
        )
    if len(secret) < MIN_SECRET:
        # The secret itself is never echoed.
        raise ConfigError(
            f"the secret of token {name!r} is shorter than {MIN_SECRET} characters "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            key=key,
            origin=origin,
        )
    return WebToken(name, secret)


def read_tokens(env: Mapping[str, str], env_origins: Mapping[str, str]) -> tuple[WebToken, ...]:
    """The tokens of ``JOBCTL_WEB_TOKEN`` and ``JOBCTL_WEB_TOKEN_FILE`` (none: ``()``)."""
    tokens: list[WebToken] = []
    value = env.get(TOKEN_VAR, "").strip()
    if value:
        origin = env_origins.get(TOKEN_VAR, _ENVIRONMENT)
        tokens.append(_token(value, key=TOKEN_VAR, origin=origin, named=False))
    path = env.get(TOKEN_FILE_VAR, "").strip()
    if path:
        tokens += _token_file(Path(path).expanduser())
    seen: set[str] = set()
    for token in tokens:
        if token.name in seen:
            raise ConfigError(f"token name {token.name!r} is given twice", key=TOKEN_FILE_VAR)
        seen.add(token.name)
    return tuple(tokens)


def _token_file(path: Path) -> list[WebToken]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", key=TOKEN_FILE_VAR, origin=str(path)) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot be read: {exc.strerror}", key=TOKEN_FILE_VAR, origin=str(path)
        ) from None
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            tokens.append(_token(line, key=f"line {number}", origin=str(path), named=True))
    return tokens


def web_config(
    settings: Settings, *, host: str | None = None, port: int | None = None
) -> WebConfig:
    """The console's configuration: ``--host`` / ``--port`` over ``[web]``, and the tokens."""
    chosen_host = settings.web.host if host is None else _checked_host(host)
    chosen_port = settings.web.port if port is None else _checked_port(port)
    return WebConfig(
        host=chosen_host,
        port=chosen_port,
        tokens=read_tokens(settings.env, settings.env_origins),
    )


def check_bind(config: WebConfig) -> None:
    """Refuse (UsageError, exit 2) to serve a non-loopback address without a token."""
    if not config.loopback and not config.tokens:
        raise UsageError(
            f"refusing to serve on {config.host}, which is not a loopback address, without "
            f"a token: set {TOKEN_VAR} or {TOKEN_FILE_VAR} (or use --host 127.0.0.1)"
        )


def _checked_host(host: str) -> str:
    try:
        return _host(host)
    except ValueError as exc:
        raise ConfigError(str(exc), key="--host") from None


def _checked_port(port: int) -> int:
    if not 0 < port < 65536:
        raise ConfigError(f"{port} is not a TCP port (1-65535)", key="--port")
    return port
