"""Feed target tables and ``jobctl.feed_state``: stage with COPY, merge in one transaction.

A target table holds, per record: the key columns (text; plus ``partition_date``
when the date is part of the key), ``data`` (jsonb, the canonical record),
``hash`` (16-byte XXH3-128 of that canonical JSON), ``first_seen_at``,
``updated_at``, ``removed_at`` and ``last_seen_at`` (exact only for rows written
by the run; the view ``<table>_v`` gives the exact value for every row, taken
from ``jobctl.feed_state`` for rows the last sync saw unchanged).

The apply, in one transaction (a failed or killed sync changes nothing):

* **first load** (no rows yet for the partition): one ``COPY`` straight into the
  target; duplicate keys within the feed never reach it (detected client-side by
  a 64-bit key digest) and are applied afterwards, last occurrence winning;
* **re-sync** (:mod:`jobctl.db.resync`): only ``(key, hash, ordinal)`` of every
  record goes to the server, batch after batch while the client parses; the
  server names the records whose hash differs or whose key is new, and only
  those rows are sent and upserted. Unchanged rows are neither sent nor rewritten
  (no WAL, no bloat). Records absent from a complete feed get ``removed_at``;
  records that come back have it cleared and are counted ``restored`` (not
  ``updated``: that stays "an active row whose data changed").

Every count comes from the statements' own row counts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql

from jobctl.db.copybinary import SIGNATURE, TRAILER, row_encoder
from jobctl.db.copytext import Batcher, Spool, copy_line, quick_thread_switches
from jobctl.db.engine import Database
from jobctl.db.errors import translate
from jobctl.errors import UsageError

log = logging.getLogger("jobctl.sync")

#: A first load writes the COPY in blocks of this size (see :func:`_first_load`).
FIRST_LOAD_BLOCK = 1 << 18
#: ... into a local socket whose send buffer is widened to this (:func:`_widen_send_buffer`).
SEND_BUFFER = 4 << 20


def column_name(field_name: str) -> str:
    """A key field's column: lower-case letters, digits and ``_``."""
    name = re.sub(r"[^a-z0-9_]+", "_", field_name.lower()).strip("_") or "key"
    if name[0].isdigit():
        name = "k_" + name
    if name in RESERVED:
        name = "key_" + name
    return name[:63]


RESERVED = {
    "data",
    "hash",
    "first_seen_at",
    "updated_at",
    "removed_at",
    "last_seen_at",
    "partition_date",
}


@dataclass(frozen=True)
class FeedTable:
    name: str  # "permits" or "schema.permits"
    key_fields: tuple[str, ...]
    date_key: bool = False

    @property
    def key_columns(self) -> tuple[str, ...]:
        cols = tuple(column_name(f) for f in self.key_fields)
        if len(set(cols)) != len(cols):
            raise UsageError(f"key fields {list(self.key_fields)} map to the same column names")
        return cols

    @property
    def pk_columns(self) -> tuple[str, ...]:
        return (("partition_date",) if self.date_key else ()) + self.key_columns

    def ident(self, suffix: str = "") -> sql.Identifier:
        parts = self.name.split(".")
        parts[-1] += suffix
        return sql.Identifier(*parts)

    @property
    def state_key(self) -> str:
        return self.name if "." in self.name else f"public.{self.name}"


@dataclass
class ApplyStats:
    staged: int = 0
    distinct: int = 0
    duplicates: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    #: Rows that had been removed and are in the feed again (with or without changes).
    restored: int = 0
    #: Active rows (of the partition) before the apply: what ``removed`` is a share of.
    active_before: int = 0
    sent: int = 0
    first_load: bool = False
    duplicate_samples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FeedState:
    last_synced_at: datetime
    last_run_id: int | None
    fingerprint: str | None
    content_sha256: str | None
    content_bytes: int | None
    etag: str | None
    last_modified: str | None
    rows_active: int


@dataclass(frozen=True)
class StateUpdate:
    source: str
    run_id: int
    fingerprint: str
    content_sha256: str | None = None
    content_bytes: int | None = None
    etag: str | None = None
    last_modified: str | None = None


#: (key, canonical JSON); data None: a bad record whose key is known — it is still in
#: the feed (not removed) but nothing of it is applied.
Row = tuple[tuple[str, ...], bytes | None]
FeedConnection = psycopg.Connection[Any]


def key_digest(key: tuple[str, ...]) -> int:
    # 64-bit SipHash of the key: only used to notice duplicates within one feed. A
    # (2^-64-unlikely) collision is harmless: duplicates are applied as an upsert.
    return hash(key)


def _ddl(table: FeedTable) -> sql.Composed:
    """The table, without its primary key: :func:`_primary_key` adds it (see there)."""
    cols: list[sql.Composable] = [sql.SQL("partition_date date NOT NULL")] if table.date_key else []
    cols += [sql.SQL("{} text NOT NULL").format(sql.Identifier(c)) for c in table.key_columns]
    cols += [
        sql.SQL("data jsonb NOT NULL"),
        sql.SQL("hash bytea NOT NULL"),
        sql.SQL("first_seen_at timestamptz NOT NULL DEFAULT now()"),
        sql.SQL("updated_at timestamptz NOT NULL DEFAULT now()"),
        sql.SQL("last_seen_at timestamptz NOT NULL DEFAULT now()"),
        sql.SQL("removed_at timestamptz"),
    ]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        table.ident(), sql.SQL(", ").join(cols)
    )


def _primary_key(table: FeedTable) -> sql.Composed:
    """The primary key of a table :func:`ensure_table` created, added after its first load.

    Built once from the loaded rows (one sort) instead of grown row by row during the
    COPY: on the 237,000-record feed the server's part of a first load takes
    ~0.5 s less (2.9-3.8 s against 3.2-4.5 s with the key in place, psql \\copy,
    8 interleaved pairs: every pair faster). The rows are unique on the key (the client diverts
    repeated keys), and the table, created in the same transaction, is seen by
    nobody before it has its key.
    """
    return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
        table.ident(),
        sql.Identifier(table.name.split(".")[-1] + "_pkey"),
        sql.SQL(", ").join(map(sql.Identifier, table.pk_columns)),
    )


def _view(table: FeedTable) -> sql.Composed:
    part = sql.SQL("t.partition_date::text") if table.date_key else sql.Literal("")
    keep = [*table.pk_columns, "data", "hash", "first_seen_at", "updated_at", "removed_at"]
    return sql.SQL(
        "CREATE OR REPLACE VIEW {view} AS SELECT {cols},"
        " CASE WHEN t.removed_at IS NULL THEN greatest(t.last_seen_at, s.last_synced_at)"
        " ELSE t.last_seen_at END AS last_seen_at"
        " FROM {table} t LEFT JOIN jobctl.feed_state s"
        " ON s.target = {target} AND s.partition = {part}"
    ).format(
        view=table.ident("_v"),
        cols=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in keep),
        table=table.ident(),
        target=sql.Literal(table.state_key),
        part=part,
    )


def ensure_table(cur: psycopg.Cursor[Any], table: FeedTable) -> bool:
    """Create ``table`` if it does not exist; True if it has no primary key yet.

    A table this creates has none: it is empty, and :func:`_first_load` adds the key
    after the COPY, before the transaction ends (see :func:`_primary_key`).
    """
    if "." in table.name:
        cur.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(table.name.split(".")[0])
            )
        )
    cur.execute(_ddl(table))
    cur.execute(
        "SELECT c.relkind::text, NOT EXISTS (SELECT 1 FROM pg_constraint"
        " WHERE conrelid = c.oid AND contype = 'p') FROM pg_class c WHERE c.oid = %s::regclass",
        (table.ident().as_string(cur),),
    )
    found = cur.fetchone()
    kind, keyless = (found[0], bool(found[1])) if found else ("r", False)
    if kind != "r":  # CREATE TABLE IF NOT EXISTS passed over a view of that name
        what = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}
        raise UsageError(
            f"{table.name!r} is {what.get(kind, 'not a plain table')}, not a table jobctl"
            " can write: choose another table"
        )
    cur.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped",
        (table.ident().as_string(cur),),
    )
    have = {r[0] for r in cur.fetchall()}
    missing = set(table.pk_columns) | {"data", "hash", "removed_at", "last_seen_at"}
    missing -= have
    if missing:
        raise UsageError(
            f"table {table.name!r} exists but lacks column(s) {', '.join(sorted(missing))}: "
            "it was not created by jobctl for this key; choose another table"
        )
    cur.execute(_view(table))
    return keyless


def read_state(db: Database, table: FeedTable, partition: str) -> FeedState | None:
    try:
        with db.raw() as conn:
            row = conn.execute(
                "SELECT last_synced_at, last_run_id, fingerprint, content_sha256, content_bytes,"
                " etag,"
                " last_modified, rows_active FROM jobctl.feed_state"
                " WHERE target = %s AND partition = %s",
                (table.state_key, partition),
            ).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, f"cannot read the sync state of {table.name!r}") from exc
    return FeedState(*row) if row else None


@contextmanager
def feed_transaction(db: Database, *, dry_run: bool = False) -> Iterator[FeedConnection]:
    """One transaction for every source of a sync run: all of it applies, or none.

    ``dry_run`` rolls it back at the end. Leaving the block with an exception
    rolls back too; a killed process leaves nothing behind either.
    """
    try:
        with db.raw() as conn, conn.transaction(force_rollback=dry_run):
            # The run may wait on a download between two sources.
            conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            yield conn
            if not dry_run:
                db.check_before_commit(conn)  # the run's fence: commit only while locked
    except psycopg.Error as exc:
        raise translate(exc, "sync failed in the database") from exc


def touch_unchanged(
    conn: FeedConnection, table: FeedTable, partition: str, update: StateUpdate
) -> int:
    """The feed is known unchanged: record the sync, return the active row count."""
    where, params = partition_filter(table, partition)
    try:
        active = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE removed_at IS NULL").format(table.ident())
            + where,
            params,
        ).fetchone()
        count = int(active[0]) if active else 0
        _write_state(conn, table, partition, update, count)
    except psycopg.Error as exc:
        raise translate(exc, f"cannot record the sync of {table.name!r}") from exc
    return count


def partition_filter(table: FeedTable, partition: str) -> tuple[sql.Composable, tuple[Any, ...]]:
    if table.date_key:
        return sql.SQL(" AND partition_date = %s"), (date.fromisoformat(partition),)
    return sql.SQL(""), ()


def _write_state(
    conn: psycopg.Connection[Any],
    table: FeedTable,
    partition: str,
    update: StateUpdate,
    rows_active: int,
) -> None:
    conn.execute(
        "INSERT INTO jobctl.feed_state (target, partition, source, last_synced_at, last_run_id,"
        " fingerprint, content_sha256, content_bytes, etag, last_modified, rows_active)"
        " VALUES (%s, %s, %s, now(), %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (target, partition) DO UPDATE SET source = EXCLUDED.source,"
        " last_synced_at = EXCLUDED.last_synced_at, last_run_id = EXCLUDED.last_run_id,"
        " fingerprint = EXCLUDED.fingerprint, content_sha256 = EXCLUDED.content_sha256,"
        " content_bytes = EXCLUDED.content_bytes, etag = EXCLUDED.etag,"
        " last_modified = EXCLUDED.last_modified, rows_active = EXCLUDED.rows_active",
        (
            table.state_key,
            partition,
            update.source,
            update.run_id,
            update.fingerprint,
            update.content_sha256,
            update.content_bytes,
            update.etag,
            update.last_modified,
            rows_active,
        ),
    )


def apply_feed(
    conn: FeedConnection,
    table: FeedTable,
    rows: Iterable[Row],
    *,
    partition: str,
    complete: bool,
    state: StateUpdate | Callable[[], StateUpdate],
    check: Callable[[ApplyStats], None] = lambda stats: None,
) -> ApplyStats:
    """Stage ``rows`` (key, canonical JSON) and merge them into ``table``.

    Runs inside the caller's :func:`feed_transaction`; ``check`` may raise to
    refuse the result (the whole transaction then rolls back).
    """
    try:
        with quick_thread_switches():
            stats = _apply(conn, table, rows, partition, complete)
        # after = before + new + restored - removed, all counted by this transaction
        active = stats.active_before + stats.new + stats.restored - stats.removed
        final = state() if callable(state) else state
        _write_state(conn, table, partition, final, active)
        check(stats)
        return stats
    except psycopg.errors.QueryCanceled as exc:
        raise translate(exc, f"sync into {table.name!r} was cancelled") from exc
    except psycopg.Error as exc:
        raise translate(exc, f"sync into {table.name!r} failed") from exc


def _apply(
    conn: psycopg.Connection[Any],
    table: FeedTable,
    rows: Iterable[Row],
    partition: str,
    complete: bool,
) -> ApplyStats:
    cur = conn.cursor()
    keyless = ensure_table(cur, table)
    where, params = partition_filter(table, partition)
    cur.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE true").format(table.ident())
        + where
        + sql.SQL(")"),
        params,
    )
    row = cur.fetchone()
    has_rows = bool(row and row[0])
    prefix = f"{partition}\t" if table.date_key else ""
    _widen_send_buffer(conn)
    if has_rows:
        from jobctl.db.resync import resync  # imports this module

        return resync(conn, table, rows, partition, complete)
    return _first_load(conn, table, rows, partition, prefix, keyless=keyless)


def _first_load(
    conn: psycopg.Connection[Any],
    table: FeedTable,
    rows: Iterable[Row],
    partition: str,
    prefix: str,
    *,
    keyless: bool = False,
) -> ApplyStats:
    """One binary COPY straight into the (empty) partition.

    ``keyless``: the table has no primary key yet (this transaction created it), and
    it is added after the COPY (see :func:`_primary_key`).

    The main thread writes the COPY itself, in blocks of :data:`FIRST_LOAD_BLOCK`:
    the socket's send buffer is the queue between the two sides, so the server
    works while the client parses, and a block the server cannot take yet blocks
    the client only while the server is the slower side. (A writer thread, as
    psycopg offers, cost ~0.3 s of CPU on the 237,000-record feed in hand-offs of
    the GIL, and held 16 MiB of queued buffers.)
    """
    stats = ApplyStats(first_load=True)
    seen: set[int] = set()
    dups: Spool | None = None
    encode = row_encoder(
        len(table.key_columns), date.fromisoformat(partition) if table.date_key else None
    )
    cols = sql.SQL(", ").join(map(sql.Identifier, [*table.pk_columns, "hash", "data"]))
    cur = conn.cursor()
    with cur.copy(
        sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table.ident(), cols)
    ) as copy:
        out = Batcher(copy.write, FIRST_LOAD_BLOCK)
        out.add(SIGNATURE)
        for key, data in rows:
            if data is None:
                continue
            stats.staged += 1
            digest = key_digest(key)
            if digest in seen:
                dups = dups or Spool(None)
                dups.add(copy_line(prefix, key, data))
                stats.duplicates += 1
                if len(stats.duplicate_samples) < 20:
                    stats.duplicate_samples.append("/".join(key))
                continue
            seen.add(digest)
            out.add(encode(key, data))
        out.add(TRAILER)
        out.flush()
    if keyless:
        cur.execute(_primary_key(table))
    stats.new = stats.distinct = stats.staged - stats.duplicates
    stats.sent = stats.staged
    if dups is not None:
        _apply_duplicates(conn, table, dups)
        dups.close()
    return stats


def _widen_send_buffer(conn: psycopg.Connection[Any]) -> None:
    """Let the feed connection's socket hold up to :data:`SEND_BUFFER` bytes in flight.

    For a first load the send buffer is the queue between the parsing client and
    the ingesting server (no writer thread); a re-sync's worker gets its batch of
    keys off its hands sooner. A Unix socket's default (208 KiB: ~3 ms of the
    server's work) runs dry whenever the client pauses a little longer — a block
    of lines parsed at once, a garbage collection — and the server waits: with
    4 MiB the first load of the 237,000-record feed took 3.7-3.9 s against
    4.0-4.6 s. The kernel caps the value at ``net.core.wmem_max``. TCP is left
    alone: it sizes its buffer itself, which setting it would switch off.
    """
    with (
        contextlib.suppress(OSError, ValueError),
        socket.socket(fileno=os.dup(conn.fileno())) as sock,  # closes the duplicate only
    ):
        if sock.family == socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


def _apply_duplicates(conn: psycopg.Connection[Any], table: FeedTable, dups: Spool) -> None:
    """Later occurrences of a key replace the first one (last occurrence wins)."""
    cur = conn.cursor()
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE _jobctl_dups ON COMMIT DROP AS"
            " SELECT {}, hash, data FROM {} WITH NO DATA"
        ).format(sql.SQL(", ").join(map(sql.Identifier, table.pk_columns)), table.ident())
    )
    cur.execute("ALTER TABLE _jobctl_dups ADD COLUMN ord bigserial")
    cols = sql.SQL(", ").join(map(sql.Identifier, [*table.pk_columns, "hash", "data"]))
    with cur.copy(sql.SQL("COPY _jobctl_dups ({}) FROM STDIN").format(cols)) as copy:
        for line in dups.selected():
            copy.write(line)
    pk = sql.SQL(", ").join(map(sql.Identifier, table.pk_columns))
    cur.execute(
        sql.SQL(
            "INSERT INTO {t} AS t ({pk}, hash, data) SELECT {pk}, hash, data FROM"
            " (SELECT DISTINCT ON ({pk}) * FROM _jobctl_dups ORDER BY {pk}, ord DESC) d"
            " ON CONFLICT ({pk}) DO UPDATE SET data = EXCLUDED.data, hash = EXCLUDED.hash"
        ).format(t=table.ident(), pk=pk)
    )
    cur.execute("DROP TABLE _jobctl_dups")  # the next source in this transaction
