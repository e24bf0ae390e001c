"""``jobctl sync`` of a SQL source: an application table's rows, per date, into a table."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import Cli, _as_url
from tests.jobs import configure, counts, expect, latest, sync, table_exists

D1, D2 = "2026-03-01", "2026-03-02"
QUERY = (
    "SELECT id, form, amount, created_at FROM form_submissions"
    " WHERE created_at >= :date AND created_at < :date + 1"
)
SOURCE = f"""
[sources.subs]
query = "{QUERY}"
key = ["id"]
table = "subs"
"""


def _app_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "CREATE TABLE form_submissions (id int PRIMARY KEY, form text,"
        " amount numeric, created_at timestamptz)"
    )
    conn.execute(
        "INSERT INTO form_submissions VALUES"
        " (1, 'contact', 12345678901234567.89, '2026-03-01 08:00Z'),"
        " (2, 'contact', 1.50, '2026-03-01 12:00Z'),"
        " (3, 'signup', NULL, '2026-03-01 23:59:59Z'),"
        " (4, 'signup', 2, '2026-03-02 00:00Z'),"
        " (5, 'contact', 3, '2026-03-02 10:00Z')"
    )


@pytest.fixture
def app(cli: Cli, psql: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    _app_table(psql)
    configure(cli.cwd, SOURCE)
    return psql


def _active(psql: psycopg.Connection[Any]) -> dict[str, Any]:
    rows = psql.execute(
        "SELECT id, partition_date::text, data FROM subs WHERE removed_at IS NULL"
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_counts_across_resyncs_and_removal_within_the_date(
    cli: Cli, app: psycopg.Connection[Any]
) -> None:
    sync(cli, "--date", D1)
    assert counts(latest(app)) == expect(3, new=3)
    stored = _active(app)
    assert set(stored) == {"1", "2", "3"}
    partition, data = stored["1"]
    assert partition == D1
    assert data == {
        "id": 1,
        "form": "contact",
        "amount": 12345678901234567.89,  # jsonb numeric: exact (psycopg gives Decimal)
        "created_at": "2026-03-01T08:00:00+00:00",
    }
    raw = app.execute("SELECT data->>'amount' FROM subs WHERE id = '1'").fetchone()
    assert raw == ("12345678901234567.89",)
    assert app.execute("SELECT data->>'amount' FROM subs WHERE id = '2'").fetchone() == ("1.5",)

    sync(cli, "--date", D1)
    assert counts(latest(app)) == expect(3, unchanged=3)

    sync(cli, "--date", D2)
    assert counts(latest(app)) == expect(2, new=2)
    assert latest(app)["partition"] == D2

    app.execute("UPDATE form_submissions SET form = 'changed' WHERE id = 2")
    app.execute("DELETE FROM form_submissions WHERE id = 3")
    app.execute("INSERT INTO form_submissions VALUES (6, 'contact', 4, '2026-03-01 13:00Z')")
    sync(cli, "--date", D1)
    assert counts(latest(app)) == expect(3, new=1, updated=1, unchanged=1, removed=1)
    stored = _active(app)
    # removal applies within the date only: D2's rows stay active
    assert set(stored) == {"1", "2", "4", "5", "6"}
    assert stored["2"][1]["form"] == "changed"
    assert stored["4"][0] == D2


def test_sql_error_fails_the_run_and_applies_nothing(
    cli: Cli, app: psycopg.Connection[Any]
) -> None:
    sync(cli, "--date", D1)
    before = _active(app)
    app.execute("ALTER TABLE form_submissions RENAME COLUMN form TO kind")
    app.execute("UPDATE form_submissions SET amount = 99")
    result = sync(cli, "--date", D1, code=1)
    assert 'column "form" does not exist' in result.stderr
    assert "nothing was applied" in result.stderr
    run = latest(app)
    assert run["status"] == "failed"
    assert 'subs: the query failed: column "form" does not exist' in run["error_message"]
    assert _active(app) == before


@pytest.mark.parametrize(
    ("query", "refusal"),
    [
        pytest.param(
            "SELECT id, wipe() AS w FROM form_submissions",
            "cannot execute DELETE in a read-only transaction",
            id="function-that-writes",
        ),
        pytest.param(
            "WITH gone AS (DELETE FROM form_submissions RETURNING *) SELECT * FROM gone",
            "data-modifying statements",
            id="data-modifying-with",
        ),
    ],
)
def test_a_query_that_writes_is_refused_by_the_server(
    cli: Cli, app: psycopg.Connection[Any], query: str, refusal: str
) -> None:
    app.execute(
        "CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS"
        " 'DELETE FROM form_submissions; SELECT 1'"
    )
    configure(cli.cwd, SOURCE.replace(QUERY, query))
    result = sync(cli, "--date", D1, code=1)
    assert refusal in result.stderr
    assert app.execute("SELECT count(*) FROM form_submissions").fetchone() == (5,)
    assert not table_exists(app, "subs")


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        pytest.param(
            SOURCE.replace('query = "', 'path = "x.json"\nquery = "'),
            ("sources.subs.query", "not query and path"),
            id="query-and-path",
        ),
        pytest.param(
            SOURCE.replace(QUERY, "DELETE FROM form_submissions"),
            ("sources.subs.query", "'DELETE'", "only reads"),
            id="writes",
        ),
        pytest.param(
            SOURCE.replace(":date + 1", ":until"),
            ("sources.subs.query", ":until"),
            id="unknown-param",
        ),
        pytest.param(
            SOURCE.replace(QUERY, "SELECT * FROM form_submissions") + "date_key = true\n",
            ("sources.subs.date_key", "does not bind :date"),
            id="date-key-without-date",
        ),
        pytest.param(
            SOURCE.replace(QUERY, "SELECT * FROM form_submissions").replace(
                'key = ["id"]', "key = []"
            ),
            ("sources.subs.key",),
            id="keyless-not-dated",
        ),
        pytest.param(
            SOURCE + 'format = "csv"\n', ("sources.subs.format", "not a query"), id="format"
        ),
        pytest.param(
            SOURCE + 'database_url = "mysql://u:hunter22@h/db"\n',
            ("sources.subs.database_url", "not a PostgreSQL URL"),
            id="db-url-scheme",
        ),
        pytest.param(
            'path = "x.json"\n'.join(SOURCE.split('query = "' + QUERY + '"\n'))
            + 'database_url = "postgresql://h/db"\n',
            ("sources.subs.database_url", "only means something with query"),
            id="db-url-without-query",
        ),
    ],
)
def test_bad_query_config_exits_2(
    cli: Cli, psql: psycopg.Connection[Any], body: str, needles: tuple[str, ...]
) -> None:
    configure(cli.cwd, body)
    result = sync(cli, "--date", D1, code=2)
    line = result.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in line, result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter22" not in result.stderr
    assert psql.execute("SELECT count(*) FROM jobctl.runs").fetchone() == (0,)


def test_file_option_does_not_apply_to_a_query(cli: Cli, app: psycopg.Connection[Any]) -> None:
    (cli.cwd / "feed.json").write_text("[]")
    result = sync(cli, "--source", "subs", "--file", "feed.json", code=2)
    assert "is a query" in result.stderr


@pytest.fixture
def other_db(db_url: str) -> Iterator[str]:
    """Another database on the same server, with the application table, as a URL with a
    password (the test server trusts local connections: the password is only carried)."""
    name = f"jobctl_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info: dict[str, Any] = dict(psycopg.conninfo.conninfo_to_dict(db_url))
    info.update(dbname=name, password="Sq1-s3cret-pw")
    url = _as_url(psycopg.conninfo.make_conninfo(**info))
    with psycopg.connect(url, autocommit=True) as conn:
        _app_table(conn)
    yield url
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_database_url_reads_another_database_and_hides_its_password(
    cli: Cli, psql: psycopg.Connection[Any], other_db: str
) -> None:
    assert "Sq1-s3cret-pw" in other_db
    configure(cli.cwd, SOURCE + f'database_url = "{other_db}"\n')
    result = sync(cli, "--date", D2)
    assert not table_exists(psql, "form_submissions")  # read from the other database
    assert counts(latest(psql)) == expect(2, new=2)
    listed = cli("runs", "list", "--json")
    assert listed.code == 0
    runs = json.loads(listed.stdout)
    assert "query on postgresql://" in runs[0]["source"]
    assert "***" in runs[0]["source"]
    for text in (
        listed.stdout,
        result.stdout,
        result.stderr,
        json.dumps(latest(psql), default=str),
    ):
        assert "Sq1-s3cret-pw" not in text
