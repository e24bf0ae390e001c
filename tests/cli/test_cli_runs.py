"""The real ``jobctl`` executable: exit codes, output formats, signals, concurrency."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from jobctl.db.tables import LEDGER_COLUMNS
from tests.conftest import Cli


def runs(cli: Cli, *args: str) -> list[dict]:
    result = cli("runs", "list", "--json", "--limit", "0", *args)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def wait_for_running(cli: Cli, job: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [r for r in runs(cli, "--job", job) if r["status"] == "running"]
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError(f"no running {job} run appeared")


def test_version(cli: Cli) -> None:
    from jobctl import __version__

    result = cli("--version")
    assert result.code == 0 and result.stdout.strip() == f"jobctl {__version__}"


def test_run_then_list_json_has_ledger_columns(cli: Cli) -> None:
    result = cli("run", "sleepy", "--param", "seconds=0")
    assert result.code == 0, result.stderr
    assert "completed" in result.stderr
    rows = runs(cli)
    assert len(rows) == 1
    assert list(rows[0]) == LEDGER_COLUMNS
    assert rows[0]["status"] == "completed" and rows[0]["params"] == {"seconds": "0"}


def test_list_table_fits_80_columns_without_ansi(cli: Cli) -> None:
    cli("run", "sleepy", "--param", "seconds=0")
    cli("run", "boom")
    result = cli("runs", "list", env={"NO_COLOR": ""})
    assert result.code == 0
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "job", "status"]
    assert max(len(line) for line in lines) <= 80
    assert "failed" in result.stdout and "completed" in result.stdout


HOST = "ip-172-31-22-10.ec2.internal"
TABLE_SIZES = """

@jobctl.job("table_sizes")
def table_sizes(ctx: jobctl.RunContext) -> jobctl.Counters:
    return jobctl.Counters(total=5, unchanged=5)
"""


def realistic_runs(cli: Cli, project: Path, psql: psycopg.Connection[Any]) -> list[dict]:
    """Runs as a production ledger has them: long host names, long runs, big counts."""
    with (project / "myjobs.py").open("a") as f:
        f.write(TABLE_SIZES)
    for _ in range(2):
        assert cli("run", "table_sizes", "--trigger", "backfill", "--force").code == 0
    cli("run", "boom")
    psql.execute("UPDATE jobctl.runs SET host = %s", (HOST,))
    psql.execute(
        "UPDATE jobctl.runs SET duration_ms = 3723456, records_new = 240123,"
        " records_updated = 12345, records_unchanged = 227000, records_errors = 7"
        " WHERE id = (SELECT min(id) FROM jobctl.runs)"
    )
    return runs(cli)


def whole_values(row: dict) -> list[str]:
    from jobctl.cli import render

    started = datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))
    return [
        str(row["id"]),
        row["job"],
        row["status"],
        render.when(started),
        render.ms(row["duration_ms"]),
        render.records(row),
    ]


def test_list_at_80_columns_shows_what_a_user_needs_whole(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    rows = realistic_runs(cli, project, psql)
    result = cli("runs", "list", env={"COLUMNS": "80"})
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout
    assert lines[0].split() == ["id", "job", "status", "started", "took", "new/upd/same/err"]
    assert len(lines) == 1 + len(rows)
    for line, row in zip(lines[1:], rows, strict=True):
        for value in whole_values(row):
            assert value in line, (value, line)
    assert "1h02m" in result.stdout and "240123/12345/227000/7" in result.stdout


def test_list_adds_columns_when_they_fit_or_with_wide(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    rows = realistic_runs(cli, project, psql)
    roomy = cli("runs", "list", env={"COLUMNS": "160"})
    wide = cli("runs", "list", "--wide", env={"COLUMNS": "80"})
    for result in (roomy, wide):
        assert result.code == 0, result.stderr
        lines = result.stdout.splitlines()
        assert "trigger" in lines[0] and "host" in lines[0]
        for line, row in zip(lines[1:], rows, strict=True):
            assert HOST in line and row["trigger"] in line
            assert all(value in line for value in whole_values(row))
    assert max(len(line) for line in wide.stdout.splitlines()) > 80


def test_show_of_a_backfill_parent_lists_each_child_once(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    (project / "jobctl.toml").write_text(TINY_SNAPSHOT)
    today = datetime.now(ZoneInfo("America/Toronto")).date()
    first, last = today - timedelta(days=61), today - timedelta(days=2)
    result = cli(
        "backfill",
        "--from",
        first.isoformat(),
        "--to",
        last.isoformat(),
        "--job",
        "snapshot",
        timeout=120,
    )
    assert result.code == 0, result.stderr
    parent = psql.execute("SELECT max(id) FROM jobctl.runs WHERE job = 'backfill'").fetchone()
    assert parent is not None
    as_json = json.loads(cli("runs", "show", str(parent[0]), "--json").stdout)
    children = as_json["children"]
    assert len(children) == 60
    shown = cli("runs", "show", str(parent[0]), env={"COLUMNS": "80"})
    assert shown.code == 0, shown.stderr
    head = shown.stdout.split("\nlast ")[0]  # the log tail names runs too
    for child in children:
        starts = [x for x in head.splitlines() if x.split()[:1] == [str(child["id"])]]
        assert len(starts) == 1, (child["id"], starts)
        assert child["partition"] in starts[0] and "completed" in starts[0]
    assert '"run_id"' not in shown.stdout  # not repeated inside stats
    assert len(head.splitlines()) < 60 + 45
    assert max(len(x) for x in head.splitlines()) <= 80


TINY_SNAPSHOT = """
timezone = "America/Toronto"

[snapshots.tiny]
table = "snap_tiny"
key = ["k"]
periods = ["day"]
query = "SELECT 'x' AS k, 1 AS n WHERE :period_start < :period_end"
"""


def test_list_filters(cli: Cli) -> None:
    cli("run", "sleepy", "--param", "seconds=0")
    cli("run", "boom")
    assert [r["job"] for r in runs(cli, "--status", "failed")] == ["boom"]
    assert [r["job"] for r in runs(cli, "--job", "sleepy")] == ["sleepy"]
    assert len(runs(cli, "--since", "1h")) == 2
    limited = cli("runs", "list", "--json", "--limit", "1")
    assert len(json.loads(limited.stdout)) == 1


def test_show_has_error_traceback_and_log_tail(cli: Cli) -> None:
    assert cli("run", "boom").code == 1
    run_id = runs(cli)[0]["id"]
    shown = cli("runs", "show", str(run_id))
    assert shown.code == 0
    assert "ValueError: the answer is not 42" in shown.stdout
    assert "Traceback" in shown.stdout
    assert "about to fail" in shown.stdout
    as_json = json.loads(cli("runs", "show", str(run_id), "--json").stdout)
    assert as_json["error_message"] == "ValueError: the answer is not 42"
    assert as_json["children"] == [] and any("about to fail" in x for x in as_json["log_tail"])


def test_jobs_list(cli: Cli, project: Path) -> None:
    (project / "jobctl.toml").write_text(
        (project / "jobctl.toml").read_text() + '\n[jobs.writer]\nschedule = "0 6 * * 1-5"\n'
        'timezone = "America/Toronto"\n'
    )
    cli("run", "sleepy", "--param", "seconds=0")
    listed = json.loads(cli("jobs", "list", "--json").stdout)
    by_name = {j["name"]: j for j in listed}
    assert {"sleepy", "flaky", "boom", "writer"} <= set(by_name)
    assert by_name["sleepy"]["last_status"] == "completed"
    assert by_name["writer"]["timezone"] == "America/Toronto"
    assert len(by_name["writer"]["next_fire_times"]) == 3
    table = cli("jobs", "list")
    assert table.code == 0 and "writer" in table.stdout and "\x1b" not in table.stdout
    assert max(len(x) for x in table.stdout.splitlines()) <= 80
    zone = ZoneInfo("America/Toronto")
    fire_times = [
        datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(zone).strftime("%a %m-%d %H:%M")
        for t in by_name["writer"]["next_fire_times"]
    ]
    for width in (80, 120):
        shown = cli("jobs", "list", env={"COLUMNS": str(width)})
        assert shown.code == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert max(len(x) for x in lines) <= width
        for fire_time in fire_times:
            assert fire_time in shown.stdout, (width, fire_time, shown.stdout)
        # the schedule in words on one line, its zone on the next
        words = next(i for i, x in enumerate(lines) if "At 06:00, Monday through Friday" in x)
        assert lines[words].split()[0] == "writer" and "America/Toronto" in lines[words + 1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "nope"), "unknown job 'nope'"),
        (("runs", "list", "--since", "7x"), "'7x'"),
        (("runs", "list", "--status", "weird"), "'weird'"),
        (("runs", "show", "99999"), "run 99999 does not exist"),
        (("run", "sleepy", "--param", "novalue"), "'novalue'"),
        (("run", "sleepy", "--timeout", "soon"), "'soon'"),
        (("nosuchcommand",), "nosuchcommand"),
        (("runs", "list", "--since", "99999999999d"), "too long"),
        (("runs", "show", "99999999999999999999"), "does not exist"),
        (("runs", "list", "--limit", "-5"), "-5"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    cli: Cli, args: tuple[str, ...], needle: str
) -> None:
    result = cli(*args)
    assert result.code == 2, (result.stdout, result.stderr)
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert runs(cli) == []


def test_malformed_toml_is_exit_2(cli: Cli, project: Path) -> None:
    (project / "jobctl.toml").write_text("timezone = \n[jobs\n")
    result = cli("run", "sleepy")
    assert result.code == 2
    assert "jobctl.toml" in result.stderr and "not valid TOML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[jobs.sleepy]\ntimeout = "5 parsecs"\n', "jobs.sleepy.timeout"),
        ('[jobs.sleepy]\nschedule = "61 * * * *"\n', "jobs.sleepy.schedule"),
        ('timezone = "Mars/Olympus"\n', "timezone"),
        ('[jobs.sleepy]\nretries = "many"\n', "jobs.sleepy.retries"),
        ("[jobs.sleepy]\nenabeld = true\n", "jobs.sleepy.enabeld"),
        ('[jobs.sleepy]\nschedule = "${NOT_SET_ANYWHERE}"\n', "NOT_SET_ANYWHERE"),
    ],
)
def test_bad_config_value_names_key_and_file(
    cli: Cli, project: Path, toml: str, needle: str
) -> None:
    (project / "jobctl.toml").write_text('jobs_module = "myjobs"\n' + toml)
    result = cli("run", "sleepy", "--param", "seconds=0")
    assert result.code == 2, result.stderr
    assert needle in result.stderr and "jobctl.toml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_env_override_names_variable(cli: Cli) -> None:
    result = cli("run", "sleepy", env={"JOBCTL_SLEEPY_TIMEOUT": "forever"})
    assert result.code == 2 and "JOBCTL_SLEEPY_TIMEOUT" in result.stderr


def test_env_switches_job_off(cli: Cli) -> None:
    result = cli("run", "sleepy", env={"JOBCTL_SLEEPY_ENABLED": "0"})
    assert result.code == 0 and "disabled" in result.stderr
    assert runs(cli)[0]["status"] == "skipped"


def test_dotenv_and_env_precedence(cli: Cli, project: Path) -> None:
    (project / ".env").write_text("JOBCTL_SLEEPY_ENABLED=0\n")
    assert runs(cli) == []
    assert cli("run", "sleepy", "--param", "seconds=0").code == 0
    assert runs(cli)[0]["status"] == "skipped"
    # The real environment wins over .env.
    cli("run", "sleepy", "--param", "seconds=0", env={"JOBCTL_SLEEPY_ENABLED": "1"})
    assert runs(cli)[0]["status"] == "completed"


def test_unreachable_database_is_one_line_without_password(cli: Cli) -> None:
    url = "postgresql://app:hunter2secret@127.0.0.1:1/app"
    result = cli("runs", "list", env={"DATABASE_URL": url})
    assert result.code == 2
    assert "cannot connect" in result.stderr and "hunter2secret" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_two_at_once_one_runs_one_skips(cli: Cli) -> None:
    procs = [cli.popen("run", "sleepy", "--param", "seconds=3") for _ in range(2)]
    codes = sorted(p.wait(timeout=60) for p in procs)
    assert codes == [0, 75]
    statuses = sorted(r["status"] for r in runs(cli))
    assert statuses == ["completed", "skipped"]
    skipped = next(r for r in runs(cli) if r["status"] == "skipped")
    assert "already running: run" in skipped["error_message"] and "pid" in skipped["error_message"]


@pytest.mark.slow
def test_twenty_at_once_still_one_runs(cli: Cli) -> None:
    procs = [cli.popen("run", "sleepy", "--param", "seconds=15") for _ in range(20)]
    codes = [p.wait(timeout=120) for p in procs]
    assert sorted(codes) == [0] + [75] * 19
    statuses = [r["status"] for r in runs(cli)]
    assert statuses.count("completed") == 1 and statuses.count("skipped") == 19


def test_kill_9_leaves_abandoned_and_next_run_takes_lock(cli: Cli) -> None:
    proc = cli.popen("run", "sleepy", "--param", "seconds=60")
    victim = wait_for_running(cli, "sleepy")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    rows = runs(cli)
    assert rows[0]["id"] == victim["id"] and rows[0]["status"] == "abandoned"
    start = time.monotonic()
    result = cli("run", "sleepy", "--param", "seconds=0")
    assert result.code == 0, result.stderr
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_cancels_run(cli: Cli, sig: signal.Signals, code: int) -> None:
    proc = cli.popen("run", "sleepy", "--param", "seconds=60")
    victim = wait_for_running(cli, "sleepy")
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == code
    row = runs(cli)[0]
    assert row["id"] == victim["id"] and row["status"] == "cancelled"
    assert cli("run", "sleepy", "--param", "seconds=0").code == 0


def test_slot_ticks_from_two_hosts(cli: Cli, project: Path) -> None:
    """Two hosts' timers for the same fire time, one after the other."""
    (project / "jobctl.toml").write_text(
        (project / "jobctl.toml").read_text() + '\n[jobs.writer]\nschedule = "* * * * *"\n'
    )
    first = cli("run", "writer", "--trigger", "timer")
    second = cli("run", "writer", env={"INVOCATION_ID": "x"})
    rows = runs(cli)
    if rows[0]["scheduled_for"] != rows[1]["scheduled_for"]:
        pytest.skip("the two ticks straddled a minute boundary")
    assert first.code == 0 and second.code == 0
    assert [r["status"] for r in rows] == ["skipped", "completed"]
    assert "slot already done" in rows[0]["error_message"]
    forced = cli("run", "writer", "--trigger", "timer", "--force")
    assert forced.code == 0 and runs(cli)[0]["status"] == "completed"


def test_jobs_module_failing_at_import_is_exit_2(cli: Cli, project: Path) -> None:
    (project / "myjobs.py").write_text("import jobctl\nraise RuntimeError('boom at import')\n")
    result = cli("run", "sleepy")
    assert result.code == 2
    assert "jobs_module" in result.stderr and "boom at import" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


TINY_SOURCE = """
[sources.tiny]
path = "tiny.ndjson"
format = "ndjson"
key = ["id"]
table = "tiny"
"""


def with_tiny_source(project: Path) -> None:
    config = project / "jobctl.toml"
    config.write_text(config.read_text() + TINY_SOURCE)
    (project / "tiny.ndjson").write_text("".join(f'{{"id": {n}, "v": "x"}}\n' for n in range(3)))


def in_pty(cli: Cli, *args: str, env: dict[str, str] | None = None) -> tuple[int, bytes]:
    """The real executable with stdout and stderr on a terminal (a pseudo-terminal)."""
    import os
    import pty
    import select
    import subprocess

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [cli.exe, *args],
        cwd=cli.cwd,
        env={**cli.env, "TERM": "xterm-256color", "COLUMNS": "100", **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    out = b""
    try:
        while select.select([leader], [], [], 60)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
    return proc.wait(timeout=60), out


def test_no_color_on_a_terminal_means_no_escape_code_at_all(cli: Cli, project: Path) -> None:
    with_tiny_source(project)
    cli("run", "sleepy", "--param", "seconds=0")
    styled = in_pty(cli, "runs", "list", env={"NO_COLOR": ""})[1]
    assert b"\x1b[" in styled  # a terminal does get styles (the bold header) without NO_COLOR
    for args in (
        ("runs", "list"),
        ("jobs", "list"),
        ("runs", "show", "1"),
        ("run", "boom"),
        ("sync",),
        ("run", "sleepy", "--param", "seconds=0"),
    ):
        code, out = in_pty(cli, *args, env={"NO_COLOR": "1"})
        assert code in (0, 1), (args, out)
        assert out.strip() and b"\x1b" not in out, (args, out)


def test_sync_on_a_terminal_shows_each_phase_with_the_final_count(cli: Cli, project: Path) -> None:
    with_tiny_source(project)
    code, out = in_pty(cli, "sync", env={"NO_COLOR": ""})
    assert code == 0, out
    assert b"tiny: applying 3 records" in out and b"tiny: committing 3 records" in out
    assert b"sync: \x1b[32mcompleted" in out


def test_verbose_shows_phases_and_timings(cli: Cli, project: Path) -> None:
    with_tiny_source(project)
    quiet = cli("sync", "--force")
    assert quiet.code == 0, quiet.stderr
    assert "applying" not in quiet.stderr  # the default stays short
    verbose = cli("-v", "sync", "--force")
    assert verbose.code == 0, verbose.stderr
    lines = verbose.stderr.splitlines()
    read = next(x for x in lines if "tiny: read 3 records in " in x)
    assert "DEBUG" in read and read.endswith("; applying")
    assert any("tiny: applied in " in x and x.endswith("; committing") for x in lines)


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        (("run", "sleepy", "--param", "seconds=0"), {}, 0),
        (("run", "boom"), {}, 1),
        (("run", "sleepy"), {"JOBCTL_SLEEPY_ENABLED": "0"}, 0),
        (("runs", "list", "--since", "7x"), {}, 2),
        (("runs", "list", "--job", "nobody"), {}, 0),
        (("-v", "sync"), {}, 0),
    ],
)
def test_log_format_json_makes_every_stderr_line_json(
    cli: Cli, project: Path, args: tuple[str, ...], env: dict[str, str], code: int
) -> None:
    with_tiny_source(project)
    result = cli("--log-format", "json", *args, env=env)
    assert result.code == code, result.stderr
    lines = result.stderr.splitlines()
    assert lines
    docs = [json.loads(line) for line in lines]  # fails on the first plain line
    assert all({"ts", "level", "message"} <= set(doc) for doc in docs)
    if args[0] in ("run", "-v"):
        outcome = docs[-1]
        assert outcome["action"] == "run.outcome" and outcome["exit_code"] == code
        assert outcome["status"] in outcome["message"]


def test_a_skip_is_told_once(cli: Cli) -> None:
    result = cli("run", "sleepy", env={"JOBCTL_SLEEPY_ENABLED": "0"})
    assert result.code == 0
    assert result.stderr.count("is disabled") == 1, result.stderr
