"""What a job is handed: the run's identity, parameters, counters, logger, database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from jobctl.config import JobConfig, Settings
from jobctl.db import ledger
from jobctl.db.engine import Database
from jobctl.jobspec import ChildRequest, JobSpec, Progress, RunOutcome, StartChild, Trigger

if TYPE_CHECKING:
    # SQLAlchemy is imported when a job first asks for a connection (ctx.conn,
    # ctx.transaction(), ctx.session()): a job that works on psycopg alone (snapshot,
    # sync) and the runner never load it.
    from sqlalchemy import Connection

    from jobctl.gaps import Gap


@dataclass
class Counters:
    """Records moved by a run; stored in the ``records_*`` columns of the ledger."""

    total: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: int = 0
    removed: int = 0
    deleted: int = 0

    def add(self, other: Counters | Mapping[str, int]) -> None:
        values = other.as_dict() if isinstance(other, Counters) else other
        for name, value in values.items():
            key = name.removeprefix("records_")
            if key not in {f.name for f in fields(self)}:
                raise ValueError(f"unknown counter {name!r}")
            setattr(self, key, getattr(self, key) + int(value))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def as_columns(self) -> dict[str, int]:
        return {f"records_{k}": v for k, v in self.as_dict().items()}


@dataclass
class RunContext:
    """Handed to every job function; usable from a test without a terminal."""

    run_id: int
    job: str
    params: dict[str, str]
    settings: Settings
    config: JobConfig
    db: Database
    log: logging.Logger
    trigger: Trigger = Trigger.MANUAL
    partition: str | None = None
    scheduled_for: datetime | None = None
    attempt: int = 1
    force: bool = False
    dry_run: bool = False
    counters: Counters = field(default_factory=Counters)
    stats: dict[str, Any] = field(default_factory=dict)
    #: What the run read (file path or URL); the runner stores it with credentials removed.
    source: str | None = None
    #: Called with (what, done so far[, total]) on a terminal or under -v; None → plain
    #: log lines. sync adds ``phase=`` (downloading, reading, applying, committing).
    progress: Progress | None = None
    _conn: Connection | None = field(default=None, repr=False)
    _start_child: StartChild | None = field(default=None, repr=False)
    _check_lock: Callable[[], None] | None = field(default=None, repr=False)
    #: The jobs the runner knows (for another job's schedule gaps); None: the built-ins.
    _jobs: Mapping[str, JobSpec[Any, Any]] | None = field(default=None, repr=False)

    def check_lock(self) -> None:
        """Raise :class:`jobctl.errors.LockLost` if this run no longer holds its lock.

        Call it before a side effect outside the database (an HTTP call, a mail)
        and between the phases of a long job. Database work needs no call: every
        transaction opened through the context commits only while the lock is
        held (see "How locking works" in the README).
        """
        if self._check_lock is not None:
            self._check_lock()

    def run_child(self, job: str, request: ChildRequest) -> RunOutcome:
        """Run another job (or this one for another date) as a child run of this one.

        The child goes through the runner like any run: its own job lock (waited
        for, never a per-date lock), its own ledger row with ``parent_id``.
        """
        if self._start_child is None:
            raise RuntimeError("this context cannot start child runs")
        return self._start_child(job, request, self.run_id)

    def completed_partitions(self, job: str, partitions: Sequence[str]) -> set[str]:
        """Which of ``partitions`` (dates) ``job`` has a completed, non-dry run for.

        Read in a transaction of its own, fenced like every one of the run's.
        """
        with self.transaction() as conn:
            return ledger.completed_partitions(conn, job, list(partitions))

    def missing_slots(self, job: str, start: datetime, end: datetime) -> list[Gap]:
        """``job``'s schedule slots in ``[start, end)`` no completed run covers (``runs gaps``)."""
        from jobctl.gaps import missing
        from jobctl.registry import builtin_jobs

        jobs = self._jobs if self._jobs is not None else builtin_jobs()
        with self.transaction() as conn:
            return missing(conn, self.settings, jobs.get(job), self.settings.job(job), start, end)

    def delete_old_runs(self, cutoff: datetime, limit: int) -> tuple[int, int]:
        """Delete up to ``limit`` finished top-level runs started before ``cutoff``, with
        their children (cleanup's ``runs`` policy), in one fenced transaction: (top-level
        runs, rows with their children). Never a ``running`` row."""
        with self.transaction() as conn:
            return ledger.delete_old_runs(conn, cutoff, limit)

    def old_runs(self, cutoff: datetime) -> tuple[int, int, datetime | None]:
        """What :meth:`delete_old_runs` would delete: (top-level runs, rows with their
        children, the oldest ``started_at`` kept)."""
        with self.transaction() as conn:
            return ledger.old_runs(conn, cutoff)

    @property
    def slot_date(self) -> date | None:
        """The slot's calendar date in the job's time zone (for date-based jobs)."""
        if self.scheduled_for is None:
            return None
        from zoneinfo import ZoneInfo

        return self.scheduled_for.astimezone(ZoneInfo(self.config.timezone)).date()

    @property
    def conn(self) -> Connection:
        """A connection inside a transaction committed when the job returns normally."""
        if self._conn is None:
            self._conn = self.db.open_connection()
            self._conn.begin()
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A separate connection and transaction, committed when the block ends."""
        with self.db.begin() as conn:
            yield conn

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One connection kept for many short transactions (cleanup's batches, report's
        deliveries): ``with session.transaction() as conn`` commits each, fenced as
        :meth:`transaction` does, without a new connection (and its 10-20 ms) each time."""
        kept = Session(self.db)
        try:
            yield kept
        finally:
            kept.close()

    def _finish(self, ok: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if ok:
            try:
                self.db.check_before_commit(conn)
                conn.commit()
            finally:
                _close_quietly(conn)
            return
        # The run already failed: a rollback error (a connection cut by the same
        # fault) must not replace the cause; closing rolls back on the server anyway.
        try:
            conn.rollback()
        except Exception as exc:
            self.log.debug("rollback after failure: %s", exc)
        _close_quietly(conn)


class Session:
    """A connection reused by one transaction after another (see RunContext.session)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: Connection | None = None

    @contextmanager
    def transaction(self, doing: str = "database error") -> Iterator[Connection]:
        """A transaction on the kept connection, fenced; a driver error says ``doing``."""
        if self._conn is None:
            self._conn = self._db.open_connection()
        conn = self._conn
        try:
            with conn.begin():
                yield conn
                self._db.check_before_commit(conn)
        except BaseException as exc:
            # Whatever failed may have broken the connection (a killed backend): the
            # next transaction starts on a new one.
            self.close()
            from sqlalchemy.exc import DBAPIError

            if isinstance(exc, DBAPIError):
                from jobctl.db.errors import translate

                raise translate(exc, doing) from exc
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)


def _close_quietly(conn: Connection) -> None:
    with suppress(Exception):  # a connection that died with the run has nothing to keep
        conn.close()
