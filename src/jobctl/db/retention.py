"""Retention deletes: a table's rows older than a cutoff, in bounded batches.

Each batch is one statement, ``DELETE ... WHERE key = ANY(ARRAY(SELECT key ... LIMIT n))``
by the table's primary key (``ctid`` when it has none, or one of several columns),
run by the caller in a short transaction of its own so that no lock is held for long. The table and
column names come from the config: they are always quoted here
(``psycopg.sql.Identifier``), never pasted. A policy's ``where`` is the operator's
own SQL from the config file, trusted like the rest of it, and pasted as written.

The cutoff is bound as a literal, not a parameter: with parameters psycopg would
read a ``%`` in the operator's ``where`` (``LIKE 'a%'``) as a placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from jobctl.db.errors import translate
from jobctl.errors import JobError

if TYPE_CHECKING:
    from sqlalchemy import Connection


class MissingTarget(JobError):
    """A policy names a table or column the database does not have."""


@dataclass(frozen=True)
class Target:
    """What one delete pass works on: ``table``'s rows with ``column < cutoff`` and ``where``."""

    table: str
    column: str
    cutoff: datetime | date
    #: The operator's extra condition (SQL, trusted config), ANDed.
    where: str | None = None


def _raw(conn: Connection) -> psycopg.Connection[Any]:
    # The SQLAlchemy connection's own psycopg connection, inside its transaction:
    # the statements are composed with psycopg.sql, which SQLAlchemy cannot take.
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


def _table(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


def _matching(target: Target) -> sql.Composed:
    """The condition of the rows the target deletes."""
    parts: list[sql.Composable] = [
        sql.SQL("{} < {}").format(sql.Identifier(target.column), sql.Literal(target.cutoff))
    ]
    if target.where is not None:
        # On its own line: a trailing ``-- comment`` in the condition ends before it.
        parts += [sql.SQL(" AND ("), sql.SQL(target.where), sql.SQL("\n)")]
    return sql.Composed(parts)


def table_exists(conn: Connection, table: str) -> bool:
    try:
        quoted = _table(table).as_string(_raw(conn))
        row = _raw(conn).execute("SELECT to_regclass(%s) IS NOT NULL", (quoted,)).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, f"cannot look up table {table}") from exc
    return bool(row and row[0])


def key_columns(conn: Connection, target: Target) -> tuple[str, ...]:
    """The table's primary key columns (``()``: it has none, batches go by ``ctid``);
    :class:`MissingTarget` when the table or the column does not exist."""
    raw = _raw(conn)
    try:
        quoted = _table(target.table).as_string(raw)
        row = raw.execute("SELECT to_regclass(%s)::oid", (quoted,)).fetchone()
        if row is None or row[0] is None:
            raise MissingTarget(f"table {target.table} does not exist")
        oid = row[0]
        found = raw.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = %s AND attname = %s"
            " AND attnum > 0 AND NOT attisdropped",
            (oid, target.column),
        ).fetchone()
        if found is None:
            raise MissingTarget(f"table {target.table} has no column {target.column!r}")
        pk = raw.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = %s AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)",
            (oid,),
        ).fetchall()
    except psycopg.Error as exc:
        raise translate(exc, f"cannot look up table {target.table}") from exc
    return tuple(str(r[0]) for r in pk)


def delete_batch(conn: Connection, target: Target, key: tuple[str, ...], limit: int) -> int:
    """Delete at most ``limit`` matching rows; how many went."""
    if len(key) == 1:
        # = ANY(ARRAY(...)): one index search with a sorted array. ``IN (SELECT ...)``
        # is planned as a hash join over the whole table once the table or the batch
        # is large (5-12 s a batch on 10M rows; bench/README.md "Cleanup benchmark").
        statement = sql.SQL(
            "DELETE FROM {t} WHERE {k} = ANY(ARRAY(SELECT {k} FROM {t} WHERE {m} LIMIT {n}))"
        ).format(
            t=_table(target.table),
            k=sql.Identifier(key[0]),
            m=_matching(target),
            n=sql.Literal(limit),
        )
    else:
        # No key, or a composite one (which has no array form): the physical row
        # address, stable within the one statement.
        statement = sql.SQL(
            "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {m} LIMIT {n}))"
        ).format(t=_table(target.table), m=_matching(target), n=sql.Literal(limit))
    try:
        cur = _raw(conn).execute(statement)
    except psycopg.Error as exc:
        raise translate(exc, f"cleanup of {target.table} failed") from exc
    return max(cur.rowcount, 0)


def preview(conn: Connection, target: Target) -> tuple[int, Any]:
    """What the target would delete: (rows, the oldest ``column`` value kept or None)."""
    statement = sql.SQL(
        "SELECT count(*) FILTER (WHERE {m}), min({c}) FILTER (WHERE ({m}) IS NOT TRUE) FROM {t}"
    ).format(t=_table(target.table), c=sql.Identifier(target.column), m=_matching(target))
    try:
        row = _raw(conn).execute(statement).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, f"cleanup preview of {target.table} failed") from exc
    assert row is not None  # an aggregate always returns one row
    return int(row[0]), row[1]
