"""The first load's binary COPY rows, read back by a real server.

What the text format had to escape (tab, newline, carriage return, backslash) and
what it never saw (non-ASCII keys, JSON with escapes) must arrive byte for byte;
the partition date and the hash must be the values the re-sync compares with.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import psycopg
import pytest
import xxhash

from jobctl.db.copybinary import SIGNATURE, TRAILER, row_encoder
from jobctl.sources.records import canonical_bytes

KEYS = [
    ("plain",),
    ("tab\there",),
    ("new\nline\r\n",),
    ("back\\slash\\N",),
    ("ünïcødé ✓ 𝄞",),
    ("\\x00 not a NUL",),
]


@pytest.mark.parametrize("width", [0, 1, 2, 3])
@pytest.mark.parametrize("partition", [None, date(2026, 3, 8), date(1999, 12, 31)])
def test_rows_arrive_as_written(
    psql: psycopg.Connection[Any], width: int, partition: date | None
) -> None:
    key_cols = [f"k{i}" for i in range(width)]
    cols = (["partition_date date"] if partition else []) + [f"{c} text" for c in key_cols]
    psql.execute(f"CREATE TABLE t ({', '.join([*cols, 'hash bytea', 'data jsonb'])})")
    encode = row_encoder(width, partition)
    records = []
    for n, (part,) in enumerate(KEYS if width else KEYS[:1]):
        key = tuple(f"{part}/{i}" for i in range(width))
        data = canonical_bytes({"id": n, "text": part, "nested": {"b": [1, 2.5], "a": None}})
        records.append((key, data))
    names = ", ".join([*(["partition_date"] if partition else []), *key_cols, "hash", "data"])
    with psql.cursor().copy(f"COPY t ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(SIGNATURE + b"".join(encode(k, d) for k, d in records) + TRAILER)

    got = psql.execute(f"SELECT {names}, data::text FROM t").fetchall()
    assert len(got) == len(records)
    for row, (key, data) in zip(got, records, strict=True):
        if partition:
            assert row[0] == partition
            row = row[1:]
        assert tuple(row[:width]) == key
        assert bytes(row[width]) == xxhash.xxh3_128_digest(data)
        assert row[width + 1] == json.loads(data)
        # jsonb's own text of what was sent: the server parsed the canonical JSON
        assert json.loads(row[width + 2]) == json.loads(data)


def test_a_key_of_the_wrong_width_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError):
        row_encoder(2)(("only one",), b"{}")


def test_a_first_loads_local_socket_gets_a_wide_send_buffer(db_url: str) -> None:
    """The socket's send buffer is the queue between client and server (no writer
    thread): on a Unix socket it is widened (as far as the kernel allows); a TCP
    socket keeps its own sizing."""
    import os
    import socket

    from jobctl.db.feedstore import SEND_BUFFER, _widen_send_buffer

    with psycopg.connect(db_url) as conn:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            _widen_send_buffer(conn)
            after = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            family = sock.family
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is unharmed
    if family != socket.AF_UNIX:
        assert after == before
        return
    # Linux caps the value at net.core.wmem_max and doubles it for its bookkeeping:
    # whatever the cap, more than the default the socket had
    assert before < SEND_BUFFER and after > before, (before, after)


@pytest.mark.parametrize("width", [0, 1, 2, 3])
@pytest.mark.parametrize("partition", [None, date(2026, 3, 8)])
def test_resync_key_rows_arrive_as_written(
    psql: psycopg.Connection[Any], width: int, partition: date | None
) -> None:
    """The re-sync's (key, hash, ord) rows: the hash NULL for a bad record."""
    from jobctl.db.copybinary import HASH_FIELD, NULL, field_count, int4_field, key_encoder

    key_cols = [f"k{i}" for i in range(width)]
    lead = ["partition_date"] if partition else []
    cols = [f"{c} date" for c in lead] + [f"{c} text" for c in key_cols]
    psql.execute(f"CREATE TABLE k ({', '.join([*cols, 'hash bytea', 'ord integer'])})")
    encode = key_encoder(width, partition)
    count = field_count(len(lead) + width + 2)
    rows = []
    for n, (part,) in enumerate(KEYS if width else KEYS[:1]):
        key = tuple(f"{part}/{i}" for i in range(width))
        digest = None if n % 2 else xxhash.xxh3_128_digest(part.encode())
        hashed = NULL if digest is None else HASH_FIELD + digest
        rows.append((key, digest, n, b"".join((count, encode(key), hashed, int4_field(n)))))
    names = ", ".join([*lead, *key_cols, "hash", "ord"])
    with psql.cursor().copy(f"COPY k ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(SIGNATURE + b"".join(r[3] for r in rows) + TRAILER)
    got = psql.execute(f"SELECT {names} FROM k ORDER BY ord").fetchall()
    expected = [
        (*([partition] if partition else []), *key, digest, n) for key, digest, n, _ in rows
    ]
    assert [tuple(bytes(v) if isinstance(v, memoryview) else v for v in g) for g in got] == (
        expected
    )
