"""The JSON API against a real ``jobctl serve`` and a real PostgreSQL: the same calls,
shapes and messages as the CLI; runs really executed by the runner."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli
from tests.web.conftest import SECRET, Served, cli_error, cli_json, wait_for_run


def _finished(run: dict[str, Any]) -> bool:
    return run.get("status") not in (None, "running")


def test_a_web_trigger_is_run_by_the_runner_and_listed_by_the_cli(
    server: Served, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    with server.client() as client:
        answer = client.post("/api/jobs/writer/runs", json={"params": {"note": "hello"}})
        assert answer.status_code == 202, answer.text
        started = answer.json()
        assert started["job"] == "writer"
        run_id = started["run_id"]
        assert started["status"] == "running"
        run = wait_for_run(client, run_id, until=_finished)
        assert run["status"] == "completed", run
        # The job really ran: its row was written in its run transaction.
        marks = psql.execute("SELECT run_id FROM public.marks").fetchall()
        assert marks == [(run_id,)]
        listed = cli_json(cli, "runs", "list")
        assert [r["id"] for r in listed] == [run_id]
        assert listed[0]["trigger"] == "web"
        assert listed[0]["requested_by"] == "alice"
        assert listed[0]["params"] == {"note": "hello"}
        # The same shapes as --json: the API's list and run are the CLI's.
        assert client.get("/api/runs").json() == listed
        shown = cli_json(cli, "runs", "show", str(run_id))
        assert client.get(f"/api/runs/{run_id}").json() == shown


def test_reads_have_the_shapes_of_the_cli(server: Served, cli: Cli) -> None:
    with server.client() as client:
        jobs = client.get("/api/jobs")
        assert jobs.status_code == 200
        assert jobs.json() == cli_json(cli, "jobs", "list")
        status = client.get("/api/status")
        assert status.status_code == 200
        from_cli = cli("status", "--json")
        import json

        assert status.json() == json.loads(from_cli.stdout)
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        names = {line.split()[2] for line in metrics.text.splitlines() if line.startswith("# TYPE")}
        text = cli("metrics").stdout
        assert names == {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
        assert client.get("/healthz").json() == {"ok": True}
        assert client.get("/api/openapi.json").json()["paths"]["/api/runs"]


def test_runs_filters_are_checked_as_the_cli_checks_them(server: Served, cli: Cli) -> None:
    with server.client() as client:
        bad = client.get("/api/runs", params={"status": "weird"})
        assert bad.status_code == 422
        assert bad.json() == {"detail": cli_error(cli, "runs", "list", "--status", "weird")}
        since = client.get("/api/runs", params={"since": "soon"})
        assert since.status_code == 422
        assert "'soon' is not a duration" in since.json()["detail"]
        assert client.get("/api/runs", params={"limit": 0}).status_code == 422
        assert client.get("/api/runs", params={"limit": "x"}).status_code == 422
        missing = client.get("/api/runs/999999")
        assert missing.status_code == 404
        assert missing.json() == {"detail": cli_error(cli, "runs", "show", "999999")}


def test_an_unknown_job_or_bad_params_are_refused_with_the_cli_message(
    server: Served, cli: Cli
) -> None:
    with server.client() as client:
        unknown = client.post("/api/jobs/nope/runs")
        assert unknown.status_code == 404
        assert unknown.json() == {"detail": cli_error(cli, "run", "nope")}
        builtin = client.post("/api/jobs/cleanup/runs", json={"params": {"a": "b"}})
        assert builtin.status_code == 422
        message = cli_error(cli, "schedule", "add", "cleanup", "--at", "in 1h", "--param", "a=b")
        assert builtin.json() == {"detail": message}
        for body in ({"params": {"a": 1}}, {"params": ["a=b"]}, {"prams": {}}, [1], "x"):
            answer = client.post("/api/jobs/writer/runs", json=body)
            assert answer.status_code == 422, (body, answer.text)
            assert "\n" not in answer.json()["detail"]
        broken = client.post(
            "/api/jobs/writer/runs", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 422
        assert broken.json() == {"detail": "the request body is not valid JSON"}
    assert cli_json(cli, "runs", "list") == []  # nothing written


def test_a_held_lock_is_409_naming_the_holder(server: Served, cli: Cli) -> None:
    with server.client() as client:
        first = client.post("/api/jobs/sleepy/runs", json={"params": {"seconds": "30"}})
        assert first.status_code == 202, first.text
        holder_id = first.json()["run_id"]
        second = client.post("/api/jobs/sleepy/runs", json={"params": {"seconds": "1"}})
        assert second.status_code == 409, second.text
        doc = second.json()
        assert doc["status"] == "skipped"
        assert f"run {holder_id}" in doc["detail"]
        holder = doc["holder"]
        assert holder["run_id"] == holder_id
        assert holder["pid"] > 0 and holder["host"] and holder["age_seconds"] >= 0
        # As the CLI says it (exit 75, the same holder).
        busy = cli("run", "sleepy", "--param", "seconds=1")
        assert busy.code == 75
        assert f"run {holder_id}" in busy.stderr
        skipped = [r for r in cli_json(cli, "runs", "list") if r["id"] == doc["run_id"]]
        assert skipped[0]["status"] == "skipped"
        assert skipped[0]["trigger"] == "web" and skipped[0]["requested_by"] == "alice"


def test_schedules_added_and_cancelled_through_the_api_are_the_clis(
    server: Served, cli: Cli
) -> None:
    with server.client() as client:
        added = client.post(
            "/api/schedules", json={"job": "sleepy", "at": "in 2h", "params": {"seconds": "1"}}
        )
        assert added.status_code == 201, added.text
        row = added.json()
        assert row["status"] == "pending" and row["created_by"] == "alice"
        listed = cli_json(cli, "schedule", "list")
        assert [(r["id"], r["job"], r["created_by"], r["params"]) for r in listed] == [
            (row["id"], "sleepy", "alice", {"seconds": "1"})
        ]
        via_api = client.get("/api/schedules").json()
        assert [r["id"] for r in via_api] == [row["id"]]
        assert set(via_api[0]) == set(listed[0])
        assert via_api[0]["run_at"] == listed[0]["run_at"]
        cancelled = client.delete(f"/api/schedules/{row['id']}")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        assert cli_json(cli, "schedule", "list")[0]["status"] == "cancelled"
        again = client.delete(f"/api/schedules/{row['id']}")
        assert again.status_code == 422
        assert again.json() == {"detail": cli_error(cli, "schedule", "cancel", str(row["id"]))}


@pytest.mark.parametrize(
    ("at", "args"),
    [
        ("2026-13-45T25:00", ()),
        ("2020-01-01T00:00:00Z", ()),
        ("in 1h", ("--every", "fortnight")),
    ],
)
def test_bad_schedules_are_the_clis_errors_and_write_nothing(
    server: Served, cli: Cli, at: str, args: tuple[str, ...]
) -> None:
    body: dict[str, Any] = {"job": "sleepy", "at": at}
    if args:
        body["every"] = args[1]
    with server.client() as client:
        answer = client.post("/api/schedules", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json() == {
        "detail": cli_error(cli, "schedule", "add", "sleepy", "--at", at, *args)
    }
    assert cli_json(cli, "schedule", "list") == []


def test_an_oversized_body_is_413_and_writes_nothing(server: Served, cli: Cli) -> None:
    big = {"job": "sleepy", "at": "in 2h", "params": {"x": "y" * 70_000}}
    with server.client() as client:
        answer = client.post("/api/schedules", json=big)
        assert answer.status_code == 413
        assert "larger than" in answer.json()["detail"]

        # Chunked, without a Content-Length: refused while it is read.
        def chunks() -> Any:
            for _ in range(20):
                yield b"x" * 8192

        streamed = client.post(
            "/api/schedules", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
    assert cli_json(cli, "schedule", "list") == []


def test_tokens_are_needed_for_writes(server: Served, cli: Cli) -> None:
    with server.client(token=None) as anonymous:
        assert anonymous.get("/api/runs").status_code == 200  # loopback: reads are open
        denied = anonymous.post("/api/jobs/writer/runs")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"] == "Bearer"
        assert (
            anonymous.post("/api/schedules", json={"job": "sleepy", "at": "in 2h"}).status_code
            == 401
        )
        assert anonymous.delete("/api/schedules/1").status_code == 401
        # DNS rebinding: a page of another site that resolves to 127.0.0.1 reads nothing.
        rebound = anonymous.get("/api/runs", headers={"Host": "evil.example:80"})
        assert rebound.status_code == 403
    with server.client(token="wrong-token-of-enough-length") as wrong:
        assert wrong.get("/api/runs").status_code == 401
        assert wrong.post("/api/jobs/writer/runs").status_code == 401
    with server.client(token=SECRET[:-1]) as almost:
        assert almost.post("/api/jobs/writer/runs").status_code == 401
    assert cli_json(cli, "runs", "list") == []
    assert cli_json(cli, "schedule", "list") == []


def test_without_any_token_writes_are_forbidden(serve: Callable[..., Served], cli: Cli) -> None:
    server = serve(token=False)
    with server.client(token=None) as client:
        assert client.get("/api/jobs").status_code == 200
        answer = client.post("/api/jobs/writer/runs")
        assert answer.status_code == 403
        assert "JOBCTL_WEB_TOKEN" in answer.json()["detail"]
    assert cli_json(cli, "runs", "list") == []


def test_a_browser_session_needs_the_csrf_token(server: Served, cli: Cli) -> None:
    import re

    with server.client(token=None, follow_redirects=False) as browser:
        page = browser.get("/login")
        assert page.status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        refused = browser.post("/login", data={"token": "not-it", "csrf": csrf.group(1)})
        assert refused.status_code == 401
        forged = browser.post("/login", data={"token": SECRET, "csrf": "forged"})
        assert forged.status_code == 403
        login = browser.post("/login", data={"token": SECRET, "csrf": csrf.group(1)})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert SECRET not in login.headers["set-cookie"]
        body = {"job": "sleepy", "at": "in 2h"}
        assert browser.post("/api/schedules", json=body).status_code == 403
        session_csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get("/login").text)
        assert session_csrf is not None
        other_site = browser.post(
            "/api/schedules",
            json=body,
            headers={"X-CSRF-Token": session_csrf.group(1), "Origin": "http://evil.example"},
        )
        assert other_site.status_code == 403
        ok = browser.post(
            "/api/schedules", json=body, headers={"X-CSRF-Token": session_csrf.group(1)}
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()["created_by"] == "alice"
    assert len(cli_json(cli, "schedule", "list")) == 1


def test_the_session_cookie_cannot_be_forged(server: Served) -> None:
    forged = f"alice~{int(time.time()) + 3600}~" + "0" * 64
    with server.client(token=None, cookies={"jobctl_session": forged}) as browser:
        assert browser.post("/api/jobs/writer/runs").status_code == 401


def test_by_on_the_command_line_is_recorded_as_who_asked(cli: Cli) -> None:
    ran = cli("run", "writer", "--by", "bob", "--trigger", "web")
    assert ran.code == 0, ran.stderr
    (run,) = cli_json(cli, "runs", "list")
    assert (run["trigger"], run["requested_by"]) == ("web", "bob")
    assert cli_error(cli, "run", "writer", "--by", " ").startswith("--by ' ' must be a name")
    assert len(cli_json(cli, "runs", "list")) == 1


def test_a_schedule_added_on_the_web_runs_as_who_added_it(
    server: Served, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    with server.client() as client:
        added = client.post(
            "/api/schedules", json={"job": "writer", "at": "in 1h", "params": {"n": "1"}}
        )
        assert added.status_code == 201, added.text
    # Its time has come (as the worker finds it a minute later).
    psql.execute(
        "UPDATE jobctl.scheduled SET run_at = now() - interval '1 minute',"
        " created_at = now() - interval '1 day' WHERE id = %s",
        (added.json()["id"],),
    )
    worker = cli("schedule", "run-due")
    assert worker.code == 0, worker.stderr
    (run,) = cli_json(cli, "runs", "list")
    assert (run["job"], run["trigger"], run["requested_by"]) == ("writer", "schedule", "alice")
    assert run["status"] == "completed" and run["params"] == {"n": "1"}
