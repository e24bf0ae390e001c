"""``jobctl status``, ``check``, ``metrics`` and ``jobs list``'s DST warnings, against a
real PostgreSQL with runs seeded into ``jobctl.runs``."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobctl.db.locks import NAMESPACE, lock_key
from jobctl.schedule import dst_notes, parse_schedule
from tests.conftest import Cli

NOW = datetime.now(UTC)

# heartbeat 15m: stuck after 1 h without one, so a slow machine never makes "busy" stuck
CONFIG = """timezone = "UTC"
heartbeat = "15m"

[jobs.daily]
schedule = "0 6 * * *"

[jobs.late]
schedule = "0 6 * * *"

[jobs.broken]

[jobs.busy]

[jobs.hung]

[jobs.off]
enabled = false
schedule = "0 6 * * *"
"""


def configure(project: Path, text: str = CONFIG) -> None:
    (project / "jobctl.toml").write_text(text)


def seed(
    psql: psycopg.Connection[Any],
    job: str,
    status: str,
    finished_ago: timedelta,
    duration_ms: int = 2000,
    *,
    new: int = 0,
    updated: int = 0,
    dry_run: bool = False,
) -> int:
    finished = datetime.now(UTC) - finished_ago  # now, not at import: tests may wait
    started = finished - timedelta(milliseconds=duration_ms)
    row = psql.execute(
        "INSERT INTO jobctl.runs (job, trigger, status, started_at, finished_at, duration_ms,"
        " records_new, records_updated, host, pid, jobctl_version, dry_run)"
        " VALUES (%s, 'timer', %s, %s, %s, %s, %s, %s, 'seed', 1, 'test', %s) RETURNING id",
        (job, status, started, finished, duration_ms, new, updated, dry_run),
    ).fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def live_run(
    db_url: str, psql: psycopg.Connection[Any], job: str, heartbeat_ago: timedelta
) -> Iterator[int]:
    """A ``running`` row whose lock is held (by this connection) as a live run's is."""
    now = datetime.now(UTC)
    with psycopg.connect(db_url) as lock:
        got = lock.execute(
            "SELECT pg_try_advisory_xact_lock(%s, %s), pg_backend_pid()",
            (NAMESPACE, lock_key(job)),
        ).fetchone()
        assert got is not None and got[0] is True
        row = psql.execute(
            "INSERT INTO jobctl.runs (job, trigger, status, started_at, heartbeat_at, host, pid,"
            " jobctl_version, lock_backend_pid, lock_key) VALUES (%s, 'timer', 'running',"
            " %s, %s, 'worker-1', 4242, 'test', %s, %s) RETURNING id",
            (
                job,
                now - heartbeat_ago - timedelta(minutes=1),
                now - heartbeat_ago,
                got[1],
                lock_key(job),
            ),
        ).fetchone()
        assert row is not None
        yield int(row[0])
        lock.rollback()


def status_json(cli: Cli) -> tuple[int, dict[str, dict[str, Any]]]:
    result = cli("status", "--json")
    assert result.stderr == "", result.stderr
    return result.code, {doc["job"]: doc for doc in json.loads(result.stdout)}


# --------------------------------------------------------------------------- status


def test_status_every_state_and_the_exit_code(
    cli: Cli, project: Path, db_url: str, psql: psycopg.Connection[Any]
) -> None:
    configure(project)
    seed(psql, "daily", "completed", timedelta(0))  # (a slot could fall due in between)
    seed(psql, "late", "completed", timedelta(days=3))
    seed(psql, "broken", "completed", timedelta(hours=5))
    broken = seed(psql, "broken", "failed", timedelta(hours=1))
    seed(psql, "off", "failed", timedelta(days=9))
    with (
        live_run(db_url, psql, "busy", timedelta(seconds=2)) as busy,
        live_run(db_url, psql, "hung", timedelta(hours=3)) as hung,
    ):
        code, found = status_json(cli)
        table = cli("status")
    states = {job: doc["state"] for job, doc in found.items()}
    assert states == {
        "daily": "ok",
        "late": "overdue",
        "broken": "failing",
        "busy": "running",
        "hung": "stuck",
        "off": "disabled",
    }
    assert code == 1 and table.code == 1
    assert found["broken"]["last_run"]["id"] == broken
    assert found["busy"]["running"]["id"] == busy and found["busy"]["healthy"] is True
    assert found["hung"]["running"]["id"] == hung and found["hung"]["healthy"] is False
    assert re.search(r"has not sent a heartbeat for 3h0\dm", found["hung"]["reason"])
    assert found["late"]["due_slot"] is not None
    assert 3 * 86400 <= found["late"]["last_success_age_seconds"] < 3 * 86400 + 60
    # the table: one line per job, its state in words, no escape codes off a terminal
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:] if line.strip()}
    assert lines["hung"].split()[1] == "stuck" and lines["late"].split()[1] == "overdue"
    assert "\x1b" not in table.stdout


@pytest.mark.parametrize(
    ("job", "state", "code"),
    [
        ("daily", "ok", 0),
        ("late", "overdue", 1),
        ("broken", "failing", 1),
        ("busy", "running", 0),
        ("hung", "stuck", 1),
        ("off", "disabled", 0),
    ],
)
def test_status_exit_code_per_state(
    cli: Cli,
    project: Path,
    db_url: str,
    psql: psycopg.Connection[Any],
    job: str,
    state: str,
    code: int,
) -> None:
    configure(
        project,
        f'heartbeat = "15m"\n\n[jobs.{job}]\nschedule = "0 6 * * *"\n'
        + ("enabled = false\n" if job == "off" else ""),
    )
    ago = {"daily": timedelta(0), "late": timedelta(days=3)}.get(job, timedelta(days=5))
    seed(psql, job, "completed", ago)
    if job == "broken":
        seed(psql, job, "abandoned", timedelta(hours=1))
    if job in ("busy", "hung"):
        seed(psql, job, "completed", timedelta(minutes=1))
        beat = timedelta(hours=3) if job == "hung" else timedelta(seconds=1)
        with live_run(db_url, psql, job, beat):
            got, found = status_json(cli)
    else:
        got, found = status_json(cli)
    assert found[job]["state"] == state
    assert got == code


def test_status_job_without_schedule_is_never_overdue(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    configure(project, "[jobs.manual]\n")
    seed(psql, "manual", "completed", timedelta(days=300))
    seed(psql, "gone", "completed", timedelta(days=30))  # not configured: runs in the ledger
    code, found = status_json(cli)
    assert (found["manual"]["state"], found["gone"]["state"], code) == ("ok", "ok", 0)


def test_status_a_dry_run_is_not_a_success(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    configure(project, '[jobs.daily]\nschedule = "0 6 * * *"\n')
    seed(psql, "daily", "completed", timedelta(days=4))
    seed(psql, "daily", "completed", timedelta(minutes=1), dry_run=True)
    code, found = status_json(cli)
    assert (found["daily"]["state"], code) == ("overdue", 1)


# --------------------------------------------------------------------------- check

_LINE = re.compile(r"^JOBCTL (OK|WARNING|CRITICAL|UNKNOWN) - [^\n|]+( \| [^\n]+)?\n$")


def check(cli: Cli, *args: str) -> tuple[int, str]:
    result = cli("check", *args)
    assert _LINE.match(result.stdout), result.stdout + result.stderr
    return result.code, result.stdout.strip()


def test_check_ok_line_and_perfdata(cli: Cli, psql: psycopg.Connection[Any]) -> None:
    run = seed(psql, "sync", "completed", timedelta(hours=3))
    code, line = check(cli, "sync", "--max-age", "26h")
    assert code == 0
    match = re.fullmatch(
        rf"JOBCTL OK - sync: last success 3h0\dm ago \(run {run}\)"
        r" \| age=(\d+)s;93600;187200;0 failures=0;;;0",
        line,
    )
    assert match, line
    assert 10800 <= int(match[1]) < 11400


@pytest.mark.parametrize(
    ("ago", "status", "code", "words"),
    [
        (timedelta(hours=30), "completed", 1, "older than --max-age 26h00m"),
        (timedelta(hours=60), "completed", 2, "older than 2 x --max-age 26h00m"),
        (timedelta(hours=1), "failed", 2, "failed"),
    ],
)
def test_check_warning_and_critical(
    cli: Cli,
    psql: psycopg.Connection[Any],
    ago: timedelta,
    status: str,
    code: int,
    words: str,
) -> None:
    seed(psql, "sync", "completed", ago)
    if status == "failed":
        seed(psql, "sync", "failed", timedelta(minutes=5))
    got, line = check(cli, "sync", "--max-age", "26h")
    assert got == code, line
    assert words in line
    assert line.startswith(f"JOBCTL {['OK', 'WARNING', 'CRITICAL'][code]} - sync: ")


def test_check_never_succeeded_is_critical_and_age_unknown(
    cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    seed(psql, "sync", "failed", timedelta(hours=1))
    code, line = check(cli, "sync", "--max-age", "1h")
    assert code == 2
    assert "| age=U;3600;7200;0 failures=1;;;0" in line


def test_check_overdue_schedule_without_max_age_is_a_warning(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    configure(project, '[jobs.daily]\nschedule = "0 6 * * *"\n')
    seed(psql, "daily", "completed", timedelta(days=3))
    code, line = check(cli, "daily")
    assert code == 1 and "overdue: slot" in line and "age=" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("nosuchjob", "--max-age", "1h"), "nosuchjob: no such job"),
        ((), "Missing argument"),
        (("sync", "--max-age", "soon"), "--max-age"),
        (("sync", "--max-age", "0s"), "--max-age"),
        (("sync", "--nope"), "--nope"),
        (("sync", "extra"), "extra"),
    ],
)
def test_check_unknown_and_usage_errors_are_exit_3(
    cli: Cli, args: tuple[str, ...], words: str
) -> None:
    result = cli("check", *args)
    assert result.code == 3, (result.stdout, result.stderr)
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("JOBCTL UNKNOWN - ")
    assert words in result.stdout


def test_check_unreachable_database_is_unknown(cli: Cli) -> None:
    result = cli("check", "sync", env={"DATABASE_URL": "postgresql://u:sekret@127.0.0.1:9/x"})
    assert result.code == 3
    assert result.stdout.startswith("JOBCTL UNKNOWN - ") and result.stdout.count("\n") == 1
    assert "sekret" not in result.stdout + result.stderr


def test_check_user_job_known_from_the_jobs_module(cli: Cli) -> None:
    code, line = check(cli, "flaky")  # registered by myjobs.py, never run, not configured
    assert code == 0 and "flaky: never succeeded" in line


# --------------------------------------------------------------------------- metrics


def finished_epoch(psql: psycopg.Connection[Any], run_id: int) -> float:
    row = psql.execute(
        "SELECT extract(epoch FROM finished_at) FROM jobctl.runs WHERE id = %s", (run_id,)
    ).fetchone()
    assert row is not None
    return float(row[0])


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict[str, Any], name: str, **labels: str) -> float:
    found = [s.value for s in fams[name].samples if s.labels == labels]
    assert len(found) == 1, (name, labels, fams[name].samples)
    return float(found[0])


def test_metrics_exposition(
    cli: Cli, project: Path, db_url: str, psql: psycopg.Connection[Any]
) -> None:
    configure(project, '[jobs.sync]\nschedule = "0 6 * * *"\n')
    seed(psql, "sync", "completed", timedelta(hours=30), 1000, new=5, updated=2)
    ok = seed(psql, "sync", "completed", timedelta(hours=2), 4000, new=3)
    seed(psql, "sync", "failed", timedelta(hours=1), 1500, new=100)
    seed(psql, "sync", "completed", timedelta(minutes=1), 10, new=1000, dry_run=True)
    seed(psql, "cleanup", "completed", timedelta(hours=5), 250)
    with live_run(db_url, psql, "busy", timedelta(seconds=1)):
        result = cli("metrics")
    assert result.code == 0 and result.stderr == ""
    fams = families(result.stdout)
    for name, fam in fams.items():
        assert name.startswith("jobctl_")
        assert fam.type == "gauge"  # no counter: the ledger is pruned, so counts fall
        assert not name.endswith("_total")
    assert sample(fams, "jobctl_job_last_success_timestamp_seconds", job="sync") == (
        pytest.approx(finished_epoch(psql, ok), abs=0.01)
    )
    assert sample(fams, "jobctl_job_last_run_duration_seconds", job="sync", status="failed") == 1.5
    assert sample(fams, "jobctl_ledger_runs", job="sync", status="completed") == 3
    assert sample(fams, "jobctl_ledger_runs", job="sync", status="failed") == 1
    assert sample(fams, "jobctl_ledger_runs", job="busy", status="running") == 1
    assert sample(fams, "jobctl_ledger_records", job="sync", kind="new") == 8  # no dry, no failed
    assert sample(fams, "jobctl_ledger_records", job="sync", kind="updated") == 2
    assert sample(fams, "jobctl_job_running", job="busy") == 1
    assert sample(fams, "jobctl_job_running", job="sync") == 0
    assert sample(fams, "jobctl_job_consecutive_failures", job="sync") == 1
    assert sample(fams, "jobctl_job_health", job="sync", state="failing") == 1
    assert sample(fams, "jobctl_job_health", job="sync", state="ok") == 0
    assert sample(fams, "jobctl_job_health", job="cleanup", state="ok") == 1
    assert sample(fams, "jobctl_schedules", status="pending") == 0  # none scheduled
    assert "jobctl_schedules_success_ratio" not in fams  # none finished: no ratio


def test_metrics_textfile_is_replaced_atomically(
    cli: Cli, psql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    seed(psql, "sync", "completed", timedelta(hours=2))
    out = tmp_path / "textfile"
    out.mkdir()
    target = out / "jobctl.prom"
    target.write_text("old\n")
    result = cli("metrics", "--textfile", str(target))
    assert result.code == 0 and result.stdout == "", result.stderr
    assert os.listdir(out) == ["jobctl.prom"]
    assert (
        sample(families(target.read_text()), "jobctl_ledger_runs", job="sync", status="completed")
        == 1
    )
    assert target.stat().st_mode & 0o777 == 0o644


def test_metrics_textfile_failure_keeps_the_old_file(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "textfile"
    out.mkdir()
    target = out / "jobctl.prom"
    target.write_text("old\n")
    down = cli(
        "metrics", "--textfile", str(target), env={"DATABASE_URL": "postgresql://127.0.0.1:9/x"}
    )
    assert down.code == 2 and target.read_text() == "old\n"
    (out / "taken").mkdir()
    (out / "taken" / "x").write_text("")
    clash = cli("metrics", "--textfile", str(out / "taken"))
    assert clash.code == 2 and "cannot write --textfile" in clash.stderr
    assert sorted(os.listdir(out)) == ["jobctl.prom", "taken"]  # no temporary file left
    missing = cli("metrics", "--textfile", str(out / "nodir" / "jobctl.prom"))
    assert missing.code == 2 and "cannot write --textfile" in missing.stderr


# --------------------------------------------------------------------------- jobs list


def test_jobs_list_next_fire_times_and_dst_warnings(cli: Cli, project: Path) -> None:
    configure(
        project,
        '[jobs.gap]\nschedule = "30 2 * * *"\ntimezone = "America/Toronto"\n\n'
        '[jobs.repeat]\nschedule = "30 1 * * *"\ntimezone = "America/Toronto"\n\n'
        '[jobs.plain]\nschedule = "30 2 * * *"\ntimezone = "UTC"\n',
    )
    result = cli("jobs", "list", "--json")
    assert result.code == 0, result.stderr
    jobs = {j["name"]: j for j in json.loads(result.stdout)}
    times = [datetime.fromisoformat(t) for t in jobs["plain"]["next_fire_times"]]
    assert len(times) == 3 and times == sorted(times) and times[0] > NOW
    assert all((t.hour, t.minute) == (2, 30) for t in times)
    assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(days=1)] * 2
    assert jobs["plain"]["dst_warnings"] == []
    (gap,) = jobs["gap"]["dst_warnings"]  # one spring-forward day in the coming year
    assert re.fullmatch(
        r"20\d\d-03-\d\d: 02:30 does not exist in America/Toronto; under systemd the job is"
        r" skipped",
        gap,
    )
    (repeat,) = jobs["repeat"]["dst_warnings"]
    assert re.fullmatch(
        r"20\d\d-11-\d\d: 01:30 happens twice in America/Toronto; under systemd the job runs"
        r" once, at 01:30 EDT",
        repeat,
    )
    table = cli("jobs", "list")
    assert re.search(r"DST 03-\d\d: 02:30 is skipped", table.stdout), table.stdout


def test_jobs_list_dst_warning_follows_the_scheduler(cli: Cli, project: Path) -> None:
    configure(
        project,
        'scheduler = "cron"\n\n[jobs.gap]\nschedule = "30 2 * * *"\n'
        'timezone = "America/Toronto"\n\n[jobs.hourly]\nschedule = "30 * * * *"\n'
        'timezone = "America/Toronto"\n',
    )
    jobs = {j["name"]: j for j in json.loads(cli("jobs", "list", "--json").stdout)}
    assert jobs["gap"]["dst_warnings"][0].endswith("under cron the job runs at 03:00 EDT instead")
    hourly = jobs["hourly"]["dst_warnings"]
    assert len(hourly) == 2
    (gap,) = [w for w in hourly if "does not exist" in w]
    (repeat,) = [w for w in hourly if "happens twice" in w]
    assert gap.endswith("under cron the job is skipped")
    assert repeat.endswith("under cron the job runs twice, at 01:30 EDT and 01:30 EST")


# What the warnings claim, against the validators themselves (VALIDATORS.md).
BASE = datetime(2026, 3, 5, 12, tzinfo=UTC)


def systemd_fires(calendar: str, base: str, n: int = 10) -> list[datetime]:
    proc = subprocess.run(
        ["systemd-analyze", "calendar", f"--base-time={base}", f"--iterations={n}", calendar],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
        check=True,
    )
    found = re.findall(r"(?:Next elapse|Iter\. #\d+): \w{3} (\S+ \S+) UTC", proc.stdout)
    return [datetime.fromisoformat(f).replace(tzinfo=UTC) for f in found]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_gap_and_repeat_notes_agree_with_systemd_analyze() -> None:
    gap = parse_schedule("30 2 * * *", "America/Toronto", "systemd")
    (note,) = dst_notes(gap, BASE, days=30)
    assert (note.day.isoformat(), note.kind, note.effect) == ("2026-03-08", "gap", "is skipped")
    real = systemd_fires("*-*-* 02:30:00 America/Toronto", "2026-03-05 12:00:00 UTC")
    assert real == list(gap.fire_times(BASE, real[-1] + timedelta(seconds=1)))
    assert datetime(2026, 3, 8).date() not in {f.astimezone(gap.tz).date() for f in real}

    repeat = parse_schedule("30 1 * * *", "America/Toronto", "systemd")
    base = datetime(2026, 10, 29, 12, tzinfo=UTC)
    (note,) = dst_notes(repeat, base, days=30)
    assert (note.day.isoformat(), note.kind) == ("2026-11-01", "repeat")
    real = systemd_fires("*-*-* 01:30:00 America/Toronto", "2026-10-29 12:00:00 UTC")
    on_the_day = [f for f in real if f.astimezone(repeat.tz).date().isoformat() == "2026-11-01"]
    assert len(on_the_day) == 1 and note.effect == "runs once, at 01:30 EDT"


def test_cron_notes_agree_with_cronsim() -> None:
    from cronsim import CronSim

    tz = parse_schedule("30 2 * * *", "America/Toronto", "cron").tz
    sim = CronSim("30 2 * * *", BASE.astimezone(tz))
    spring = [next(sim) for _ in range(5)]
    on_the_day = [f for f in spring if f.date().isoformat() == "2026-03-08"]
    (note,) = dst_notes(parse_schedule("30 2 * * *", "America/Toronto", "cron"), BASE, days=30)
    assert [f"{f:%H:%M} {f.tzname()}" for f in on_the_day] == ["03:00 EDT"]
    assert note.effect == "runs at 03:00 EDT instead"
    autumn = CronSim("30 1 * * *", datetime(2026, 10, 31, 12, tzinfo=tz))
    fires = [next(autumn) for _ in range(3)]
    assert sum(f.date().isoformat() == "2026-11-01" for f in fires) == 1
    (note,) = dst_notes(
        parse_schedule("30 1 * * *", "America/Toronto", "cron"),
        datetime(2026, 10, 29, tzinfo=UTC),
        days=30,
    )
    assert note.effect == "runs once, at 01:30 EDT"


def test_metrics_one_off_schedules(cli: Cli, psql: psycopg.Connection[Any]) -> None:
    psql.execute(
        "INSERT INTO jobctl.scheduled (job, run_at, timezone) VALUES"
        " ('sync', now() + interval '2 minutes', 'UTC'), ('sync', now() + interval '2 days', 'UTC')"
    )
    psql.execute(
        "INSERT INTO jobctl.scheduled (job, run_at, timezone, status, finished_at, created_at)"
        " VALUES ('sync', now() - interval '1 hour', 'UTC', 'failed', now(),"
        " now() - interval '2 hours')"
    )
    result = cli("metrics")
    assert result.code == 0, result.stderr
    fams = families(result.stdout)
    assert sample(fams, "jobctl_schedules", status="pending") == 2
    assert sample(fams, "jobctl_schedules", status="failed") == 1
    assert sample(fams, "jobctl_schedules", status="triggered") == 0
    assert sample(fams, "jobctl_schedules_imminent") == 1
    assert sample(fams, "jobctl_schedules_overdue") == 0
    assert sample(fams, "jobctl_schedules_success_ratio") == 0
    assert sample(fams, "jobctl_schedules_next_run_timestamp_seconds") > NOW.timestamp()


def test_check_bad_config_is_unknown_and_status_keeps_exit_2(cli: Cli, project: Path) -> None:
    configure(project, 'heartbeat = "soon"\n')
    result = cli("check", "sync")
    assert result.code == 3 and result.stdout.startswith("JOBCTL UNKNOWN - ")
    assert "heartbeat" in result.stdout and result.stdout.count("\n") == 1
    assert cli("status").code == 2  # the plugin convention is check's alone
