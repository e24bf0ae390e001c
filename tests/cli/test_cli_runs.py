"""The real ``jobctl`` executable: exit codes, output formats, signals, concurrency."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

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
