"""The embedded server (no DATABASE_URL) and the accepted database URL forms."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobctl.db.embedded import stop_embedded
from jobctl.db.engine import normalise_url, open_database
from jobctl.errors import UsageError
from tests.conftest import Cli, _scrubbed

STARTED = "started the embedded PostgreSQL server"


def _postmasters(pg_dir: Path) -> list[int]:
    """Pids of postmaster processes serving ``pg_dir`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "\nState:\tZ" in status:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "-D" not in args or args.index("-D") + 1 >= len(args):
            continue
        if Path(args[args.index("-D") + 1]) == pg_dir:
            found.append(int(entry.name))
    return found


def _stop_and_wait(data_dir: Path) -> None:
    pg_dir = data_dir / "pg"
    stop_embedded(data_dir)
    deadline = time.monotonic() + 20
    while _postmasters(pg_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in _postmasters(pg_dir):  # did not stop: it is ours, kill it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh JOBCTL_DATA_DIR; whatever server a test starts there is stopped after it."""
    path = tmp_path / "data"
    yield path
    _stop_and_wait(path)
    assert _postmasters(path / "pg") == [], "the embedded server was left running"


@pytest.fixture
def embedded_cli(project: Path, data_dir: Path) -> Cli:
    env = _scrubbed(dict(os.environ))
    env["JOBCTL_DATA_DIR"] = str(data_dir)
    env["NO_COLOR"] = "1"
    assert "DATABASE_URL" not in env
    return Cli(project, env)


@pytest.mark.slow
def test_concurrent_commands_share_one_embedded_server(embedded_cli: Cli, data_dir: Path) -> None:
    assert not data_dir.exists()
    commands = [("db", "upgrade"), ("runs", "list", "--json")] * 3
    procs = [embedded_cli.popen(*args) for args in commands]
    outs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outs

    pg_dir = data_dir / "pg"
    pidfiles = list(data_dir.rglob("postmaster.pid"))
    assert pidfiles == [pg_dir / "postmaster.pid"]
    pid = int(pidfiles[0].read_text().split("\n", 1)[0])
    assert _postmasters(pg_dir) == [pid], "exactly one server for the data directory"

    for args, (out, err) in zip(commands, outs, strict=True):
        assert "Traceback" not in err
        if args[0] == "runs":
            assert json.loads(out) == []
    # The migrations were applied once (by an upgrade, or by a 'runs list' that
    # upgraded a schema-less database on its own), never twice.
    assert sum("applied 0001" in err for _out, err in outs) <= 1, outs
    res = embedded_cli("db", "status", "--json")
    assert res.code == 0, res.stderr
    states = json.loads(res.stdout)
    assert states and all(s["applied_at"] and s["checksum_ok"] for s in states), states

    res = embedded_cli("run", "sleepy", "--param", "seconds=0")
    assert res.code == 0, res.stderr
    assert STARTED not in res.stderr, "the server was already running"
    res = embedded_cli("runs", "list", "--json")
    assert res.code == 0, res.stderr
    runs = json.loads(res.stdout)
    assert [(r["job"], r["status"], r["params"]) for r in runs] == [
        ("sleepy", "completed", {"seconds": "0"})
    ]
    assert _postmasters(pg_dir) == [pid], "still the same server"


def test_embedded_server_start_is_announced_once(embedded_cli: Cli, data_dir: Path) -> None:
    """SPEC: jobctl starts (or reuses) the embedded server 'and says so once'.

    Hold the start-up lock so that every process reaches it before the server
    exists: the first one to get it starts the server, the others reuse it.
    """
    data_dir.mkdir(parents=True)
    with open(data_dir / ".embedded.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        procs = [embedded_cli.popen("runs", "list", "--json") for _ in range(4)]
        time.sleep(2.5)  # let them all reach the lock
        fcntl.flock(lock, fcntl.LOCK_UN)
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert sum(STARTED in err for _out, err in outs) == 1, [err for _o, err in outs]


def test_postgres_and_postgresql_urls_are_accepted(db_url: str) -> None:
    assert db_url.startswith("postgresql://")
    rest = db_url.split("://", 1)[1]
    for scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        url = f"{scheme}://{rest}"
        assert normalise_url(url) == db_url
        db = open_database(url, Path("/nonexistent/never-used"))
        try:
            assert db.embedded is False
            assert db.url == db_url
            with db.connect() as conn:
                name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
            assert name == psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
        finally:
            db.dispose()
    assert normalise_url("postgres://app:pw@db.example:6432/app?sslmode=require") == (
        "postgresql://app:pw@db.example:6432/app?sslmode=require"
    )


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app:s3cretpw@db/app",
        "sqlite:///tmp/jobctl.db",
        "http://app:s3cretpw@db/app",
        "db.example:5432/app",
        "postgresq://app@db/app",
    ],
)
def test_non_postgres_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError) as info:
        normalise_url(url)
    assert "not a PostgreSQL URL" in str(info.value)
    assert "s3cretpw" not in str(info.value)
    with pytest.raises(UsageError):
        open_database(url, Path("/nonexistent/never-used"))


def test_cli_accepts_postgres_scheme_and_rejects_others(cli: Any, db_url: str) -> None:
    res = cli(
        "runs", "list", "--json", env={"DATABASE_URL": "postgres://" + db_url.split("://", 1)[1]}
    )
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout) == []

    res = cli("runs", "list", "--json", env={"DATABASE_URL": "mysql://app:s3cretpw@db/app"})
    assert res.code == 2, (res.stdout, res.stderr)
    assert "not a PostgreSQL URL" in res.stderr
    assert "s3cretpw" not in res.stderr + res.stdout
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_unusable_data_dir_is_a_clear_error(project: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = _scrubbed(dict(os.environ))
    env["JOBCTL_DATA_DIR"] = str(blocker / "data")
    res = Cli(project, env)("runs", "list", "--json")
    assert res.code == 2, (res.stdout, res.stderr)
    assert "JOBCTL_DATA_DIR" in res.stderr
    assert "Traceback" not in res.stderr
