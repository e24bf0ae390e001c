"""Connections: one SQLAlchemy engine for queries, raw psycopg connections for
locks and ``COPY``. Every ``psycopg.Error`` is translated (:mod:`jobctl.db.errors`)
here or in the other ``db`` modules, never above them.

SQLAlchemy is imported when the engine is first built, not with this module: a
command that only reads the schema version, takes a lock and records a skip (a
tick whose job is already running) does it all in plain SQL on psycopg
connections (:meth:`Database.plain`) and never pays for it.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg

from jobctl.db.errors import translate
from jobctl.errors import DatabaseError, UsageError
from jobctl.redact import redact_dsn

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

log = logging.getLogger("jobctl.db")


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` (and ``postgresql+psycopg://``).

    A URL that libpq would refuse later (a bad host, port, percent escape or query
    parameter) is a UsageError here, naming the URL with its password redacted; a
    parser's own detail is shown only if it does not quote the password. SQLAlchemy
    never parses the URL (the engine connects through psycopg, see
    :attr:`Database.engine`), so what libpq accepts is all that counts.
    """
    from psycopg.conninfo import conninfo_to_dict

    shown = redact_dsn(url)
    password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]

    def invalid(exc: Exception) -> UsageError:
        detail = " ".join(str(exc).replace(url, shown).split())
        if password and password in detail:
            detail = "malformed"
        return UsageError(f"database URL {shown!r} is not a valid PostgreSQL URL: {detail}")

    try:
        parts = urlsplit(url)
        scheme = parts.scheme
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError as exc:
        raise invalid(exc) from None
    if scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        raise UsageError(
            f"database URL {shown!r} is not a PostgreSQL URL (postgresql://user@host/db)"
        )
    normal = "postgresql://" + url.split("://", 1)[1]
    try:
        conninfo_to_dict(normal)  # libpq's own parser: host, port, escapes, parameters
    except (psycopg.ProgrammingError, ValueError) as exc:
        raise invalid(exc) from None
    return normal


@dataclass
class Database:
    """Where the data lives: a libpq URL plus the engine built on it."""

    url: str
    embedded: bool = False
    application_name: str = "jobctl"
    #: Run inside every transaction opened through :meth:`begin` just before it
    #: commits (a run's fence: it raises if the run no longer holds its lock).
    #: Helpers that commit a raw connection call :meth:`check_before_commit`.
    before_commit: Callable[[Any], None] | None = field(default=None, repr=False)
    #: Connections kept open and reused by :meth:`begin` and :meth:`plain` (a long-lived
    #: server: ``jobctl serve``); 0, the CLI's: a new connection each time.
    pool_size: int = 0
    _engine: Engine | None = field(default=None, repr=False)
    #: A connection kept by :meth:`spare_connection_within` for the next :meth:`plain`
    #: (shared by the :meth:`fenced` copies). At most one, never kept past that use.
    _kept: list[psycopg.Connection[Any]] = field(default_factory=list, repr=False)

    def pooled(self, size: int) -> Database:
        """The same database with up to ``size`` connections kept open (and as many
        more opened under load), checked before reuse; locks keep their own."""
        self.dispose()
        return replace(self, pool_size=size, _engine=None)

    def fenced(self, before_commit: Callable[[Any], None]) -> Database:
        """The same database (and engine) with a fence run before every commit."""
        return replace(self, before_commit=before_commit)

    def check_before_commit(self, conn: Any) -> None:
        if self.before_commit is not None:
            self.before_commit(conn)

    @property
    def display_url(self) -> str:
        return redact_dsn(self.url)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            url, args = self.url, self._connect_args()
            # NullPool: a CLI process opens few connections, and a pool would
            # keep backends (and PgBouncer slots) busy for nothing. The creator:
            # psycopg connects with libpq's own reading of the URL (the one
            # normalise_url checked, and the one raw() uses), where SQLAlchemy's
            # URL parser refuses some that libpq takes (``h:/db``, several hosts).
            pooling: dict[str, Any] = {"poolclass": NullPool}
            if self.pool_size:
                pooling = {
                    "pool_size": self.pool_size,
                    "max_overflow": self.pool_size,
                    "pool_pre_ping": True,  # a server restart costs one retry, not an error
                    "pool_recycle": 300,
                }
            self._engine = create_engine(
                "postgresql+psycopg://",
                creator=lambda: psycopg.connect(url, **args),
                **pooling,
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
        engine = self.engine
        from sqlalchemy.exc import OperationalError

        try:
            return engine.connect()
        except OperationalError as exc:
            raise self._unreachable(exc) from None

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A SQLAlchemy connection; the caller commits."""
        conn = self.open_connection()
        from sqlalchemy.exc import DBAPIError

        try:
            yield conn
        except DBAPIError as exc:
            raise translate(exc, "database error") from exc
        finally:
            conn.close()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A SQLAlchemy connection inside a transaction committed on success."""
        with self.connect() as conn, conn.begin():
            yield conn
            self.check_before_commit(conn)

    @contextmanager
    def plain(self) -> Iterator[psycopg.Connection[Any]]:
        """A psycopg connection inside a transaction committed on success (plain SQL).

        What :meth:`begin` is for SQLAlchemy, without SQLAlchemy: the schema check and
        a skipped run's ledger row use it. Errors become :class:`DatabaseError` as in
        :meth:`connect`; the fence (``before_commit``) runs before the commit.
        """
        if self.pool_size:
            with self._pooled_plain() as conn:
                yield conn
            return
        conn = self._take_kept() or self.raw()
        try:
            with conn.transaction():
                yield conn
                self.check_before_commit(conn)
        except psycopg.Error as exc:
            raise translate(exc, "database error") from exc
        finally:
            conn.close()

    @contextmanager
    def _pooled_plain(self) -> Iterator[psycopg.Connection[Any]]:
        """:meth:`plain` on a connection of the pool (given back, rolled back, after)."""
        from sqlalchemy.exc import DBAPIError

        try:
            proxy = self.engine.raw_connection()
        except DBAPIError as exc:
            raise self._unreachable(exc.orig or exc) from None
        conn = proxy.driver_connection
        assert isinstance(conn, psycopg.Connection)
        try:
            with conn.transaction():
                yield conn
                self.check_before_commit(conn)
        except psycopg.Error as exc:
            raise translate(exc, "database error") from exc
        finally:
            proxy.close()

    def _take_kept(self) -> psycopg.Connection[Any] | None:
        while self._kept:
            conn = self._kept.pop()
            if not conn.closed and not conn.broken:
                return conn
            conn.close()
        return None

    def raw(
        self, *, autocommit: bool = False, application_name: str | None = None, **conninfo: Any
    ) -> psycopg.Connection[Any]:
        """A dedicated psycopg connection (locks, COPY); ``conninfo``: more libpq parameters."""
        args = {**self._connect_args(), **conninfo}
        if application_name:
            args["application_name"] = application_name[:63]
        try:
            return psycopg.connect(self.url, autocommit=autocommit, **args)
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from None

    def spare_connection_within(self, seconds: float, *, keep: bool = False) -> bool:
        """True if a further connection answers a query within ``seconds``.

        ``keep``: the connection that answered is not closed but used by the next
        :meth:`plain` (the run's ``running`` row, written next): one connection less,
        and never more open at once than before.

        A run holds one server connection for its lock for as long as it runs;
        behind a pooler whose pool is already used up (PgBouncer with a pool of
        one, say) every other connection waits in the pooler's queue until its
        ``query_wait_timeout``. The query is sent without blocking so that the
        wait is ours to bound.
        """
        conn = self.raw(autocommit=True)
        try:
            pgconn = conn.pgconn
            pgconn.send_query(b"SELECT 1")
            deadline = time.monotonic() + seconds
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                ready, _, _ = select.select([pgconn.socket], [], [], remaining)
                if ready:
                    pgconn.consume_input()
                    if not pgconn.is_busy():
                        while pgconn.get_result() is not None:
                            pass
                        if keep:
                            self._kept.append(conn)
                        return True
        except psycopg.Error as exc:
            raise self._unreachable(exc) from None
        finally:
            if not (self._kept and self._kept[-1] is conn):
                conn.close()

    def _unreachable(self, exc: BaseException) -> DatabaseError:
        # DatabaseUnreachable: the server cannot be reached at all (exit 2)
        return translate(exc, f"cannot connect to the database {self.display_url}", connecting=True)

    def close_kept(self) -> None:
        """Close the connection :meth:`spare_connection_within` kept, if no
        :meth:`plain` took it."""
        while self._kept:
            self._kept.pop().close()

    def dispose(self) -> None:
        self.close_kept()
        if self._engine is not None:
            self._engine.dispose()


def open_database(url: str | None, data_dir: Path) -> Database:
    """``url`` if given, else the embedded server in ``data_dir``."""
    if url:
        return Database(normalise_url(url))
    from jobctl.db.embedded import embedded_url

    real_url, _started = embedded_url(data_dir)
    return Database(real_url, embedded=True)
