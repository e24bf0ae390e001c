"""Re-sync of a partition that has rows: the server compares while the client parses.

The main thread parses and hands batches of records to a worker thread that owns
the connection for the length of the stream. For each batch the worker

1. COPYs ``(key, hash, ordinal)`` of its records into ``_jobctl_keys`` (binary rows);
2. joins those rows (found by their ordinals, which are indexed) with the target
   (index probes on its primary key), answering how many of the batch's keys met
   an active row, how many met a removed one, and the ordinals of the records that
   are new, changed or back after removal;
3. builds the full rows of those records from the batch the main thread handed
   over (still in memory: nothing is spooled) and COPYs them into ``_jobctl_data``.

So the join and the sending of changed rows overlap the parse; what is left after
the last record is the upsert of the changed rows and, only when the feed is
complete and its keys met fewer active rows than the partition had, the anti-join
that marks the others removed.

Index probes cost the server about twice what one hash join of every key costs.
While the client is the slower side that work is free (the server would wait
anyway); when it is not — the next batch already waits when the worker takes one
— the worker *defers* the batch instead: its keys go to ``_jobctl_later`` (a COPY,
cheap) and its rows to a spool file as the batch holds them (two writes, no
per-record work), and after the stream all deferred batches are compared at once
by a hash join and only their wanted rows are read back from the spool.
The balance between the two follows the speeds of the two sides, batch by batch.

The active-row count is taken by the worker before the first batch (it overlaps
the parse too) and the count after the merge follows from the statements' own
counts: ``before + new + restored - removed``.

A key repeated within the feed (a duplicate, or a bad record's key seen again)
makes the per-batch counts unsafe: then only the last good occurrence of each key
is kept in ``_jobctl_data``, and the restored and removed rows are counted by
statements of their own, which a feed without repeats never needs.

Fault safety: everything runs in the caller's transaction. A worker error stops the
main thread at its next batch; an exception in the main thread (a parse error, a
signal) cancels the worker's statement and waits for the worker before it
propagates, so the transaction rolls back on an idle connection.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import accumulate
from typing import Any

import psycopg
import xxhash
from psycopg import sql

from jobctl.db.copybinary import (
    HASH_FIELD,
    NULL,
    SIGNATURE,
    TRAILER,
    field_count,
    int4_field,
    jsonb_field,
    key_encoder,
)
from jobctl.db.feedstore import ApplyStats, FeedTable, Row, key_digest, partition_filter

#: A batch is handed to the worker at this many bytes of canonical JSON, or records.
BATCH_BYTES = 2 << 20
BATCH_RECORDS = 4096
#: Batches waiting for the worker: with the one it works on and the one being
#: filled, at most four batches (~8 MB) are held in memory.
QUEUED_BATCHES = 2
#: The changed rows are sent to the server when this many bytes have piled up.
SEND_BYTES = 1 << 20
#: A batch the worker takes while the next one already waits (the server is behind
#: the client) is deferred: its keys are staged in ``_jobctl_later`` and its rows
#: spooled to disk, and all deferred batches are compared at once, by a hash join,
#: after the stream. None: decide so, batch by batch; True / False: always / never.
DEFER: bool | None = None


@dataclass
class Batch:
    """Consecutive records of the feed, from ordinal ``first`` on."""

    first: int
    #: Binary COPY rows ``key, hash, ordinal`` (hash NULL for a bad record).
    keys: list[bytes] = field(default_factory=list)
    #: Per record: its binary COPY fields before ``data``: key, hash (empty for a bad record).
    heads: list[bytes] = field(default_factory=list)
    #: The records' canonical JSON, one after the other; ``ends[i]`` is where record
    #: ``first + i`` ends (a bad record is empty). Copied here rather than kept as
    #: the serialiser's own objects, which orjson over-allocates (~8 KB each).
    blob: bytearray = field(default_factory=bytearray)
    ends: list[int] = field(default_factory=list)


class _DeferredRows:
    """The rows of deferred batches, on disk as the batches hold them.

    A batch is written in two pieces — its canonical JSON blob and its COPY heads,
    each one ``write`` — with the offsets kept in memory (arrays: 16 bytes a
    record). Deferring a batch therefore costs the client no per-record Python; only
    the rows the comparison asks for are read back, one ``pread`` each.
    """

    def __init__(self) -> None:
        # Closed by close(); a context manager would not fit the spool's lifetime.
        self.file = tempfile.TemporaryFile(prefix="jobctl-spool-")  # noqa: SIM115
        self._size = 0
        self._firsts: list[int] = []
        #: Per batch: where its blob and its heads start, and where each record's end.
        self._batches: list[tuple[int, array[int], int, array[int]]] = []

    def add(self, batch: Batch) -> None:
        heads = b"".join(batch.heads)
        head_ends = array("q", accumulate(map(len, batch.heads)))
        blob_at = self._size
        self.file.write(batch.blob)
        self.file.write(heads)
        self._size += len(batch.blob) + len(heads)
        self._firsts.append(batch.first)
        self._batches.append(
            (blob_at, array("q", batch.ends), blob_at + len(batch.blob), head_ends)
        )

    def rows(self, ordinals: Iterable[int]) -> Iterator[tuple[int, bytes, bytes]]:
        """(ordinal, COPY head, canonical JSON) of each of ``ordinals`` (good records)."""
        self.file.flush()
        fd = self.file.fileno()
        for ordinal in ordinals:
            index = bisect_right(self._firsts, ordinal) - 1
            blob_at, ends, heads_at, head_ends = self._batches[index]
            i = ordinal - self._firsts[index]
            start, end = (ends[i - 1] if i else 0), ends[i]
            head_start, head_end = (head_ends[i - 1] if i else 0), head_ends[i]
            data = os.pread(fd, end - start, blob_at + start)
            head = os.pread(fd, head_end - head_start, heads_at + head_start)
            if len(data) != end - start or not head:  # pragma: no cover - a broken disk
                raise OSError(f"the re-sync's spool lost the row of record {ordinal}")
            yield ordinal, head, data

    def close(self) -> None:
        self.file.close()


class _Worker(threading.Thread):
    """The server half of a re-sync: stages and compares batch after batch."""

    def __init__(self, conn: psycopg.Connection[Any], table: FeedTable, partition: str) -> None:
        super().__init__(name="jobctl-resync", daemon=True)
        self.conn = conn
        self.table = table
        self.partition = partition
        self.queue: queue.Queue[Batch | None] = queue.Queue(maxsize=QUEUED_BATCHES)
        self.error: BaseException | None = None
        self.stopping = False
        self.active_before = 0
        #: Staged keys that met an active row / rows to restore / rows sent.
        self.matched = 0
        self.restored = 0
        self.sent = 0
        #: Records deferred (and their rows, spooled) until after the stream.
        self.deferred = 0
        self._spool: _DeferredRows | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        pk = sql.SQL(", ").join(map(sql.Identifier, table.pk_columns))
        match = sql.SQL(" AND ").join(
            sql.SQL("t.{c} = b.{c}").format(c=sql.Identifier(c)) for c in table.pk_columns
        )
        self._stage = sql.SQL(
            "COPY _jobctl_keys ({}, hash, ord) FROM STDIN (FORMAT BINARY)"
        ).format(pk)
        compare = (
            "SELECT count(t.hash) FILTER (WHERE t.removed_at IS NULL),"
            " count(*) FILTER (WHERE b.hash IS NOT NULL AND t.removed_at IS NOT NULL),"
            # new, changed, or back after being removed: sent and upserted
            " array_agg(b.ord) FILTER (WHERE b.hash IS NOT NULL"
            " AND (t.hash IS DISTINCT FROM b.hash OR t.removed_at IS NOT NULL))"
            " FROM {b} b LEFT JOIN {t} t ON {match}"
        )
        self._compare = sql.SQL(compare + " WHERE b.ord BETWEEN %s AND %s").format(
            b=sql.Identifier("_jobctl_keys"), t=table.ident(), match=match
        )
        self._later = sql.SQL(
            "COPY _jobctl_later ({}, hash, ord) FROM STDIN (FORMAT BINARY)"
        ).format(pk)
        self._compare_later = sql.SQL(compare).format(
            b=sql.Identifier("_jobctl_later"), t=table.ident(), match=match
        )
        self._send = sql.SQL(
            "COPY _jobctl_data ({}, hash, data, ord) FROM STDIN (FORMAT BINARY)"
        ).format(pk)
        self._data_fields = field_count(len(table.pk_columns) + 3)

    # -- main thread -----------------------------------------------------------------

    def submit(self, batch: Batch) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(batch)

    def finish(self) -> None:
        """All batches are in: wait for the worker, raise what it met."""
        self.queue.put(None)
        self.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """The main thread failed: stop the worker (cancelling its statement) and wait."""
        self.stopping = True
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        if self.is_alive():
            # A broken connection cannot be cancelled: its statement fails by itself.
            with contextlib.suppress(psycopg.Error):
                self.conn.cancel_safe(timeout=10)
        self.queue.put(None)  # cannot block: the queue was emptied and only we put
        self.join()

    # -- worker thread ---------------------------------------------------------------

    def run(self) -> None:
        cur = self.conn.cursor()
        try:
            where, params = partition_filter(self.table, self.partition)
            cur.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE removed_at IS NULL").format(
                    self.table.ident()
                )
                + where,
                params,
            )
            row = cur.fetchone()
            self.active_before = int(row[0]) if row else 0
        except BaseException as exc:  # handed to the main thread
            self.error = exc
        try:
            while (batch := self.queue.get()) is not None:
                if self.error is not None or self.stopping:
                    continue  # keep taking batches: the main thread must never block
                try:
                    behind = self.queue.qsize() > 0 if DEFER is None else DEFER
                    if behind:
                        self._defer(cur, batch)
                    else:
                        self._compare_batch(cur, batch)
                except BaseException as exc:
                    self.error = exc
            if self.error is None and not self.stopping:
                try:
                    self._flush(cur)
                    if self._spool is not None:
                        self._compare_deferred(cur, self._spool)
                except BaseException as exc:
                    self.error = exc
        finally:
            if self._spool is not None:
                self._spool.close()

    def _compare_batch(self, cur: psycopg.Cursor[Any], batch: Batch) -> None:
        with cur.copy(self._stage) as copy:
            copy.write(b"".join((SIGNATURE, *batch.keys, TRAILER)))
        # The batch's rows, by the index on ord: the keys staged so far stay put.
        cur.execute(self._compare, (batch.first, batch.first + len(batch.keys) - 1))
        found = cur.fetchone()
        assert found is not None
        matched, restored, wanted = found
        self.matched += matched
        self.restored += restored
        if not wanted:
            return
        first, heads, blob, ends = batch.first, batch.heads, batch.blob, batch.ends
        pending = self._pending
        for ordinal in wanted:
            i = ordinal - first
            head = heads[i]
            assert head, "a bad record is never wanted"
            data = bytes(blob[ends[i - 1] if i else 0 : ends[i]])
            line = b"".join((self._data_fields, head, jsonb_field(data), data, int4_field(ordinal)))
            pending.append(line)
            self._pending_bytes += len(line)
        self.sent += len(wanted)
        if self._pending_bytes >= SEND_BYTES:
            self._flush(cur)

    def _defer(self, cur: psycopg.Cursor[Any], batch: Batch) -> None:
        """Stage the batch's keys for the comparison after the stream; spool its rows."""
        with cur.copy(self._later) as copy:
            copy.write(b"".join((SIGNATURE, *batch.keys, TRAILER)))
        spool = self._spool = self._spool or _DeferredRows()
        spool.add(batch)
        self.deferred += len(batch.keys)

    def _compare_deferred(self, cur: psycopg.Cursor[Any], spool: _DeferredRows) -> None:
        """The deferred batches, at once: one join, then their wanted rows from the spool."""
        cur.execute(self._compare_later)
        found = cur.fetchone()
        assert found is not None
        matched, restored, wanted = found
        self.matched += matched
        self.restored += restored
        if not wanted:
            return
        fields = self._data_fields
        for ordinal, head, data in spool.rows(sorted(wanted)):
            line = b"".join((fields, head, jsonb_field(data), data, int4_field(ordinal)))
            self._pending.append(line)
            self._pending_bytes += len(line)
            if self._pending_bytes >= SEND_BYTES:
                self._flush(cur)
        self.sent += len(wanted)
        self._flush(cur)

    def _flush(self, cur: psycopg.Cursor[Any]) -> None:
        if self._pending:
            with cur.copy(self._send) as copy:
                copy.write(b"".join((SIGNATURE, *self._pending, TRAILER)))
            self._pending.clear()
            self._pending_bytes = 0


@dataclass
class _Merge:
    """What the statements after the stream share."""

    cur: psycopg.Cursor[Any]
    table: FeedTable
    stats: ApplyStats
    #: When the previous sync of this partition ran: the last time its unchanged
    #: rows were seen (they are not rewritten, so their own last_seen_at is older).
    previous_sync: datetime | None

    def match(self, left: str, right: str) -> sql.Composable:
        """``left.c = right.c AND …`` over the primary key (a join the planner can hash)."""
        return sql.SQL(" AND ").join(
            sql.SQL(f"{left}.{{c}} = {right}.{{c}}").format(c=sql.Identifier(c))
            for c in self.table.pk_columns
        )

    @property
    def pk_list(self) -> sql.Composable:
        return sql.SQL(", ").join(map(sql.Identifier, self.table.pk_columns))


def resync(
    conn: psycopg.Connection[Any],
    table: FeedTable,
    rows: Iterable[Row],
    partition: str,
    complete: bool,
) -> ApplyStats:
    """Merge a feed into a partition that has rows: send and rewrite only what changed."""
    cur = conn.cursor()
    previous = _start(cur, table, partition)
    run = _Merge(cur, table, ApplyStats(), previous)
    stats = run.stats
    worker = _Worker(conn, table, partition)
    worker.start()
    try:
        repeated = _stream(worker, stats, rows, table, partition)
        worker.finish()
    except BaseException:
        worker.abort()
        raise
    stats.active_before = worker.active_before
    stats.sent = worker.sent
    if repeated:
        _keep_last_occurrences(run)
    if stats.sent:
        _merge(run, None if repeated else worker.restored)
    stats.unchanged = stats.distinct - stats.new - stats.updated - stats.restored
    if complete:
        # Without repeated keys every staged key met at most one active row: when they
        # met as many as there were, no active row can be missing from the feed.
        missing = None if repeated else stats.active_before - worker.matched
        if missing != 0:
            _mark_removed(run, partition)
    # The next source of the run uses the same transaction and names.
    cur.execute("DROP TABLE IF EXISTS _jobctl_keys, _jobctl_later, _jobctl_data")
    return stats


def _start(cur: psycopg.Cursor[Any], table: FeedTable, partition: str) -> datetime | None:
    """Read the previous sync's time and create the (empty) temporary tables.

    They copy the target's column types, so the joins compare like with like:
    ``_jobctl_keys`` (key, hash, ord) the records compared batch by batch,
    ``_jobctl_later`` the deferred ones, ``_jobctl_data`` (key, hash, data, ord)
    the rows to merge.
    """
    cur.execute(
        "SELECT last_synced_at FROM jobctl.feed_state WHERE target = %s AND partition = %s",
        (table.state_key, partition),
    )
    previous = cur.fetchone()
    pk = sql.SQL(", ").join(sql.Identifier(c) for c in table.pk_columns)
    for name, cols in (
        ("_jobctl_keys", sql.SQL("{}, hash").format(pk)),
        ("_jobctl_later", sql.SQL("{}, hash").format(pk)),
        ("_jobctl_data", sql.SQL("{}, hash, data").format(pk)),
    ):
        cur.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {}, NULL::integer AS ord"
                " FROM {} WITH NO DATA"
            ).format(sql.Identifier(name), cols, table.ident())
        )
    # Each batch is compared by its ordinals: appended in order, the index stays cheap.
    cur.execute("CREATE INDEX ON _jobctl_keys (ord)")
    return previous[0] if previous else None


def _stream(
    worker: _Worker, stats: ApplyStats, rows: Iterable[Row], table: FeedTable, partition: str
) -> bool:
    """Cut the feed into batches for the worker; True if any key is repeated.

    A record without data (bad, but its key is known) is staged with a NULL hash so
    that its stored row is not marked removed. Duplicate keys are counted here by a
    client-side digest; which occurrence wins is decided on the server. The rows are
    COPY binary rows (see :mod:`jobctl.db.copybinary`): key fields, hash, ordinal.
    """
    seen: set[int] = set()
    bad_seen: set[int] = set()  # keys of bad records: a repeat there is one too
    repeated = False
    keys_only = 0
    ordinal = -1
    batch = Batch(0)
    keys, heads, blob, ends = batch.keys, batch.heads, batch.blob, batch.ends
    encode = key_encoder(
        len(table.key_columns), date.fromisoformat(partition) if table.date_key else None
    )
    key_fields = field_count(len(table.pk_columns) + 2)
    digest_of = xxhash.xxh3_128_digest
    # The hot loop (every record of the feed): locals only.
    for ordinal, (key, data) in enumerate(rows):
        digest = key_digest(key)
        if data is None:
            keys_only += 1
            keys.append(b"".join((key_fields, encode(key), NULL, int4_field(ordinal))))
            heads.append(b"")
            if digest in seen or digest in bad_seen:
                repeated = True
            bad_seen.add(digest)
        else:
            head = b"".join((encode(key), HASH_FIELD, digest_of(data)))
            keys.append(b"".join((key_fields, head, int4_field(ordinal))))
            heads.append(head)
            blob += data
            if digest in seen:
                repeated = True
                stats.duplicates += 1
                if len(stats.duplicate_samples) < 20:
                    stats.duplicate_samples.append("/".join(key))
            else:
                if bad_seen and digest in bad_seen:
                    repeated = True
                seen.add(digest)
        ends.append(len(blob))
        if len(blob) >= BATCH_BYTES or len(keys) >= BATCH_RECORDS:
            worker.submit(batch)
            batch = Batch(ordinal + 1)
            keys, heads, blob, ends = batch.keys, batch.heads, batch.blob, batch.ends
    if keys:
        worker.submit(batch)
    stats.staged = ordinal + 1
    stats.distinct = stats.staged - stats.duplicates - keys_only
    return repeated


def _keep_last_occurrences(run: _Merge) -> None:
    """A key the feed repeats: only its last good occurrence is merged (if it differs).

    A bad record's key keeps the stored row from being marked removed but brings no
    data: it neither wins over a good occurrence nor stops one.
    """
    run.cur.execute(
        sql.SQL(
            "DELETE FROM _jobctl_data d WHERE EXISTS (SELECT 1 FROM _jobctl_keys k"
            " WHERE {m} AND k.ord > d.ord AND k.hash IS NOT NULL)"
            " OR EXISTS (SELECT 1 FROM _jobctl_later k"
            " WHERE {m} AND k.ord > d.ord AND k.hash IS NOT NULL)"
        ).format(m=run.match("k", "d"))
    )
    run.stats.sent -= run.cur.rowcount


def _merge(run: _Merge, restored: int | None) -> None:
    """Upsert the sent rows; count new, updated and restored from the statements.

    Restored rows (removed, now in the feed again) are counted before the upsert
    clears their ``removed_at`` (by the batches' joins, or here when keys repeat);
    the upsert's own count of conflicts includes them, so ``updated`` is what
    remains: active rows whose data changed.
    """
    cur, stats, t = run.cur, run.stats, run.table.ident()
    if restored is None:
        cur.execute(
            sql.SQL(
                "SELECT count(*) FROM _jobctl_data d JOIN {t} t ON {match}"
                " WHERE t.removed_at IS NOT NULL"
            ).format(t=t, match=run.match("t", "d"))
        )
        back = cur.fetchone()
        restored = int(back[0]) if back else 0
    stats.restored = restored
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


def _mark_removed(run: _Merge, partition: str) -> None:
    """A complete feed: set ``removed_at`` on the partition's active rows it lacks.

    Every staged key counts as present, bad records' keys included (a record that
    failed to parse is not a record that left the feed).
    """
    where, params = partition_filter(run.table, partition)
    run.cur.execute(
        # last_seen_at: the previous sync saw it (unchanged rows were not rewritten).
        sql.SQL(
            "UPDATE {t} t SET removed_at = now(), updated_at = now(),"
            " last_seen_at = greatest(t.last_seen_at, %s) WHERE t.removed_at IS NULL"
        ).format(t=run.table.ident())
        + where
        + sql.SQL(
            " AND NOT EXISTS (SELECT 1 FROM _jobctl_keys k WHERE {m})"
            " AND NOT EXISTS (SELECT 1 FROM _jobctl_later k WHERE {m})"
        ).format(m=run.match("k", "t")),
        (run.previous_sync, *params),
    )
    run.stats.removed = run.cur.rowcount
