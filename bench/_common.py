"""Helpers shared by the benchmark scripts (run as scripts: ``python bench/X.py``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

VENV_BIN = Path(sys.executable).parent


def cpu_model() -> str:
    """The processor's name, for the figures' header."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def uses_embedded() -> bool:
    """No ``DATABASE_URL``: the benchmark runs on the embedded server, as jobctl would."""
    return not os.environ.get("DATABASE_URL")


def jobctl_env(config: Path, data_dir: Path) -> dict[str, str]:
    """The environment jobctl runs in: none of the caller's ``JOBCTL_*``, this config
    and data directory, the venv's ``bin`` first on ``PATH``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCTL_")}
    env["JOBCTL_CONFIG"] = str(config)
    env["JOBCTL_DATA_DIR"] = str(data_dir)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def server_url(data_dir: Path) -> str:
    """The benchmark's database: ``DATABASE_URL`` (checked as jobctl checks it), else
    the embedded server in ``data_dir`` (started if it is not running)."""
    if uses_embedded():
        from jobctl.db.embedded import embedded_url

        url, _ = embedded_url(data_dir)
        return url
    from jobctl.db.engine import normalise_url

    return normalise_url(os.environ["DATABASE_URL"])


def stop_server(data_dir: Path) -> None:
    """Stop the embedded server in ``data_dir`` and wait (up to 10 s) until it is gone."""
    from jobctl.db.embedded import stop_embedded

    if stop_embedded(data_dir):
        for _ in range(100):
            if not (data_dir / "pg" / "postmaster.pid").exists():
                break
            time.sleep(0.1)


def server_settings(conn: psycopg.Connection[Any], names: tuple[str, ...]) -> dict[str, str]:
    """``pg_settings`` values of ``names``, for the figures' header."""
    rows = conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(names),)
    ).fetchall()
    return {str(name): str(setting) for name, setting in rows}


# --------------------------------------------------------------------------- feeds

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GEN = ROOT / "tests" / "fixtures" / "feeds.py"  # standard library only: runs as a script
FEED_FORMATS = ("json", "ndjson", "csv")


@dataclass
class Feed:
    path: Path
    fmt: str
    records: int  # records in the file
    changed: int
    new: int
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_feed(data_dir: Path, records: int, version: int, fmt: str = "json") -> Feed:
    """feed_v{version}_{records}.{fmt}, generated once by ``tests/fixtures/feeds.py``
    (version 2: ``--change-pct 5``, 1 % new); its .meta.json holds the counts.

    The NDJSON and CSV feeds hold the same records as the JSON one (same generator,
    same seed). A cached feed is reused only if it was made by this very generator
    (its sha256 is in the meta), so a change to the generator means a fresh feed
    rather than counts that no longer match the file.
    """
    path = data_dir / f"feed_v{version}_{records}.{fmt}"
    meta_path = (
        path.with_name(path.name + ".meta.json")
        if fmt != "json"
        else path.with_suffix(".meta.json")
    )
    options = ["--records", str(records)] + (["--change-pct", "5"] if version == 2 else [])
    if fmt != "json":
        options += ["--format", fmt]
    generator = f"{GEN.relative_to(ROOT)} {shlex.join(options)}"
    generator_sha256 = sha256_of(GEN)
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if (
            meta.get("bytes") == path.stat().st_size
            and meta.get("generator") == generator
            and meta.get("generator_sha256") == generator_sha256
        ):
            return Feed(
                path, fmt, meta["records_written"], meta["changed"], meta["new"], meta["sha256"]
            )
    args = [sys.executable, str(GEN), *options, "-o", str(path)]
    print(f"generating {path.name}: {generator}", flush=True)
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    line = done.stderr.strip().splitlines()[-1]  # feeds: seed=.. records_written=N ...
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    meta = {
        "generator": generator,
        "generator_sha256": generator_sha256,
        "records_written": int(fields["records_written"]),
        "changed": int(fields["changed"]),
        "new": int(fields["new"]),
        "bytes": path.stat().st_size,
        "sha256": sha256_of(path),
    }
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return Feed(path, fmt, meta["records_written"], meta["changed"], meta["new"], meta["sha256"])


# --------------------------------------------------------------------------- measuring

TIME = "/usr/bin/time"


@dataclass
class Timed:
    """One process, timed: wall seconds, peak RSS, client CPU (user + system)."""

    seconds: float
    rss_mb: float
    cpu_seconds: float
    returncode: int
    stdout: str
    stderr: str


def timed(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Timed:
    """Run ``argv`` under ``/usr/bin/time`` (``apt-get install time``)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.perf_counter()
        done = subprocess.run(
            [TIME, "-f", "%M %U %S", "-o", tf.name, *argv],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - t0
        rss_kb, user, system = 0, 0.0, 0.0
        for line in reversed(Path(tf.name).read_text().strip().splitlines()):
            parts = line.split()
            if len(parts) == 3 and parts[0].isdigit():
                rss_kb, user, system = int(parts[0]), float(parts[1]), float(parts[2])
                break
    return Timed(seconds, rss_kb / 1024, user + system, done.returncode, done.stdout, done.stderr)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Wal:
    """WAL written between two points (``pg_current_wal_lsn()``, server-wide)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def lsn(self) -> str:
        row = self.conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])

    def since(self, lsn: str) -> int:
        row = self.conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn,)
        ).fetchone()
        assert row is not None
        return int(row[0])


class StatementLog:
    """Server-side time of every statement, from the server's own log.

    ``log_min_duration_statement = 0`` and ``log_statement_stats = on`` (``ALTER
    SYSTEM``, reloaded; reset by :meth:`close`) make the server log every statement
    with its duration and the CPU its backend spent on it (``getrusage``: user +
    system, which the machine's load does not inflate as it does durations); the
    lines a step added to the log file are summed by statement (its first words).
    Needs a superuser and the log file (the embedded server's ``pg/log``, or
    ``--server-log`` for another server).
    """

    def __init__(self, conn: psycopg.Connection[Any], path: Path) -> None:
        self.conn = conn
        self.path = path
        conn.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
        conn.execute("ALTER SYSTEM SET log_statement_stats = on")
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.2)

    def mark(self) -> int:
        return self.path.stat().st_size

    def since(self, offset: int) -> dict[str, tuple[float, float]]:
        """(milliseconds, CPU milliseconds) by statement, for the lines after ``offset``."""
        with self.path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        totals: dict[str, tuple[float, float]] = {}
        # The server logs a statement's duration, then (log_statement_stats) its
        # usage; the extended protocol logs parse, bind and execute each so.
        last: str | None = None
        for line in text.splitlines():
            usage = _USAGE.search(line)
            if usage:
                if last is not None:
                    ms, cpu = totals[last]
                    spent = (float(usage.group(1)) + float(usage.group(2))) * 1000
                    totals[last] = (ms, cpu + spent)
                continue
            m = _DURATION.search(line)
            if not m:
                continue
            what = " ".join(m.group(2).split()[:7])[:70]
            if what.startswith(("SELECT pg_current_wal_lsn", "SELECT pg_wal_lsn_diff")):
                last = None  # the benchmark's own
                continue
            ms, cpu = totals.get(what, (0.0, 0.0))
            totals[what] = (ms + float(m.group(1)), cpu)
            last = what
        return totals

    def close(self) -> None:
        self.conn.execute("ALTER SYSTEM RESET log_min_duration_statement")
        self.conn.execute("ALTER SYSTEM RESET log_statement_stats")
        self.conn.execute("SELECT pg_reload_conf()")


_DURATION = re.compile(r"duration: ([0-9.]+) ms\s+(?:statement|(?:parse|bind|execute) [^:]*): (.*)")
_USAGE = re.compile(r"!\s+([0-9.]+) s user, ([0-9.]+) s system, [0-9.]+ s elapsed")
