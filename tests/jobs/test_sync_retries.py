"""One retry budget per run: a source's HTTP retries and the runner's retries do not nest.

A source with ``retries = N`` makes at most N + 1 requests in a run (the runner does not
repeat them); a source with ``retries = 0`` leaves a passing failure to the job's
``retries`` (one request per attempt). The run's stats say how many requests were made.
"""

from __future__ import annotations

import socket
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli
from tests.fixtures.httpserver import HTTPTestServer, Step, http_server
from tests.jobs import configure, latest, source_stats, sync

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = tomllib.loads((ROOT / "examples" / "jobctl.toml").read_text())


@pytest.fixture
def srv() -> Iterator[HTTPTestServer]:
    with http_server() as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _source(url: str, extra: str = "") -> str:
    return f"""
[sources.permits]
url = "{url}"
key = ["PERMIT_NUM", "REVISION_NUM"]
table = "permits"
{extra}"""


def test_refused_connection_with_the_example_retry_settings_fails_fast(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    # The example's job retry settings (retries = 2, retry_delay = "1m") and the
    # source's defaults (retries = 3, backoff = 1s): before, the runner repeated the
    # four requests twice more after waits of a minute and more (4 min 21 s measured).
    job = EXAMPLE["jobs"]["sync"]
    assert job["retries"] > 0  # the case this test is about: both layers configured
    example_source = EXAMPLE["sources"]["permits"]
    assert "retries" not in example_source and "backoff" not in example_source
    url = f"http://127.0.0.1:{_closed_port()}/permits.json"
    configure(
        project,
        f'[jobs.sync]\nretries = {job["retries"]}\nretry_delay = "{job["retry_delay"]}"\n'
        + _source(url),
    )
    started = time.monotonic()
    result = sync(cli, code=1)
    took = time.monotonic() - started
    # 4 requests, 3 waits of at most 1 + 2 + 4 s (full jitter): bounded by ~7 s + startup
    assert took < 20, f"took {took:.1f}s"
    run = latest(psql)
    assert run["status"] == "failed" and run["attempts"] == 1
    assert f"GET {url} failed after 4 requests: ConnectError" in run["error_message"]
    assert "after 4 requests" in result.stderr
    assert source_stats(run)["requests"] == 4


@pytest.mark.parametrize(
    ("source_retries", "requests", "attempts", "said"),
    [
        # The source's own retries are the budget: the runner does not repeat them.
        pytest.param('retries = 2\nbackoff = "10ms"\n', 3, 1, "after 3 requests", id="source"),
        # A source without retries leaves them to the job: one request per attempt.
        pytest.param("retries = 0\n", 3, 3, "after 1 request:", id="job"),
    ],
)
def test_one_layer_of_retries_per_run(
    cli: Cli,
    project: Path,
    psql: psycopg.Connection[Any],
    srv: HTTPTestServer,
    source_retries: str,
    requests: int,
    attempts: int,
    said: str,
) -> None:
    srv.serve("/permits.json", b"[]", statuses=[503] * 20)
    configure(
        project,
        '[jobs.sync]\nretries = 2\nretry_delay = "10ms"\n'
        + _source(srv.url("/permits.json"), source_retries),
    )
    sync(cli, code=1)
    assert len(srv.requests_for("/permits.json")) == requests  # never 3 x 3
    run = latest(psql)
    assert run["attempts"] == attempts
    assert "HTTP 503" in run["error_message"] and said in run["error_message"]
    # Requests of the last attempt.
    assert source_stats(run)["requests"] == requests // attempts


def test_requests_counted_when_a_retry_ends_in_a_4xx(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    srv.serve("/permits.json", b"[]", statuses=[503, Step(503, retry_after="0"), 404])
    configure(project, _source(srv.url("/permits.json"), 'retries = 3\nbackoff = "10ms"\n'))
    sync(cli, code=1)
    assert len(srv.requests_for("/permits.json")) == 3
    run = latest(psql)
    assert "404" in run["error_message"] and run["attempts"] == 1
    assert source_stats(run)["requests"] == 3


def test_requests_recorded_on_success(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    srv.serve("/permits.json", b"[]", statuses=[503])
    configure(project, _source(srv.url("/permits.json"), 'backoff = "10ms"\n'))
    sync(cli)
    info = source_stats(latest(psql))
    assert info["requests"] == 2 and "attempts" not in info
