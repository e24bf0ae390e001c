"""Start-up benchmark: how long jobctl takes before (and instead of) doing any work.

Prints the median wall time of N runs of each command, measured in one run and
interleaved (one round runs every command once), so that the load of the machine
falls on all of them alike:

    python -c pass               the interpreter alone
    python -c "import typer"     the floor of any Typer CLI (the yardstick)
    jobctl --version
    jobctl --help
    jobctl run tick              a user's job whose lock is held elsewhere: exit 75, `skipped` row
    jobctl sync                  the same for the built-in sync job
    jobctl run noop              a user's job that does nothing and completes: the fixed
                                 cost of a run (lock, ``running`` row, heartbeat thread,
                                 the end recorded), with no work in it

The lock is held by this script: a connection that took the job's advisory lock
(``jobctl.db.locks``) and a ``running`` row naming that connection, which is what a
run in progress on another host looks like. Without ``DATABASE_URL`` the embedded
server runs in a temporary ``JOBCTL_DATA_DIR`` (started once, before timing).

    python bench/bench_startup.py            # 15 rounds
    python bench/bench_startup.py -n 31 --json results.json
    # another version of the code, e.g. the last commit: git archive HEAD | tar -x -C /tmp/head
    python bench/bench_startup.py --src /tmp/head/src
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from _common import cpu_model

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
JOBCTL = shutil.which("jobctl", path=str(Path(sys.executable).parent)) or "jobctl"

CONFIG = """\
timezone = "UTC"
jobs_module = "benchjobs.py"

[sources.feed]
path = "feed.json"
format = "json"
key = ["id"]
table = "bench_feed"
"""

JOBS = '''\
import jobctl


@jobctl.job("tick")
def tick(ctx):
    """A job that never gets to run here: its lock is held."""


@jobctl.job("noop")
def noop(ctx):
    """A job that runs and does nothing: what a run costs around the work."""
'''


def hold_lock(url: str, job: str) -> psycopg.Connection[Any]:
    """Take ``job``'s lock as a running jobctl would, and record a run holding it."""
    from jobctl import __version__
    from jobctl.db.locks import NAMESPACE, holder_name, lock_key

    conn = psycopg.connect(url, application_name=holder_name())
    row = conn.execute(
        "SELECT pg_advisory_xact_lock(%s, %s), pg_backend_pid()", (NAMESPACE, lock_key(job))
    ).fetchone()
    assert row is not None
    with psycopg.connect(url, autocommit=True) as other:
        other.execute(
            "INSERT INTO jobctl.runs (job, trigger, status, host, pid, jobctl_version,"
            " lock_backend_pid, lock_key) VALUES (%s, 'timer', 'running', %s, %s, %s, %s, %s)",
            (job, socket.gethostname(), os.getpid(), __version__, row[1], lock_key(job)),
        )
    return conn


def database_url(project: Path, env: dict[str, str]) -> str:
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    from jobctl.db.embedded import embedded_url

    url, _ = embedded_url(Path(env["JOBCTL_DATA_DIR"]))
    return url


def timed(cmd: list[str], cwd: Path, env: dict[str, str], expect: int) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(
            f"{' '.join(cmd)}: exit {proc.returncode}, expected {expect}\n{proc.stderr[-2000:]}"
        )
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=15, help="rounds (default 15)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--src", type=Path, help="time the jobctl package in this directory (PYTHONPATH)"
    )
    args = parser.parse_args()
    jobctl = [JOBCTL]

    tmp = Path(tempfile.mkdtemp(prefix="jobctl-bench-startup-"))
    project = tmp / "project"
    project.mkdir()
    (project / "jobctl.toml").write_text(CONFIG)
    (project / "benchjobs.py").write_text(JOBS)
    (project / "feed.json").write_text('[{"id": 1, "name": "a"}]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCTL_")}
    env.update({"JOBCTL_DATA_DIR": str(tmp / "data"), "NO_COLOR": "1"})
    env.pop("INVOCATION_ID", None)
    if args.src:
        env["PYTHONPATH"] = str(args.src.resolve())
        jobctl = [PYTHON, "-c", "from jobctl.cli import main; main()"]

    commands: dict[str, tuple[list[str], int]] = {
        "python -c pass": ([PYTHON, "-c", "pass"], 0),
        'python -c "import typer"': ([PYTHON, "-c", "import typer"], 0),
        "jobctl --version": ([*jobctl, "--version"], 0),
        "jobctl --help": ([*jobctl, "--help"], 0),
        "jobctl run tick (skipped)": ([*jobctl, "run", "tick", "--trigger", "cron"], 75),
        "jobctl sync (skipped)": ([*jobctl, "sync", "--trigger", "cron"], 75),
        "jobctl run noop (completed)": ([*jobctl, "run", "noop", "--trigger", "manual"], 0),
    }
    holders: list[psycopg.Connection[Any]] = []
    try:
        subprocess.run([*jobctl, "db", "upgrade"], cwd=project, env=env, check=True)
        url = database_url(project, env)
        holders = [hold_lock(url, "tick"), hold_lock(url, "sync")]
        for cmd, expect in commands.values():  # warm the OS caches, check the exits
            timed(cmd, project, env, expect)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (cmd, expect) in commands.items():
                times[name].append(timed(cmd, project, env, expect))
    finally:
        for conn in holders:
            conn.close()
        if not args.keep:
            if not env.get("DATABASE_URL"):
                from jobctl.db.embedded import stop_embedded

                stop_embedded(Path(env["JOBCTL_DATA_DIR"]))
                time.sleep(1)
            shutil.rmtree(tmp, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    typer_ms = medians['python -c "import typer"']
    where = "DATABASE_URL" if env.get("DATABASE_URL") else "embedded server"
    load = os.getloadavg()
    print(f"jobctl from {args.src or Path(JOBCTL).parent}")
    print(
        f"{args.runs} rounds, {cpu_model()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {where}; load average {load[0]:.2f} {load[1]:.2f}"
    )
    print(f"{'command':32s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s} {'× typer':>8s}")
    for name, values in times.items():
        print(
            f"{name:32s} {medians[name] * 1000:10.1f} {min(values) * 1000:8.1f} "
            f"{max(values) * 1000:8.1f} {medians[name] / typer_ms:8.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"runs": args.runs, "load": load, "seconds": times, "medians": medians}, indent=2
            )
        )


if __name__ == "__main__":
    main()
