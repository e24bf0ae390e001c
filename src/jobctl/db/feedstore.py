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
* **re-sync**: ``COPY`` only ``(ordinal, key, hash)`` of every record into a
  temporary table while the full rows are spooled to a temporary file; the
  server names the ordinals whose hash differs or whose key is new; only those
  rows are sent and upserted. Unchanged rows are neither sent nor rewritten (no
  WAL, no bloat). Records absent from a complete feed get ``removed_at``;
  records that come back have it cleared and are counted ``restored`` (not
  ``updated``: that stays "an active row whose data changed").

Every count comes from the statements' own row counts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from jobctl.db.copytext import (
    BoundedWriter,
    Copier,
    Spool,
    copy_data,
    copy_head,
    copy_key,
    copy_line,
    quick_thread_switches,
)
from jobctl.db.engine import Database
from jobctl.db.errors import translate
from jobctl.errors import UsageError

log = logging.getLogger("jobctl.sync")


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


def _key_digest(key: tuple[str, ...]) -> int:
    # 64-bit SipHash of the key: only used to notice duplicates within one feed. A
    # (2^-64-unlikely) collision is harmless: duplicates are applied as an upsert.
    return hash(key)


def _ddl(table: FeedTable) -> sql.Composed:
    cols: list[sql.Composable] = [sql.SQL("partition_date date NOT NULL")] if table.date_key else []
    cols += [sql.SQL("{} text NOT NULL").format(sql.Identifier(c)) for c in table.key_columns]
    cols += [
        sql.SQL("data jsonb NOT NULL"),
        sql.SQL("hash bytea NOT NULL"),
        sql.SQL("first_seen_at timestamptz NOT NULL DEFAULT now()"),
        sql.SQL("updated_at timestamptz NOT NULL DEFAULT now()"),
        sql.SQL("last_seen_at timestamptz NOT NULL DEFAULT now()"),
        sql.SQL("removed_at timestamptz"),
        sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
            sql.Identifier(table.name.split(".")[-1] + "_pkey"),
            sql.SQL(", ").join(map(sql.Identifier, table.pk_columns)),
        ),
    ]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        table.ident(), sql.SQL(", ").join(cols)
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


def ensure_table(cur: psycopg.Cursor[Any], table: FeedTable) -> None:
    if "." in table.name:
        cur.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(table.name.split(".")[0])
            )
        )
    cur.execute(_ddl(table))
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
    where, params = _partition_filter(table, partition)
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


def _partition_filter(table: FeedTable, partition: str) -> tuple[sql.Composable, tuple[Any, ...]]:
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
    spool_dir: Path | None = None,
) -> ApplyStats:
    """Stage ``rows`` (key, canonical JSON) and merge them into ``table``.

    Runs inside the caller's :func:`feed_transaction`; ``check`` may raise to
    refuse the result (the whole transaction then rolls back).
    """
    try:
        with quick_thread_switches():
            stats = _apply(conn, table, rows, partition, complete, spool_dir)
        if stats.first_load:
            active = stats.distinct
        else:
            where, params = _partition_filter(table, partition)
            found = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE removed_at IS NULL").format(table.ident())
                + where,
                params,
            ).fetchone()
            active = int(found[0]) if found else 0
        # after = before + new + restored - removed, all counted by this transaction
        stats.active_before = active - stats.new - stats.restored + stats.removed
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
    spool_dir: Path | None,
) -> ApplyStats:
    cur = conn.cursor()
    ensure_table(cur, table)
    where, params = _partition_filter(table, partition)
    cur.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE true").format(table.ident())
        + where
        + sql.SQL(")"),
        params,
    )
    row = cur.fetchone()
    has_rows = bool(row and row[0])
    prefix = f"{partition}\t" if table.date_key else ""
    if has_rows:
        return _resync(conn, table, rows, partition, prefix, complete, spool_dir)
    return _first_load(conn, table, rows, prefix)


def _first_load(
    conn: psycopg.Connection[Any], table: FeedTable, rows: Iterable[Row], prefix: str
) -> ApplyStats:
    stats = ApplyStats(first_load=True)
    seen: set[int] = set()
    dups: Spool | None = None
    cols = sql.SQL(", ").join(map(sql.Identifier, [*table.pk_columns, "hash", "data"]))
    cur = conn.cursor()
    with cur.copy(
        sql.SQL("COPY {} ({}) FROM STDIN").format(table.ident(), cols),
        writer=BoundedWriter(cur),
    ) as copy:
        out = Copier(copy)
        for key, data in rows:
            if data is None:
                continue
            stats.staged += 1
            line = copy_line(prefix, key, data)
            digest = _key_digest(key)
            if digest in seen:
                dups = dups or Spool(None)
                dups.add(line)
                stats.duplicates += 1
                if len(stats.duplicate_samples) < 20:
                    stats.duplicate_samples.append("/".join(key))
                continue
            seen.add(digest)
            out.add(line)
        out.flush()
    stats.new = stats.distinct = stats.staged - stats.duplicates
    stats.sent = stats.staged
    if dups is not None:
        _apply_duplicates(conn, table, dups)
        dups.close()
    return stats


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


@dataclass
class _Resync:
    """What the phases of one re-sync share.

    One per source: the temporary tables it names live in the run's transaction and
    are dropped at the end, so the next source of the run can create them again.
    """

    cur: psycopg.Cursor[Any]
    table: FeedTable
    #: The full COPY lines of every record, line number = ordinal, until the server
    #: has said which of them to send.
    spool: Spool
    #: When the previous sync of this partition ran: the last time its unchanged
    #: rows were seen (they are not rewritten, so their own last_seen_at is older).
    previous_sync: datetime | None
    stats: ApplyStats = field(default_factory=ApplyStats)
    #: The staged keys with one row per key: ``_jobctl_keys`` itself unless the feed
    #: repeats a key (then ``_jobctl_winners``, the last occurrence of each).
    winners: str = "_jobctl_keys"
    #: Bit ``ordinal`` set: that record is new, changed or back after removal.
    wanted: bytearray = field(default_factory=bytearray)

    @property
    def pk(self) -> list[sql.Identifier]:
        return [sql.Identifier(c) for c in self.table.pk_columns]

    @property
    def pk_list(self) -> sql.Composable:
        return sql.SQL(", ").join(self.pk)

    def match(self, left: str, right: str) -> sql.Composable:
        """``left.c = right.c AND …`` over the primary key (a join the planner can hash)."""
        # The aliases are this module's own (t, w, d, k): plain text, as they always were.
        return sql.SQL(" AND ").join(
            sql.SQL(f"{left}.{{c}} = {right}.{{c}}").format(c=c) for c in self.pk
        )


def _resync(
    conn: psycopg.Connection[Any],
    table: FeedTable,
    rows: Iterable[Row],
    partition: str,
    prefix: str,
    complete: bool,
    spool_dir: Path | None,
) -> ApplyStats:
    """Merge a feed into a partition that has rows: send and rewrite only what changed."""
    run = _start_resync(conn, table, partition, spool_dir)
    try:
        _stage_keys(run, rows, prefix)
        _find_changed(run)
        if run.stats.sent:
            _send_changed(run)
    finally:
        run.spool.close()
    stats = run.stats
    if stats.sent:
        _merge_changed(run)
    stats.unchanged = stats.distinct - stats.new - stats.updated - stats.restored
    if complete:
        _mark_removed(run, partition)
    # The next source of the run uses the same transaction and names.
    run.cur.execute("DROP TABLE IF EXISTS _jobctl_keys, _jobctl_data, _jobctl_winners")
    return stats


def _start_resync(
    conn: psycopg.Connection[Any], table: FeedTable, partition: str, spool_dir: Path | None
) -> _Resync:
    """Read the previous sync's time and create the (empty) temporary tables.

    ``_jobctl_keys`` gets ``(key, hash, ord)`` of every record, ``_jobctl_data`` the
    full rows of the changed ones only; both copy the target's column types, so the
    joins compare like with like.
    """
    cur = conn.cursor()
    cur.execute(
        "SELECT last_synced_at FROM jobctl.feed_state WHERE target = %s AND partition = %s",
        (table.state_key, partition),
    )
    previous = cur.fetchone()
    pk_list = sql.SQL(", ").join(sql.Identifier(c) for c in table.pk_columns)
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE _jobctl_keys ON COMMIT DROP AS SELECT {}, hash FROM {} WITH NO DATA"
        ).format(pk_list, table.ident())
    )
    cur.execute("ALTER TABLE _jobctl_keys ADD COLUMN ord integer")
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE _jobctl_data ON COMMIT DROP AS"
            " SELECT {}, hash, data FROM {} WITH NO DATA"
        ).format(pk_list, table.ident())
    )
    return _Resync(cur, table, Spool(spool_dir), previous[0] if previous else None)


def _stage_keys(run: _Resync, rows: Iterable[Row], prefix: str) -> None:
    """COPY ``(key, hash, ordinal)`` of every record to the server; spool the full rows.

    Only the keys and hashes cross the wire here: the server alone can tell which
    records differ from the stored ones, and most records of a daily feed do not.
    A record without data (bad, but its key is known) is staged with a NULL hash so
    that its stored row is not marked removed, and spooled as an empty line so that
    spool line numbers stay equal to ordinals. Duplicate keys are counted here by a
    client-side digest; which occurrence wins is decided on the server.
    """
    stats = run.stats
    spool = run.spool
    seen: set[int] = set()
    cur = run.cur
    with cur.copy(
        sql.SQL("COPY _jobctl_keys ({}, hash, ord) FROM STDIN").format(run.pk_list),
        writer=BoundedWriter(cur),
    ) as copy:
        out = Copier(copy)
        ordinal = -1
        keys_only = 0
        # The hot loop (every record of the feed): locals only, no attribute lookups
        # on ``run`` beyond the counters that are rarely touched.
        for ordinal, (key, data) in enumerate(rows):
            if data is None:
                keys_only += 1
                spool.add(b"\\N\n")  # keeps spool line numbers equal to ordinals
                keys = f"{prefix}{copy_key(key)}" if key else prefix[:-1]
                out.add(f"{keys}\t\\N\t{ordinal}\n".encode())
                continue
            head = copy_head(prefix, key, data)
            spool.add(head + b"\t" + copy_data(data) + b"\n")
            out.add(head + b"\t%d\n" % ordinal)
            digest = _key_digest(key)
            if digest in seen:
                stats.duplicates += 1
                if len(stats.duplicate_samples) < 20:
                    stats.duplicate_samples.append("/".join(key))
            else:
                seen.add(digest)
        out.flush()
    stats.staged = ordinal + 1
    stats.distinct = stats.staged - stats.duplicates - keys_only


def _find_changed(run: _Resync) -> None:
    """Ask the server which staged records are new, changed or back after removal.

    The answer is their ordinals (COPY TO STDOUT, a few bytes each), kept as a
    bitmap of the feed's length: ``stats.sent`` is how many bits are set. When the
    feed repeats a key, only its last occurrence is compared (and later sent).
    """
    cur, stats = run.cur, run.stats
    if stats.duplicates:
        cur.execute(
            sql.SQL(
                "CREATE TEMP TABLE _jobctl_winners ON COMMIT DROP AS SELECT DISTINCT ON"
                " ({pk}) * FROM _jobctl_keys ORDER BY {pk}, ord DESC"
            ).format(pk=run.pk_list)
        )
        run.winners = "_jobctl_winners"
    # Fresh statistics: without them the planner guesses the temp table's size and
    # may pick a nested loop over the whole target.
    cur.execute(f"ANALYZE {run.winners}")
    wanted = run.wanted = bytearray((stats.staged >> 3) + 1)
    changed = 0
    with cur.copy(
        sql.SQL(
            "COPY (SELECT w.ord FROM {w} w LEFT JOIN {t} t ON {match}"
            # new, changed, or back after being removed (sent and upserted too)
            " WHERE w.hash IS NOT NULL AND (t.hash IS DISTINCT FROM w.hash"
            " OR t.removed_at IS NOT NULL)) TO STDOUT"
        ).format(w=sql.Identifier(run.winners), t=run.table.ident(), match=run.match("t", "w"))
    ) as copy:
        for chunk in copy:
            for number in bytes(chunk).split():
                ordinal = int(number)
                wanted[ordinal >> 3] |= 1 << (ordinal & 7)
                changed += 1
    stats.sent = changed


def _send_changed(run: _Resync) -> None:
    """COPY the full rows of the wanted ordinals from the spool into ``_jobctl_data``."""
    cur = run.cur
    with cur.copy(
        sql.SQL("COPY _jobctl_data ({}, hash, data) FROM STDIN").format(run.pk_list),
        writer=BoundedWriter(cur),
    ) as copy:
        out = Copier(copy)
        for line in run.spool.selected(run.wanted):
            out.add(line)
        out.flush()


def _merge_changed(run: _Resync) -> None:
    """Upsert the sent rows; count new, updated and restored from the statements.

    Restored rows (removed, now in the feed again) are counted before the upsert
    clears their ``removed_at``; the upsert's own count of conflicts includes them,
    so ``updated`` is what remains: active rows whose data changed.
    """
    cur, stats, t = run.cur, run.stats, run.table.ident()
    cur.execute(
        sql.SQL(
            "SELECT count(*) FROM _jobctl_data d JOIN {t} t ON {match}"
            " WHERE t.removed_at IS NOT NULL"
        ).format(t=t, match=run.match("t", "d"))
    )
    back = cur.fetchone()
    stats.restored = int(back[0]) if back else 0
    cur.execute(
        sql.SQL(
            "WITH up AS (INSERT INTO {t} AS t ({pk}, hash, data)"
            " SELECT {pk}, hash, data FROM _jobctl_data"
            " ON CONFLICT ({pk}) DO UPDATE SET data = EXCLUDED.data, hash = EXCLUDED.hash,"
            " updated_at = now(), last_seen_at = now(), removed_at = NULL"
            " RETURNING (xmax = 0) AS inserted)"
            " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)"
            " FROM up"
        ).format(t=t, pk=run.pk_list)
    )
    result = cur.fetchone()
    assert result is not None
    stats.new = int(result[0])
    stats.updated = int(result[1]) - stats.restored


def _mark_removed(run: _Resync, partition: str) -> None:
    """A complete feed: set ``removed_at`` on the partition's active rows it lacks.

    Every staged key counts as present, bad records' keys included (a record that
    failed to parse is not a record that left the feed).
    """
    where, params = _partition_filter(run.table, partition)
    run.cur.execute(
        # last_seen_at: the previous sync saw it (unchanged rows were not rewritten).
        sql.SQL(
            "UPDATE {t} t SET removed_at = now(), updated_at = now(),"
            " last_seen_at = greatest(t.last_seen_at, %s) WHERE t.removed_at IS NULL"
        ).format(t=run.table.ident())
        + where
        + sql.SQL(" AND NOT EXISTS (SELECT 1 FROM _jobctl_keys k WHERE {})").format(
            run.match("k", "t")
        ),
        (run.previous_sync, *params),
    )
    run.stats.removed = run.cur.rowcount
