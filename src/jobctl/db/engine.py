"""Connections: one SQLAlchemy engine for queries, raw psycopg connections for
locks and ``COPY``. Every ``psycopg.Error`` is translated here or in the other
``db`` modules, never above them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from jobctl.errors import DatabaseError, DatabaseUnreachable, UsageError
from jobctl.redact import redact_dsn

log = logging.getLogger("jobctl.db")


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` (and ``postgresql+psycopg://``)."""
    scheme = urlsplit(url).scheme
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        return "postgresql://" + url.split("://", 1)[1]
    raise UsageError(
        f"database URL {redact_dsn(url)!r} is not a PostgreSQL URL (postgresql://user@host/db)"
    )


@dataclass
class Database:
    """Where the data lives: a libpq URL plus the engine built on it."""

    url: str
    embedded: bool = False
    application_name: str = "jobctl"
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def display_url(self) -> str:
        return redact_dsn(self.url)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            # NullPool: a CLI process opens few connections, and a pool would
            # keep backends (and PgBouncer slots) busy for nothing.
            self._engine = create_engine(
                "postgresql+psycopg://" + self.url.split("://", 1)[1],
                poolclass=NullPool,
                connect_args=self._connect_args(),
            )
        return self._engine

    def _connect_args(self) -> dict[str, Any]:
        # prepare_threshold=None: server-side prepared statements break behind
        # PgBouncer in transaction mode.
        return {
            "prepare_threshold": None,
            "application_name": self.application_name,
            "connect_timeout": 10,
        }

    def open_connection(self) -> Connection:
        """A SQLAlchemy connection the caller closes (a job's run connection)."""
        try:
            return self.engine.connect()
        except OperationalError as exc:
            raise self._unreachable(exc) from None

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A SQLAlchemy connection; the caller commits."""
        conn = self.open_connection()
        try:
            yield conn
        except DBAPIError as exc:
            raise DatabaseError(f"database error: {_first_line(exc.orig)}") from exc
        finally:
            conn.close()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A SQLAlchemy connection inside a transaction committed on success."""
        with self.connect() as conn, conn.begin():
            yield conn

    def raw(
        self, *, autocommit: bool = False, application_name: str | None = None
    ) -> psycopg.Connection[Any]:
        """A dedicated psycopg connection (locks, COPY)."""
        args = self._connect_args()
        if application_name:
            args["application_name"] = application_name[:63]
        try:
            return psycopg.connect(self.url, autocommit=autocommit, **args)
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: BaseException) -> DatabaseUnreachable:
        return DatabaseUnreachable(
            f"cannot connect to the database {self.display_url}: {_first_line(exc)}"
        )

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip()
    if "\n" in text:
        text = text.split("\n", 1)[0]
    # psycopg's messages may quote the conninfo; never show a password.
    return redact_dsn(text) if "password" in text or "@" in text else text


def open_database(url: str | None, data_dir: Path) -> Database:
    """``url`` if given, else the embedded server in ``data_dir``."""
    if url:
        return Database(normalise_url(url))
    from jobctl.db.embedded import embedded_url

    real_url, _started = embedded_url(data_dir)
    return Database(real_url, embedded=True)
