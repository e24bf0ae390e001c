#!/usr/bin/env python3
"""Client CPU of ``jobctl sync``'s per-record loop, in process, without a server.

    .venv/bin/python bench/bench_client.py                    # 237,000 records, 3 rounds
    .venv/bin/python bench/bench_client.py --records 5000 --rounds 1
    .venv/bin/python bench/bench_client.py --file feed.json --key ID --format ndjson

What a first load does on the client, stage by stage, on the generated feed of
``bench_sync.py`` (``bench/data/feed_v1_N.json``, made if missing): open the file with
the sha256 tap, parse (``iter_records``), key (``extract_key``), canonical JSON
(``canonical_bytes``), the binary COPY row (``copybinary.row_encoder``). Each stage adds one step to the
one before; the figure is the process CPU time (user + sys, ``time.process_time``) of
the whole pass, so other load on a shared machine barely moves it. The best of
``--rounds`` is printed, and the differences between stages are the cost of each.
No database, no COPY thread: only what the Python process spends per record.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from jobctl.db.copybinary import row_encoder  # noqa: E402
from jobctl.db.copytext import Batcher, copy_line  # noqa: E402
from jobctl.db.feedstore import FIRST_LOAD_BLOCK  # noqa: E402
from jobctl.jobs.sync import _Reader  # noqa: E402
from jobctl.sources.parse import iter_records, open_source  # noqa: E402
from jobctl.sources.records import canonical_bytes, extract_key  # noqa: E402


def _sync_loop(stream: Any, fmt: Any, key: tuple[str, ...]) -> int:
    """What a first load runs per record: sync's ``_Reader.rows`` (key, checks, canonical
    JSON) and feedstore's COPY loop (binary row, duplicate check, 64 KiB blocks)."""
    source = SimpleNamespace(name="bench", key=list(key), fields=None, types=None, exclude=())
    ctx = SimpleNamespace(progress=None, log=SimpleNamespace(info=lambda *a: None))
    out = Batcher(lambda data: None, FIRST_LOAD_BLOCK)
    encode = row_encoder(len(key))
    seen: set[int] = set()
    n = 0
    rows = _Reader(source, ctx).rows(iter_records(stream, fmt))  # type: ignore[arg-type]
    for k, data in rows:
        n += 1
        if data is None:
            continue
        digest = hash(k)
        if digest not in seen:
            seen.add(digest)
            out.add(encode(k, data))
    out.flush()
    return n


def _pass(path: Path, fmt: Any, key: tuple[str, ...], stage: int) -> tuple[float, int]:
    """CPU seconds of one pass through ``stage`` steps (1 parse … 4 COPY line; 5 sync's loop)."""
    digest = hashlib.sha256()
    gc.collect()
    start = time.process_time()
    n = 0
    encode = row_encoder(len(key))
    with open_source(path, digest.update) as stream:
        if stage == 5:
            n = _sync_loop(stream, fmt, key)
            digest.hexdigest()
            return time.process_time() - start, n
        for rec in iter_records(stream, fmt):
            n += 1
            if stage < 2 or not isinstance(rec, dict):
                continue
            k = extract_key(rec, key)
            if stage < 3 or not isinstance(k, tuple):
                continue
            data = canonical_bytes(rec)
            if stage < 4:
                continue
            encode(k, data)
    digest.hexdigest()
    return time.process_time() - start, n


STAGES: dict[int, str] = {
    1: "parse (open + sha256 tap + iter_records)",
    2: "+ extract_key",
    3: "+ canonical_bytes",
    4: "+ binary COPY row",
    5: "sync's own loop (rows + COPY loop)",
}


def digest_lines(path: Path, fmt: Any, key: tuple[str, ...]) -> tuple[str, int]:
    """sha256 of every COPY line a first load would send (keys, hash, data): the same
    hex digest before and after a change means the same bytes stored."""
    lines = hashlib.sha256()
    n = 0
    with open_source(path) as stream:
        for rec in iter_records(stream, fmt):
            n += 1
            if isinstance(rec, dict) and isinstance(k := extract_key(rec, key), tuple):
                lines.update(copy_line("", k, canonical_bytes(rec)))
            else:
                lines.update(repr(rec if not isinstance(rec, dict) else k).encode() + b"\n")
    return lines.hexdigest(), n


def functions(path: Path, key: tuple[str, ...], rounds: int) -> None:
    """Each per-record function against its previous implementation (kept verbatim in
    tests/unit/test_feed_lines.py), interleaved in one process, on the feed's first
    60,000 records; and the JSON parse, ijson against ArrayLines, on the whole feed."""
    import itertools

    import ijson

    sys.path.insert(0, str(HERE.parent))
    from tests.unit.test_feed_lines import (
        _canonical_before,
        _head_before,
        _key_before,
        _line_before,
    )

    from jobctl.db.copytext import copy_head
    from jobctl.sources.arraylines import READ_SIZE, ArrayLines
    from jobctl.sources.parse import _Reader

    with open_source(path) as stream:
        recs = [r for r in itertools.islice(iter_records(stream, "json"), 60_000)]
    rows = [(k, canonical_bytes(r)) for r in recs if isinstance(k := extract_key(r, key), tuple)]
    keys = list(key)
    backend = ijson.get_backend("yajl2_c")

    def parse(make: Callable[[Any], Any]) -> None:
        with open_source(path) as stream:
            for _ in make(_Reader(stream, "utf-8")):
                pass

    def each(fn: Callable[..., Any], items: list[Any], *extra: Any) -> Callable[[], None]:
        def run() -> None:  # results dropped at once: no 60,000 kept in memory
            for item in items:
                fn(*item, *extra) if isinstance(item, tuple) else fn(item, *extra)

        return run

    prefixed = [("", k, d) for k, d in rows]
    pairs: list[tuple[str, Callable[[], None], Callable[[], None], int]] = [
        ("copy_head", each(_head_before, prefixed), each(copy_head, prefixed), len(rows)),
        ("copy_line", each(_line_before, prefixed), each(copy_line, prefixed), len(rows)),
        ("extract_key", each(_key_before, recs, keys), each(extract_key, recs, keys), len(recs)),
        ("canonical_bytes", each(_canonical_before, recs), each(canonical_bytes, recs), len(recs)),
        (
            "JSON parse (whole feed)",
            lambda: parse(lambda r: backend.items(r, "item", use_float=False, buf_size=READ_SIZE)),
            lambda: parse(lambda r: ArrayLines(r, backend)),
            0,
        ),
    ]
    print(f"{path.name}: best of {rounds}, interleaved; before → after")
    for name, before, after, n in pairs:
        best = [float("inf"), float("inf")]
        for _ in range(rounds):
            for i, fn in enumerate((before, after)):
                gc.collect()
                start = time.process_time()
                fn()
                best[i] = min(best[i], time.process_time() - start)
        if n:  # per record, and what that makes on 237,000 records
            b, a = (x / n * 1e9 for x in best)
            print(f"  {name:<24} {b:6.0f} → {a:6.0f} ns/record  ({(a - b) * 237e-6:+.3f} s / 237k)")
        else:
            print(
                f"  {name:<24} {best[0]:6.2f} → {best[1]:6.2f} s CPU  ({best[1] - best[0]:+.2f} s)"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=237_000)
    ap.add_argument("--file", type=Path, help="another feed (default: the generated one)")
    ap.add_argument("--format", default="json")
    ap.add_argument("--key", action="append", help="key field (repeat); default the permit key")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stages", default="1,2,3,4,5", help="which stages, e.g. 1,4")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--digest", action="store_true", help="print the digest of the COPY lines")
    ap.add_argument(
        "--functions", action="store_true", help="each function against its previous version"
    )
    args = ap.parse_args()

    if args.file is None:
        from bench_sync import ensure_feed

        data = HERE / "data"
        data.mkdir(exist_ok=True)
        path = ensure_feed(data, args.records, 1).path
    else:
        path = args.file
    key = tuple(args.key or ("PERMIT_NUM", "REVISION_NUM"))
    if args.functions:
        functions(path, key, args.rounds)
        return 0
    if args.digest:
        hexdigest, n = digest_lines(path, args.format, key)
        print(f"{path.name}: {n} records, COPY lines sha256 {hexdigest}")
        return 0
    stages = [int(s) for s in args.stages.split(",")]
    best: dict[int, float] = {}
    count = 0
    run: Callable[[int], tuple[float, int]] = lambda s: _pass(path, args.format, key, s)  # noqa: E731
    for _ in range(args.rounds):
        for stage in stages:  # interleaved: a slow moment of the machine hits every stage
            seconds, count = run(stage)
            best[stage] = min(best.get(stage, seconds), seconds)
    print(
        f"{path.name}: {count} records, {path.stat().st_size / 1e6:.1f} MB, best of {args.rounds}"
    )
    previous = 0.0
    for stage in stages:
        step = f"   (this step {best[stage] - previous:+.2f} s)" if stage < 5 else ""
        print(f"  {STAGES[stage]:<44} {best[stage]:6.2f} s CPU{step}")
        previous = best[stage]
    if args.json:
        args.json.write_text(json.dumps({STAGES[s]: best[s] for s in stages}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
