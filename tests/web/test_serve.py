"""``jobctl serve`` as a process: refusing to start, stopping with its runs, secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.conftest import Cli
from tests.test_startup import imported, loaded
from tests.web.conftest import SECRET, TOKEN, Served, cli_json, free_port, wait_for_run


def _running(run: dict[str, Any]) -> bool:
    return run.get("status") == "running"


def _started_sleepy(server: Served, seconds: str = "120") -> int:
    with server.client() as client:
        answer = client.post("/api/jobs/sleepy/runs", json={"params": {"seconds": seconds}})
        assert answer.status_code == 202, answer.text
        run_id = int(answer.json()["run_id"])
        assert wait_for_run(client, run_id, until=_running)["status"] == "running"
    return run_id


def test_stopping_the_server_cancels_its_runs_and_frees_the_lock(server: Served, cli: Cli) -> None:
    run_id = _started_sleepy(server)
    code = server.stop(signal.SIGTERM)
    assert code in (-signal.SIGTERM, 128 + signal.SIGTERM, 0), server.stderr()[-2000:]
    run = next(r for r in cli_json(cli, "runs", "list") if r["id"] == run_id)
    assert run["status"] == "cancelled", run
    assert run["finished_at"] is not None
    assert "SIGTERM" in (run["error_message"] or "")
    # The lock went with it: the next run of the job takes it at once.
    again = cli("run", "sleepy", "--param", "seconds=0")
    assert again.code == 0, again.stderr


def test_a_killed_server_leaves_no_ghost_run(server: Served, cli: Cli) -> None:
    run_id = _started_sleepy(server)
    os.killpg(server.process.pid, signal.SIGKILL)  # the server and its run, at once
    server.process.wait(30)
    deadline = time.monotonic() + 30
    while True:  # the run's process is gone once its lock is free
        run = next(r for r in cli_json(cli, "runs", "list") if r["id"] == run_id)
        if run["status"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert run["status"] == "abandoned", run
    assert cli("run", "sleepy", "--param", "seconds=0").code == 0


def test_a_non_loopback_address_needs_a_token(cli: Cli) -> None:
    port = str(free_port())
    refused = cli("serve", "--host", "0.0.0.0", "--port", port, timeout=60)
    assert refused.code == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "refusing to serve on 0.0.0.0" in lines[0] and "JOBCTL_WEB_TOKEN" in lines[0]
    with httpx.Client() as client:  # nothing listens
        try:
            client.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            listening = True
        except httpx.TransportError:
            listening = False
    assert not listening


def test_on_a_non_loopback_address_every_request_needs_the_token(
    serve: Callable[..., Served],
) -> None:
    server = serve("--host", "0.0.0.0")
    with server.client(token=None) as anonymous:
        for path in ("/api/runs", "/api/jobs", "/metrics", "/healthz", "/api/schedules"):
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.get("/login").status_code == 200  # how a browser gets in
    with server.client() as client:
        assert client.get("/api/runs").status_code == 200


def test_bad_values_are_one_line_and_exit_2(cli: Cli, tmp_path: Path) -> None:
    short = cli("serve", "--port", str(free_port()), env={"JOBCTL_WEB_TOKEN": "bob:x7q9"})
    assert short.code == 2 and len(short.stderr.strip().splitlines()) == 1
    assert "shorter than 16" in short.stderr and "x7q9" not in short.stderr
    port = cli("serve", "--port", "70000")
    assert port.code == 2 and "70000" in port.stderr
    missing = cli("serve", env={"JOBCTL_WEB_TOKEN_FILE": str(tmp_path / "none")})
    assert missing.code == 2 and "cannot be read" in missing.stderr
    with socket_in_use() as used:
        busy = cli("serve", "--port", str(used), env={"JOBCTL_WEB_TOKEN": TOKEN})
    assert busy.code == 2 and f"cannot listen on 127.0.0.1:{used}" in busy.stderr
    (tmp_path / "jobctl.toml").write_text('[web]\nport = "x"\n')
    bad = cli("serve")
    assert bad.code == 2 and "web.port" in bad.stderr


class socket_in_use:
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_a_token_file_names_who_asked(
    serve: Callable[..., Served], cli: Cli, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# operators\nbob:{'b' * 20}\ncarol:{'c' * 20}\n")
    server = serve(env={"JOBCTL_WEB_TOKEN_FILE": str(tokens)}, token=False)
    with server.client(token="c" * 20) as carol:
        added = carol.post("/api/schedules", json={"job": "sleepy", "at": "in 1h"})
        assert added.status_code == 201
        assert added.json()["created_by"] == "carol"
    with server.client(token=SECRET) as alice:  # not one of this server's tokens
        assert (
            alice.post("/api/schedules", json={"job": "sleepy", "at": "in 1h"}).status_code == 401
        )
    assert [r["created_by"] for r in cli_json(cli, "schedule", "list")] == ["carol"]


def test_no_secret_in_any_response(
    serve: Callable[..., Served], cli: Cli, db_url: str, psql: psycopg.Connection[Any]
) -> None:
    password = "db-pass-w0rd-xyz"
    # The test server trusts local connections: a password in the URL is sent to no one,
    # and must be shown to no one either.
    netloc, rest = db_url.removeprefix("postgresql://").split("/", 1)
    user, _, host = netloc.rpartition("@")
    secret_url = f"postgresql://{user}:{password}@{host}/{rest}"
    server = serve(env={"DATABASE_URL": secret_url})
    # A run whose stored texts hold both secrets (stored before they were known as such).
    psql.execute(
        "INSERT INTO jobctl.runs (job, trigger, status, host, pid, jobctl_version, "
        "error_message, error_detail, source, params) VALUES ('boom', 'manual', 'failed', "
        "'h', 1, 'x', %s, %s, %s, %s)",
        (
            f"failed with {password} and {SECRET}",
            f"connecting to {secret_url}",
            secret_url,
            psycopg.types.json.Jsonb({"token": SECRET}),
        ),
    )
    bodies = []
    with server.client() as client:
        answer = client.post("/api/jobs/boom/runs", json={"params": {"note": SECRET}})
        assert answer.status_code == 202
        bodies.append(answer.text)
        run_id = answer.json()["run_id"]
        wait_for_run(client, run_id, until=lambda r: r.get("status") != "running")
        for path in (
            "/api/runs",
            "/api/runs/1",
            f"/api/runs/{run_id}",
            "/api/jobs",
            "/api/status",
            "/metrics",
            "/healthz",
            "/api/schedules",
            "/login",
            "/api/openapi.json",
            "/api/runs/999",
            "/nope",
        ):
            bodies.append(f"{path}: {client.get(path).text}")
        bodies.append(client.post("/api/schedules", json={"job": SECRET, "at": "in 1h"}).text)
        bodies.append(client.post("/api/jobs/boom/runs", json={"params": {SECRET: 1}}).text)
        bodies.append(client.get("/api/runs", params={"job": SECRET}).text)
    everything = "\n".join(bodies)
    assert "failed with" in everything  # the rows were read
    assert password not in everything and SECRET not in everything
    stored = psql.execute("SELECT params::text FROM jobctl.runs WHERE id = %s", (run_id,))
    assert SECRET not in stored.fetchone()[0]
    server.stop()
    assert password not in server.stderr() and SECRET not in server.stderr()


def test_help_imports_no_web_module() -> None:
    proc, modules = imported("serve", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--host" in proc.stdout and "JOBCTL_WEB_TOKEN" in proc.stdout
    assert loaded(modules, ("fastapi", "uvicorn", "starlette", "jobctl.web")) == []


def test_without_the_extra_serve_says_what_to_install(cli: Cli) -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; "
        "from jobctl.cli import main; main(['serve', '--port', '18080'])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=cli.env,
        cwd=cli.cwd,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "jobctl: error: the web console needs the 'web' extra: pip install 'jobctl[web]'\n"
    )


def test_a_database_that_cannot_be_reached_is_exit_2_before_listening(cli: Cli) -> None:
    port = free_port()
    down = cli(
        "serve",
        "--port",
        str(port),
        env={"DATABASE_URL": f"postgresql://jobctl:{SECRET}@127.0.0.1:{free_port()}/x"},
    )
    assert down.code == 2, down.stderr
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect to the database" in lines[0], down.stderr
    assert SECRET not in down.stderr
