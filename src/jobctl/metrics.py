"""``jobctl metrics``: the run ledger in the Prometheus text exposition format.

Written with ``prometheus_client`` (the standard exposition library: escaping, HELP
and TYPE lines as Prometheus parses them). Every metric is a **gauge** computed from
the ledger when scraped, never a counter: the ledger is the source of truth and
``cleanup`` deletes old runs, so a count over it can go down (a counter must not).
Counts are over the retained ledger (180 days by default); use ``delta()`` /
``changes()`` over them, or the timestamps, in alert rules.

=============================================  =================  =========================
metric                                         labels             value
=============================================  =================  =========================
``jobctl_job_last_success_timestamp_seconds``  job                end of the last completed
                                                                  (non-dry) run, Unix time
``jobctl_job_last_run_timestamp_seconds``      job                end of the last finished run
``jobctl_job_last_run_duration_seconds``       job, status        how long it took
``jobctl_job_running``                         job                1 while a run is in progress
``jobctl_job_consecutive_failures``            job                failed/abandoned runs since
                                                                  the last success
``jobctl_job_health``                          job, state         1 for the job's state
                                                                  (``jobctl status``), else 0
``jobctl_ledger_runs``                         job, status        runs in the ledger
``jobctl_ledger_records``                      job, kind          records moved by completed
                                                                  runs (new, updated, …)
``jobctl_schedules``                           status             one-off schedules (pending,
                                                                  running, finished lately)
``jobctl_schedules_imminent`` / ``_overdue``                      pending ones due within 5
                                                                  min / already due
``jobctl_schedules_success_ratio``                                finished ones that completed
``jobctl_schedules_next_run_timestamp_seconds``                   the next pending one
=============================================  =================  =========================

A family of metrics is added by one function ``(conn, now) -> families`` in
:data:`SOURCES`; :func:`schedule_families` is the one for one-off schedules, and
yields nothing on a database without their table.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from jobctl.errors import UsageError
from jobctl.health import Health, JobStatus, assess_all, job_names

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from jobctl.app import App
    from jobctl.config import Settings

#: The one-off schedules counted by :func:`schedule_families`: created in this window.
SCHEDULE_WINDOW = timedelta(days=7)


def _ts(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def job_families(statuses: Iterable[JobStatus]) -> Iterator[Metric]:
    """The per-job gauges, from the jobs' health."""
    success = _gauge(
        "jobctl_job_last_success_timestamp_seconds",
        "End of the job's last completed (non-dry) run, Unix time.",
        "job",
    )
    last_run = _gauge(
        "jobctl_job_last_run_timestamp_seconds",
        "End of the job's last finished run, Unix time.",
        "job",
    )
    duration = _gauge(
        "jobctl_job_last_run_duration_seconds",
        "Duration of the job's last finished run.",
        "job",
        "status",
    )
    running = _gauge("jobctl_job_running", "1 while a run of the job is in progress.", "job")
    streak = _gauge(
        "jobctl_job_consecutive_failures",
        "Failed or abandoned runs since the job's last success.",
        "job",
    )
    health = _gauge(
        "jobctl_job_health",
        "1 for the job's state as jobctl status says it, 0 for the others.",
        "job",
        "state",
    )
    for s in statuses:
        ok_at = _ts(s.last_success.finished_at) if s.last_success else None
        if ok_at is not None:
            success.add_metric([s.job], ok_at)
        last = s.last_run
        if last is not None and last.finished_at is not None:
            last_run.add_metric([s.job], last.finished_at.timestamp())
            if last.duration_ms is not None:
                duration.add_metric([s.job, last.status], last.duration_ms / 1000)
        running.add_metric([s.job], 1.0 if s.running else 0.0)
        streak.add_metric([s.job], float(s.failure_streak))
        for state in Health:
            health.add_metric([s.job, state.value], 1.0 if s.state == state else 0.0)
    yield from (success, last_run, duration, running, streak, health)


def ledger_families(conn: Connection, now: datetime) -> Iterator[Metric]:
    """Runs by job and status, records by job and kind, over the retained ledger."""
    from jobctl.db.job_state import ledger_totals

    totals = ledger_totals(conn)
    runs = _gauge(
        "jobctl_ledger_runs", "Runs in the retained run ledger, by job and status.", "job", "status"
    )
    for (job, status), n in sorted(totals.runs.items()):
        runs.add_metric([job, status], float(n))
    records = _gauge(
        "jobctl_ledger_records",
        "Records moved by the completed runs in the retained ledger, by job and kind.",
        "job",
        "kind",
    )
    for (job, kind), n in sorted(totals.records.items()):
        records.add_metric([job, kind], float(n))
    yield from (runs, records)


def schedule_families(conn: Connection, now: datetime) -> Iterator[Metric]:
    """One-off schedules (``jobctl.db.scheduled.stats`` over :data:`SCHEDULE_WINDOW`):
    nothing on a database without their table."""
    from jobctl.db.job_state import schedule_stats

    stats = schedule_stats(conn, SCHEDULE_WINDOW)
    if stats is None:
        return
    window = f"{SCHEDULE_WINDOW.days} days"
    by_status = _gauge(
        "jobctl_schedules",
        f"One-off schedules by status: pending and running ones, and those finished in "
        f"the last {window}.",
        "status",
    )
    for status, n in sorted(stats["by_status"].items()):
        by_status.add_metric([status], float(n))
    yield by_status
    imminent = _gauge("jobctl_schedules_imminent", "Pending schedules due within 5 minutes.")
    imminent.add_metric([], float(stats["imminent"]))
    overdue = _gauge("jobctl_schedules_overdue", "Pending schedules already due, not yet taken.")
    overdue.add_metric([], float(stats["overdue"]))
    yield from (imminent, overdue)
    if stats.get("success_rate") is not None:
        ratio = _gauge(
            "jobctl_schedules_success_ratio",
            f"Share of the schedules finished in the last {window} whose run completed.",
        )
        ratio.add_metric([], float(stats["success_rate"]))
        yield ratio
    if stats.get("next_run_at") is not None:
        nxt = _gauge(
            "jobctl_schedules_next_run_timestamp_seconds",
            "When the next pending schedule is due, Unix time.",
        )
        nxt.add_metric([], stats["next_run_at"].timestamp())
        yield nxt


#: Families read from the database besides the per-job ones, in the exposition's order.
SOURCES: tuple[Callable[[Connection, datetime], Iterable[Metric]], ...] = (
    ledger_families,
    schedule_families,
)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def render(families: list[Metric]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry).decode("utf-8")


def _read(settings: Settings, now: datetime) -> Callable[[Connection], list[Metric]]:
    from jobctl.db.job_state import job_states, jobs_with_runs

    def read(conn: Connection) -> list[Metric]:
        states = job_states(conn, job_names(settings, jobs_with_runs(conn)))
        families = list(job_families(assess_all(settings, states, now)))
        for source in SOURCES:
            families.extend(source(conn, now))
        return families

    return read


def exposition(app: App, now: datetime | None = None) -> str:
    """Every metric, as Prometheus' text format (one database transaction)."""
    now = now or datetime.now(UTC)
    return render(app.read_ledger(_read(app.settings, now)))


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (for node_exporter's textfile collector,
    which may read at any moment): a temporary file in the same directory, flushed to
    disk, renamed over ``path``. On any failure the old file stays as it was and the
    temporary one is removed. The temporary name does not end in ``.prom``, so the
    collector never reads it."""
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write --textfile {str(path)!r}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from node_exporter's user
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise UsageError(f"cannot write --textfile {str(path)!r}: {exc.strerror}") from exc
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
