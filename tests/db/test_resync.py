"""The batched re-sync against a model of what it must do, at every batch size.

Random feeds over a small key space (so keys repeat, come back, vanish, go bad)
are applied one after another to one table; after each apply the counts and the
stored rows must be the model's, whatever the batch size (one record a batch: every
repeat crosses a batch; a few; the whole feed in one) and whether the batches are
compared as they come or deferred to the join after the stream. A failure mid-stream
(a record iterator that raises, a server error in the worker) must leave the table
and the sync state as they were, and the connection usable for the rollback.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from jobctl.db import resync
from jobctl.db.engine import Database
from jobctl.db.feedstore import ApplyStats, FeedTable, StateUpdate, apply_feed, feed_transaction
from jobctl.errors import DatabaseError

TABLE = FeedTable("items", ("id",))
STATE = StateUpdate(source="items", run_id=1, fingerprint="f")

#: (key, data) of a good record; (key, None) of a bad one whose key is known.
Item = tuple[str, dict[str, Any] | None]


@dataclass
class Stored:
    data: dict[str, Any]
    removed: bool


def _rows(feed: list[Item]) -> Iterator[tuple[tuple[str, ...], bytes | None]]:
    for key, data in feed:
        yield (key,), None if data is None else json.dumps(data, sort_keys=True).encode()


def model(stored: dict[str, Stored], feed: list[Item], complete: bool) -> dict[str, int]:
    """What the apply must count, and (in place) the rows it must leave.

    The last good occurrence of a key is the one compared and merged; a bad record's
    key only keeps its row from being marked removed.
    """
    good = [k for k, d in feed if d is not None]
    duplicates = len(good) - len(set(good))
    distinct = len(feed) - duplicates - (len(feed) - len(good))
    last = {k: d for k, d in feed if d is not None}
    counts = dict(new=0, updated=0, restored=0, removed=0)
    for key, data in last.items():
        row = stored.get(key)
        if row is None:
            counts["new"] += 1
        elif row.removed:
            counts["restored"] += 1
        elif row.data != data:
            counts["updated"] += 1
        else:
            continue
        stored[key] = Stored(data, False)
    if complete:
        present = {k for k, _ in feed}
        for key, row in stored.items():
            if not row.removed and key not in present:
                row.removed = True
                counts["removed"] += 1
    counts["unchanged"] = distinct - counts["new"] - counts["updated"] - counts["restored"]
    counts["duplicates"] = duplicates
    return counts


def random_feed(rng: random.Random) -> list[Item]:
    keys = [f"k{i:02d}" for i in range(30)]
    feed: list[Item] = []
    for _ in range(rng.randint(1, 45)):
        key = rng.choice(keys)
        if rng.random() < 0.1:
            feed.append((key, None))
        else:
            feed.append((key, {"v": rng.randint(0, 2), "k": key}))
    return feed


def read_table(conn: psycopg.Connection[Any]) -> dict[str, Stored]:
    rows = conn.execute("SELECT id, data, removed_at IS NOT NULL FROM items").fetchall()
    return {k: Stored(d, r) for k, d, r in rows}


def apply(db: Database, feed: list[Item], complete: bool = True) -> ApplyStats:
    with feed_transaction(db) as conn:
        return apply_feed(conn, TABLE, _rows(feed), partition="", complete=complete, state=STATE)


@pytest.mark.parametrize(
    ("batch", "defer"),
    [(1, False), (3, False), (4096, False), (1, True), (3, True), (4096, True), (2, None)],
)
def test_random_feeds_match_the_model_at_any_batch_size(
    db_url: str,
    psql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
    defer: bool | None,
) -> None:
    """Every batch compared as it comes, every one deferred, or as the worker decides."""
    monkeypatch.setattr(resync, "BATCH_RECORDS", batch)
    monkeypatch.setattr(resync, "DEFER", defer)
    monkeypatch.setattr(resync, "SEND_BYTES", 40)  # several sends of changed rows a batch
    db = Database(db_url)
    rng = random.Random(batch * 10 + (defer is None) + 2 * bool(defer))
    stored: dict[str, Stored] = {}
    for round_ in range(25):
        feed = random_feed(rng)
        complete = rng.random() < 0.8
        if not any(d is not None for _, d in feed):
            continue  # a feed with no usable record: the sync job's guard refuses it
        expected = model(stored, feed, complete)
        stats = apply(db, feed, complete)
        got = {k: getattr(stats, k) for k in expected}
        assert got == expected, (round_, feed)
        assert read_table(psql) == stored, round_
        active = sum(not r.removed for r in stored.values())
        assert psql.execute("SELECT rows_active FROM jobctl.feed_state").fetchone() == (active,)


def _base(db: Database, psql: psycopg.Connection[Any]) -> list[Any]:
    feed: list[Item] = [(f"k{i}", {"v": i}) for i in range(50)]
    apply(db, feed)
    apply(db, feed)  # a re-sync: the temporary tables exist at least once
    return _snapshot(psql)


def _snapshot(psql: psycopg.Connection[Any]) -> list[Any]:
    return [
        psql.execute(
            "SELECT id, data, hash, removed_at, xmin::text FROM items ORDER BY id"
        ).fetchall(),
        psql.execute("SELECT * FROM jobctl.feed_state").fetchall(),
    ]


class Boom(Exception):
    pass


@pytest.mark.parametrize("defer", [False, True])
def test_a_failing_record_stream_changes_nothing(
    db_url: str, psql: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch, defer: bool
) -> None:
    monkeypatch.setattr(resync, "BATCH_RECORDS", 4)
    monkeypatch.setattr(resync, "DEFER", defer)
    db = Database(db_url)
    before = _base(db, psql)

    def feed() -> Iterator[tuple[tuple[str, ...], bytes | None]]:
        for i in range(40):  # ten batches compared and sent, then the parse fails
            yield (f"k{i}",), json.dumps({"v": -i}).encode()
        raise Boom("the feed broke")

    with pytest.raises(Boom), feed_transaction(db) as conn:
        apply_feed(conn, TABLE, feed(), partition="", complete=True, state=STATE)
    assert _snapshot(psql) == before
    stats = apply(db, [(f"k{i}", {"v": i}) for i in range(50)])  # still usable
    assert (stats.unchanged, stats.updated) == (50, 0)


def test_a_server_error_in_the_worker_fails_the_apply_and_changes_nothing(
    db_url: str, psql: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resync, "BATCH_RECORDS", 4)
    db = Database(db_url)
    before = _base(db, psql)
    read = []

    def feed() -> Iterator[tuple[tuple[str, ...], bytes | None]]:
        for i in range(2000):
            read.append(i)
            # a key PostgreSQL refuses to store: the worker's COPY fails on the server
            key = f"k{i}" if i != 10 else "bad\x00key"
            yield (key,), json.dumps({"v": -i}).encode()

    with pytest.raises(DatabaseError, match="failed"), feed_transaction(db) as conn:
        apply_feed(conn, TABLE, feed(), partition="", complete=True, state=STATE)
    assert len(read) < 2000  # the main thread stopped soon after the worker failed
    assert _snapshot(psql) == before


def test_removed_rows_are_marked_only_when_keys_are_missing(
    db_url: str, psql: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The anti-join runs only when the staged keys met fewer active rows than there are."""
    monkeypatch.setattr(resync, "BATCH_RECORDS", 7)
    db = Database(db_url)
    feed: list[Item] = [(f"k{i}", {"v": i}) for i in range(50)]
    apply(db, feed)
    stats = apply(db, [*feed[:-3], ("new", {"v": 0})])
    assert (stats.removed, stats.new, stats.unchanged, stats.active_before) == (3, 1, 47, 50)
    stats = apply(db, [*feed[:-3], ("new", {"v": 0})])
    assert (stats.removed, stats.unchanged, stats.active_before) == (0, 48, 48)
    assert psql.execute("SELECT rows_active FROM jobctl.feed_state").fetchone() == (48,)


def _primary_keys(psql: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    return psql.execute(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype = 'p'",
        (table,),
    ).fetchall()


def test_a_new_table_gets_its_primary_key_after_the_first_load(
    db_url: str, psql: psycopg.Connection[Any]
) -> None:
    """The key is built after the COPY (one sort): the repeats were kept out of it."""
    db = Database(db_url)
    stats = apply(db, [("k1", {"v": 1}), ("k2", {"v": 2}), ("k1", {"v": 3}), ("k2", None)])
    assert (stats.new, stats.duplicates, stats.first_load) == (2, 1, True)
    assert _primary_keys(psql, "items") == [("items_pkey", "PRIMARY KEY (id)")]
    assert read_table(psql) == {"k1": Stored({"v": 3}, False), "k2": Stored({"v": 2}, False)}
    # the key is in place for the re-sync's upsert
    stats = apply(db, [("k1", {"v": 4}), ("k3", {"v": 5})])
    assert (stats.updated, stats.new, stats.removed) == (1, 1, 1)


def test_a_first_load_into_an_existing_table_keeps_its_key(
    db_url: str, psql: psycopg.Connection[Any]
) -> None:
    """A new date of a dated table is a first load of its partition, into a keyed table."""
    db = Database(db_url)
    table = FeedTable("daily.visits", ("id",), date_key=True)
    for day in ("2026-03-28", "2026-03-29"):
        with feed_transaction(db) as conn:
            stats = apply_feed(
                conn,
                table,
                _rows([("a", {"d": day}), ("b", {"d": day}), ("a", {"d": 0})]),
                partition=day,
                complete=True,
                state=STATE,
            )
        assert (stats.first_load, stats.new, stats.duplicates) == (True, 2, 1)
    assert _primary_keys(psql, "daily.visits") == [
        ("visits_pkey", "PRIMARY KEY (partition_date, id)")
    ]
    rows = psql.execute(
        "SELECT partition_date::text, id, data FROM daily.visits ORDER BY 1, 2"
    ).fetchall()
    assert rows == [
        (d, k, {"d": 0} if k == "a" else {"d": d})
        for d in ("2026-03-28", "2026-03-29")
        for k in ("a", "b")
    ]
