"""``jobctl sync`` refuses what would damage a table: cut feeds, mass removal, error answers.

Every refusal is checked the same way: the run is ``failed`` with the reason, and the
target table and ``jobctl.feed_state`` are exactly as before (a checksum of every row).
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli
from tests.fixtures.httpserver import HTTPTestServer, http_server
from tests.jobs import (
    checksum,
    configure,
    counts,
    expect,
    gen_feed,
    key_of,
    latest,
    load_records,
    source_stats,
    stored,
    sync,
    table_exists,
    wait_until,
    write_ndjson,
)

N = 3000
KEY = 'key = ["PERMIT_NUM", "REVISION_NUM"]'


def _source(location: str, fmt: str, extra: str = "") -> str:
    where = "url" if location.startswith("http") else "path"
    return f"""
[sources.permits]
{where} = "{location}"
format = "{fmt}"
{KEY}
table = "permits"
retries = 1
backoff = "10ms"
{extra}"""


def _write_csv(path: Path, records: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(records[0])
        writer.writerows([["" if v is None else v for v in r.values()] for r in records])
    return path


def _state(psql: psycopg.Connection[Any]) -> list[Any]:
    return psql.execute("SELECT * FROM jobctl.feed_state ORDER BY 1, 2").fetchall()


def _cut_mid_line(data: bytes, fraction: float) -> bytes:
    cut = data[: int(len(data) * fraction)]
    return cut[:-1] if cut.endswith(b"\n") else cut


@pytest.fixture
def srv() -> Iterator[HTTPTestServer]:
    with http_server() as server:
        yield server


# --------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_cut_line_format_feed_fails_and_applies_nothing(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], fmt: str
) -> None:
    """``head -c`` of a complete feed: before, the rest of the table was marked removed."""
    records = load_records(gen_feed(N).path)
    feed = project / f"feed.{fmt}"
    configure(project, _source(feed.name, fmt))
    (write_ndjson if fmt == "ndjson" else _write_csv)(feed, records)
    sync(cli)
    before, state = checksum(psql), _state(psql)

    cut = _cut_mid_line(feed.read_bytes(), 0.6)
    feed.write_bytes(cut)
    result = sync(cli, code=1)
    run = latest(psql)
    assert run["status"] == "failed"
    message = run["error_message"]
    assert "the last line has no newline (truncated?)" in message, message
    assert "nothing was applied" in message and message in result.stderr
    assert checksum(psql) == before and _state(psql) == state
    # the failed run says how many records it read (the cut one included), none removed
    read = cut.count(b"\n") - (1 if fmt == "csv" else 0)  # complete lines; the header is none
    assert run["records_total"] == read and run["records_removed"] == 0


def test_http_body_shorter_than_its_content_length_fails(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    records = load_records(gen_feed(N).path)
    body = write_ndjson(project / "v1.ndjson", records).read_bytes()
    srv.serve("/permits.ndjson", body)
    configure(project, _source(srv.url("/permits.ndjson"), "ndjson"))
    sync(cli)
    before, state = checksum(psql), _state(psql)

    # cut on a line boundary: the bytes alone look complete, Content-Length does not
    at = body.index(b"\n", len(body) // 3) + 1
    srv.serve("/permits.ndjson", body, truncate_at=at)
    sync(cli, code=1)
    run = latest(psql)
    assert run["status"] == "failed"
    assert "incomplete" in run["error_message"] and "2 requests" in run["error_message"]
    assert len(srv.requests_for("/permits.ndjson")) == 3  # 1 + a retry
    assert checksum(psql) == before and _state(psql) == state


class _Http10Server:
    """HTTP/1.0 without Content-Length: the body ends where the server closes the socket."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/feed.ndjson"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/x-ndjson\r\n\r\n")
                conn.sendall(self.body)

    def close(self) -> None:
        self.sock.close()


def test_close_delimited_http_body_cut_mid_line_fails(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)
    body = write_ndjson(project / "v1.ndjson", records).read_bytes()
    server = _Http10Server(body)
    try:
        configure(project, _source(server.url, "ndjson"))
        sync(cli)
        assert counts(latest(psql)) == expect(N, new=N)
        before = checksum(psql)
        server.body = _cut_mid_line(body, 0.5)  # what a dropped connection delivers
        sync(cli, code=1)
    finally:
        server.close()
    run = latest(psql)
    assert run["status"] == "failed" and "truncated" in run["error_message"]
    assert checksum(psql) == before


# --------------------------------------------------------------------------- max_removed_ratio


def test_a_feed_that_shrinks_a_lot_is_refused_unless_forced(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)
    feed = project / "feed.ndjson"
    configure(project, _source(feed.name, "ndjson"))
    write_ndjson(feed, records)
    sync(cli)
    before, state = checksum(psql), _state(psql)

    kept = records[: int(N * 0.4)]  # cut on a line boundary: a valid, shrunken feed
    write_ndjson(feed, kept)
    result = sync(cli, code=1)
    run = latest(psql)
    assert run["status"] == "failed"
    message = run["error_message"]
    gone = N - len(kept)
    assert f"would mark {gone} of {N} active rows removed" in message, message
    assert "max_removed_ratio 50%" in message and "--force" in message
    assert "nothing was applied" in message and "--force" in result.stderr
    assert source_stats(run)["would_remove"] == gone
    assert run["records_total"] == len(kept) and run["records_removed"] == 0
    assert checksum(psql) == before and _state(psql) == state

    # a real mass removal: --force applies it
    sync(cli, "--force")
    run = latest(psql)
    assert run["status"] == "completed"
    assert counts(run) == expect(len(kept), unchanged=len(kept), removed=gone)
    assert set(stored(psql)) == {key_of(r) for r in kept}

    # a higher max_removed_ratio lets the next shrink through without --force
    configure(project, _source(feed.name, "ndjson", "max_removed_ratio = 0.95\n"))
    write_ndjson(feed, kept[:100])
    sync(cli)
    assert counts(latest(psql)) == expect(100, unchanged=100, removed=len(kept) - 100)


def test_max_removed_ratio_is_a_share_of_the_dates_rows(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)
    daily_source = _source("daily/{date}.ndjson", "ndjson").replace('"permits"', '"daily"')
    configure(project, daily_source)
    daily = project / "daily"
    write_ndjson(daily / "2026-01-10.ndjson", records[:100])
    write_ndjson(daily / "2026-01-11.ndjson", records[100:300])
    sync(cli, "--date", "2026-01-10")
    sync(cli, "--date", "2026-01-11")
    before = checksum(psql, "daily")
    # 60 of the date's 100 rows: 20 % of the table, 60 % of the date
    write_ndjson(daily / "2026-01-10.ndjson", records[:40])
    sync(cli, "--date", "2026-01-10", code=1)
    message = latest(psql)["error_message"]
    assert "would mark 60 of 100 active rows removed" in message
    assert "of the 2026-01-10 rows" in message
    assert checksum(psql, "daily") == before


# --------------------------------------------------------------------------- exact numbers


NUMBERS_TEXT = [
    '{"id": 1, "big": 18446744073709551616, "money": 12345678901234567.89, "plain": 1.25}',
    '{"id": 2, "big": -9223372036854775809, "money": 0.1000000000000000055511151231257827,'
    ' "plain": 1e3, "huge": 1e400}',
]


def test_numbers_are_stored_exactly_and_hash_alike_in_every_format(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    (project / "n.json").write_text("[\n" + ",\n".join(NUMBERS_TEXT) + "\n]\n")
    (project / "n.ndjson").write_text("\n".join(NUMBERS_TEXT) + "\n")
    (project / "n.obj.json").write_text("[" + ", ".join(NUMBERS_TEXT) + "]")
    configure(
        project,
        "".join(
            f'\n[sources.{name}]\npath = "{path}"\nformat = "{fmt}"\nkey = ["id"]\n'
            f'table = "{name}"\n'
            for name, path, fmt in [
                ("n_json", "n.json", "json"),
                ("n_ndjson", "n.ndjson", "ndjson"),
                ("n_object", "n.obj.json", "json-object"),
            ]
        ),
    )
    sync(cli)
    assert counts(latest(psql)) == expect(6, new=6)
    seen = {}
    for table in ("n_json", "n_ndjson", "n_object"):
        rows = psql.execute(
            f"SELECT id, data->>'big', (data->>'money')::numeric::text, data->>'plain',"
            f" jsonb_typeof(data->'money'), (data->>'huge')::numeric = 1e400,"
            f" encode(hash, 'hex') FROM {table} ORDER BY id"
        ).fetchall()
        seen[table] = rows
    assert seen["n_json"] == seen["n_ndjson"] == seen["n_object"]
    assert [r[:6] for r in seen["n_json"]] == [
        ("1", "18446744073709551616", "12345678901234567.89", "1.25", "number", None),
        (
            "2",
            "-9223372036854775809",
            "0.1000000000000000055511151231257827",
            "1000.0",
            "number",
            True,
        ),
    ]
    # read again, forced: the same numbers, the same hashes — nothing updated
    sync(cli, "--force")
    assert counts(latest(psql)) == expect(6, unchanged=6)


# --------------------------------------------------------------------------- exclude


def test_exclude_drops_columns_that_change_on_every_export(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    """A pandas index column ``""`` and CKAN's ``_id``: renumbered by every export."""
    records = load_records(gen_feed(N).path)[:500]

    def export(path: Path, rows: list[dict[str, Any]], offset: int) -> None:
        _write_csv(path, [{"": i, "_id": i + offset, **r} for i, r in enumerate(rows)])

    body = f'format = "csv"\n{KEY}\n'
    configure(
        project,
        f'[sources.clean]\npath = "a.csv"\ntable = "clean"\n{body}exclude = ["", "_id"]\n'
        f'[sources.raw]\npath = "b.csv"\ntable = "raw"\n{body}',
    )
    export(project / "a.csv", records, 1000)
    export(project / "b.csv", records, 1000)
    sync(cli)
    # the next export: same data, other order, other index values
    export(project / "a.csv", records[::-1], 5000)
    export(project / "b.csv", records[::-1], 5000)
    sync(cli)
    stats = latest(psql)["stats"]["sources"]
    assert (stats["clean"]["updated"], stats["clean"]["unchanged"]) == (0, 500)
    assert stats["raw"]["updated"] == 500  # what every sync said without exclude
    row = psql.execute("SELECT data FROM clean LIMIT 1").fetchone()
    assert row is not None
    assert "" not in row[0] and "_id" not in row[0] and "PERMIT_NUM" in row[0]


# --------------------------------------------------------------------------- downloads


def test_downloads_live_under_the_data_dir_and_killed_ones_are_swept(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    body = gen_feed(N).path.read_bytes()
    downloads = Path(cli.env["JOBCTL_DATA_DIR"]) / "downloads"
    configure(project, _source(srv.url("/permits.json"), "json"))
    srv.serve("/permits.json", body, delay=30)
    proc = cli.popen("sync")
    try:
        (mine,) = wait_until(lambda: list(downloads.glob("sync-*")), what="a download directory")
        run_id, pid = wait_until(
            lambda: psql.execute(
                "SELECT id, pid FROM jobctl.runs WHERE status = 'running'"
            ).fetchone(),
            what="a running sync",
        )
        (mine / "permits.feed.part").write_bytes(body[:1000])  # a download under way
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert mine.name == f"sync-{run_id}-{pid}-{socket.gethostname()}"
    assert (mine / "permits.feed.part").exists()
    other_host_old = downloads / "sync-7-4242-some-other-host"
    other_host_new = downloads / "sync-8-4242-some-other-host"
    for leftover in (other_host_old, other_host_new):
        leftover.mkdir()
        (leftover / "x.feed.part").write_bytes(b"x")
    day_ago = time.time() - 2 * 86400
    os.utime(other_host_old, (day_ago, day_ago))

    srv.serve("/permits.json", body)
    sync(cli)
    assert counts(latest(psql)) == expect(N, new=N)
    # the killed run's (its pid is gone) and the old one went; a live-looking one stays
    assert sorted(p.name for p in downloads.iterdir()) == [other_host_new.name]


# --------------------------------------------------------------------------- restored


def test_rows_back_after_removal_are_restored_not_updated(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)[:300]
    feed = project / "feed.ndjson"
    configure(project, _source(feed.name, "ndjson"))
    write_ndjson(feed, records)
    sync(cli)
    write_ndjson(feed, records[:290])
    sync(cli)
    assert counts(latest(psql)) == expect(290, unchanged=290, removed=10)

    back = [dict(r) for r in records]
    back[295]["STATUS"] = "changed while away"  # restored with new data: still restored
    back[0]["STATUS"] = "changed"  # a real update
    write_ndjson(feed, back)
    sync(cli)
    run = latest(psql)
    assert counts(run) == expect(300, updated=1, unchanged=289)
    assert source_stats(run)["restored"] == 10 and run["stats"]["restored"] == 10
    assert stored(psql) == {key_of(r): r for r in back}


# --------------------------------------------------------------------------- error answers

VISITS = """
[sources.visits]
url = "{url}"
format = "json-object"
key = []
table = "visits"
retries = 2
backoff = "10ms"
error_when = {{ result = "error" }}
error_message = "message"
"""
ERROR = b'{"result": "error", "message": "You can\'t access this resource: token_auth"}'


def test_an_error_answered_with_http_200_fails_with_the_apis_message(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], srv: HTTPTestServer
) -> None:
    srv.serve("/api/2026-01-10.json", ERROR, content_type="application/json")
    configure(project, VISITS.format(url=srv.url("/api/{date}.json")))
    result = sync(cli, "--date", "2026-01-10", code=1)
    run = latest(psql)
    assert run["status"] == "failed"
    expected = (
        "source visits: the API answered an error: You can't access this resource: token_auth"
    )
    assert run["error_message"] == expected and expected in result.stderr
    assert len(srv.requests_for("/api/2026-01-10.json")) == 1  # not retried by default
    assert not table_exists(psql, "visits")

    # retried like a 5xx when the source says the error may pass
    configure(
        project,
        VISITS.format(url=srv.url("/api/{date}.json")) + "retry_on_error_body = true\n",
    )
    sync(cli, "--date", "2026-01-10", code=1)
    assert latest(psql)["error_message"] == expected + " (3 requests)"
    assert len(srv.requests_for("/api/2026-01-10.json")) == 1 + 3

    # an answer that is not an error is data
    srv.serve("/api/2026-01-10.json", b'{"result": "ok", "nb_visits": 7}')
    sync(cli, "--date", "2026-01-10")
    rows = psql.execute("SELECT data FROM visits").fetchall()
    assert rows == [({"result": "ok", "nb_visits": 7},)]


# --------------------------------------------------------------------------- long numbers


def _long_numbers_config(project: Path, digits: int, extra: str = "") -> list[str]:
    """The same three records — one with an integer of ``digits`` digits — as a JSON
    array one element per line, a JSON array on one line (every byte through ijson)
    and NDJSON; returns the source names."""
    records = ['{"id": "a", "n": 1}', '{"id": "b", "n": %s}' % ("7" * digits), '{"id": "c"}']
    (project / "lines.json").write_text("[\n" + ",\n".join(records) + "\n]\n")
    (project / "flat.json").write_text("[" + ", ".join(records) + "]")
    (project / "n.ndjson").write_text("\n".join(records) + "\n")
    names = [("lines", "lines.json", "json"), ("flat", "flat.json", "json")]
    names.append(("nd", "n.ndjson", "ndjson"))
    configure(
        project,
        "".join(
            f'\n[sources.{name}]\npath = "{path}"\nformat = "{fmt}"\nkey = ["id"]\n'
            f'table = "{name}"\n{extra}'
            for name, path, fmt in names
        ),
    )
    return [name for name, _, _ in names]


def test_integers_of_thousands_of_digits_are_stored_exactly_in_every_format(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    """Beyond Python's default limit of 4300 digits (where ijson's C backend used to
    crash the process): stored as written, the same bytes and hash from every parser."""
    names = _long_numbers_config(project, 5000)
    sync(cli)
    assert counts(latest(psql)) == expect(9, new=9)
    seen = [
        psql.execute(
            f"SELECT data->>'n', encode(hash, 'hex') FROM {name} WHERE id = 'b'"
        ).fetchone()
        for name in names
    ]
    assert seen[0] is not None and seen[0][0] == "7" * 5000
    assert seen[0] == seen[1] == seen[2]


def test_an_integer_beyond_postgresqls_numeric_is_a_record_error(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    _long_numbers_config(project, 140_000, "max_error_ratio = 0.5\n")
    sync(cli)
    run = latest(psql)
    for name in ("lines", "flat", "nd"):
        stats = source_stats(run, name)
        assert (stats["new"], stats["errors"]) == (2, 1), stats
    assert "beyond PostgreSQL's numeric range" in str(run["stats"])


def test_a_run_of_digits_too_long_to_parse_fails_the_feed_and_writes_nothing(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    """A hostile feed: a number of 300,000 digits would cost the parser seconds (and
    ijson's C backend a crash beyond Python's limit); it is refused as it streams by."""
    for name in _long_numbers_config(project, 300_000)[:2]:
        result = sync(cli, "--source", name, code=1)
        assert "Traceback" not in result.stderr
        run = latest(psql)
        assert run["status"] == "failed"
        assert "run of more than 150,000 digits" in run["error_message"], run
        assert not table_exists(psql, name)
