"""``jobctl sync`` from a real local HTTP server: secrets, retries, 404, ETag, gzip."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli
from tests.fixtures.httpserver import HTTPTestServer, Step, http_server
from tests.jobs import (
    checksum,
    configure,
    counts,
    expect,
    gen_feed,
    key_of,
    last_run,
    latest,
    load_records,
    runs,
    source_stats,
    stored,
    sync,
    sync_fails,
    xmins,
)

N = 3000
SECRET = "s3cr3t-QUERY-token-123"
BEARER = "s3cr3t-BEARER-token-456"


@pytest.fixture
def srv() -> Iterator[HTTPTestServer]:
    with http_server() as server:
        yield server


def _source(url: str, extra: str = "") -> str:
    return f"""
[sources.permits]
url = "{url}"
key = ["PERMIT_NUM", "REVISION_NUM"]
table = "permits"
retries = 3
backoff = "10ms"
{extra}"""


def test_secrets_in_the_url_never_show(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    body = gen_feed(N).path.read_bytes()
    srv.serve("/exports/2026-01-15/permits.json", body)
    url = srv.url("/exports/{date}/permits.json") + f"?token={SECRET}&page=1"
    configure(project, _source(url, 'token = "${FEED_TOKEN}"\n'))
    (project / ".env").write_text(f"FEED_TOKEN={BEARER}\n")

    ok = cli("-v", "sync", "--date", "2026-01-15")
    assert ok.code == 0, ok.stderr
    # a failure with the same URL: 404, not retried, clearly reported
    failed = cli("-v", "sync", "--date", "2026-01-14")
    assert failed.code == 1, failed.stderr

    # the server did get both credentials
    (got,) = srv.requests_for("/exports/2026-01-15/permits.json")
    assert got.query["token"] == [SECRET] and got.headers["authorization"] == f"Bearer {BEARER}"
    assert len(srv.requests_for("/exports/2026-01-14/permits.json")) == 1  # no retry on 404

    listed = runs(cli)
    assert [r["status"] for r in listed] == ["failed", "completed"]
    bad, good = listed
    assert counts(good) == expect(N, new=N)
    assert good["partition"] == "2026-01-15" and bad["partition"] == "2026-01-14"
    assert good["source"] == srv.url("/exports/2026-01-15/permits.json") + "?token=***&page=1"
    assert "404" in bad["error_message"] and "token=***" in bad["error_message"]
    assert "404" in failed.stderr and "Traceback" not in failed.stderr
    shown = [cli("runs", "show", str(r["id"]), "--json") for r in listed]
    # wide, so that no secret could hide across a line break
    shown_text = [cli("runs", "show", str(r["id"]), env={"COLUMNS": "500"}) for r in listed]
    assert any(
        "/exports/2026-01-15/permits.json" in line
        for line in json.loads(shown[1].stdout)["log_tail"]
    )
    everything = [ok.stdout, ok.stderr, failed.stdout, failed.stderr, json.dumps(listed)]
    everything += [s.stdout + s.stderr for s in shown + shown_text]
    # every column of the ledger: params, source, error, traceback, log tail
    everything += [str(row) for row in psql.execute("SELECT * FROM jobctl.runs")]
    for text in everything:
        assert SECRET not in text and BEARER not in text
    assert "Traceback" in shown_text[0].stdout  # the failed run's detail was looked at
    assert psql.execute(
        "SELECT count(*) FROM permits WHERE partition_date = '2026-01-15'"
    ).fetchone() == (N,)


def test_retries_on_503_then_succeeds(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    body = gen_feed(N).path.read_bytes()
    srv.serve("/permits.json", body, statuses=[503, Step(503, retry_after="0")])
    configure(project, _source(srv.url("/permits.json")))
    result = sync(cli)
    assert len(srv.requests_for("/permits.json")) == 3
    run = latest(psql)
    assert run["status"] == "completed" and counts(run) == expect(N, new=N)
    info = source_stats(run)
    assert info["requests"] == 3 and info["http_status"] == 200
    assert "503" in result.stderr and "retrying" in result.stderr
    assert any("503" in line for line in run["log_tail"])


def test_503_until_retries_run_out_fails_and_changes_nothing(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    srv.serve("/permits.json", b"[]", statuses=[503] * 5)
    config = _source(srv.url("/permits.json")).replace("retries = 3", "retries = 2")
    configure(project, config)
    sync(cli, code=1)
    assert len(srv.requests_for("/permits.json")) == 3
    run = latest(psql)
    assert run["status"] == "failed"
    assert "503" in run["error_message"] and "3 requests" in run["error_message"]
    assert psql.execute("SELECT to_regclass('permits')").fetchone() == (None,)


def test_etag_gives_304_recorded_as_unchanged(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    v1, v2 = gen_feed(N), gen_feed(N, change_pct=5)
    srv.serve("/permits.json", v1.path.read_bytes(), etag='"v1"')
    configure(project, _source(srv.url("/permits.json")))
    sync(cli)
    assert counts(latest(psql)) == expect(N, new=N)
    before, sum_before = xmins(psql), checksum(psql)

    sync(cli)
    second = srv.requests_for("/permits.json")[1]
    assert second.headers["if-none-match"] == '"v1"'
    run = latest(psql)
    assert counts(run) == expect(N, unchanged=N)
    info = source_stats(run)
    assert info["not_modified"] is True and info["http_status"] == 304
    assert "304" in info["reason"]
    assert xmins(psql) == before and checksum(psql) == sum_before

    # --force downloads again without validators and compares every record
    sync(cli, "--force")
    assert "if-none-match" not in srv.requests_for("/permits.json")[2].headers
    run = latest(psql)
    assert counts(run) == expect(N, unchanged=N) and "not_modified" not in source_stats(run)
    assert xmins(psql) == before

    # a new version with a new ETag is downloaded and applied
    srv.serve("/permits.json", v2.path.read_bytes(), etag='"v2"')
    sync(cli)
    assert srv.requests_for("/permits.json")[3].headers["if-none-match"] == '"v1"'
    assert counts(latest(psql)) == expect(
        v2.written, new=v2.new, updated=v2.changed, unchanged=N - v2.changed
    )
    sync(cli)
    assert srv.requests_for("/permits.json")[4].headers["if-none-match"] == '"v2"'
    assert counts(last_run(cli)) == expect(N + v2.new, unchanged=N + v2.new)


def test_gzip_content_encoding_and_gzip_file(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    feed = gen_feed(N)
    body = feed.path.read_bytes()
    srv.serve("/permits.json", body, gzip=True, content_type="application/json")
    srv.serve("/permits.json.gz", gzip.compress(body, mtime=0))
    configure(
        project,
        _source(srv.url("/permits.json"))
        + _source(srv.url("/permits.json.gz"))
        .replace("sources.permits", "sources.archive")
        .replace('"permits"', '"archive"'),
    )
    sync(cli)
    (req,) = srv.requests_for("/permits.json")
    assert "gzip" in req.headers["accept-encoding"]  # so the server compressed it
    run = latest(psql)
    assert counts(run) == expect(2 * N, new=2 * N)
    assert source_stats(run)["bytes"] == len(body)
    expected = {key_of(r): r for r in load_records(feed.path)}
    assert stored(psql) == expected
    assert stored(psql, "archive") == expected


def test_an_undecodable_feed_names_the_charset_its_server_declared(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    """A government CSV in windows-1252, read as UTF-8: the run fails, naming the charset
    the server declared; set as the source's encoding, the feed syncs. The declared
    charset is not applied by itself (a server's default is no proof)."""
    body = "id,name\n1,Caf\u00e9 Nord\n2,Stra\u00dfe\n".encode("cp1252")
    srv.serve("/wards.csv", body, content_type="text/csv; charset=windows-1252")
    source = f"""
[sources.wards]
url = "{srv.url("/wards.csv")}"
format = "csv"
key = ["id"]
table = "wards"
"""
    configure(project, source)
    message = sync_fails(cli, psql)
    assert message.startswith("wards: feed is not valid utf-8 near byte 13"), message
    assert (
        'the server declared charset=windows-1252: if that is right, set encoding = "windows-1252"'
        in message
    )
    assert message.endswith("; nothing was applied")
    assert psql.execute("SELECT to_regclass('wards')").fetchone() == (None,)

    configure(project, source + 'encoding = "windows-1252"\n')
    sync(cli)
    rows = psql.execute("SELECT id, data->>'name' FROM wards ORDER BY id").fetchall()
    assert rows == [("1", "Caf\u00e9 Nord"), ("2", "Stra\u00dfe")]


def test_a_declared_charset_that_matches_adds_no_hint(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    srv.serve("/bad.csv", b"id,name\n1,caf\xe9\n", content_type="text/csv; charset=UTF-8")
    configure(
        project,
        f'''
[sources.bad]
url = "{srv.url("/bad.csv")}"
format = "csv"
key = ["id"]
table = "bad"
''',
    )
    message = sync_fails(cli, psql)
    assert "not valid utf-8" in message and "declared" not in message, message


def test_url_option_replaces_the_configured_location(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer, tmp_path: Path
) -> None:
    shutil.copy(gen_feed(N).path, tmp_path / "local.json")
    srv.serve("/other.json", (tmp_path / "local.json").read_bytes())
    configure(project, _source(srv.url("/missing.json")))
    sync(cli, "--url", srv.url(f"/other.json?api_key={SECRET}"))
    run = last_run(cli)
    assert counts(run) == expect(N, new=N)
    assert run["source"] == srv.url("/other.json?api_key=***")
    assert srv.requests_for("/missing.json") == []
