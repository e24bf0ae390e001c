"""A real ``jobctl serve`` (uvicorn) on 127.0.0.1 over a real PostgreSQL, for the pages.

The server is the installed executable in a subprocess, started in the test's project
directory with its database and a token (``alice``); the tests drive it with httpx
and with Debian's headless Chromium (``browser``)."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Cli

TOKEN_NAME = "alice"
TOKEN_SECRET = "s3cret-token-for-the-console"
#: Jobs of the project (tests/fixtures/myjobs.py): sleepy keeps UTC, boom runs in Toronto.
CONFIG = """timezone = "UTC"
jobs_module = "myjobs"

[jobs.sleepy]
timeout = "2m"
schedule = "0 6 * * *"

[jobs.boom]
timezone = "America/Toronto"
"""
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Console:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)  # type: ignore[arg-type]

    def login(self, client: httpx.Client, secret: str = TOKEN_SECRET) -> None:
        """What a browser does: the form's CSRF token, then POST /login (the cookie)."""
        form = client.get("/login")
        assert form.status_code == 200, form.text
        found = CSRF.search(form.text)
        assert found, form.text
        done = client.post("/login", data={"token": secret, "csrf": found.group(1), "next": "/"})
        assert done.status_code == 303, done.text


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, page
    return found.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_console(cli: Cli, env: dict[str, str] | None = None) -> Console:
    """``jobctl serve`` on a free loopback port; returns once ``/healthz`` answers.
    Its output goes to ``serve.log`` in the project (a pipe nobody reads would fill)."""
    log = cli.cwd / "serve.log"
    environ = {**cli.env, "JOBCTL_WEB_TOKEN": f"{TOKEN_NAME}:{TOKEN_SECRET}", **(env or {})}
    for _ in range(3):  # the port is free when chosen; another process may take it first
        port = free_port()
        with log.open("ab") as out:
            process = subprocess.Popen(
                [cli.exe, "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=cli.cwd,
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return Console(url, process, log)
            except httpx.TransportError:
                time.sleep(0.1)
        stop(process)
    raise AssertionError(f"jobctl serve did not start:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def web_project(project: Path) -> Path:
    (project / "jobctl.toml").write_text(CONFIG)
    return project


@pytest.fixture
def console(web_project: Path, cli: Cli) -> Iterator[Console]:
    assert cli("db", "upgrade").code == 0
    server = start_console(cli)
    try:
        yield server
    finally:
        stop(server.process)
