"""Dead-man pings end to end: real runs through the runner and the CLI, a real HTTP
server on 127.0.0.1 (tests/fixtures/httpserver.py) standing in for healthchecks.io."""

from __future__ import annotations

import logging
import signal
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobctl.db.locks import JobLock, lock_key
from jobctl.errors import ExitCode
from jobctl.notify.pings import run_uuid
from jobctl.runner import RunOptions
from tests.conftest import Cli
from tests.fixtures.httpserver import HTTPTestServer, Request
from tests.jobs import wait_until
from tests.notify.conftest import free_port
from tests.notify.test_alerts import all_rows_text
from tests.runner.test_runner import make_app, row

#: What healthchecks.io puts in a ping URL's path: the check's UUID (a credential).
CHECK = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"


def ping_toml(job: str, url: str) -> str:
    return f'[jobs.{job}]\nping_url = "{url}"\n'


def serve_check(server: HTTPTestServer, **statuses: list[int]) -> str:
    """Routes for the check's three URLs; ``statuses`` scripts each (start=, success=, fail=)."""
    for kind, suffix in (("start", "/start"), ("success", ""), ("fail", "/fail")):
        server.serve(f"/{CHECK}{suffix}", b"OK", statuses=statuses.get(kind, []))
    return server.url(f"/{CHECK}")


def pings(server: HTTPTestServer) -> list[tuple[str, str]]:
    """Each request as (method, kind), in the order received."""
    kinds = {f"/{CHECK}/start": "start", f"/{CHECK}": "success", f"/{CHECK}/fail": "fail"}
    return [(r.method, kinds.get(r.path, r.path)) for r in server.requests]


def rid_of(request: Request) -> str:
    (rid,) = request.query["rid"]
    return rid


def last_run(psql: psycopg.Connection[Any]) -> int:
    found = psql.execute("SELECT max(id) FROM jobctl.runs").fetchone()
    assert found is not None
    return int(found[0])


def pings_of(psql: psycopg.Connection[Any], run_id: int | None) -> Any:
    return row(psql, run_id)["stats"].get("pings")


def test_a_completed_run_pings_start_then_success_with_one_rid(
    project: Path, db_url: str, psql: psycopg.Connection[Any], local_http_server: HTTPTestServer
) -> None:
    url = serve_check(local_http_server)
    app = make_app(project, db_url, ping_toml("writer", url))
    outcome = app.run("writer", RunOptions())
    assert (outcome.status, outcome.exit_code) == ("completed", ExitCode.OK)
    assert pings(local_http_server) == [("GET", "start"), ("GET", "success")]
    start, success = local_http_server.requests
    assert rid_of(start) == rid_of(success) == run_uuid("writer", outcome.run_id or 0)
    # healthchecks.io wants the canonical form: lower case, no braces
    assert str(uuid.UUID(rid_of(start))) == rid_of(start)
    assert pings_of(psql, outcome.run_id) == {"start": "ok", "success": "ok"}
    assert outcome.stats["pings"] == {"start": "ok", "success": "ok"}
    other = app.run("writer", RunOptions())
    assert rid_of(local_http_server.requests[-1]) != rid_of(start)  # a run id per run
    assert other.status == "completed"
    app.close()


@pytest.mark.parametrize(
    ("job", "extra", "params", "error"),
    [
        # one /fail, after the run's last attempt
        ("boom", "retries = 1\nretry_delay = '0s'\n", {}, "ValueError: the answer is not 42"),
        ("pgsleep", 'timeout = "1s"\n', {"secs": "30"}, "timed out after 1.0s"),
    ],
    ids=["error", "timeout"],
)
def test_a_failed_run_pings_start_then_fail_with_the_error(
    project: Path,
    db_url: str,
    psql: psycopg.Connection[Any],
    local_http_server: HTTPTestServer,
    job: str,
    extra: str,
    params: dict[str, str],
    error: str,
) -> None:
    url = serve_check(local_http_server)
    app = make_app(project, db_url, ping_toml(job, url) + extra)
    outcome = app.run(job, RunOptions(params=params))
    assert (outcome.status, outcome.exit_code) == ("failed", ExitCode.FAILED)
    assert pings(local_http_server) == [("GET", "start"), ("POST", "fail")]
    start, fail = local_http_server.requests
    assert rid_of(start) == rid_of(fail)
    assert fail.body == f"failed: {error}".encode()
    assert pings_of(psql, outcome.run_id) == {"start": "ok", "fail": "ok"}
    assert row(psql, outcome.run_id)["error_message"] == error
    app.close()


def test_a_run_cancelled_by_sigterm_pings_fail(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], local_http_server: HTTPTestServer
) -> None:
    url = serve_check(local_http_server)
    with (project / "jobctl.toml").open("a") as f:
        f.write("\n" + ping_toml("pgsleep", url))
    marker = project / "started"
    proc = cli.popen("run", "pgsleep", "-p", "secs=60", "-p", f"touch={marker}")
    wait_until(lambda: marker.exists() and marker.read_text() != "", what="the run to start")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.SIGTERM, err
    assert pings(local_http_server) == [("GET", "start"), ("POST", "fail")]
    assert local_http_server.requests[1].body == b"cancelled: interrupted by SIGTERM"
    assert pings_of(psql, last_run(psql)) == {"start": "ok", "fail": "ok"}


def test_a_ping_answered_500_500_200_is_sent_three_times(
    project: Path, db_url: str, psql: psycopg.Connection[Any], local_http_server: HTTPTestServer
) -> None:
    url = serve_check(local_http_server, start=[500, 500, 200])
    app = make_app(project, db_url, ping_toml("writer", url))
    outcome = app.run("writer", RunOptions())
    assert outcome.status == "completed"
    assert pings(local_http_server) == [("GET", "start")] * 3 + [("GET", "success")]
    assert pings_of(psql, outcome.run_id) == {"start": "ok", "success": "ok"}
    app.close()


def test_a_ping_answered_400_is_sent_once_and_changes_nothing(
    project: Path,
    db_url: str,
    psql: psycopg.Connection[Any],
    local_http_server: HTTPTestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    url = serve_check(local_http_server, success=[400, 200])
    app = make_app(project, db_url, ping_toml("writer", url))
    outcome = app.run("writer", RunOptions())
    assert (outcome.status, outcome.exit_code) == ("completed", ExitCode.OK)
    assert pings(local_http_server) == [("GET", "start"), ("GET", "success")]
    r = row(psql, outcome.run_id)
    assert r["status"] == "completed" and r["error_message"] is None
    sent = r["stats"]["pings"]["success"]
    assert r["stats"]["pings"]["start"] == "ok"
    assert sent.startswith("failed: ") and "HTTP 400" in sent
    failed = [rec for rec in caplog.records if getattr(rec, "action", None) == "ping.failed"]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING
    assert getattr(failed[0], "run_id", None) == outcome.run_id
    app.close()


def test_a_ping_server_that_is_down_changes_no_outcome(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    down = f"http://127.0.0.1:{free_port()}/{CHECK}"
    with (project / "jobctl.toml").open("a") as f:
        f.write("\n" + ping_toml("boom", down) + ping_toml("writer", down))
    ok = cli("run", "writer")
    assert ok.code == 0, ok.stderr
    assert "ping for run" in ok.stderr and "Traceback" not in ok.stderr
    failed = cli("run", "boom")
    assert failed.code == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    listed = cli("runs", "show", str(last_run(psql)), "--json")
    assert listed.code == 0, listed.stderr
    assert '"status": "failed"' in listed.stdout
    for result in (ok, failed, listed):
        assert CHECK not in result.stdout + result.stderr


def test_pings_of_a_run_against_a_server_that_is_down_are_recorded(
    project: Path, db_url: str, psql: psycopg.Connection[Any]
) -> None:
    down = f"http://127.0.0.1:{free_port()}/{CHECK}"
    app = make_app(project, db_url, ping_toml("writer", down))
    outcome = app.run("writer", RunOptions())
    assert (outcome.status, outcome.exit_code) == ("completed", ExitCode.OK)
    recorded = pings_of(psql, outcome.run_id)
    assert set(recorded) == {"start", "success"}
    for result in recorded.values():
        assert result.startswith("failed: ") and "3 requests" in result, result
        assert CHECK not in result and "127.0.0.1" in result
    app.close()


def test_a_tick_skipped_because_the_lock_is_held_sends_nothing(
    cli: Cli, project: Path, db_url: str, local_http_server: HTTPTestServer
) -> None:
    url = serve_check(local_http_server)
    with (project / "jobctl.toml").open("a") as f:
        f.write("\n" + ping_toml("writer", url))
    app = make_app(project, db_url)
    holder = JobLock(app.db, "writer")
    assert holder.try_acquire()
    try:
        result = cli("run", "writer", "--trigger", "cron")
    finally:
        holder.release()
    assert result.code == ExitCode.LOCKED, result.stderr
    assert local_http_server.requests == []
    app.close()


def test_dry_runs_and_child_runs_send_nothing(
    project: Path, db_url: str, local_http_server: HTTPTestServer
) -> None:
    url = serve_check(local_http_server)
    app = make_app(project, db_url, ping_toml("writer", url))
    dry = app.run("writer", RunOptions(dry_run=True))
    assert dry.status == "completed"
    parent = app.run("sleepy", RunOptions(params={"seconds": "0"}))
    child = app.run("writer", RunOptions(parent_id=parent.run_id))
    assert child.status == "completed"
    assert local_http_server.requests == []
    app.close()


def test_a_run_found_abandoned_pings_fail_with_its_rid(
    project: Path, db_url: str, psql: psycopg.Connection[Any], local_http_server: HTTPTestServer
) -> None:
    url = serve_check(local_http_server)
    dead = psql.execute(
        "INSERT INTO jobctl.runs (job, trigger, status, host, pid, jobctl_version,"
        " lock_backend_pid, lock_key) VALUES ('boom', 'timer', 'running',"
        " 'gone', 4242, 'x', 2147483000, %s) RETURNING id",
        (lock_key("boom"),),
    ).fetchone()
    assert dead is not None
    app = make_app(project, db_url, ping_toml("boom", url))
    app.list_runs(job=None, status=None, since=None, limit=5)
    app.list_runs(job=None, status=None, since=None, limit=5)
    assert pings(local_http_server) == [("POST", "fail")]
    (fail,) = local_http_server.requests
    assert rid_of(fail) == run_uuid("boom", dead[0])
    assert fail.body.startswith(b"abandoned: ") and b"gone" in fail.body
    assert pings_of(psql, dead[0]) == {"fail": "ok"}
    app.close()


# --------------------------------------------------------------------------- secrets


LEAKY = f"""

@jobctl.job("hc_leaky")
def hc_leaky(ctx):
    ctx.log.info("pinging %s", ctx.config.ping_url)
    ctx.stats["where"] = ctx.config.ping_url
    raise RuntimeError(f"{{ctx.config.ping_url}} said no; check {CHECK!r}")
"""


def test_the_ping_url_appears_in_no_row_log_line_or_output(
    cli: Cli,
    project: Path,
    db_url: str,
    psql: psycopg.Connection[Any],
    local_http_server: HTTPTestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = serve_check(local_http_server, start=[500, 200], success=[400])
    (project / "myjobs.py").write_text((project / "myjobs.py").read_text() + LEAKY)
    with (project / "jobctl.toml").open("a") as f:
        # from the environment, as a secret is usually given
        f.write('\n[jobs.hc_leaky]\nping_url = "${HC_URL}"\n')
        f.write('\n[jobs.writer]\nping_url = "${HC_URL}"\n')
    env = {"HC_URL": url}
    results = [
        cli("run", "hc_leaky", env=env),
        cli("-v", "run", "writer", env=env),
        cli("--log-format", "json", "-v", "run", "hc_leaky", env=env),
        cli("runs", "list", "--json", env=env),
        cli("runs", "show", str(last_run(psql)), env=env),
        cli("runs", "show", str(last_run(psql)), "--json", env=env),
        cli("jobs", "list", "--json", env=env),
    ]
    assert [r.code for r in results] == [1, 0, 1, 0, 0, 0, 0], [r.stderr for r in results]
    assert "ping for run" in results[1].stderr  # the 400, said without its URL
    app = make_app(project, db_url, env=env)
    in_process = app.run("hc_leaky", RunOptions())
    assert in_process.status == "failed"
    kinds = [kind for _, kind in pings(local_http_server)]
    assert kinds.count("fail") == 3 and kinds.count("success") == 1
    fail_bodies = [r.body for r in local_http_server.requests if r.path.endswith("/fail")]
    texts = {
        "runs": all_rows_text(psql),
        "log": "\n".join(rec.getMessage() for rec in caplog.records),  # httpx's lines too
        "output": "\n".join(r.stdout + r.stderr for r in results),
        "fail bodies": b"\n".join(fail_bodies).decode(),
    }
    assert "said no" in texts["runs"] and "said no" in texts["fail bodies"]
    assert "HTTP Request" in texts["log"]
    for where, text in texts.items():
        for secret in (CHECK, url):
            assert secret not in text, (where, secret)
    app.close()


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        (
            '[jobs.boom]\nping_url = "hc-ping.com/uuid"\n',
            {},
            "jobs.boom.ping_url: must start with http:// or https://",
        ),
        (
            '[jobs.boom]\nping_url = "https://"\n',
            {},
            "jobs.boom.ping_url: is not a URL with a host",
        ),
        ("[jobs.boom]\nping_url = 42\n", {}, "jobs.boom.ping_url: "),
        (
            '[jobs.boom]\nping_url = "${HC_URL}"\n',
            {"HC_URL": f"ftp://x/{CHECK}"},
            "jobs.boom.ping_url: must start with http://",
        ),
        ("", {"JOBCTL_BOOM_PING_URL": f"//x/{CHECK}"}, "JOBCTL_BOOM_PING_URL: must start with"),
    ],
)
def test_a_bad_ping_url_exits_2_naming_the_key(
    cli: Cli, project: Path, toml: str, env: dict[str, str], message: str
) -> None:
    with (project / "jobctl.toml").open("a") as f:
        f.write("\n" + toml)
    result = cli("run", "boom", env=env)
    assert result.code == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert CHECK not in result.stderr


def test_a_ping_url_from_a_job_variable_is_a_secret_too(
    project: Path, db_url: str, psql: psycopg.Connection[Any], local_http_server: HTTPTestServer
) -> None:
    url = serve_check(local_http_server)
    (project / "myjobs.py").write_text((project / "myjobs.py").read_text() + LEAKY)
    app = make_app(project, db_url, env={"JOBCTL_HC_LEAKY_PING_URL": url})
    outcome = app.run("hc_leaky", RunOptions())
    assert outcome.status == "failed"
    assert pings(local_http_server) == [("GET", "start"), ("POST", "fail")]
    text = all_rows_text(psql)
    assert "said no" in text and CHECK not in text
    app.close()
