"""Rows of a SQL query source, streamed through a server-side cursor.

The query runs on a connection of its own (the jobctl database's, or a source's
``database_url``), in a READ ONLY transaction: the server refuses anything that would
write, whatever the query calls. A named cursor fetches :data:`ITERSIZE` rows at a
time, so memory stays flat however many rows the query returns. Every
``psycopg.Error`` becomes a :class:`~jobctl.errors.SourceError` carrying the server's
first line, raised while the rows are read, so a sync applies nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg
from psycopg.types.json import set_json_loads

from jobctl.db.engine import Database
from jobctl.db.errors import translate_source
from jobctl.errors import DatabaseUnreachable, SourceError

__all__ = ["ITERSIZE", "ReadOnlySession", "stream_query"]

#: Rows fetched per round trip: large enough that the round trips cost little, small
#: enough that a batch of wide rows stays a few MB.
ITERSIZE = 2000


def _failed(exc: psycopg.Error) -> SourceError:
    # A lost connection or a statement_timeout may pass on a retry; a syntax error,
    # a missing table or a refused write will not (translate_source tells which).
    return translate_source(exc, "the query failed")


@contextmanager
def stream_query(
    db: Database,
    query: str,
    params: Mapping[str, Any],
    *,
    timezone: str,
    statement_timeout: float | None = None,
    connect_timeout: float | None = None,
    itersize: int = ITERSIZE,
    cursor_name: str = "jobctl_sync",
) -> Iterator[tuple[tuple[str, ...], Iterator[tuple[Any, ...]]]]:
    """``(column names, rows)`` of ``query`` (psycopg placeholders, e.g. ``%(date)s``).

    ``timezone`` is the session's ``TimeZone`` (how a ``date`` compares with a
    ``timestamptz``, how ``timestamptz`` values come back); ``statement_timeout``
    bounds the DECLARE and each FETCH of a batch.
    """
    extra: dict[str, Any] = {}
    if connect_timeout is not None:
        extra["connect_timeout"] = max(1, round(connect_timeout))
    try:
        conn = db.raw(application_name="jobctl sync query", **extra)
    except DatabaseUnreachable as exc:
        raise SourceError(str(exc), transient=True) from exc
    try:
        # json/jsonb numbers exact, as the feed parsers keep them (not through a float)
        set_json_loads(partial(json.loads, parse_float=Decimal), conn)
        conn.read_only = True
        with conn.transaction():
            try:
                conn.execute(
                    "SELECT set_config('TimeZone', %s, true),"
                    " set_config('statement_timeout', %s, true)",
                    (
                        timezone,
                        f"{round(statement_timeout * 1000)}ms" if statement_timeout else "0",
                    ),
                )
                cur = conn.cursor(name=cursor_name)
                cur.itersize = itersize
                cur.execute(query, params)
                columns = tuple(col.name for col in cur.description or ())
            except psycopg.Error as exc:
                raise _failed(exc) from exc
            yield columns, _rows(cur)
    except psycopg.Error as exc:  # the transaction's own BEGIN / ROLLBACK
        raise _failed(exc) from exc
    finally:
        conn.close()


def _rows(cur: psycopg.ServerCursor[Any]) -> Iterator[tuple[Any, ...]]:
    try:
        yield from cur
    except psycopg.Error as exc:
        raise _failed(exc) from exc


class ReadOnlySession:
    """One connection for many small read-only queries (a report's sections, for every
    recipient). The time zone and statement timeout are set once for the session;
    each :meth:`fetch` runs its queries in one READ ONLY transaction (psycopg sends
    ``BEGIN READ ONLY``): the server refuses a write, whatever a query calls.

    Errors are :class:`~jobctl.errors.SourceError` named after the query (``doing``),
    so a lost connection or a timeout is retried by the runner and a bad query is not.
    """

    def __init__(self, db: Database, *, timezone: str, statement_timeout: float) -> None:
        self._db = db
        self._timezone = timezone
        self._timeout = f"{max(1, round(statement_timeout * 1000))}ms"
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> ReadOnlySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                conn = self._db.raw(application_name="jobctl report")
            except DatabaseUnreachable as exc:
                raise SourceError(str(exc), transient=True) from exc
            try:
                set_json_loads(partial(json.loads, parse_float=Decimal), conn)
                conn.autocommit = True
                conn.execute(
                    "SELECT set_config('TimeZone', %s, false),"
                    " set_config('statement_timeout', %s, false)",
                    (self._timezone, self._timeout),
                )
                conn.autocommit = False
                conn.read_only = True
            except psycopg.Error as exc:
                conn.close()
                raise translate_source(exc, "setting up the report's connection") from exc
            self._conn = conn
        return self._conn

    def fetch(
        self, queries: Sequence[tuple[str, Mapping[str, Any], int, str]]
    ) -> list[tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
        """For each ``(query, params, limit, doing)`` (psycopg placeholders): its column
        names and up to ``limit`` rows, all read in one transaction."""
        conn = self._connection()
        results: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = []
        try:
            with conn.transaction():
                for query, params, limit, _ in queries:
                    cur = conn.execute(query, params)
                    columns = tuple(col.name for col in cur.description or ())
                    results.append((columns, cur.fetchmany(limit) if cur.description else []))
        except psycopg.Error as exc:
            if conn.closed or conn.broken:
                self.close()
            # the query that failed: the first without a result (COMMIT's: the last)
            doing = queries[min(len(results), len(queries) - 1)][3] if queries else "query"
            raise translate_source(exc, doing) from exc
        return results
