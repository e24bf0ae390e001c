#!/usr/bin/env python3
"""jobctl against dlt's ``merge`` load of the same feed, on the same server, interleaved.

    .venv/bin/python bench/bench_peer_dlt.py                  # 3 runs, 237,000 records
    .venv/bin/python bench/bench_peer_dlt.py --records 5000 --runs 1   # quick
    DATABASE_URL=postgresql://... .venv/bin/python bench/bench_peer_dlt.py

dlt is optional (not a jobctl dependency): ``pip install "dlt[postgres]"`` into the
same environment; without it the script says so and exits 0.

Three steps, each run by both tools as separate processes (wall clock with start-up,
peak RSS by ``/usr/bin/time``, WAL by ``pg_current_wal_lsn()`` before/after; before
each, outside the timing, ``VACUUM (ANALYZE)`` of both tools' tables and a
``CHECKPOINT``):

  first      first load of feed v1 into an empty table / dataset
  identical  the same feed again, every record read (jobctl: ``--force``, i.e. no
             digest shortcut; dlt has none)
  changed    feed v2: 5 % of the records changed, 1 % new

dlt: a ``@dlt.resource`` streaming the JSON array with ijson (as a dlt user would),
``primary_key=("PERMIT_NUM", "REVISION_NUM")``, ``write_disposition="merge"`` (dlt's
default ``delete-insert`` strategy: load into a staging dataset, delete the matching
rows, insert them again), destination ``postgres``; its pipeline state lives in a
temporary directory. jobctl: ``jobctl sync`` of the same file into a table of its own.

Each run does first → identical → changed for both tools, in alternating order (dlt
first in odd runs, jobctl first in even ones). Printed per step: medians of wall,
RSS and WAL, the speed-up (dlt / jobctl, median of the per-run ratios), and whether
the tool reports change counts (new / updated / unchanged). Target of issue 13:
jobctl ≥ 10× faster than dlt's merge.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from _common import (
    HERE,
    VENV_BIN,
    Feed,
    Wal,
    cpu_model,
    ensure_feed,
    jobctl_env,
    median,
    server_url,
    stop_server,
    timed,
    uses_embedded,
)

JOBCTL = shutil.which("jobctl", path=str(VENV_BIN)) or "jobctl"
TABLE = "peer_permits"
DATASET = "dlt_permits"
PIPELINE = "bench_peer_dlt"
TARGET_SPEEDUP = 10.0
INSTALL = 'pip install "dlt[postgres]"'

CONFIG = """\
# written by bench_peer_dlt.py
timezone = "UTC"

[sources.permits]
path = {path}
format = "json"
key = ["PERMIT_NUM", "REVISION_NUM"]
table = "{table}"
complete = true
"""

STEPS = (
    ("first", "first load into an empty table"),
    ("identical", "identical feed, every record read"),
    ("changed", "5 % changed, 1 % new"),
)


# --------------------------------------------------------------------------- dlt side

DLT_WORKER = """
import sys, ijson, dlt
path, url, pipelines_dir = sys.argv[1:4]

@dlt.resource(name="permits", primary_key=("PERMIT_NUM", "REVISION_NUM"), write_disposition="merge")
def permits():
    with open(path, "rb") as f:
        yield from ijson.items(f, "item")

pipeline = dlt.pipeline(
    pipeline_name=%(pipeline)r,
    destination=dlt.destinations.postgres(credentials=url),
    dataset_name=%(dataset)r,
    pipelines_dir=pipelines_dir,
)
info = pipeline.run(permits())
info.raise_on_failed_jobs()
counts = pipeline.last_trace.last_normalize_info.row_counts
print("ROWS", counts.get("permits", 0))
"""


def have_dlt() -> bool:
    done = subprocess.run(
        [sys.executable, "-c", "import dlt, psycopg2"], capture_output=True, text=True
    )
    return done.returncode == 0


def dlt_env(state: Path) -> dict[str, str]:
    """No telemetry (this machine reaches no such host), state and config under ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DLT_", "RUNTIME__"))}
    env.update(
        RUNTIME__DLTHUB_TELEMETRY="false",
        DLT_DATA_DIR=str(state / "data"),
        DLT_PROJECT_DIR=str(state / "project"),
        HOME=str(state / "home"),
    )
    for sub in ("data", "project", "home"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    return env


def dlt_url(url: str) -> str:
    """dlt's postgres credentials as a URL it parses (a socket directory: in the query)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    from urllib.parse import quote, urlencode

    user = quote(str(info.pop("user", "postgres")))
    password = info.pop("password", None)
    host = str(info.pop("host", "localhost"))
    port = info.pop("port", None)
    dbname = info.pop("dbname", "postgres")
    # dlt insists on a password; a server that trusts the socket ignores it
    auth = f"{user}:{quote(str(password or 'unused'))}@"
    query: dict[str, str] = {k: str(v) for k, v in info.items()}
    if host.startswith("/"):
        query["host"] = host
        netloc = auth + "localhost" + (f":{port}" if port else "")
    else:
        netloc = auth + host + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{dbname}" + (f"?{urlencode(query)}" if query else "")


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    run: int
    tool: str
    step: str
    seconds: float
    cpu_seconds: float
    rss_mb: float
    wal_bytes: int
    counts: dict[str, Any] = field(default_factory=dict)


class Peer:
    def __init__(self, url: str, tmp: Path, v1: Feed, v2: Feed) -> None:
        self.url = url
        self.tmp = tmp
        self.v1, self.v2 = v1, v2
        self.admin = psycopg.connect(url, autocommit=True)
        self.wal = Wal(self.admin)
        self.results: list[Result] = []
        self.jobctl_env = jobctl_env(tmp / "jobctl.toml", tmp / "data")
        (tmp / "jobctl.toml").write_text(CONFIG.format(path=json.dumps(str(v1.path)), table=TABLE))
        self.state = tmp / "dlt"
        self.dlt_env = dlt_env(self.state)
        self.worker = tmp / "dlt_worker.py"
        self.worker.write_text(DLT_WORKER % {"pipeline": PIPELINE, "dataset": DATASET})
        self.dlt_url = dlt_url(url)

    def _timed(
        self, run: int, tool: str, step: str, argv: list[str], env: dict[str, str]
    ) -> Result:
        # Outside the timing, as autovacuum would between two loads: else it runs
        # during a later step, whose WAL figure then holds its full-page images.
        tables = self.admin.execute(
            "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables"
            " WHERE schemaname = %s OR (schemaname = 'public' AND tablename = %s)",
            (DATASET, TABLE),
        ).fetchall()
        for (name,) in tables:
            self.admin.execute(f"VACUUM (ANALYZE) {name}")
        with contextlib.suppress(psycopg.Error):
            self.admin.execute("CHECKPOINT")
        before = self.wal.lsn()
        done = timed(argv, env=env, cwd=self.tmp)
        wal = self.wal.since(before)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"{tool} {step} failed (exit {done.returncode})")
        result = Result(run, tool, step, done.seconds, done.cpu_seconds, done.rss_mb, wal)
        if tool == "dlt":
            rows = [
                line.split()[1] for line in done.stdout.splitlines() if line.startswith("ROWS ")
            ]
            result.counts = {"rows_loaded": int(rows[-1]) if rows else None}
        self.results.append(result)
        return result

    def reset(self) -> None:
        """Fresh start for both tools: no table, no dataset, no pipeline state."""
        self.admin.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")
        self.admin.execute("DELETE FROM jobctl.feed_state WHERE target = %s", (f"public.{TABLE}",))
        for schema in (DATASET, f"{DATASET}_staging"):
            self.admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        shutil.rmtree(self.state / "pipelines", ignore_errors=True)

    def dlt(self, run: int, step: str, feed: Feed) -> Result:
        argv = [
            sys.executable,
            str(self.worker),
            str(feed.path),
            self.dlt_url,
            str(self.state / "pipelines"),
        ]
        return self._timed(run, "dlt", step, argv, self.dlt_env)

    def jobctl(self, run: int, step: str, feed: Feed) -> Result:
        argv = [JOBCTL, "sync", "--source", "permits", "--trigger", "manual"]
        if step == "identical":
            argv.append("--force")
        if feed is self.v2:
            argv += ["--file", str(feed.path)]
        result = self._timed(run, "jobctl", step, argv, self.jobctl_env)
        done = subprocess.run(
            [JOBCTL, "runs", "list", "--json", "--limit", "1", "--job", "sync"],
            env=self.jobctl_env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            check=True,
        )
        source = (
            (json.loads(done.stdout)[0].get("stats") or {}).get("sources", {}).get("permits", {})
        )
        result.counts = {k: source.get(k) for k in ("new", "updated", "unchanged", "removed")}
        return result


# --------------------------------------------------------------------------- report


def report(results: list[Result]) -> tuple[str, list[tuple[bool, str]]]:
    head = (
        f"{'step':<10} {'tool':<7} {'n':>2} {'median s':>8} {'min–max s':>12} {'CPU s':>6}"
        f" {'RSS MB':>7} {'WAL MB':>8} {'counts':<7} {'dlt/jobctl':>10}"
    )
    lines = [head, "-" * len(head)]
    verdicts: list[tuple[bool, str]] = []
    for step, what in STEPS:
        by_run: dict[int, dict[str, Result]] = {}
        for r in results:
            if r.step == step:
                by_run.setdefault(r.run, {})[r.tool] = r
        speedups = [d["dlt"].seconds / d["jobctl"].seconds for d in by_run.values() if len(d) == 2]
        for tool in ("dlt", "jobctl"):
            rs = [d[tool] for d in by_run.values() if tool in d]
            if not rs:
                continue
            secs = [r.seconds for r in rs]
            gives = "yes" if tool == "jobctl" else "no"
            ratio = f"{median(speedups):9.1f}×" if tool == "jobctl" and speedups else ""
            lines.append(
                f"{step:<10} {tool:<7} {len(rs):>2} {median(secs):8.2f}"
                f" {f'{min(secs):.2f}–{max(secs):.2f}':>12} {median([r.cpu_seconds for r in rs]):6.2f}"
                f" {max(r.rss_mb for r in rs):7.1f} {median([r.wal_bytes / 1e6 for r in rs]):8.1f}"
                f" {gives:<7} {ratio:>10}"
            )
        if speedups:
            m = median(speedups)
            verdicts.append(
                (
                    m >= TARGET_SPEEDUP,
                    f"({step}: {what}) jobctl {m:.1f}× faster than dlt merge (target ≥ {TARGET_SPEEDUP:.0f}×)",
                )
            )
    return "\n".join(lines), verdicts


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=237_000, help="base records (default 237000)")
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs (3)")
    ap.add_argument("--data-dir", type=Path, default=HERE / "data", help="feeds cache (bench/data)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    a = ap.parse_args(argv)
    if not have_dlt():
        print(f"dlt (with psycopg2) is not installed in {sys.executable}: skipped.")
        print(f"To run this benchmark: {INSTALL}")
        return 0
    a.data_dir.mkdir(parents=True, exist_ok=True)
    v1 = ensure_feed(a.data_dir, a.records, 1)
    v2 = ensure_feed(a.data_dir, a.records, 2)
    feeds = {"first": v1, "identical": v1, "changed": v2}
    tmp = Path(tempfile.mkdtemp(prefix="jobctl-bench-dlt-"))
    embedded = uses_embedded()
    peer: Peer | None = None
    try:
        env = jobctl_env(tmp / "jobctl.toml", tmp / "data")
        (tmp / "jobctl.toml").write_text(CONFIG.format(path=json.dumps(str(v1.path)), table=TABLE))
        subprocess.run([JOBCTL, "db", "upgrade"], env=env, cwd=tmp, check=True, capture_output=True)
        url = server_url(tmp / "data")
        with psycopg.connect(url, autocommit=True) as check:
            taken = check.execute(
                "SELECT to_regclass(%s) IS NOT NULL OR to_regnamespace(%s) IS NOT NULL",
                (TABLE, DATASET),
            ).fetchone()
            if taken and taken[0]:
                raise SystemExit(
                    f"{TABLE!r} or schema {DATASET!r} exists in this database: use an empty one"
                )
        peer = Peer(url, tmp, v1, v2)
        version = peer.admin.execute("SHOW server_version").fetchone()[0]
        dlt_version = subprocess.run(
            [sys.executable, "-c", "import dlt; print(dlt.__version__)"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(
            f"feed: {v1.path.name} ({v1.records} records, {v1.path.stat().st_size / 1e6:.0f} MB);"
            f" v2: {v2.changed} changed, {v2.new} new"
        )
        print(
            f"machine: {os.cpu_count()} CPUs, {cpu_model()}; load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; Python {platform.python_version()}"
        )
        print(f"server: PostgreSQL {version}{' (embedded)' if embedded else ''}; dlt {dlt_version}")
        for run in range(1, a.runs + 1):
            peer.reset()
            order = ("dlt", "jobctl") if run % 2 else ("jobctl", "dlt")
            print(f"run {run} of {a.runs} ({' then '.join(order)} at each step)", flush=True)
            for step, _what in STEPS:
                for tool in order:
                    r = getattr(peer, tool)(run, step, feeds[step])
                    print(
                        f"  {step:<10} {tool:<7} {r.seconds:7.2f}s  RSS {r.rss_mb:6.1f} MB"
                        f"  WAL {r.wal_bytes / 1e6:7.1f} MB  {r.counts}",
                        flush=True,
                    )
        text, verdicts = report(peer.results)
        print()
        print(text)
        print(
            "\n(counts: whether the tool reports new / updated / unchanged records;"
            " dlt reports the rows it loaded)"
        )
        for ok, line in verdicts:
            print(f"[{'PASS' if ok else 'FAIL'}] {line}")
        if a.json:
            a.json.write_text(
                json.dumps(
                    {
                        "results": [r.__dict__ for r in peer.results],
                        "verdicts": [{"pass": ok, "text": t} for ok, t in verdicts],
                    },
                    indent=1,
                )
                + "\n"
            )
        peer.reset()
        return 0
    finally:
        if peer is not None:
            peer.admin.close()
        if embedded:
            stop_server(tmp / "data")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
