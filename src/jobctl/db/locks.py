"""Per-job advisory locks: the one module that takes them.

A job's lock is ``pg_try_advisory_xact_lock(NAMESPACE, key(job))`` taken inside a
transaction that stays open on a dedicated connection for the whole run. A
transaction-scoped lock (not ``pg_advisory_lock``) is deliberate: behind
PgBouncer in transaction pooling mode an open transaction pins the client to one
server backend, so the lock keeps excluding other clients, while a session-level
lock would stay behind on a pooled backend that no client owns. The lock is
released when the transaction ends, the connection closes or the process dies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Any

import psycopg

from jobctl.db.engine import Database
from jobctl.db.errors import translate

log = logging.getLogger("jobctl.lock")

NAMESPACE = 0x4A43544C  # 'JCTL'
#: The claim locks of one-off schedules (``jobctl.scheduled``): one per claimed row,
#: held by the worker running it (see :func:`claim_key`).
SCHEDULE_NAMESPACE = 0x4A534348  # 'JSCH'


def holder_name() -> str:
    """``application_name`` of a lock connection: ``jobctl HOST PID``."""
    return f"jobctl {socket.gethostname()[:40]} {os.getpid()}"


def lock_key(job: str) -> int:
    """A stable 31-bit key derived from the job name, the same on every host."""
    digest = hashlib.blake2b(job.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def claim_key(scheduled_id: int) -> int:
    """The claim lock's key of a ``jobctl.scheduled`` row (``id & 0x7FFFFFFF`` in SQL too)."""
    return scheduled_id & 0x7FFFFFFF


# On a network cut (no reset from the peer) a dead TCP connection would look alive
# for the kernel's default of many minutes: probe it, so that the heartbeat's ping
# fails within about half a minute and the run stops. Ignored on Unix sockets.
LOCK_CONNECTION_TCP = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}

# SQL fragment that is true while backend ``pid`` holds the lock ``key``.
HELD_SQL = (
    "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
    " AND l.classid = {ns}::oid AND l.objid = ({key})::oid AND l.objsubid = 2"
    " AND l.pid = {pid})"
)


class JobLock:
    """The lock of one job, held on its own connection while a run executes."""

    def __init__(
        self, db: Database, job: str, *, namespace: int = NAMESPACE, key: int | None = None
    ) -> None:
        self.db = db
        self.job = job
        # A schedule's claim lock is this lock in its own namespace (SCHEDULE_NAMESPACE).
        self.namespace = namespace
        self.key = lock_key(job) if key is None else key
        self._conn: psycopg.Connection[Any] | None = None
        self._mutex = threading.Lock()
        self.backend_pid: int | None = None

    @property
    def held(self) -> bool:
        return self.backend_pid is not None

    def try_acquire(self) -> bool:
        if self._conn is None:
            # Names the holder in pg_stat_activity before its run row exists.
            self._conn = self.db.raw(
                autocommit=False, application_name=holder_name(), **LOCK_CONNECTION_TCP
            )
        conn = self._conn
        try:
            with self._mutex:
                # SET LOCAL: scoped to the lock's own transaction, so nothing leaks
                # to other clients of a pooled backend.
                conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                conn.execute("SET LOCAL statement_timeout = 0")
                row = conn.execute(
                    "SELECT pg_try_advisory_xact_lock(%s, %s), pg_backend_pid()",
                    (self.namespace, self.key),
                ).fetchone()
                assert row is not None
                if row[0]:
                    self.backend_pid = int(row[1])
                    return True
                conn.rollback()
                return False
        except psycopg.Error as exc:
            self.close()
            raise translate(exc, f"could not take the lock of job {self.job!r}") from exc

    def acquire(self, wait: timedelta | None = None, *, poll: float = 0.25) -> bool:
        """Try once, or (``wait`` given) keep trying until it is free or time runs out."""
        if self.try_acquire():
            return True
        if wait is None:
            return False
        deadline = time.monotonic() + wait.total_seconds()
        delay = poll
        while time.monotonic() < deadline:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            if self.try_acquire():
                return True
            delay = min(delay * 1.5, 2.0)
        return False

    def ping(self) -> bool:
        """True while the lock's connection (and so the lock) is alive."""
        if self._conn is None or self.backend_pid is None:
            return False
        try:
            with self._mutex:
                self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def release(self) -> None:
        self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self.backend_pid = None
        if conn is not None:
            try:
                with self._mutex:
                    conn.rollback()
                    conn.close()
            except psycopg.Error:
                log.debug("lock connection of %s already gone", self.job)

    def __enter__(self) -> JobLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
