"""The pages over plain HTTP (httpx) against a real ``jobctl serve``: status codes,
the CLI's messages on bad input (422, nothing written), CSRF refusals (403), paging,
and no secret in any page."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Cli
from tests.web_pages.conftest import Console, csrf_of, start_console, stop


def schedules(cli: Cli) -> list[dict[str, Any]]:
    listed = cli("schedule", "list", "--json")
    assert listed.code == 0, listed.stderr
    found: list[dict[str, Any]] = json.loads(listed.stdout)
    return found


def cli_error(cli: Cli, *args: str) -> str:
    result = cli(*args)
    assert result.code == 2, result.stderr
    return result.stderr.strip().removeprefix("jobctl: error: ")


def shown_error(page: httpx.Response) -> str:
    found = re.search(r'<p class="error" role="alert">(.*?)</p>', page.text, re.S)
    assert found, page.text
    # the page escapes it; the message itself is the CLI's
    return html.unescape(found.group(1))


def test_every_page_answers_with_its_status(console: Console, cli: Cli) -> None:
    assert cli("run", "sleepy", "-p", "seconds=0").code == 0
    with console.client() as client:
        home = client.get("/")
        assert home.status_code == 303 and home.headers["location"] == "/runs"
        for path in ("/runs", "/runs/1", "/jobs", "/schedules", "/health", "/runs?page=1"):
            page = client.get(path)
            assert page.status_code == 200, (path, page.text)
            assert page.headers["content-type"].startswith("text/html")
            assert "default-src 'none'" in page.headers["content-security-policy"]
            # nothing from another site: every src and href is this server's
            for url in re.findall(r'(?:src|href)="([^"]*)"', page.text):
                assert url.startswith(("/", "#")), (path, url)
        missing = client.get("/runs/4242")
        assert missing.status_code == 404 and "run 4242 does not exist" in missing.text
        for path in ("/static/console.css", "/static/console.js", "/static/favicon.svg"):
            assert client.get(path).status_code == 200


@pytest.mark.parametrize(
    ("query", "args"),
    [
        ("status=bogus", ("--status", "bogus")),
        ("since=0", ("--since", "0")),
        ("since=yesterday", ("--since", "yesterday")),
    ],
)
def test_a_bad_runs_filter_is_the_clis_message(
    console: Console, cli: Cli, query: str, args: tuple[str, ...]
) -> None:
    with console.client() as client:
        page = client.get(f"/runs?{query}")
    assert page.status_code == 422
    assert shown_error(page) == cli_error(cli, "runs", "list", *args)


def test_runs_are_paged_newest_first(console: Console, psql: psycopg.Connection[Any]) -> None:
    psql.execute(
        "INSERT INTO jobctl.runs (job, status, trigger, started_at, finished_at, host, pid,"
        " jobctl_version) SELECT 'sleepy', 'completed', 'timer', now() - g * interval '1 min',"
        " now() - g * interval '1 min' + interval '1 s', 'h', 1, 'test'"
        " FROM generate_series(1, 45) g"
    )
    ids = [r[0] for r in psql.execute("SELECT id FROM jobctl.runs ORDER BY started_at DESC")]
    with console.client() as client:
        pages = [client.get(f"/runs?limit=20&page={n}") for n in (1, 2, 3)]
    shown = [[int(i) for i in re.findall(r'<a href="/runs/(\d+)">', p.text)] for p in pages]
    assert shown == [ids[:20], ids[20:40], ids[40:]]
    assert 'rel="next"' in pages[1].text and 'rel="next"' not in pages[2].text
    assert 'href="/runs?page=3"' in pages[1].text  # 20 a page: the default


@contextmanager
def logged_in(console: Console) -> Iterator[httpx.Client]:
    with console.client() as client:
        console.login(client)
        yield client


def form(job: str = "sleepy", at: datetime | None = None, **extra: str) -> dict[str, str]:
    at = at or datetime.now(UTC) + timedelta(hours=3)
    return {"job": job, "date": f"{at:%Y-%m-%d}", "time": f"{at:%H:%M}", **extra}


def test_a_write_needs_a_login_and_the_forms_csrf_token(console: Console, cli: Cli) -> None:
    with console.client() as anonymous:
        refused = anonymous.post("/schedules", data=form(csrf="x"))
        assert refused.status_code == 401
        assert anonymous.get("/schedules").text.count('name="csrf"') == 0  # no form shown
    with logged_in(console) as client:
        token = csrf_of(client.get("/schedules").text)
        assert client.post("/schedules", data=form()).status_code == 403  # no csrf at all
        assert client.post("/schedules", data=form(csrf="0" * 64)).status_code == 403
        assert schedules(cli) == []
        added = client.post("/schedules", data=form(csrf=token, params="seconds=1\r\n\r\n"))
        assert added.status_code == 303, added.text
        [row] = schedules(cli)
        assert row["params"] == {"seconds": "1"} and row["created_by"] == "alice"
        cancel = f"/schedules/{row['id']}/cancel"
        assert client.post(cancel, data={"csrf": "wrong"}).status_code == 403
        assert client.post(cancel).status_code == 403
        assert schedules(cli)[0]["status"] == "pending"
        done = client.post(cancel, data={"csrf": token})
        assert done.status_code == 303 and done.headers["location"].endswith(f"={row['id']}")
        assert schedules(cli)[0]["status"] == "cancelled"
        again = client.post(cancel, data={"csrf": token})
        assert again.status_code == 422
        assert shown_error(again) == cli_error(cli, "schedule", "cancel", str(row["id"]))


def _bad_cases() -> list[tuple[dict[str, str], list[str]]]:
    ahead = datetime.now(UTC) + timedelta(days=3)
    day = f"{ahead:%Y-%m-%d}"
    return [
        # malformed dates and times
        ({"date": "2027-13-45", "time": "09:00"}, ["sleepy", "--at", "2027-13-45 09:00"]),
        ({"date": "tomorrow-ish", "time": "09:00"}, ["sleepy", "--at", "tomorrow-ish 09:00"]),
        ({"date": day, "time": "25:00"}, ["sleepy", "--at", f"{day} 25:00"]),
        ({"date": "", "time": ""}, ["sleepy", "--at", ""]),
        # a past time
        ({"date": "2020-01-01", "time": "09:00"}, ["sleepy", "--at", "2020-01-01 09:00"]),
        # unknown job
        ({"job": "nope", "date": day, "time": "09:00"}, ["nope", "--at", f"{day} 09:00"]),
        # bad parameters
        (
            {"date": day, "time": "09:00", "params": "seconds"},
            ["sleepy", "--at", f"{day} 09:00", "--param", "seconds"],
        ),
        (
            {"date": day, "time": "09:00", "params": "=1"},
            ["sleepy", "--at", f"{day} 09:00", "--param", "=1"],
        ),
        # a built-in job takes none
        (
            {"job": "cleanup", "date": day, "time": "09:00", "params": "a=b"},
            ["cleanup", "--at", f"{day} 09:00", "--param", "a=b"],
        ),
        (
            {"date": day, "time": "09:00", "every": "year"},
            ["sleepy", "--at", f"{day} 09:00", "--every", "year"],
        ),
    ]


def test_bad_input_is_422_with_the_clis_message_and_writes_nothing(
    console: Console, cli: Cli
) -> None:
    with logged_in(console) as client:
        token = csrf_of(client.get("/schedules").text)
        for fields, args in _bad_cases():
            page = client.post("/schedules", data={"job": "sleepy", **fields, "csrf": token})
            assert page.status_code == 422, (fields, page.text)
            assert shown_error(page) == cli_error(cli, "schedule", "add", *args), fields
            # the form is shown again with what was typed
            assert f'value="{fields.get("job", "sleepy")}"' in page.text
    assert schedules(cli) == []


def test_no_secret_in_any_page(web_project: Path, cli: Cli, psql: psycopg.Connection[Any]) -> None:
    secret = "tk-7f3a9c-page-secret"
    with (web_project / "jobctl.toml").open("a") as config:
        config.write(
            '\n[sources.feed]\nurl = "https://api.example.org/v1/${TOKEN}/export.json"\n'
            'key = ["id"]\ntable = "feed"\n'
        )
    (web_project / ".env").write_text(f"TOKEN={secret}\n")
    assert cli("db", "upgrade").code == 0
    assert cli("run", "boom").code == 1
    # rows written before the secret was known to jobctl hold it as it is
    psql.execute(
        "UPDATE jobctl.runs SET error_message = %(m)s, error_detail = %(m)s,"
        " log_tail = ARRAY[%(m)s], params = jsonb_build_object('token', %(s)s::text)",
        {"m": f"fetching https://api.example.org/v1/{secret}/x failed", "s": secret},
    )
    psql.execute(
        "INSERT INTO jobctl.scheduled (job, params, run_at, timezone, created_at)"
        " VALUES ('sleepy', jsonb_build_object('key', %s::text), now() + interval '1 day',"
        " 'UTC', now())",
        (secret,),
    )
    server = start_console(cli)
    try:
        with server.client() as client:
            for path in ("/runs", "/runs/1", "/jobs", "/health", "/schedules"):
                page = client.get(path)
                assert page.status_code == 200, (path, page.text)
                assert secret not in page.text, path
            assert "/v1/***/x failed" in client.get("/runs/1").text
    finally:
        stop(server.process)
