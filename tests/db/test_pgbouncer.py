"""jobctl's job lock through a real PgBouncer in transaction pooling mode.

The bouncer has fewer server backends (5) than clients: a session-level
advisory lock stays on a pooled backend that no client owns, while jobctl's
transaction-scoped lock inside a transaction kept open pins its client to one
backend and keeps excluding the others.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from jobctl.db.engine import Database
from jobctl.db.locks import HELD_SQL, NAMESPACE, JobLock, lock_key
from tests.fixtures.pgbouncer import pgbouncer_url

LOCKED = 75


@pytest.fixture
def bouncer(db_url: str) -> Iterator[str]:
    with pgbouncer_url(db_url, pool_size=5) as url:
        yield url


@pytest.fixture
def bouncer_db(bouncer: str) -> Iterator[Database]:
    db = Database(bouncer)
    yield db
    db.dispose()


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


def _held_by(psql: psycopg.Connection[Any], job: str, backend_pid: int) -> bool:
    sql = HELD_SQL.format(ns=NAMESPACE, key="%s", pid="%s")
    row = psql.execute(f"SELECT {sql}", (lock_key(job), backend_pid)).fetchone()
    assert row is not None
    return bool(row[0])


def _runs(cli: Any, url: str) -> list[dict[str, Any]]:
    res = cli("runs", "list", "--json", "--limit", "0", env={"DATABASE_URL": url})
    assert res.code == 0, res.stderr
    return json.loads(res.stdout)


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 60) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    results = []
    for proc in procs:
        try:
            _out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        results.append((proc.returncode, err))
    return results


@pytest.mark.parametrize("pool_size", [1, 5])
def test_session_advisory_lock_does_not_exclude_behind_pgbouncer(
    db_url: str, psql: psycopg.Connection[Any], pool_size: int
) -> None:
    """The hazard: why jobctl must not use ``pg_try_advisory_lock`` (session level)."""
    key = 912_345
    with pgbouncer_url(db_url, pool_size=pool_size) as url:
        with _connect(url) as a, _connect(url) as b:
            got_a, pid_a = a.execute(
                "SELECT pg_try_advisory_lock(%s), pg_backend_pid()", (key,)
            ).fetchone() or (None, None)
            got_b, pid_b = b.execute(
                "SELECT pg_try_advisory_lock(%s), pg_backend_pid()", (key,)
            ).fetchone() or (None, None)
            # Both "own" the lock: they were served by the same pooled backend.
            assert got_a is True
            assert got_b is True, "the session lock excluded the second client"
            assert pid_a == pid_b
        # Both clients are gone, yet the lock stays on the pooled backend that no
        # client owns: a direct client cannot take it.
        row = psql.execute(
            "SELECT pg_try_advisory_lock(%s), (SELECT count(*) FROM pg_locks"
            " WHERE locktype = 'advisory' AND objid = %s::oid AND pid = %s)",
            (key, key, pid_a),
        ).fetchone()
        assert row == (False, 1)
    # Stopping the bouncer closes its backends, and only that frees the lock.
    deadline = time.monotonic() + 10
    while not psql.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:  # type: ignore[index]
        assert time.monotonic() < deadline, "the leaked session lock was never freed"
        time.sleep(0.05)
    psql.execute("SELECT pg_advisory_unlock(%s)", (key,))


def test_joblock_excludes_behind_pgbouncer(
    bouncer_db: Database, psql: psycopg.Connection[Any]
) -> None:
    a = JobLock(bouncer_db, "nightly")
    b = JobLock(bouncer_db, "nightly")
    other = JobLock(bouncer_db, "weekly")
    try:
        assert a.try_acquire()
        assert a.held and a.backend_pid is not None
        assert _held_by(psql, "nightly", a.backend_pid)
        assert not b.try_acquire()
        assert not b.held
        # A failed attempt does not pin a backend: the bouncer still serves others.
        assert not b.try_acquire()
        assert other.try_acquire(), "a different job's lock must be free"
        assert a.ping()
        a.release()
        assert not a.held
        assert b.try_acquire()
        assert b.backend_pid is not None and _held_by(psql, "nightly", b.backend_pid)
        assert not a.try_acquire()
    finally:
        for lock in (a, b, other):
            lock.release()


def test_two_runs_at_once_through_pgbouncer(cli: Any, bouncer: str) -> None:
    env = {"DATABASE_URL": bouncer}
    procs = [cli.popen("run", "sleepy", "--param", "seconds=3", env=env) for _ in range(2)]
    results = _finish(procs)
    codes = sorted(code for code, _ in results)
    assert codes == [0, LOCKED], results
    loser_err = next(err for code, err in results if code == LOCKED)
    assert "already running" in loser_err
    runs = _runs(cli, bouncer)
    assert sorted(r["status"] for r in runs) == ["completed", "skipped"]
    assert {r["job"] for r in runs} == {"sleepy"}
    skipped = next(r for r in runs if r["status"] == "skipped")
    assert "already running" in (skipped["error_message"] or "")


@pytest.mark.slow
def test_twenty_runs_at_once_through_pgbouncer(cli: Any, bouncer: str) -> None:
    env = {"DATABASE_URL": bouncer}
    # Long enough for all twenty to start and try the lock on a small machine.
    procs = [cli.popen("run", "sleepy", "--param", "seconds=15", env=env) for _ in range(20)]
    results = _finish(procs, timeout=90)
    codes = [code for code, _ in results]
    assert codes.count(0) == 1, results
    assert codes.count(LOCKED) == 19, results
    runs = _runs(cli, bouncer)
    statuses = [r["status"] for r in runs]
    assert len(runs) == 20
    assert statuses.count("completed") == 1
    assert statuses.count("skipped") == 19


def test_killed_holder_through_pgbouncer_is_abandoned(
    cli: Any, bouncer: str, psql: psycopg.Connection[Any]
) -> None:
    env = {"DATABASE_URL": bouncer}
    holder = cli.popen("run", "sleepy", "--param", "seconds=60", env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            row = psql.execute(
                "SELECT id, lock_backend_pid FROM jobctl.runs WHERE status = 'running'"
            ).fetchone()
            if row is not None:
                break
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the holder never started its run"
            time.sleep(0.05)
        run_id, backend_pid = row
        assert _held_by(psql, "sleepy", backend_pid)
        # While it is alive, another run is skipped.
        res = cli("run", "sleepy", "--param", "seconds=0", env=env)
        assert res.code == LOCKED, res.stderr
        assert f"run {run_id}" in res.stderr
    finally:
        holder.kill()
        holder.communicate()
    assert holder.returncode == -9

    # The bouncer closes the holder's pinned backend; the lock goes with it.
    deadline = time.monotonic() + 10
    while _held_by(psql, "sleepy", backend_pid):
        assert time.monotonic() < deadline, "the dead holder's lock is still held"
        time.sleep(0.05)
    runs = {r["id"]: r for r in _runs(cli, bouncer)}
    assert runs[run_id]["status"] == "abandoned"
    assert runs[run_id]["finished_at"] is not None
    assert "died" in runs[run_id]["error_message"]

    started = time.monotonic()
    res = cli("run", "sleepy", "--param", "seconds=0", env=env)
    assert res.code == 0, res.stderr
    assert time.monotonic() - started < 15
    runs = _runs(cli, bouncer)
    assert [r["status"] for r in runs][:1] == ["completed"]
    assert sorted(r["status"] for r in runs) == ["abandoned", "completed", "skipped"]
