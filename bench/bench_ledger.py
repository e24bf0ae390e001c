#!/usr/bin/env python3
"""Every statement the ledger's read commands send, on a ledger of 1,000,000 runs.

    .venv/bin/python bench/bench_ledger.py                   # 1,000,000 runs, embedded server
    .venv/bin/python bench/bench_ledger.py --runs 200000     # quick
    .venv/bin/python bench/bench_ledger.py --keep            # keep (and reuse) the ledger
    DATABASE_URL=postgresql://... bench/bench_ledger.py      # an existing server (a database
                                                             # jobctl_bench_ledger is made)

The ledger is the project's ``tests/fixtures/ledger.py`` (``generate_series``: 20 jobs at
cadences from every minute to daily, several months of history, statuses mostly
completed, failed/skipped/cancelled/abandoned ones, dry runs, a job failing for its last
3,000 runs, one that never succeeded, backfill parents with children, three runs in
progress whose locks this script holds), then ``ANALYZE``; plus 2,000 one-off schedules.

For each command, the library call the CLI command makes is run in this process with
every statement recorded (``psycopg.Cursor.execute``: SQLAlchemy's and plain psycopg's
alike), in a fresh ``App`` as a new process has (the schema check included). Each
recorded statement is then run again ``--repeat`` times as ``EXPLAIN (ANALYZE,
BUFFERS, FORMAT JSON)`` with its own parameters, each time in a transaction rolled back
(the sweep is an UPDATE); the median server time (planning + execution) is printed,
with the buffers (shared hit + read) and whether a Seq Scan of ``runs`` appears
anywhere in the plan. Then each command runs as a process (``--cli-runs`` times, the
median wall time kept), against the same database.

Goals (issue 13): every statement <= 20 ms of server time, no Seq Scan of
``jobctl.runs``; one PASS/FAIL line per command and per goal.

Run it with another checkout's code (a "before"): put its ``src`` first on
``PYTHONPATH``; the processes use the same ``jobctl`` package as this one. With
``--compare OTHER/src`` each command also runs as a process of that code, interleaved
with this one's, on the same database (this code's schema: an older jobctl does not
downgrade it, and its queries then have this code's indexes too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _common import cpu_model, server_url, stop_server, uses_embedded  # noqa: E402
from tests.fixtures import ledger as fixture  # noqa: E402

LIMIT_MS = 20.0
BENCH_DB = "jobctl_bench_ledger"


@dataclass
class Statement:
    sql: str
    params: Any
    server_ms: float = 0.0
    planning_ms: float = 0.0
    hit: int = 0
    read: int = 0
    seq_scan: bool = False
    nodes: list[str] = field(default_factory=list)


@dataclass
class Command:
    name: str
    argv: tuple[str, ...]
    statements: list[Statement] = field(default_factory=list)
    wall_s: float | None = None
    #: the same command run by the ``--compare`` code, interleaved with this one's
    other_wall_s: float | None = None


def explainable(seen: list[tuple[str, Any]]) -> list[Statement]:
    return [Statement(s, p) for s, p in seen if fixture.EXPLAINABLE.match(s)]


def explain(url: str, stmt: Statement, repeat: int) -> None:
    totals, plannings = [], []
    with psycopg.connect(url) as conn:
        for _ in range(repeat):
            row = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + stmt.sql, stmt.params
            ).fetchone()
            conn.rollback()
            doc = row[0][0] if isinstance(row[0], list) else json.loads(row[0])[0]
            plan = doc["Plan"]
            totals.append(doc["Planning Time"] + doc["Execution Time"])
            plannings.append(doc["Planning Time"])
            nodes = list(fixture.plan_nodes(plan))
            stmt.seq_scan = bool(fixture.seq_scans_of_runs(plan))
            stmt.hit = int(plan.get("Shared Hit Blocks", 0))
            stmt.read = int(plan.get("Shared Read Blocks", 0))
            stmt.nodes = sorted(
                {
                    n["Node Type"] + (f" {n['Index Name']}" if "Index Name" in n else "")
                    for n in nodes
                    if n.get("Relation Name") == "runs"
                }
            )
    stmt.server_ms = statistics.median(totals)
    stmt.planning_ms = statistics.median(plannings)


SCHEDULES = """
INSERT INTO jobctl.scheduled (job, params, run_at, timezone, created_at, status, run_id,
    run_status, finished_at, claimed_by, claimed_at)
SELECT 'report', '{}'::jsonb, t.created + interval '1 hour', 'UTC', t.created,
       CASE WHEN g <= 200 THEN 'pending' WHEN g %% 10 = 0 THEN 'failed' ELSE 'triggered' END,
       CASE WHEN g > 200 AND g %% 10 <> 0 THEN g END,
       CASE WHEN g > 200 AND g %% 10 <> 0 THEN 'completed' END,
       CASE WHEN g > 200 THEN t.created + interval '1 hour 1 minute' END,
       CASE WHEN g > 200 THEN 'worker-1' END,
       CASE WHEN g > 200 THEN t.created + interval '1 hour' END
FROM generate_series(1, %(n)s) g,
     LATERAL (SELECT CASE WHEN g <= 200 THEN now() + make_interval(hours => g)
                          ELSE now() - make_interval(hours => g) END AS created) t
"""


def prepare(url: str, runs: int) -> dict[str, Any]:
    """The schema (``upgrade``), then the ledger unless it is there already (``--keep``)."""
    from jobctl.db.engine import Database
    from jobctl.db.migrate import upgrade

    db = Database(url)
    started = time.perf_counter()
    upgrade(db)  # the code under test's migrations (a new index is built here)
    db.dispose()
    migrated = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        have = conn.execute("SELECT count(*) FROM jobctl.runs").fetchone()[0]
        if have == runs:
            made: dict[str, Any] = {"runs": runs, "built_s": None}
        elif have:
            raise SystemExit(f"jobctl.runs holds {have} runs, not {runs}: use a fresh --data-dir")
        else:
            started = time.perf_counter()
            made = fixture.build(conn, runs)
            conn.execute(SCHEDULES, {"n": 2000})
            conn.commit()
            made["built_s"] = round(time.perf_counter() - started, 1)
    # What autovacuum does after a million inserts: the visibility map is set, so an
    # index-only scan reads no heap page.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) jobctl.runs")
        conn.execute("VACUUM (ANALYZE) jobctl.scheduled")
    made["migrate_s"] = round(migrated, 2)
    return made


def alert_statements(url: str) -> Command:
    """What a sweep that finds a dead run sends besides the sweep: the abandoned run's
    alert (``alert_state`` and the run read), recorded in a transaction rolled back."""
    from jobctl.db import alert_state, ledger
    from jobctl.db.engine import Database

    db = Database(url)
    conn = db.engine.connect()
    trans = conn.begin()
    try:
        run_id = conn.exec_driver_sql(
            "SELECT id FROM jobctl.runs WHERE job = 'cleanup' ORDER BY id DESC LIMIT 1"
        ).scalar()
        conn.exec_driver_sql(
            "UPDATE jobctl.runs SET status = 'running', finished_at = NULL,"
            " lock_backend_pid = 1, lock_key = 1 WHERE id = %(id)s",
            {"id": run_id},
        )
        with fixture.recording() as seen:
            dead = ledger.sweep_abandoned(conn)
            streak = alert_state.count_failure(conn, "cleanup", dead[0])
            assert streak is not None
            alert_state.claim(conn, streak, "failure", dead[0])
            ledger.get_run(conn, dead[0])
            alert_state.release(conn, streak, "failure", dead[0])
            alert_state.end_streak(conn, "cleanup")
    finally:
        trans.rollback()
        conn.close()
        db.dispose()
    return Command("sweep finding a dead run, and its alert", (), explainable(seen))


def run_cli(argv: tuple[str, ...], envs: list[dict[str, str]], cwd: Path, runs: int) -> list[float]:
    """The median wall time of ``jobctl ARGV`` in each environment, runs interleaved."""
    walls: list[list[float]] = [[] for _ in envs]
    exe = [sys.executable, "-c", "from jobctl.cli import main; main()"]
    for _ in range(runs):
        for env, found in zip(envs, walls, strict=True):
            started = time.perf_counter()
            proc = subprocess.run([*exe, *argv], env=env, cwd=cwd, capture_output=True, text=True)
            found.append(time.perf_counter() - started)
            # status exits 1 and check 2 for a failing job; a crash is a traceback
            if proc.returncode not in (0, 1, 2) or "Traceback" in proc.stderr:
                raise SystemExit(f"jobctl {' '.join(argv)}: exit {proc.returncode}\n{proc.stderr}")
    return [statistics.median(found) for found in walls]


def short(text: str, width: int = 150) -> str:
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3, help="EXPLAIN ANALYZE runs (median)")
    p.add_argument("--cli-runs", type=int, default=3, help="process runs (median)")
    p.add_argument("--keep", action="store_true", help="keep the data dir and the ledger")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--all", action="store_true", help="print every statement, not only runs'")
    p.add_argument(
        "--compare",
        type=Path,
        default=None,
        help="another checkout's src/: its processes too, interleaved (on this schema)",
    )
    a = p.parse_args(argv)

    import jobctl
    from jobctl.app import App
    from jobctl.config import load_settings

    default_dir = Path(tempfile.gettempdir()) / "jobctl-bench-ledger"
    tmp = a.data_dir or (default_dir if a.keep else Path(tempfile.mkdtemp(prefix="jbl-")))
    tmp.mkdir(parents=True, exist_ok=True)
    data_dir = tmp / "data"
    embedded = uses_embedded()
    url = server_url(data_dir)
    if not embedded:
        with psycopg.connect(url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
        info = psycopg.conninfo.conninfo_to_dict(url)
        info["dbname"] = BENCH_DB
        url = psycopg.conninfo.make_conninfo(**info)
    config = tmp / "jobctl.toml"
    config.write_text(fixture.config_text(None if embedded else url))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCTL_", "PG"))}
    env.pop("DATABASE_URL", None)
    env.update(JOBCTL_CONFIG=str(config), JOBCTL_DATA_DIR=str(data_dir), NO_COLOR="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(jobctl.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    )
    holder = None
    try:
        made = prepare(url, a.runs)
        holder = psycopg.connect(url)
        with psycopg.connect(url) as conn:
            fixture.hold_running_locks(holder, conn)
            parent_id = conn.execute(
                "SELECT max(parent_id) FROM jobctl.runs WHERE parent_id IS NOT NULL"
            ).fetchone()[0]
            version = conn.execute("SHOW server_version").fetchone()[0]
            size = conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('jobctl.runs'))"
            ).fetchone()[0]
            conn.rollback()
        settings = load_settings(config_path=config, environ=env)
        cmds = []
        for read in fixture.read_commands(parent_id or 0):
            app = App(settings)  # as a new process: the schema check, SQLAlchemy's set-up
            try:
                with fixture.recording() as seen:
                    read.call(app)
            finally:
                app.close()
            cmds.append(Command(read.name, read.argv, explainable(seen)))
        cmds.append(alert_statements(url))
        for cmd in cmds:
            for stmt in cmd.statements:
                explain(url, stmt, a.repeat)
        envs = [env]
        if a.compare:
            envs.append({**env, "PYTHONPATH": str(a.compare.resolve())})
        for cmd in cmds:
            if cmd.argv:
                walls = run_cli(cmd.argv, envs, tmp, a.cli_runs)
                cmd.wall_s = walls[0]
                cmd.other_wall_s = walls[1] if a.compare else None
        report(cmds, made, version, size, a)
        if a.json:
            a.json.write_text(json.dumps(to_json(cmds, made, version), indent=1, default=str))
        return 0 if all(ok(c) for c in cmds) else 1
    finally:
        if holder is not None:
            holder.close()
        if not a.keep and a.data_dir is None:
            if embedded:
                stop_server(data_dir)
            shutil.rmtree(tmp, ignore_errors=True)


def touches_runs(stmt: Statement) -> bool:
    return bool(stmt.nodes) or "jobctl.runs" in stmt.sql


def ok(cmd: Command) -> bool:
    return all(s.server_ms <= LIMIT_MS and not s.seq_scan for s in cmd.statements)


def report(cmds: list[Command], made: dict[str, Any], version: str, size: str, a: Any) -> None:
    print(
        f"# ledger: {made['runs']:,} runs over {len(fixture.JOBS)} jobs ({size} with indexes),"
        f" built in {made.get('built_s')} s, migrations {made.get('migrate_s')} s;"
        f" PostgreSQL {version}; {cpu_model()}; Python {platform.python_version()};"
        f" load {os.getloadavg()[0]:.2f}"
    )
    print(f"# server time = planning + execution, median of {a.repeat} EXPLAIN ANALYZE runs;")
    print("# buffers = shared hit + read of the top node; wall = the command as a process,")
    print(f"# median of {a.cli_runs}. Statements on jobctl.runs are shown (--all: every one).\n")
    for cmd in cmds:
        worst = max((s.server_ms for s in cmd.statements), default=0.0)
        wall = f"{cmd.wall_s * 1000:.0f} ms" if cmd.wall_s is not None else "-"
        if cmd.other_wall_s is not None:
            wall += f" (--compare: {cmd.other_wall_s * 1000:.0f} ms)"
        print(
            f"## {cmd.name}: {len(cmd.statements)} statements, total"
            f" {sum(s.server_ms for s in cmd.statements):.2f} ms server, worst {worst:.2f} ms;"
            f" wall {wall}  {'PASS' if ok(cmd) else 'FAIL'}"
        )
        for s in cmd.statements:
            if not a.all and not touches_runs(s):
                continue
            flag = " SEQ SCAN of runs" if s.seq_scan else ""
            print(
                f"  {s.server_ms:8.2f} ms (plan {s.planning_ms:.2f}) {s.hit + s.read:7d} buf"
                f"{flag}  {short(s.sql)}"
            )
            if s.nodes:
                print(f"{'':14}runs: {', '.join(s.nodes)}")
        print()
    every = [s for c in cmds for s in c.statements]
    fast = all(s.server_ms <= LIMIT_MS for s in every)
    no_seq = not any(s.seq_scan for s in every)
    worst = max(every, key=lambda s: s.server_ms)
    print("# goals")
    print(
        f"{'PASS' if fast else 'FAIL'}  every statement <= {LIMIT_MS:.0f} ms server time"
        f" (worst {worst.server_ms:.2f} ms: {short(worst.sql, 80)})"
    )
    seqs = sum(s.seq_scan for s in every)
    print(
        f"{'PASS' if no_seq else 'FAIL'}  no Seq Scan of jobctl.runs ({seqs} statements have one)"
    )
    for cmd in cmds:
        print(f"{'PASS' if ok(cmd) else 'FAIL'}  {cmd.name}")


def to_json(cmds: list[Command], made: dict[str, Any], version: str) -> dict[str, Any]:
    return {
        "when": datetime.now(UTC).isoformat(),
        "server_version": version,
        "ledger": made,
        "commands": [
            {
                "name": c.name,
                "wall_s": c.wall_s,
                "compare_wall_s": c.other_wall_s,
                "statements": [
                    {
                        "sql": short(s.sql, 400),
                        "server_ms": round(s.server_ms, 3),
                        "planning_ms": round(s.planning_ms, 3),
                        "buffers": s.hit + s.read,
                        "seq_scan_runs": s.seq_scan,
                        "runs_nodes": s.nodes,
                    }
                    for s in c.statements
                ],
            }
            for c in cmds
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
