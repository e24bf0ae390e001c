"""``jobctl sync``: bad input, date-dependent sources, CSV / NDJSON with fields and types."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli
from tests.jobs import (
    PERMITS_SOURCE,
    checksum,
    configure,
    counts,
    expect,
    gen_feed,
    key_of,
    latest,
    load_records,
    sync,
    table_exists,
    write_json,
    write_ndjson,
)

N = 3000
JUNK_COST = "DO NOT UPDATE OR DELETE THIS INFO FIELD"
TWO_SOURCES = (
    PERMITS_SOURCE
    + """
[sources.other]
path = "other.json"
key = "id"
table = "other"
"""
)


def _future() -> str:
    return (datetime.now(UTC).date() + timedelta(days=2)).isoformat()


@pytest.mark.parametrize(
    ("toml", "args", "needles"),
    [
        pytest.param(
            PERMITS_SOURCE, ("--date", "2026-02-30"), ("--date", "2026-02-30"), id="feb-30"
        ),
        pytest.param(
            PERMITS_SOURCE, ("--date", "yesterday"), ("--date", "'yesterday'"), id="not-iso"
        ),
        pytest.param(PERMITS_SOURCE, ("--date", "FUTURE"), ("in the future",), id="future"),
        pytest.param(PERMITS_SOURCE, ("--source", "nope"), ("'nope'", "permits"), id="source"),
        pytest.param(
            PERMITS_SOURCE, ("--file", "missing.json"), ("--file", "missing.json"), id="file"
        ),
        pytest.param(TWO_SOURCES, ("--file", "feed.json"), ("--source",), id="file-2-sources"),
        pytest.param(
            PERMITS_SOURCE, ("--file", "feed.json", "--url", "http://x/y"), ("--url",), id="both"
        ),
        pytest.param(
            PERMITS_SOURCE, ("--url", "ftp://example.org/f.json"), ("ftp://",), id="url-scheme"
        ),
        pytest.param(
            PERMITS_SOURCE,
            ("--url", "http://[::1/x?token=s3cret99"),
            ("not a valid URL",),
            id="url-malformed",
        ),
        pytest.param(
            PERMITS_SOURCE + 'colour = "blue"\n',
            (),
            ("sources.permits.colour", "unknown key"),
            id="unknown-key",
        ),
        pytest.param(
            PERMITS_SOURCE.replace('key = ["PERMIT_NUM", "REVISION_NUM"]', ""),
            (),
            ("sources.permits.key",),
            id="missing-key",
        ),
        pytest.param(
            PERMITS_SOURCE + 'format = "xml"\n',
            (),
            ("sources.permits.format", "'xml'"),
            id="bad-format",
        ),
        pytest.param(
            PERMITS_SOURCE + 'types = { X = "money" }\n',
            (),
            ("sources.permits.types.X", "'money'"),
            id="bad-type",
        ),
        pytest.param(
            PERMITS_SOURCE.replace('"permits"', '"bad name"'),
            (),
            ("sources.permits.table", "'bad name'"),
            id="bad-table",
        ),
        pytest.param("", (), ("no sources",), id="no-sources"),
        pytest.param(
            PERMITS_SOURCE + "max_removed_ratio = 1.5\n",
            (),
            ("sources.permits.max_removed_ratio", "1.5", "between 0 and 1"),
            id="removed-ratio-range",
        ),
        pytest.param(
            PERMITS_SOURCE + 'max_removed_ratio = "half"\n',
            (),
            ("sources.permits.max_removed_ratio", "'half'"),
            id="removed-ratio-type",
        ),
        pytest.param(
            PERMITS_SOURCE + 'exclude = "_id"\n',
            (),
            ("sources.permits.exclude", "'_id'", "list"),
            id="exclude-not-a-list",
        ),
        pytest.param(
            PERMITS_SOURCE + 'fields = { a = "A" }\nexclude = ["_id"]\n',
            (),
            ("sources.permits.exclude", "not both"),
            id="exclude-and-fields",
        ),
        pytest.param(
            PERMITS_SOURCE + 'exclude = ["PERMIT_NUM"]\n',
            (),
            ("sources.permits.exclude", "'PERMIT_NUM' is a key field"),
            id="exclude-key",
        ),
        pytest.param(
            PERMITS_SOURCE + 'error_when = "error"\n',
            (),
            ("sources.permits.error_when", "'error'", "field = value"),
            id="error-when-type",
        ),
        pytest.param(
            PERMITS_SOURCE + 'error_when = { result = ["a"] }\n',
            (),
            ("sources.permits.error_when", "['a']", "field = value"),
            id="error-when-value",
        ),
        pytest.param(
            PERMITS_SOURCE + 'format = "csv"\nerror_when = { result = "error" }\n',
            (),
            ("sources.permits.error_when", "json or json-object", "'csv'"),
            id="error-when-format",
        ),
        pytest.param(
            PERMITS_SOURCE + 'error_when = { result = "error" }\nerror_message = 3\n',
            (),
            ("sources.permits.error_message", "3"),
            id="error-message-type",
        ),
        pytest.param(
            PERMITS_SOURCE + 'error_message = "message"\n',
            (),
            ("sources.permits.error_message", "error_when"),
            id="error-message-alone",
        ),
        pytest.param(
            PERMITS_SOURCE + 'error_when = { result = "error" }\nretry_on_error_body = "yes"\n',
            (),
            ("sources.permits.retry_on_error_body", "'yes'", "true or false"),
            id="retry-on-error-body-type",
        ),
    ],
)
def test_bad_input_is_exit_2_one_line_and_writes_nothing(
    cli: Cli,
    project: Path,
    psql: psycopg.Connection[Any],
    toml: str,
    args: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    configure(project, toml)
    (project / "feed.json").write_text(json.dumps([{"PERMIT_NUM": "1", "REVISION_NUM": "0"}]))
    args = tuple(_future() if a == "FUTURE" else a for a in args)
    result = cli("sync", *args)
    assert result.code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
    if toml and not args:  # a bad value in the file names the file
        assert "jobctl.toml" in lines[0]
    assert psql.execute("SELECT count(*) FROM jobctl.runs").fetchone() == (0,)
    assert psql.execute("SELECT count(*) FROM jobctl.feed_state").fetchone() == (0,)
    assert not table_exists(psql, "permits")


DAILY = """
[sources.daily]
path = "daily/{date}.ndjson"
format = "ndjson"
key = ["PERMIT_NUM", "REVISION_NUM"]
table = "daily_permits"

[[sources.daily.checks]]
name = "rows_of_the_day"
sql = "SELECT count(*) FROM daily_permits WHERE partition_date = :partition_date"
min = 100
"""


def _per_date(psql: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    rows = psql.execute(
        "SELECT partition_date::text, count(*) FILTER (WHERE removed_at IS NULL),"
        " count(*) FILTER (WHERE removed_at IS NOT NULL) FROM daily_permits GROUP BY 1"
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_date_dependent_source(cli: Cli, project: Path, psql: psycopg.Connection[Any]) -> None:
    records = load_records(gen_feed(N).path)
    day1, day2 = records[:100], records[50:150]  # 50 keys in common
    configure(project, DAILY)
    write_ndjson(project / "daily" / "2026-01-10.ndjson", day1)
    write_ndjson(project / "daily" / "2026-01-11.ndjson", day2)

    sync(cli, "--date", "2026-01-10")
    run = latest(psql)
    assert counts(run) == expect(100, new=100)
    assert run["partition"] == "2026-01-10" and run["params"]["date"] == "2026-01-10"
    assert run["source"] == str(project / "daily" / "2026-01-10.ndjson")
    sync(cli, "--date", "2026-01-11")
    run = latest(psql)
    assert counts(run) == expect(100, new=100)
    assert run["partition"] == "2026-01-11"
    assert run["stats"]["sources"]["daily"]["checks"][0]["value"] == 100  # that date only
    assert _per_date(psql) == {"2026-01-10": (100, 0), "2026-01-11": (100, 0)}

    # removal within one date leaves the other date alone, shared keys included
    gone = day1[60:65]
    write_ndjson(project / "daily" / "2026-01-10.ndjson", [r for r in day1 if r not in gone])
    sync(cli, "--date", "2026-01-10")
    run = latest(psql)
    assert counts(run) == expect(95, unchanged=95, removed=5)
    (check,) = run["stats"]["sources"]["daily"]["checks"]
    assert check["value"] == 100 and check["ok"] is True  # removed rows are still rows
    assert _per_date(psql) == {"2026-01-10": (95, 5), "2026-01-11": (100, 0)}
    removed = psql.execute(
        "SELECT partition_date::text, permit_num, revision_num FROM daily_permits"
        " WHERE removed_at IS NOT NULL"
    ).fetchall()
    assert sorted(removed) == sorted(("2026-01-10", *key_of(r)) for r in gone)
    # each date has its own state: the second date is still recognised as unchanged
    sync(cli, "--date", "2026-01-11")
    run = latest(psql)
    assert counts(run) == expect(100, unchanged=100)
    assert run["stats"]["sources"]["daily"]["not_modified"] is True
    # a date whose file does not exist fails clearly and writes nothing
    result = sync(cli, "--date", "2026-01-12", code=1)
    run = latest(psql)
    assert run["status"] == "failed" and "2026-01-12.ndjson" in run["error_message"]
    assert "does not exist" in result.stderr
    assert _per_date(psql) == {"2026-01-10": (95, 5), "2026-01-11": (100, 0)}


CSV_AND_NDJSON = """
[sources.permits_csv]
path = "permits.csv"
format = "csv"
key = ["permit", "revision"]
table = "permits_csv"
max_error_ratio = 0.1
fields = { permit = "PERMIT_NUM", revision = "REVISION_NUM", status = "STATUS", \
cost = "EST_CONST_COST", units = "DWELLING_UNITS_CREATED", issued = "ISSUED_DATE", \
geo = "GEO_ID", direction = "STREET_DIRECTION" }
types = { cost = "float", units = "int", issued = "date", geo = "int" }

[sources.permits_nd]
path = "permits.ndjson"
format = "ndjson"
key = ["id", "rev"]
table = "permits_nd"
fields = { id = "PERMIT_NUM", rev = "REVISION_NUM", cost = "EST_CONST_COST", geo = "GEO_ID", \
lost = "DWELLING_UNITS_LOST" }
types = { cost = "text", geo = "text", lost = "bool" }
"""


def _table(psql: psycopg.Connection[Any], table: str, k1: str, k2: str) -> dict[Any, Any]:
    rows = psql.execute(f"SELECT {k1}, {k2}, data FROM {table}").fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def test_csv_and_ndjson_with_fields_and_types(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)[:1000]
    junk = {key_of(r) for r in records if r["EST_CONST_COST"] == JUNK_COST}
    assert junk
    with (project / "permits.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(records[0])
        writer.writerows([["" if v is None else v for v in r.values()] for r in records])
    lines = [json.dumps(r) for r in records]
    lines.insert(500, '{"PERMIT_NUM": "cut')  # not JSON: a bad record at line 501
    (project / "permits.ndjson").write_text("\n".join(lines) + "\n")
    configure(project, CSV_AND_NDJSON)

    sync(cli)
    run = latest(psql)
    assert run["status"] == "completed", run["error_message"]
    assert counts(run) == expect(2001, new=2000 - len(junk), errors=len(junk) + 1)

    stats = run["stats"]["sources"]
    assert stats["permits_csv"]["errors"] == len(junk)
    assert "cost" in stats["permits_csv"]["error_samples"][0]["reason"]
    csv_rows = _table(psql, "permits_csv", "permit", "revision")
    assert set(csv_rows) == {key_of(r) for r in records} - junk
    for r in records:
        if key_of(r) in junk:
            continue
        assert csv_rows[key_of(r)] == {
            "permit": r["PERMIT_NUM"],
            "revision": r["REVISION_NUM"],
            "status": r["STATUS"],
            "cost": None if r["EST_CONST_COST"] is None else float(r["EST_CONST_COST"]),
            "units": r["DWELLING_UNITS_CREATED"],
            "issued": r["ISSUED_DATE"],
            "geo": r["GEO_ID"],
            "direction": r["STREET_DIRECTION"] or "",  # CSV has no null for text
        }
    assert isinstance(csv_rows[next(iter(csv_rows))]["geo"], int)

    assert stats["permits_nd"]["errors"] == 1
    assert [s["position"] for s in stats["permits_nd"]["error_samples"]] == [501]
    nd_rows = _table(psql, "permits_nd", "id", "rev")
    assert set(nd_rows) == {key_of(r) for r in records}
    for r in records:
        cost, lost = r["EST_CONST_COST"], r["DWELLING_UNITS_LOST"]
        assert nd_rows[key_of(r)] == {
            "id": r["PERMIT_NUM"],
            "rev": r["REVISION_NUM"],
            "cost": None if cost is None else str(cost),
            "geo": str(r["GEO_ID"]),
            "lost": None if lost is None else bool(lost),
        }
    assert table_exists(psql, "permits_nd_v")

    # the same files again, forced: every record read, nothing changed
    sync(cli, "--force")
    assert counts(latest(psql)) == expect(2001, unchanged=2000 - len(junk), errors=len(junk) + 1)


def test_one_record_per_date_with_the_date_as_key(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    """An analytics API's daily summary: json-object, key = [], the date is the key."""
    configure(
        project,
        '[sources.visits]\npath = "api/{date}.json"\nformat = "json-object"\nkey = []\n'
        'table = "visits"\n',
    )
    (project / "api").mkdir()
    (project / "api" / "2026-01-10.json").write_text('{"nb_visits": 10, "nb_actions": 40}')
    (project / "api" / "2026-01-11.json").write_text('{"nb_visits": 11, "nb_actions": 41}')
    sync(cli, "--date", "2026-01-10")
    sync(cli, "--date", "2026-01-11")
    assert counts(latest(psql)) == expect(1, new=1)
    (project / "api" / "2026-01-11.json").write_text('{"nb_visits": 12}')
    sync(cli, "--date", "2026-01-11")
    assert counts(latest(psql)) == expect(1, updated=1)
    rows = psql.execute(
        "SELECT partition_date::text, data FROM visits WHERE removed_at IS NULL ORDER BY 1"
    ).fetchall()
    assert rows == [
        ("2026-01-10", {"nb_visits": 10, "nb_actions": 40}),
        ("2026-01-11", {"nb_visits": 12}),
    ]


def test_empty_key_needs_a_date_dependent_location(cli: Cli, project: Path) -> None:
    configure(
        project, '[sources.x]\npath = "x.json"\nformat = "json-object"\nkey = []\ntable = "x"\n'
    )
    result = cli("sync")
    assert result.code == 2 and "sources.x.key" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_several_sources_apply_all_or_nothing(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    """A run whose second source is malformed leaves the first source's table as it was."""
    records = load_records(gen_feed(N).path)
    configure(project, TWO_SOURCES)
    write_json(project / "feed.json", records[:200])
    write_json(project / "other.json", [{"id": n, "v": n} for n in range(50)])
    sync(cli)
    assert counts(latest(psql)) == expect(250, new=250)
    before = checksum(psql, "permits")

    write_json(project / "feed.json", records[100:400])  # 100 removed, 200 new
    (project / "other.json").write_text('[{"id": 1, "v": 1}, {"id": 2, "v"')  # truncated
    result = sync(cli, code=1)
    assert "other" in result.stderr
    run = latest(psql)
    assert run["status"] == "failed"
    assert "one transaction" in run["stats"]["rolled_back"]
    assert checksum(psql, "permits") == before
    assert psql.execute("SELECT count(*) FROM other").fetchone() == (50,)

    write_json(project / "other.json", [{"id": n, "v": n} for n in range(60)])
    sync(cli)
    assert counts(latest(psql)) == expect(360, new=210, unchanged=150, removed=100)
