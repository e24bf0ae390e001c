"""``jobctl schedule``: one-off runs end to end (the real executable, a real PostgreSQL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from jobctl.db.locks import NAMESPACE, SCHEDULE_NAMESPACE, lock_key
from tests.conftest import Cli
from tests.jobs import wait_until
from tests.test_startup import imported, loaded

CONFIG = 'timezone = "UTC"\njobs_module = "myjobs"\n'


def configure(project: Path, body: str = "") -> None:
    (project / "jobctl.toml").write_text(CONFIG + body)


def due(
    psql: psycopg.Connection[Any],
    job: str,
    *,
    ago: timedelta = timedelta(minutes=2),
    params: dict[str, str] | None = None,
    zone: str = "UTC",
    every: str | None = None,
) -> int:
    """A pending row already due (added a day before its time), as the worker finds it."""
    row = psql.execute(
        "INSERT INTO jobctl.scheduled (job, params, run_at, timezone, created_at, every,"
        " anchor_local) VALUES (%(job)s, %(params)s, now() - %(ago)s, %(zone)s,"
        " now() - %(ago)s - interval '1 day', %(every)s,"
        " CASE WHEN %(every)s::text IS NOT NULL THEN"
        "   ((now() - %(ago)s) AT TIME ZONE %(zone)s) END) RETURNING id",
        {"job": job, "params": Jsonb(params or {}), "ago": ago, "zone": zone, "every": every},
    ).fetchone()
    assert row is not None
    return int(row[0])


def row_of(psql: psycopg.Connection[Any], schedule_id: int) -> dict[str, Any]:
    cur = psql.execute("SELECT * FROM jobctl.scheduled WHERE id = %s", (schedule_id,))
    names = [d.name for d in cur.description or ()]
    found = cur.fetchone()
    assert found is not None
    return dict(zip(names, found, strict=True))


def count(psql: psycopg.Connection[Any], sql: str = "SELECT count(*) FROM jobctl.scheduled") -> int:
    found = psql.execute(sql).fetchone()
    assert found is not None
    return int(found[0])


def test_add_list_cancel(cli: Cli, psql: psycopg.Connection[Any]) -> None:
    before = datetime.now(UTC)
    added = cli("schedule", "add", "sleepy", "--at", "in 2h", "-p", "seconds=0", "--by", "alice")
    assert added.code == 0, added.stderr
    sid, utc, local = added.stdout.strip().split("\t")
    row = row_of(psql, int(sid))
    assert row["status"] == "pending" and row["params"] == {"seconds": "0"}
    assert row["created_by"] == "alice" and row["timezone"] == "UTC"
    assert before + timedelta(hours=2) <= row["run_at"] <= datetime.now(UTC) + timedelta(hours=2)
    assert utc == row["run_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert local == row["run_at"].strftime("%Y-%m-%d %H:%M UTC")
    assert f"schedule {sid}: sleepy at {utc}" in added.stderr

    listed = cli("schedule", "list", "--json")
    assert listed.code == 0, listed.stderr
    [doc] = json.loads(listed.stdout)
    assert doc["id"] == int(sid) and doc["status"] == "pending"
    assert doc["countdown"] in ("1h 59min", "2h")
    plain = cli("schedule", "list")
    assert plain.code == 0 and "\x1b" not in plain.stdout
    assert sid in plain.stdout and "alice" in plain.stdout

    cancelled = cli("schedule", "cancel", sid)
    assert cancelled.code == 0, cancelled.stderr
    assert row_of(psql, int(sid))["status"] == "cancelled"
    assert row_of(psql, int(sid))["finished_at"] is not None
    again = cli("schedule", "cancel", sid)
    assert again.code == 2
    assert f"schedule {sid} is cancelled, not pending" in again.stderr
    missing = cli("schedule", "cancel", "987654")
    assert missing.code == 2 and "schedule 987654 does not exist" in missing.stderr
    assert json.loads(cli("schedule", "list", "--status", "pending", "--json").stdout) == []


def test_a_job_zone_gives_local_times(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    configure(project, '[jobs.sleepy]\ntimezone = "America/Toronto"\n')
    added = cli("schedule", "add", "sleepy", "--at", "2030-07-01 09:00")
    assert added.code == 0, added.stderr
    sid, utc, local = added.stdout.strip().split("\t")
    assert (utc, local) == ("2030-07-01T13:00:00Z", "2030-07-01 09:00 EDT")
    assert row_of(psql, int(sid))["timezone"] == "America/Toronto"


def test_a_running_row_cannot_be_cancelled(cli: Cli, psql: psycopg.Connection[Any]) -> None:
    sid = due(psql, "sleepy")
    psql.execute("UPDATE jobctl.scheduled SET status = 'triggered', finished_at = now()")
    result = cli("schedule", "cancel", str(sid))
    assert result.code == 2
    assert result.stderr.strip() == (
        f"jobctl: error: schedule {sid} is triggered, not pending: it cannot be cancelled"
    )


HOSTILE = [
    ("sleepy", "yesterday 10:00", "is not a date-time"),
    ("sleepy", "in 10s", "at least 1 minute in the future"),
    ("sleepy", "in 0m", "at least 1 minute in the future"),
    ("sleepy", "2020-01-01T00:00Z", "in the past"),
    ("sleepy", "0000-01-01T00:00Z", "is out of range"),
    ("sleepy", "99999-01-01T00:00Z", "is not a date-time"),
    ("sleepy", "9999-12-31T23:59:59+14:00", "is out of range"),
    ("sleepy", "2030-02-30 10:00", "is not a valid date-time"),
    ("sleepy", "2030-01-01 25:00", "is not a valid date-time"),
    ("sleepy", "in 99999999999999999999d", "is too long"),
    ("sleepy", "2200-01-01T00:00Z", "more than 100 years ahead"),
    ("sleepy", "in 6000w", "is too long"),
    ("sleepy", "x" * 100_000, "is not a date-time"),
    ("sleepy", "2027-03-14 02:30", "does not exist in America/Toronto"),
    ("nope", "in 1h", "unknown job 'nope'"),
    ("cleanup", "in 1h --param a=b", "takes no --param"),
    ("sync", "in 1h", "source"),
]


@pytest.mark.parametrize(("job", "at", "said"), HOSTILE, ids=[h[1][:24] for h in HOSTILE])
def test_bad_values_exit_2_with_one_line_and_no_row(
    project: Path, cli: Cli, psql: psycopg.Connection[Any], job: str, at: str, said: str
) -> None:
    configure(project, '[jobs.sleepy]\ntimezone = "America/Toronto"\n')
    extra = at.split(" --param ")
    args = ["schedule", "add", job, "--at", extra[0]]
    if len(extra) > 1:
        args += ["--param", extra[1]]
    result = cli(*args)
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jobctl: error: "), result.stderr
    assert said in lines[0]
    assert len(lines[0]) < 400
    assert count(psql) == 0


@pytest.mark.parametrize(
    "args",
    [
        [b"--at", b"in 1h\xff"],
        [b"--at", b"in 1h", b"--param", b"k=\xfe"],
        [b"--at", b"in 1h", b"--by", b"\xc3("],
        [b"--at", b"in 1h", b"--every", b"fortnight"],
        [b"--at", b"in 1h", b"--until", b"in 2h"],
        [b"--at", b"in 2h", b"--every", b"day", b"--until", b"in 1h"],
    ],
)
def test_non_utf8_and_bad_repeat_exit_2(
    cli: Cli, psql: psycopg.Connection[Any], args: list[bytes]
) -> None:
    proc = subprocess.run(
        [cli.exe.encode(), b"schedule", b"add", b"sleepy", *args],
        cwd=cli.cwd,
        env=cli.env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert count(psql) == 0


def test_a_second_live_schedule_at_the_same_moment_is_refused(
    cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    first = cli("schedule", "add", "sleepy", "--at", "2030-01-01T10:00Z")
    assert first.code == 0, first.stderr
    second = cli("schedule", "add", "sleepy", "--at", "2030-01-01T05:00-05:00")
    assert second.code == 2
    assert f"already has schedule {first.stdout.split()[0]} at that time" in second.stderr
    assert count(psql) == 1


def test_run_due_runs_due_rows_oldest_first_and_links_their_runs(
    cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    newer = due(psql, "sleepy", ago=timedelta(minutes=1), params={"seconds": "0"})
    failing = due(psql, "boom", ago=timedelta(minutes=3))
    oldest = due(psql, "writer", ago=timedelta(minutes=5))
    later = cli("schedule", "add", "sleepy", "--at", "in 1h")
    assert later.code == 0, later.stderr
    result = cli("schedule", "run-due")
    # A run that failed is the job's failure (its alert, its run row), not the worker's.
    assert result.code == 0, result.stderr
    rows = {sid: row_of(psql, sid) for sid in (newer, failing, oldest)}
    assert {sid: r["status"] for sid, r in rows.items()} == dict.fromkeys(rows, "triggered")
    assert rows[failing]["run_status"] == "failed"
    assert "the answer is not 42" in rows[failing]["error_message"]
    assert rows[newer]["run_status"] == rows[oldest]["run_status"] == "completed"
    # oldest first: the run ids follow the rows' times
    assert rows[oldest]["run_id"] < rows[failing]["run_id"] < rows[newer]["run_id"]
    runs = psql.execute(
        "SELECT id, job, trigger, params, scheduled_for FROM jobctl.runs ORDER BY id"
    ).fetchall()
    assert [(r[1], r[2]) for r in runs] == [
        ("writer", "schedule"),
        ("boom", "schedule"),
        ("sleepy", "schedule"),
    ]
    assert runs[2][3] == {"seconds": "0"} and runs[2][4] == rows[newer]["run_at"]
    assert row_of(psql, int(later.stdout.split()[0]))["status"] == "pending"
    assert f"schedule {failing}: boom triggered (run {rows[failing]['run_id']}, failed)" in (
        result.stderr
    )
    listed = json.loads(cli("schedule", "list", "--status", "triggered", "--json").stdout)
    assert sorted(d["run_id"] for d in listed) == sorted(r["run_id"] for r in rows.values())
    plain = cli("schedule", "list", "--status", "triggered").stdout
    assert f"{rows[failing]['run_id']} failed" in plain
    # Nothing left due: the next tick does nothing.
    again = cli("schedule", "run-due")
    assert (again.code, again.stderr) == (0, "")
    assert count(psql, "SELECT count(*) FROM jobctl.runs") == 3


def test_a_job_that_cannot_run_fails_its_row_alone(cli: Cli, psql: psycopg.Connection[Any]) -> None:
    gone = due(psql, "no_longer_registered", ago=timedelta(minutes=3))
    fine = due(psql, "sleepy", params={"seconds": "0"})
    result = cli("schedule", "run-due")
    assert result.code == 0, result.stderr
    assert row_of(psql, gone)["status"] == "failed"
    assert "unknown job 'no_longer_registered'" in row_of(psql, gone)["error_message"]
    assert row_of(psql, fine)["status"] == "triggered"


def hold_lock(db_url: str, job: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(db_url)
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (NAMESPACE, lock_key(job)))
    return conn


def test_a_busy_job_stays_pending_then_fails_after_the_deadline(
    project: Path, cli: Cli, psql: psycopg.Connection[Any], db_url: str
) -> None:
    sid = due(psql, "sleepy", ago=timedelta(minutes=2), params={"seconds": "0"})
    other = due(psql, "writer", ago=timedelta(minutes=1))
    holder = hold_lock(db_url, "sleepy")
    try:
        for attempt in (1, 2):
            result = cli("schedule", "run-due")
            assert result.code == 0, result.stderr
            row = row_of(psql, sid)
            assert (row["status"], row["attempts"], row["run_id"]) == ("pending", attempt, None)
            assert "job 'sleepy' is already running" in row["error_message"]
        # The busy row never stopped the other one.
        assert row_of(psql, other)["status"] == "triggered"
        configure(project, '[schedule]\ndeadline = "1m"\n')
        result = cli("schedule", "run-due")
        assert result.code == 0, result.stderr
    finally:
        holder.close()
    row = row_of(psql, sid)
    assert row["status"] == "failed" and row["finished_at"] is not None
    assert row["error_message"].startswith("not started within 1m00s of its time: ")
    assert "job 'sleepy' is already running" in row["error_message"]
    runs = psql.execute("SELECT status FROM jobctl.runs WHERE job = 'sleepy'").fetchall()
    assert runs and all(r[0] == "skipped" for r in runs)
    # Failed is final: nothing runs it now that the job is free.
    assert cli("schedule", "run-due").code == 0
    assert row_of(psql, sid)["status"] == "failed"


def test_a_row_found_later_than_the_deadline_is_failed_not_run(
    cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    sid = due(psql, "writer", ago=timedelta(hours=2))
    result = cli("schedule", "run-due")
    assert result.code == 0, result.stderr
    row = row_of(psql, sid)
    assert row["status"] == "failed" and row["run_id"] is None
    assert "not started within 1h00m of its time" in row["error_message"]
    assert count(psql, "SELECT count(*) FROM jobctl.runs") == 0


def claim_lock_held(psql: psycopg.Connection[Any], sid: int) -> bool:
    found = psql.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = %s::oid AND objid = %s::oid",
        (SCHEDULE_NAMESPACE, sid),
    ).fetchone()
    return bool(found and found[0])


def test_a_worker_killed_mid_run(cli: Cli, psql: psycopg.Connection[Any]) -> None:
    sid = due(psql, "sleepy", params={"seconds": "120"})
    worker = cli.popen("schedule", "run-due")
    try:
        run = wait_until(
            lambda: psql.execute(
                "SELECT id FROM jobctl.runs WHERE job = 'sleepy' AND status = 'running'"
            ).fetchone(),
            timeout=60,
            what="the scheduled run to start",
        )
        assert row_of(psql, sid)["status"] == "running"
        # While the first worker lives, another tick leaves its row alone.
        second = cli("schedule", "run-due")
        assert (second.code, second.stderr) == (0, "")
        assert row_of(psql, sid)["status"] == "running"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.communicate()
    wait_until(lambda: not claim_lock_held(psql, sid), what="the dead worker's claim lock to go")
    result = cli("schedule", "run-due")
    assert result.code == 0, result.stderr
    row = row_of(psql, sid)
    assert (row["status"], row["run_id"], row["run_status"]) == ("triggered", run[0], "abandoned")
    assert "died during run" in row["error_message"]
    statuses = psql.execute("SELECT status FROM jobctl.runs WHERE job = 'sleepy'").fetchall()
    assert statuses == [("abandoned",)]  # never run a second time


def test_a_worker_that_died_before_starting_the_run(
    cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    sid = due(psql, "writer")
    # Claimed by a worker whose backend (and so its claim lock) is gone.
    psql.execute(
        "UPDATE jobctl.scheduled SET status = 'running', claimed_by = 'ghost 1',"
        " claimed_at = now(), claim_backend_pid = 1 WHERE id = %s",
        (sid,),
    )
    result = cli("schedule", "run-due")
    assert result.code == 0, result.stderr
    assert "before starting a run; due again" in result.stderr
    row = row_of(psql, sid)
    assert (row["status"], row["run_status"]) == ("triggered", "completed")
    assert count(psql, "SELECT count(*) FROM public.marks") == 1


def test_concurrent_workers_run_every_row_exactly_once(
    cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    ids = [
        due(psql, job, ago=timedelta(seconds=70 + i), params={"seconds": "0"})
        for i, job in enumerate(["writer", "sleepy", "flaky"] * 10)
    ]
    for _ in range(20):  # a row whose job another worker was running waits a tick
        workers = [cli.popen("schedule", "run-due") for _ in range(4)]
        for worker in workers:
            _, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
        if not count(psql, "SELECT count(*) FROM jobctl.scheduled WHERE status <> 'triggered'"):
            break
    rows = [row_of(psql, sid) for sid in ids]
    assert all(r["status"] == "triggered" for r in rows), [r["status"] for r in rows]
    started = psql.execute(
        "SELECT id, job, scheduled_for FROM jobctl.runs WHERE status <> 'skipped'"
    ).fetchall()
    assert len(started) == len(ids)
    assert sorted(r["run_id"] for r in rows) == sorted(r[0] for r in started)
    assert {(r["job"], r["run_at"]) for r in rows} == {(r[1], r[2]) for r in started}
    assert count(psql, "SELECT count(DISTINCT run_id) FROM public.marks") == 10
    assert count(psql, "SELECT count(*) FROM public.marks") == 10


def test_a_repeat_creates_its_next_occurrence_once(cli: Cli, psql: psycopg.Connection[Any]) -> None:
    sid = due(psql, "writer", zone="America/Toronto", every="day")
    result = cli("schedule", "run-due")
    assert result.code == 0, result.stderr
    first = row_of(psql, sid)
    assert first["status"] == "triggered"
    nxt = psql.execute(
        "SELECT id, run_at, status, occurrence, every FROM jobctl.scheduled WHERE previous_id = %s",
        (sid,),
    ).fetchall()
    assert len(nxt) == 1
    nid, run_at, status, occurrence, every = nxt[0]
    assert (status, occurrence, every) == ("pending", 1, "day")
    zone = __import__("zoneinfo").ZoneInfo("America/Toronto")
    assert run_at.astimezone(zone).replace(tzinfo=None) == first["anchor_local"] + timedelta(days=1)
    assert f"next: schedule {nid}" in result.stderr
    assert cli("schedule", "run-due").code == 0  # nothing more is created
    assert count(psql) == 2


def test_stats_figures(cli: Cli, psql: psycopg.Connection[Any]) -> None:
    # (status, run_status, minutes from now of run_at, days since it finished)
    rows = [
        ("pending", None, 3, None),
        ("pending", None, 4, None),
        ("pending", None, 60, None),
        ("pending", None, -2, None),
        ("triggered", "completed", -60, 1),
        ("triggered", "completed", -120, 2),
        ("triggered", "completed", -180, 3),
        ("triggered", "failed", -240, 1),
        ("failed", None, -300, 1),
        ("cancelled", None, 600, 1),
        ("triggered", "failed", -30000, 20),  # finished before the 7d window
    ]
    for i, (status, run_status, minutes, days) in enumerate(rows):
        psql.execute(
            "INSERT INTO jobctl.scheduled (job, run_at, timezone, created_at, status,"
            " run_status, finished_at) VALUES (%s, now() + %s, 'UTC', now() - interval '30 days',"
            " %s, %s, now() - %s::interval)",
            (
                f"job{i}",
                timedelta(minutes=minutes),
                status,
                run_status,
                None if days is None else timedelta(days=days),
            ),
        )
    psql.execute("UPDATE jobctl.scheduled SET finished_at = NULL WHERE status = 'pending'")
    recent = [r for r in rows if r[3] is None or r[3] <= 7]
    by_status = {
        s: sum(1 for r in recent if r[0] == s)
        for s in ("pending", "running", "triggered", "cancelled", "failed")
    }
    ended = [r for r in recent if r[0] in ("triggered", "failed")]
    completed = sum(1 for r in ended if r[1] == "completed")
    result = cli("schedule", "stats", "--json")
    assert result.code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert (
        figures["by_status"]
        == by_status
        == {"pending": 4, "running": 0, "triggered": 4, "cancelled": 1, "failed": 1}
    )
    assert figures["imminent"] == 2
    assert figures["overdue"] == 1
    assert figures["success_rate"] == round(completed / len(ended), 4) == 0.6
    wider = json.loads(cli("schedule", "stats", "--since", "30d", "--json").stdout)
    assert wider["by_status"]["triggered"] == 5
    assert wider["success_rate"] == round(3 / 6, 4)
    plain = cli("schedule", "stats")
    assert plain.code == 0 and "60.0%" in plain.stdout


def test_run_due_with_nothing_due_imports_little(tmp_path: Path, db_url: str) -> None:
    """The per-minute tick that finds nothing: no SQLAlchemy, no rich, no user jobs."""
    (tmp_path / "jobctl.toml").write_text('jobs_module = "myjobs"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCTL_", "PG"))}
    env.update(DATABASE_URL=db_url, JOBCTL_DATA_DIR=str(tmp_path / "unused"))
    proc, modules = imported("schedule", "run-due", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "jobctl.db.scheduled" in modules  # it did look
    heavy = ("sqlalchemy", "jobctl.db.tables", "rich", "jobctl.runner", "myjobs", "pydantic")
    assert loaded(modules, heavy) == []


def test_an_imminent_countdown_is_highlighted_on_a_terminal() -> None:
    from rich.console import Console

    from jobctl.cli.schedule import schedule_table
    from jobctl.db.scheduled import Scheduled

    now = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)

    def row(sid: int, ahead: timedelta) -> Scheduled:
        return Scheduled(
            sid, "sleepy", {}, now + ahead, "UTC", now, None, "pending", None, None, None,
            0, None, None, None, None, 0, None, None, None, None,
        )  # fmt: skip

    console = Console(force_terminal=True, color_system="standard", width=120)
    with console.capture() as captured:
        console.print(
            schedule_table([row(1, timedelta(minutes=4)), row(2, timedelta(hours=2))], now)
        )
    lines = {line.split()[0][-1]: line for line in captured.get().splitlines()[1:]}
    assert "4 min" in lines["1"] and "\x1b[1;33m4 min" in lines["1"]
    assert "2h" in lines["2"] and "\x1b[1;33m2h" not in lines["2"]


def test_sigterm_stops_the_worker_after_recording_the_run_cancelled(
    cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    first = due(psql, "sleepy", ago=timedelta(minutes=3), params={"seconds": "120"})
    rest = due(psql, "writer", ago=timedelta(minutes=1))
    worker = cli.popen("schedule", "run-due")
    try:
        wait_until(
            lambda: psql.execute(
                "SELECT 1 FROM jobctl.runs WHERE job = 'sleepy' AND status = 'running'"
            ).fetchone(),
            timeout=60,
            what="the scheduled run to start",
        )
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 143, err
    row = row_of(psql, first)
    assert (row["status"], row["run_status"]) == ("triggered", "cancelled")
    assert row_of(psql, rest)["status"] == "pending"  # for the next tick
    assert not claim_lock_held(psql, first)
