"""The one translation of database driver errors into jobctl's own.

Every ``psycopg.Error`` (or SQLAlchemy ``DBAPIError`` wrapping one) that leaves the
``db`` package leaves it through :func:`translate` or :func:`translate_source`:
what an operator sees is ``"<what jobctl was doing>: <the first line of the
server's message>"``. Only the first line, because psycopg appends the statement's
``LINE n:`` and a caret below it, and SQLAlchemy the whole SQL and a link — noise in
a log line and in ``runs show``. Passwords are redacted: libpq's connection errors
may quote the conninfo.

SQLAlchemy is not imported here: a command that never built the engine (a skipped
tick) cannot be handed one of its errors, and must not pay for importing it.
"""

from __future__ import annotations

import sys

import psycopg

from jobctl.errors import DatabaseError, DatabaseUnreachable, SourceError
from jobctl.redact import redact_dsn

__all__ = ["driver_error", "first_line", "is_transient", "translate", "translate_source"]


def driver_error(exc: BaseException) -> BaseException:
    """The driver's (psycopg's) own error inside a SQLAlchemy ``DBAPIError``, else ``exc``."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.DBAPIError):
        orig = exc.orig
        if isinstance(orig, BaseException):
            return orig
    return exc


def first_line(exc: BaseException) -> str:
    """The first line of the driver's message, passwords redacted; else the error's type."""
    inner = driver_error(exc)
    text = str(inner).strip()
    if "\n" in text:
        text = text.split("\n", 1)[0]
    if not text:  # some errors (a lost connection, say) come without a message
        return type(inner).__name__
    # psycopg's messages may quote the conninfo; never show a password.
    return redact_dsn(text) if "password" in text or "@" in text else text


def is_transient(exc: BaseException) -> bool:
    """A retry may help: the connection was lost or a statement timed out.

    psycopg raises ``OperationalError`` (and its ``QueryCanceled`` subclass, a
    statement_timeout) for those; a syntax error, a missing table or a refused
    write is a ``ProgrammingError``/``DataError``/… that the same run repeats.
    """
    return isinstance(driver_error(exc), psycopg.OperationalError)


def translate(exc: BaseException, doing: str, *, connecting: bool = False) -> DatabaseError:
    """The jobctl error for a driver error raised while ``doing`` (a phrase, no colon).

    ``connecting``: the error came from opening the connection, so the server cannot
    be reached at all (:class:`DatabaseUnreachable`, a configuration problem, exit 2).
    """
    message = f"{doing}: {first_line(exc)}"
    return DatabaseUnreachable(message) if connecting else DatabaseError(message)


def translate_source(exc: BaseException, doing: str) -> SourceError:
    """As :func:`translate`, for a source's own database (a query source's rows).

    A failing source is the job's error, not jobctl's database's: a
    :class:`SourceError`, retried by the runner when :func:`is_transient`.
    """
    return SourceError(f"{doing}: {first_line(exc)}", transient=is_transient(exc))
