"""Per-job advisory locks on a direct connection, and the abandoned-run sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from jobctl.db import ledger
from jobctl.db.engine import Database
from jobctl.db.locks import HELD_SQL, NAMESPACE, JobLock, lock_key
from tests.conftest import ROOT


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def _held_by(psql: psycopg.Connection[Any], job: str, backend_pid: int) -> bool:
    sql = HELD_SQL.format(ns=NAMESPACE, key="%s", pid="%s")
    row = psql.execute(f"SELECT {sql}", (lock_key(job), backend_pid)).fetchone()
    assert row is not None
    return bool(row[0])


def _key_in_subprocess(name: str, hashseed: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", f"from jobctl.db.locks import lock_key; print(lock_key({name!r}))"],
        env={**os.environ, "PYTHONHASHSEED": hashseed},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return int(out.stdout)


def test_lock_key_is_stable_and_distinct() -> None:
    names = [
        "sync",
        "snapshot",
        "cleanup",
        "report",
        "sleepy",
        "flaky",
        "boom",
        "writer",
        "Sync",
        "sync ",
        "schedule-worker",
        "a",
        "b",
        "ünïcode",
    ]
    keys = {name: lock_key(name) for name in names}
    assert len(set(keys.values())) == len(names), keys
    for name, key in keys.items():
        assert lock_key(name) == key
        assert 0 <= key < 2**31, "the key must fit the integer column lock_key"
    # Every host / process agrees: no dependence on Python's hash randomisation.
    assert _key_in_subprocess("sync", "1") == keys["sync"]
    assert _key_in_subprocess("sync", "2") == keys["sync"]
    assert _key_in_subprocess("ünïcode", "3") == keys["ünïcode"]


def test_joblock_excludes_and_releases(db: Database, psql: psycopg.Connection[Any]) -> None:
    a, b = JobLock(db, "nightly"), JobLock(db, "nightly")
    try:
        assert not a.held and not a.ping()
        assert a.acquire()
        assert a.held and a.backend_pid is not None
        assert _held_by(psql, "nightly", a.backend_pid)
        assert a.ping()
        assert not b.acquire()
        assert not b.try_acquire()
        assert not b.held and b.backend_pid is None
        with JobLock(db, "other-job") as other:
            assert other.try_acquire(), "another job's lock is independent"
            other_pid = other.backend_pid
        assert other_pid is not None
        assert not _held_by(psql, "other-job", other_pid), "__exit__ must release"
        a.release()
        assert not a.held
        assert not _held_by(psql, "nightly", a.backend_pid or 0)
        assert b.try_acquire()
        assert not a.try_acquire()
    finally:
        a.release()
        b.release()


def test_acquire_waits_for_the_holder_to_release(db: Database) -> None:
    holder, waiter = JobLock(db, "nightly"), JobLock(db, "nightly")
    try:
        assert holder.try_acquire()
        timer = threading.Timer(0.6, holder.release)
        started = time.monotonic()
        timer.start()
        try:
            assert waiter.acquire(wait=timedelta(seconds=10), poll=0.05)
        finally:
            timer.join()
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 5, elapsed
        assert waiter.held
    finally:
        holder.release()
        waiter.release()


def test_acquire_gives_up_after_the_wait(db: Database) -> None:
    holder, waiter = JobLock(db, "nightly"), JobLock(db, "nightly")
    try:
        assert holder.try_acquire()
        started = time.monotonic()
        assert not waiter.acquire(wait=timedelta(seconds=1), poll=0.05)
        elapsed = time.monotonic() - started
        assert 1.0 <= elapsed < 3.5, elapsed
        assert not waiter.held
        assert holder.ping()
    finally:
        holder.release()
        waiter.release()


def test_lock_is_freed_when_the_holder_process_is_killed(
    db: Database, db_url: str, psql: psycopg.Connection[Any]
) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        from jobctl.db.engine import Database
        from jobctl.db.locks import JobLock
        lock = JobLock(Database({db_url!r}), "nightly")
        assert lock.try_acquire()
        print(lock.backend_pid, flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    mine = JobLock(db, "nightly")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read() if proc.stderr else line
        backend_pid = int(line)
        assert _held_by(psql, "nightly", backend_pid)
        assert not mine.try_acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        started = time.monotonic()
        assert mine.acquire(wait=timedelta(seconds=10), poll=0.05)
        assert time.monotonic() - started < 5
        assert not _held_by(psql, "nightly", backend_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        mine.release()


def test_sweep_abandoned_marks_only_runs_whose_lock_is_gone(
    db: Database, psql: psycopg.Connection[Any]
) -> None:
    alive = JobLock(db, "alive")
    wrong = JobLock(db, "wrong-key")
    try:
        assert alive.try_acquire() and alive.backend_pid is not None
        assert wrong.try_acquire() and wrong.backend_pid is not None
        with db.begin() as conn:
            live_id = ledger.insert_run(
                conn,
                job="alive",
                status="running",
                trigger="manual",
                lock_backend_pid=alive.backend_pid,
                lock_key=alive.key,
            )
            # A backend that holds no lock at all (ours, for this transaction).
            nobody = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            dead_id = ledger.insert_run(
                conn,
                job="dead",
                status="running",
                trigger="manual",
                lock_backend_pid=nobody,
                lock_key=lock_key("dead"),
            )
            # A live backend holding a lock, but another job's: not this run's lock.
            mismatch_id = ledger.insert_run(
                conn,
                job="dead",
                status="running",
                trigger="manual",
                lock_backend_pid=wrong.backend_pid,
                lock_key=lock_key("dead"),
            )
            done_id = ledger.insert_run(conn, job="dead", status="completed", trigger="manual")
        psql.execute(
            "UPDATE jobctl.runs SET heartbeat_at = started_at + interval '90 seconds'"
            " WHERE id = %s",
            (dead_id,),
        )

        with db.begin() as conn:
            assert ledger.sweep_abandoned(conn, "some-other-job") == []
        with db.begin() as conn:
            swept = ledger.sweep_abandoned(conn, "dead")
        assert sorted(swept) == sorted([dead_id, mismatch_id])
        with db.begin() as conn:
            assert ledger.sweep_abandoned(conn) == [], "a second sweep finds nothing"

        rows = {
            r[0]: r[1:]
            for r in psql.execute(
                "SELECT id, status, finished_at IS NOT NULL, duration_ms, error_message"
                " FROM jobctl.runs"
            ).fetchall()
        }
        assert rows[live_id][:2] == ("running", False)
        assert rows[done_id][0] == "completed"
        status, finished, duration_ms, message = rows[dead_id]
        assert (status, finished) == ("abandoned", True)
        assert duration_ms == 90_000, "ends at the last heartbeat"
        assert "died" in message and f"pid {os.getpid()}" in message
        assert rows[mismatch_id][0] == "abandoned"

        # Once the live holder releases, its row is abandoned too (its process
        # did not finish it).
        alive.release()
        with db.begin() as conn:
            assert ledger.sweep_abandoned(conn) == [live_id]
    finally:
        alive.release()
        wrong.release()


def test_finish_run_does_not_revive_an_abandoned_run(db: Database) -> None:
    with db.begin() as conn:
        run_id = ledger.insert_run(
            conn,
            job="dead",
            status="running",
            trigger="manual",
            lock_backend_pid=0,
            lock_key=lock_key("dead"),
        )
    with db.begin() as conn:
        assert ledger.sweep_abandoned(conn) == [run_id]
    with db.begin() as conn:
        assert not ledger.finish_run(
            conn,
            run_id,
            status="completed",
            attempts=1,
            counters={},
            stats={},
            error_message=None,
            error_detail=None,
            log_tail=[],
        )
    with db.begin() as conn:
        assert ledger.get_run(conn, run_id)["status"] == "abandoned"  # type: ignore[index]
