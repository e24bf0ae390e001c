"""Snapshot tables: created on first use from a query's result columns, replaced per period.

A set's query is bound to ``:period_start`` / ``:period_end`` (dates, half-open)
and ``:period_type``. Re-running a period replaces it: rows whose key no longer
appears are deleted, changed rows updated, identical rows left untouched, new
rows inserted — all in one transaction, unique on (period_type, period_start,
key columns).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from jobctl.db.engine import Database
from jobctl.db.errors import translate
from jobctl.errors import UsageError
from jobctl.periods import Period

_PARAM = re.compile(r"(?<![:\w]):(period_start|period_end|period_type)\b")
META = ("period_type", "period_start", "period_end", "computed_at", "run_id")


@dataclass
class SnapshotCounts:
    rows: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0


def bind(query: str, period: Period) -> sql.Composed:
    """Bind the period parameters as literals (utility statements take no parameters)."""
    values = {
        "period_start": sql.Literal(period.start),
        "period_end": sql.Literal(period.end),
        "period_type": sql.Literal(period.type),
    }
    parts: list[sql.Composable] = []
    last = 0
    for match in _PARAM.finditer(query):
        parts.append(sql.SQL(query[last : match.start()].replace("{", "{{").replace("}", "}}")))
        parts.append(values[match.group(1)])
        last = match.end()
    parts.append(sql.SQL(query[last:].replace("{", "{{").replace("}", "}}")))
    return sql.Composed(parts)


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


def _ensure_table(cur: psycopg.Cursor[Any], table: str, key: tuple[str, ...]) -> list[str]:
    """Create the table from ``_jobctl_snap``'s columns if needed; return the value columns."""
    cur.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = '_jobctl_snap'::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum"
    )
    columns = cur.fetchall()
    names = [c[0] for c in columns]
    if len(set(names)) != len(names):
        raise UsageError(f"snapshot query for {table!r} returns duplicate column names {names}")
    for k in key:
        if k not in names:
            raise UsageError(f"snapshot key column {k!r} is not among the query's columns {names}")
    for meta in META:
        if meta in names:
            raise UsageError(
                f"snapshot query for {table!r} must not return a column named {meta!r}"
            )
    if "." in table:
        cur.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.split(".")[0]))
        )
    base = table.split(".")[-1]
    defs = [
        sql.SQL("period_type text NOT NULL"),
        sql.SQL("period_start date NOT NULL"),
        sql.SQL("period_end date NOT NULL"),
        *[sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns],
        sql.SQL("computed_at timestamptz NOT NULL DEFAULT now()"),
        sql.SQL("run_id bigint"),
        sql.SQL("CONSTRAINT {} UNIQUE NULLS NOT DISTINCT (period_type, period_start, {})").format(
            sql.Identifier(f"{base}_period_key"),
            sql.SQL(", ").join(map(sql.Identifier, key)),
        ),
    ]
    cur.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            _ident(table), sql.SQL(", ").join(defs)
        )
    )
    cur.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped",
        (_ident(table).as_string(cur),),
    )
    have = {r[0] for r in cur.fetchall()}
    missing = [n for n in names if n not in have]
    if missing:
        raise UsageError(
            f"snapshot table {table!r} lacks column(s) {', '.join(missing)} that the query now "
            "returns; add them (ALTER TABLE) or use a new table"
        )
    return [n for n in names if n not in key]


SnapshotConnection = psycopg.Connection[Any]


@contextmanager
def snapshot_transaction(db: Database, *, dry_run: bool = False) -> Iterator[SnapshotConnection]:
    """One transaction for every period of every set of a snapshot run."""
    try:
        with db.raw() as conn, conn.transaction(force_rollback=dry_run):
            yield conn
            if not dry_run:
                db.check_before_commit(conn)  # the run's fence: commit only while locked
    except psycopg.Error as exc:
        raise translate(exc, "snapshot failed in the database") from exc


def replace_period(
    conn: SnapshotConnection,
    *,
    table: str,
    key: tuple[str, ...],
    query: str,
    period: Period,
    timezone: str,
    run_id: int,
) -> SnapshotCounts:
    """Compute ``query`` for ``period`` and make the table's rows for it exactly that.

    Runs inside the caller's :func:`snapshot_transaction`.
    """
    counts = SnapshotCounts()
    try:
        cur = conn.cursor()
        # Dates in the query compare with timestamps in the configured zone.
        cur.execute("SELECT set_config('TimeZone', %s, true)", (timezone,))
        cur.execute(
            sql.SQL("CREATE TEMP TABLE _jobctl_snap ON COMMIT DROP AS {}").format(
                bind(query, period)
            )
        )
        counts.rows = cur.rowcount
        values = _ensure_table(cur, table, key)
        t = _ident(table)
        keys = sql.SQL(", ").join(map(sql.Identifier, key))
        kmatch = sql.SQL(" AND ").join(
            sql.SQL("t.{c} IS NOT DISTINCT FROM g.{c}").format(c=sql.Identifier(k)) for k in key
        )
        # Keys that vanished: EXCEPT is a hashed set operation that treats NULLs as
        # equal (like the NULLS NOT DISTINCT constraint); a NOT EXISTS on IS NOT
        # DISTINCT FROM cannot hash and grows with the square of the groups.
        cur.execute(
            sql.SQL(
                "DELETE FROM {t} t USING (SELECT {k} FROM {t} WHERE period_type = %s"
                " AND period_start = %s EXCEPT SELECT {k} FROM _jobctl_snap) g"
                " WHERE t.period_type = %s AND t.period_start = %s AND {m}"
            ).format(t=t, k=keys, m=kmatch),
            (period.type, period.start, period.type, period.start),
        )
        counts.deleted = cur.rowcount
        cols = [*key, *values]
        col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
        update = sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c in [*values, "period_end", "computed_at", "run_id"]
        )
        changed = (
            sql.SQL("({}) IS DISTINCT FROM ({})").format(
                sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in values),
                sql.SQL(", ").join(
                    sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in values
                ),
            )
            if values
            else sql.SQL("false")
        )
        cur.execute(
            sql.SQL(
                "WITH up AS (INSERT INTO {t} AS t (period_type, period_start, period_end,"
                " {cols}, computed_at, run_id)"
                " SELECT %s, %s, %s, {cols}, now(), %s FROM _jobctl_snap"
                " ON CONFLICT ON CONSTRAINT {uniq} DO UPDATE SET {update} WHERE {changed}"
                " RETURNING (xmax = 0) AS inserted)"
                " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)"
                " FROM up"
            ).format(
                t=t,
                cols=col_list,
                update=update,
                changed=changed,
                uniq=sql.Identifier(f"{table.split('.')[-1]}_period_key"),
            ),
            (period.type, period.start, period.end, run_id),
        )
        row = cur.fetchone()
        assert row is not None
        counts.new, counts.updated = int(row[0]), int(row[1])
        counts.unchanged = counts.rows - counts.new - counts.updated
        cur.execute("DROP TABLE _jobctl_snap")  # the next period uses the same transaction
    except psycopg.errors.CardinalityViolation as exc:
        raise UsageError(
            f"snapshot query for {table!r} returns the same key twice for {period}; "
            f"its key columns {list(key)} must be unique per period"
        ) from exc
    except psycopg.Error as exc:
        raise translate(exc, f"snapshot into {table!r} for {period} failed") from exc
    return counts
