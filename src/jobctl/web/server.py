"""Run the console under uvicorn: what ``jobctl serve`` calls, once.

The socket is bound here, before uvicorn starts, so that an address in use or not
ours is a one-line UsageError (exit 2), and the database is opened (and migrated)
before the first request, so that a server that cannot reach it says so and exits
2 instead of answering 503 forever. uvicorn owns the signals: SIGTERM or SIGINT
stops accepting, lets the requests in flight finish, then the application's
shutdown cancels the runs it started (:meth:`jobctl.web.background.WebRuns.close`).
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from jobctl.errors import UsageError

if TYPE_CHECKING:
    from jobctl.app import App
    from jobctl.config_web import WebConfig

log = logging.getLogger("jobctl.web")

#: Database connections the server keeps open between requests (twice that under load).
POOL_SIZE = 8
#: Seconds the requests in flight get to finish when the server is told to stop.
GRACEFUL_SECONDS = 10


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (UsageError when it cannot be had)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(False)  # not into the runs' child processes
    return sock


def serve(app: App, config: WebConfig) -> None:
    """Serve until told to stop (SIGTERM / SIGINT)."""
    import uvicorn

    from jobctl.web.app import create_app

    web = create_app(app, config)
    sock = bind(config.host, config.port)
    try:
        app.db  # noqa: B018 - opened (and upgraded) now, in this thread: exit 2 if unreachable
        app.keep_connections(POOL_SIZE)
        app.jobs  # noqa: B018 - the user's jobs module imported once, here
        server = uvicorn.Server(
            uvicorn.Config(
                web,
                log_config=None,  # jobctl's logging (text or JSON, redacted) carries its lines
                server_header=False,
                proxy_headers=True,
                timeout_graceful_shutdown=GRACEFUL_SECONDS,
            )
        )
        log.info(
            "serving the web console on %s (%s)",
            config.url,
            "tokens: " + ", ".join(t.name for t in config.tokens)
            if config.tokens
            else "no token: read-only",
            extra={"action": "web.serve"},
        )
        server.run(sockets=[sock])
    finally:
        sock.close()
