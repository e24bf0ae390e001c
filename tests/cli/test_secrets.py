"""Secrets never reach stdout, stderr (text or JSON logs), the runs table or ``runs`` output.

Real processes against a real server: the database password is given in the URL (a
role with that password is created, so a server with password authentication accepts
it; the embedded server trusts local connections and ignores it), a ``${TOKEN}`` sits
in a source URL's path, and the user job ``leaky`` logs and raises with both.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from tests.conftest import Cli, Result, Server
from tests.fixtures.httpserver import HTTPTestServer, http_server

TOKEN = "tk-7f3a9c"
#: (password, as written in the URL): 3 characters, and one that needs percent-encoding
PASSWORDS = [("p@x", "p%40x"), ("p@ss:w0rd", "p%40ss%3Aw0rd")]


def _url_with_password(url: str, user: str, encoded: str) -> str:
    scheme, rest = url.split("://", 1)
    hostpart = rest.rpartition("@")[2] if "@" in rest.split("/", 1)[0] else rest
    return f"{scheme}://{quote(user)}:{encoded}@{hostpart}"


@pytest.fixture(params=PASSWORDS, ids=["3-chars", "percent-encoded"])
def secret_url(
    request: pytest.FixtureRequest, pg_server: Server, db_url: str
) -> Iterator[tuple[str, str, str]]:
    """(database URL with a password, the password, as written) for a login role."""
    password, encoded = request.param
    role = f"jobctl_r_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    try:
        yield _url_with_password(db_url, role, encoded), password, encoded
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pg_server.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _leaky_project(project: Path) -> None:
    (project / "jobctl.toml").write_text(
        'timezone = "UTC"\njobs_module = "myjobs"\n\n'
        "[sources.feed]\n"
        'url = "https://api.example.org/v1/${TOKEN}/export.json"\n'
        'key = ["id"]\ntable = "feed"\n'
    )
    (project / ".env").write_text(f"TOKEN={TOKEN}\n")


def _assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked in:\n{text}"


def _ok(result: Result) -> Result:
    assert result.code == 0, result.stderr
    return result


def _stored_row(db_url: str, run_id: int) -> dict[str, Any]:
    with psycopg.connect(db_url) as conn:
        row = (
            conn.cursor(row_factory=dict_row)
            .execute("SELECT * FROM jobctl.runs WHERE id = %s", (run_id,))
            .fetchone()
        )
    assert row is not None
    return row


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_job_logging_and_failing_with_secrets_shows_none(
    cli: Cli, project: Path, db_url: str, secret_url: tuple[str, str, str], log_format: str
) -> None:
    url, password, encoded = secret_url
    _leaky_project(project)
    env = {"DATABASE_URL": url}
    secrets = (password, encoded, TOKEN)

    ran = cli("--log-format", log_format, "-v", "run", "leaky", env=env)
    assert ran.code == 1, ran.stderr
    _assert_clean(ran.stdout + ran.stderr, *secrets)
    assert "Traceback" not in ran.stderr
    # the lines are there, with the secrets masked (not dropped)
    assert "connecting with password *** (written ***) to https://api.example.org/v1/***/" in (
        ran.stderr
    )
    assert "own logger: password ***" in ran.stderr
    assert "login with password '***' failed" in ran.stderr
    if log_format == "json":
        docs = [json.loads(line) for line in ran.stderr.splitlines() if line.startswith("{")]
        messages = [d["message"] for d in docs]
        assert any(m.startswith("connecting with password ***") for m in messages)

    (listed,) = json.loads(_ok(cli("runs", "list", "--json", env=env)).stdout)
    run_id = listed["id"]
    shown = _ok(cli("runs", "show", str(run_id), "--json", env=env))
    text_show = _ok(cli("runs", "show", str(run_id), env=env))
    stored = _stored_row(db_url, run_id)
    for blob in (json.dumps(listed), shown.stdout, text_show.stdout, repr(stored)):
        _assert_clean(blob, *secrets)
    run = json.loads(shown.stdout)
    assert run["source"] == "https://api.example.org/v1/***/export.json"
    assert stored["source"] == run["source"]
    assert "login with password '***' failed" in stored["error_message"]
    assert "login with password '***' failed" in stored["error_detail"]  # the traceback
    assert any("connecting with password ***" in line for line in stored["log_tail"])


@pytest.mark.parametrize("secret_url", [PASSWORDS[0]], ids=["3-chars"], indirect=True)
def test_short_password_is_masked_as_a_token_not_inside_words(
    cli: Cli, project: Path, secret_url: tuple[str, str, str]
) -> None:
    url, password, _ = secret_url
    assert len(password) < 4
    _leaky_project(project)
    # "p@x" inside a longer token is not the password: it stays readable
    (project / "myjobs.py").write_text(
        (project / "myjobs.py").read_text()
        + "\n\n@jobctl.job('wordy')\ndef wordy(ctx):\n    ctx.log.info('mail ap@xy.org')\n"
    )
    ran = cli("run", "wordy", env={"DATABASE_URL": url})
    assert ran.code == 0, ran.stderr
    assert "mail ap@xy.org" in ran.stderr


def test_error_before_the_settings_are_read_masks_the_database_password(cli: Cli) -> None:
    bad = "postgresql://u:p%40x@[::1/db"
    result = cli("--database-url", bad, "runs", "list")
    assert result.code != 0
    _assert_clean(result.stdout + result.stderr, "p@x", "p%40x")
    assert "Traceback" not in result.stderr


@pytest.fixture
def srv() -> Iterator[HTTPTestServer]:
    with http_server() as server:
        yield server


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_token_in_a_url_path_is_never_stored_or_shown(
    cli: Cli, project: Path, db_url: str, srv: HTTPTestServer, log_format: str
) -> None:
    records = [{"id": i, "name": f"n{i}"} for i in range(5)]
    srv.serve(f"/v1/{TOKEN}/export.json", json.dumps(records).encode())
    (project / "jobctl.toml").write_text(
        'timezone = "UTC"\n\n[sources.feed]\n'
        f'url = "{srv.url("/v1/${TOKEN}/export.json")}"\n'
        'key = ["id"]\ntable = "feed"\nretries = 0\n'
    )
    (project / ".env").write_text(f"TOKEN={TOKEN}\n")

    ok = cli("--log-format", log_format, "-v", "sync")
    assert ok.code == 0, ok.stderr
    assert len(srv.requests_for(f"/v1/{TOKEN}/export.json")) == 1  # the server got the token
    srv.serve(f"/v1/{TOKEN}/export.json", b"", statuses=[404])
    failed = cli("--log-format", log_format, "-v", "sync")
    assert failed.code == 1, failed.stderr

    listed = json.loads(_ok(cli("runs", "list", "--json")).stdout)
    assert [r["status"] for r in listed] == ["failed", "completed"]
    expected = srv.url("/v1/***/export.json")
    assert [r["source"] for r in listed] == [expected, expected]
    for out in (ok, failed):
        _assert_clean(out.stdout + out.stderr, TOKEN)
        assert "/v1/***/export.json" in out.stderr
    for r in listed:
        shown = _ok(cli("runs", "show", str(r["id"]), "--json"))
        _assert_clean(shown.stdout, TOKEN)
        assert json.loads(shown.stdout)["source"] == expected
        _assert_clean(repr(_stored_row(db_url, r["id"])), TOKEN)
