#!/usr/bin/env python3
"""Latency of the web console over a ledger of 1,000,000 runs, 16 concurrent clients.

    .venv/bin/python bench/bench_web.py                      # 1,000,000 runs, 20 jobs
    .venv/bin/python bench/bench_web.py --runs 100000        # quicker
    DATABASE_URL=postgresql://... bench/bench_web.py         # an existing, empty database

Data: ``--runs`` rows in ``jobctl.runs`` made server-side with ``generate_series``
(20 jobs, one run every 15 s back from now: 1M runs is ~174 days; 2 % failed, 1 %
skipped, the rest completed), then ``VACUUM ANALYZE``. The server is ``jobctl serve``
on 127.0.0.1 (uvicorn, one process), with a token; the clients read anonymously, as
a loopback bind allows.

Load: a bounded local loop, ``--clients`` (16) httpx.AsyncClient connections in this
process, each sending its next request as soon as the last one is answered, for
``--requests`` requests per endpoint in all (after 2 per client of warm-up, not
counted), and at most ``--seconds`` per endpoint. Per request: wall-clock from send
to the whole body read. Endpoints, one after the other:

  api        GET /api/runs?limit=20          (the JSON API, as ``runs list --json``)
  page       GET /runs                        (the Runs page: 20 runs, the default)
  page50     GET /runs?limit=50
  page-job   GET /runs?job=job_01&status=failed   (1 % of job_01's runs match)
  page-none  GET /runs?job=job_07&status=failed   (none match: the job's 50k runs read)
  page-deep  GET /runs?page=50                (runs 981-1000: the pager's over-fetch)

Baseline, in this process: ``App.list_runs(limit=21)`` called directly (the library
call the page makes, no HTTP, no HTML), one caller at a time: what the database
alone costs. The clients share the machine's cores with the server and PostgreSQL.
``cpu/req``: the server process's user + system CPU time per request (``/proc``),
which a busy machine disturbs much less than the wall-clock latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, jobctl_env, server_url, stop_server, uses_embedded

VENV_BIN = Path(sys.executable).parent
JOBCTL = str(VENV_BIN / "jobctl")
TOKEN = "bench:bench-web-token-0123456789"
JOBS = 20

DATA = """
INSERT INTO jobctl.runs (job, status, trigger, started_at, finished_at, heartbeat_at,
    duration_ms, attempts, records_total, records_new, records_updated, records_unchanged,
    records_errors, error_message, host, pid, jobctl_version)
SELECT 'job_' || lpad((i %% %(jobs)s + 1)::text, 2, '0'),
       CASE WHEN i %% 50 = 0 THEN 'failed' WHEN i %% 97 = 0 THEN 'skipped' ELSE 'completed' END,
       'timer', t, t + d, t + d, (i %% 9000) + 100, 1,
       i %% 5000, i %% 7, i %% 11, i %% 5000 - i %% 7 - i %% 11, 0,
       CASE WHEN i %% 50 = 0 THEN 'feed returned HTTP 503 after 3 attempts' END,
       'bench-host', 1000 + i %% 30000, 'bench'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i,
     LATERAL (SELECT %(now)s::timestamptz - (%(n)s - i) * interval '15 s' AS t,
                     ((i %% 9000) + 100) * interval '1 ms' AS d) AS x
"""

ENDPOINTS = [
    ("api", "/api/runs?limit=20"),
    ("page", "/runs"),
    ("page50", "/runs?limit=50"),
    ("page-job", "/runs?job=job_01&status=failed"),
    ("page-none", "/runs?job=job_07&status=failed"),
    ("page-deep", "/runs?page=50"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fill(url: str, runs: int) -> float:
    """``runs`` ledger rows, in chunks; seconds taken (VACUUM ANALYZE included)."""
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM jobctl.runs").fetchone()
        if found and found[0]:
            raise SystemExit(f"jobctl.runs already holds {found[0]} rows: use an empty database")
        chunk = 250_000
        for lo in range(1, runs + 1, chunk):
            hi = min(runs, lo + chunk - 1)
            params = {"jobs": JOBS, "lo": lo, "hi": hi, "now": now, "n": runs}
            conn.execute(DATA, params)
        conn.execute("VACUUM ANALYZE jobctl.runs")
    return time.perf_counter() - t0


def start_server(env: dict[str, str], cwd: Path, port: int) -> subprocess.Popen[bytes]:
    command = [JOBCTL, "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = (cwd / "serve.log").open("wb")
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {(cwd / 'serve.log').read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not answer /healthz within 60 s")


async def load(
    base: str, path: str, clients: int, requests: int, seconds: float
) -> tuple[list[float], int, float]:
    """Latencies (ms) of ``requests`` GETs of ``path`` by ``clients`` concurrent clients;
    the number of non-200 answers; the wall time of the measured part."""
    latencies: list[float] = []
    errors = 0
    left = requests
    pool = [httpx.AsyncClient(base_url=base, timeout=30) for _ in range(clients)]
    try:
        # warm-up, not counted: every client's connection open, two requests each
        for _ in range(2):
            await asyncio.gather(*(http.get(path) for http in pool))
        t0 = time.perf_counter()
        stop_at = t0 + seconds

        async def client(http: httpx.AsyncClient) -> None:
            nonlocal left, errors
            while left > 0 and time.perf_counter() < stop_at:
                left -= 1
                sent = time.perf_counter()
                response = await http.get(path)
                latencies.append((time.perf_counter() - sent) * 1000)
                errors += response.status_code != 200

        await asyncio.gather(*(client(http) for http in pool))
        return latencies, errors, time.perf_counter() - t0
    finally:
        for http in pool:
            await http.aclose()


def cpu_ms(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, in ms (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def baseline(env: dict[str, str], cwd: Path, calls: int) -> list[float]:
    """``App.list_runs(limit=21)`` in this process, one call at a time (ms each)."""
    os.chdir(cwd)
    from jobctl.app import App
    from jobctl.config import load_settings

    app = App(load_settings(config_path=cwd / "jobctl.toml", environ=env))
    app.list_runs(job=None, status=None, since=None, limit=21)
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        app.list_runs(job=None, status=None, since=None, limit=21)
        out.append((time.perf_counter() - t0) * 1000)
    app.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1_000_000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=2000, help="per endpoint, in all")
    p.add_argument("--seconds", type=float, default=60, help="at most, per endpoint")
    p.add_argument("--keep", action="store_true", help="keep the temporary dir and server")
    a = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="jobctl-bench-web-"))
    embedded = uses_embedded()
    env = jobctl_env(tmp / "jobctl.toml", tmp / "data")
    env["JOBCTL_WEB_TOKEN"] = TOKEN
    (tmp / "jobctl.toml").write_text('timezone = "UTC"\n')
    server = None
    try:
        subprocess.run([JOBCTL, "db", "upgrade"], env=env, cwd=tmp, check=True, capture_output=True)
        url = server_url(tmp / "data")
        env.setdefault("DATABASE_URL", url)
        filled = fill(url, a.runs)
        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        print(
            f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs "
            f"{platform.machine()} {cpu_model()}, Python {platform.python_version()}, "
            f"PostgreSQL {version[0] if version else '?'}{' (embedded)' if embedded else ''}, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(f"# {a.runs:,} runs of {JOBS} jobs made in {filled:.1f} s; {a.clients} clients")
        base = baseline(env, tmp, 200)
        print(
            f"{'baseline':10} App.list_runs(limit=21), 1 caller: median "
            f"{statistics.median(base):6.1f} ms  p99 {pct(base, 0.99):6.1f} ms"
        )
        port = free_port()
        server = start_server(env, tmp, port)
        print(
            f"{'endpoint':10} {'requests':>8} {'errors':>6} {'req/s':>7} {'median':>8} "
            f"{'p90':>8} {'p99':>8} {'max':>8} {'cpu/req':>8}  target p99 < 100 ms"
        )
        for name, path in ENDPOINTS:
            cpu0 = cpu_ms(server.pid)
            latencies, errors, wall = asyncio.run(
                load(f"http://127.0.0.1:{port}", path, a.clients, a.requests, a.seconds)
            )
            # the server's CPU per request (warm-up included): steadier than wall time
            per = (cpu_ms(server.pid) - cpu0) / (len(latencies) + 2 * a.clients)
            p99 = pct(latencies, 0.99)
            print(
                f"{name:10} {len(latencies):8} {errors:6} {len(latencies) / wall:7.1f} "
                f"{statistics.median(latencies):6.1f}ms {pct(latencies, 0.90):6.1f}ms "
                f"{p99:6.1f}ms {max(latencies):6.1f}ms {per:6.2f}ms  {'OK' if p99 < 100 else 'over'}"
                f"  {path}"
            )
    finally:
        if server is not None and not a.keep:
            server.terminate()
            server.wait(timeout=10)
        if embedded and not a.keep:
            stop_server(tmp / "data")
        if a.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
