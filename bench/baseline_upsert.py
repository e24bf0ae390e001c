#!/usr/bin/env python3
"""Baseline 2 of bench_sync.py: the seed-style batched ``executemany`` upsert.

What a typical hand-written seed script does (and what the replaced system did):
stream the JSON array with ijson, serialise each record with ``json.dumps``, hash
it, and upsert batches of 1000 rows with psycopg's ``executemany`` of
``INSERT ... ON CONFLICT DO UPDATE``; one commit at the end.

    python baseline_upsert.py URL FEED TABLE
"""

from __future__ import annotations

import hashlib
import json
import sys

import ijson
import psycopg

BATCH = 1000


def main(url: str, feed: str, table: str) -> int:
    sql = (
        f"INSERT INTO {table} (permit_num, revision_num, hash, data) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (permit_num, revision_num) DO UPDATE SET data = EXCLUDED.data,"
        " hash = EXCLUDED.hash, updated_at = now(), last_seen_at = now(), removed_at = NULL"
    )
    n = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur, open(feed, "rb") as f:
        batch: list[tuple[str, str, bytes, str]] = []
        for rec in ijson.items(f, "item", use_float=True):
            data = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            digest = hashlib.blake2b(data.encode(), digest_size=16).digest()
            batch.append((str(rec["PERMIT_NUM"]), str(rec["REVISION_NUM"]), digest, data))
            if len(batch) >= BATCH:
                cur.executemany(sql, batch)
                n += len(batch)
                batch.clear()
        if batch:
            cur.executemany(sql, batch)
            n += len(batch)
        conn.commit()
    print(f"baseline_upsert: {n} rows (ijson backend {ijson.backend})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
