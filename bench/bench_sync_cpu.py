#!/usr/bin/env python3
"""CPU of whole ``jobctl sync`` processes (user + sys), A/B between jobctl commands.

    .venv/bin/python bench/bench_sync_cpu.py --jobctl "$PWD/bench/data/jobctl-before" \\
        --jobctl "$PWD/bench/data/jobctl-after" --rounds 3

On a shared machine the wall-clock figures of ``bench_sync.py`` move with the other
load; the CPU time the jobctl process itself spends (``/usr/bin/time`` %U + %S: its
parser, its COPY thread, its start-up) moves much less, and it is what a client-bound
sync is short of. For each round and each command, in turn: a fresh table, then the
steps of ``bench_sync.py`` — a (first load of feed v1), b2 (``--force``: the identical
feed, every record compared), c (feed v2: 5 % changed, 1 % new) — with ``CHECKPOINT``
(and ``VACUUM (ANALYZE)`` before b2 and c) outside the timing. Printed: per step and
command the median and the best of user + sys, and the median wall time; the counts
jobctl recorded are checked against the generator's as in ``bench_sync.py``.
Embedded server in a temporary directory unless ``DATABASE_URL`` is set.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
from _common import jobctl_env, server_url, stop_server, uses_embedded
from bench_sync import CONFIG, HERE, JOBCTL, TABLE, TIME, Feed, ensure_feed

STEPS = ("a", "b2", "c")


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float]:
    """(user + sys, wall, peak RSS MB) of one process."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        done = subprocess.run(
            [TIME, "-f", "%U %S %e %M", "-o", tf.name, *argv],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(done.stdout, done.stderr, sep="\n", file=sys.stderr)
            raise SystemExit(f"failed (exit {done.returncode}): {shlex.join(argv)}")
        user, system, wall, rss = Path(tf.name).read_text().split()[-4:]
    return float(user) + float(system), float(wall), int(rss) / 1024


def _counts(jobctl: list[str], env: dict[str, str], cwd: Path) -> dict[str, int]:
    done = subprocess.run(
        [*jobctl, "runs", "list", "--json", "--limit", "1", "--job", "sync"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    run = json.loads(done.stdout)[0]
    source = ((run.get("stats") or {}).get("sources") or {}).get("permits", {})
    return {k: source[k] for k in ("new", "updated", "unchanged") if k in source}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=237_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobctl", action="append", metavar="CMD", help="a jobctl command (repeat)")
    ap.add_argument("--steps", default=",".join(STEPS), help="which steps (a first), e.g. a")
    args = ap.parse_args()
    commands = args.jobctl or [JOBCTL]
    steps = [s for s in STEPS if s in args.steps.split(",")]

    data = HERE / "data"
    data.mkdir(exist_ok=True)
    v1, v2 = ensure_feed(data, args.records, 1), ensure_feed(data, args.records, 2)
    expected: dict[str, tuple[Feed, list[str], dict[str, int]]] = {
        "a": (v1, [], {"new": v1.records, "updated": 0, "unchanged": 0}),
        "b2": (v1, ["--force"], {"new": 0, "updated": 0, "unchanged": v1.records}),
        "c": (
            v2,
            ["--file", str(v2.path)],
            {"new": v2.new, "updated": v2.changed, "unchanged": v1.records - v2.changed},
        ),
    }
    tmp = Path(tempfile.mkdtemp(prefix="jobctl-bench-cpu-"))
    env = jobctl_env(tmp / "jobctl.toml", tmp / "data")
    (tmp / "jobctl.toml").write_text(CONFIG.format(path=json.dumps(str(v1.path)), table=TABLE))
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}
    rss: dict[tuple[str, str], list[float]] = {}
    try:
        subprocess.run([JOBCTL, "db", "upgrade"], env=env, cwd=tmp, check=True, capture_output=True)
        admin = psycopg.connect(server_url(tmp / "data"), autocommit=True)
        for round_no in range(1, args.rounds + 1):
            for command in commands:
                jobctl = shlex.split(command)
                admin.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")
                admin.execute("DELETE FROM jobctl.feed_state")
                for step in ["a", *steps] if "a" not in steps else steps:
                    _, extra, want = expected[step]
                    if step != "a":
                        admin.execute(f"VACUUM (ANALYZE) {TABLE}")
                    admin.execute("CHECKPOINT")
                    argv = [*jobctl, "sync", "--source", "permits", "--trigger", "manual", *extra]
                    seconds, elapsed, peak = _timed(argv, env, tmp)
                    got = _counts(jobctl, env, tmp)
                    ok = "OK" if got == want else f"MISMATCH {got} != {want}"
                    print(
                        f"round {round_no} {step:<2} {command}: {seconds:5.2f} s CPU, "
                        f"{elapsed:5.2f} s wall, {peak:5.1f} MB  {ok}",
                        flush=True,
                    )
                    if step not in steps:  # the first load the re-syncs need, not timed
                        continue
                    cpu.setdefault((command, step), []).append(seconds)
                    wall.setdefault((command, step), []).append(elapsed)
                    rss.setdefault((command, step), []).append(peak)
        admin.close()
    finally:
        if uses_embedded():
            stop_server(tmp / "data")
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nfeed v1 {v1.records} records; user+sys of the jobctl process, {args.rounds} rounds")
    print(
        f"{'step':<5} {'CPU median':>10} {'CPU best':>9} {'wall median':>11} {'RSS MB':>7}  command"
    )
    for step in steps:
        for command in commands:
            c, w = cpu[(command, step)], wall[(command, step)]
            print(
                f"{step:<5} {statistics.median(c):10.2f} {min(c):9.2f} {statistics.median(w):11.2f}"
                f" {max(rss[(command, step)]):7.1f}  {command}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
