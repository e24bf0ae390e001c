"""A real ``jobctl serve`` (uvicorn in its own process) on 127.0.0.1 and a free port,
over the test's own database, with httpx clients."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Cli

#: The test token: its name is recorded as who triggered or scheduled.
SECRET = "s3cret-token-value-0123456789"
TOKEN = f"alice:{SECRET}"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    log: Path

    def client(self, *, token: str | None = SECRET, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout)


def start_server(
    cli: Cli, log: Path, *args: str, env: dict[str, str] | None = None, token: bool = True
) -> Served:
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [cli.exe, "serve", "--port", str(port), *args],
            cwd=cli.cwd,
            env={**cli.env, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=out,
            text=True,
            start_new_session=True,  # a test may kill the server with its runs
        )
    served = Served(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"jobctl serve exited {process.returncode}: {served.stderr()[-3000:]}")
        try:
            probe = httpx.get(f"{served.url}/healthz", headers=AUTH if token else {}, timeout=5)
            if probe.status_code == 200:
                return served
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    served.stop(signal.SIGKILL)
    pytest.fail(f"jobctl serve did not answer: {served.stderr()[-3000:]}")


@pytest.fixture
def serve(cli: Cli, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(*args, env=...)`` starts a server (with the token unless env says
    otherwise); every server is stopped after the test."""
    started: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None, token: bool = True) -> Served:
        extra = {"JOBCTL_WEB_TOKEN": TOKEN} if token else {}
        log = tmp_path / f"serve-{len(started)}.log"
        served = start_server(cli, log, *args, env={**extra, **(env or {})}, token=token)
        started.append(served)
        return served

    yield start
    for served in started:
        try:
            served.stop(timeout=30)
        except subprocess.TimeoutExpired:
            served.stop(signal.SIGKILL)


@pytest.fixture
def server(serve: Callable[..., Served]) -> Served:
    """One server on loopback with the token ``alice``."""
    return serve()


def cli_json(cli: Cli, *args: str) -> Any:
    result = cli(*args, "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def cli_error(cli: Cli, *args: str) -> str:
    """The one-line message of a command that fails with exit 2."""
    result = cli(*args)
    assert result.code == 2, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0].removeprefix("jobctl: error: ")


def wait_for_run(
    client: httpx.Client,
    run_id: int,
    *,
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/runs/{run_id}").json()
        if until(run) or time.monotonic() > deadline:
            return dict(run)
        time.sleep(0.1)
