"""``jobctl report`` end to end: the real executable, a real PostgreSQL, a real SMTP server
(aiosmtpd) and a real HTTP server on 127.0.0.1. Figures are computed here, from the
rows the test seeds, independently of the SQL that jobctl runs."""

from __future__ import annotations

import json
import math
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from tests.conftest import Cli
from tests.fixtures.httpserver import HTTPTestServer
from tests.notify.conftest import PASSWORD, USER, Mailbox, free_port, plain_server
from tests.runner.test_runner import row

ZONE = ZoneInfo("America/Toronto")
WEEK_START = date(2026, 11, 23)  # Monday of ISO week 2026-W48
WEEK_END = date(2026, 11, 30)


def at(day: date, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=ZONE)


def mail_channel(port: int, name: str = "team") -> str:
    return f"""
[alerts.channels.{name}]
type = "email"
to = ["team@example.org"]
from = "reports@example.org"
smtp_host = "127.0.0.1"
smtp_port = {port}
username = "{USER}"
password = "${{SMTP_PASSWORD}}"
"""


ENV = {"SMTP_PASSWORD": PASSWORD}


def configure(project: Path, toml: str) -> None:
    path = project / "jobctl.toml"
    base = 'timezone = "America/Toronto"\njobs_module = "myjobs"\n'
    path.write_text(base + toml)


def last_run(psql: psycopg.Connection[Any], job: str = "report") -> dict[str, Any]:
    found = psql.execute(
        "SELECT id FROM jobctl.runs WHERE job = %s ORDER BY id DESC LIMIT 1", (job,)
    ).fetchone()
    assert found is not None
    return row(psql, found[0])


def parts(mail: Message) -> dict[str, str]:
    """The text and HTML parts of a multipart/alternative mail, decoded."""
    assert mail.get_content_type() == "multipart/alternative"
    found = {}
    for part in mail.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found[part.get_content_subtype()] = payload.decode().replace("\r\n", "\n")
    return found


# --------------------------------------------------------------------------- job health


def seed_run(
    psql: psycopg.Connection[Any],
    job: str,
    status: str,
    started: datetime,
    duration_ms: int | None = None,
    *,
    new: int = 0,
    updated: int = 0,
    removed: int = 0,
    deleted: int = 0,
    dry_run: bool = False,
) -> dict[str, Any]:
    finished = started + timedelta(milliseconds=duration_ms or 0)
    psql.execute(
        "INSERT INTO jobctl.runs (job, trigger, status, started_at, finished_at, duration_ms,"
        " records_new, records_updated, records_removed, records_deleted, host, pid,"
        " jobctl_version, dry_run) VALUES (%s, 'timer', %s, %s, %s, %s, %s, %s, %s, %s,"
        " 'seed', 1, 'test', %s)",
        (job, status, started, finished, duration_ms, new, updated, removed, deleted, dry_run),
    )
    return {
        "job": job,
        "status": status,
        "started": started,
        "finished": finished,
        "ms": duration_ms,
        "new": new,
        "updated": updated,
        "removed": removed,
        "deleted": deleted,
        "dry_run": dry_run,
    }


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (what percentile_cont computes)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = p * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def expected_health(seeded: list[dict[str, Any]], jobs: set[str]) -> dict[str, dict[str, Any]]:
    start, end = at(WEEK_START), at(WEEK_END)
    real = [r for r in seeded if not r["dry_run"]]
    found = {}
    # the jobs that ran in the period or in the four weeks before it, and the configured
    listed = {r["job"] for r in real if start - timedelta(days=28) <= r["started"] < end}
    for job in sorted(jobs | listed):
        mine = [r for r in real if r["job"] == job and start <= r["started"] < end]
        worked = [
            r["ms"]
            for r in mine
            if r["status"] not in ("skipped", "running") and r["ms"] is not None
        ]
        before_end = sorted(
            (r for r in real if r["job"] == job and r["started"] < end), key=lambda r: r["started"]
        )
        successes = [r for r in before_end if r["status"] == "completed"]
        last = successes[-1] if successes else None
        streak = sum(
            1
            for r in before_end
            if r["status"] in ("failed", "abandoned")
            and (last is None or r["started"] > last["started"])
        )
        found[job] = {
            "runs": len(mine),
            "completed": sum(r["status"] == "completed" for r in mine),
            "failed": sum(r["status"] == "failed" for r in mine),
            "skipped": sum(r["status"] == "skipped" for r in mine),
            "cancelled_or_abandoned": sum(r["status"] in ("cancelled", "abandoned") for r in mine),
            "p50_duration_ms": percentile(worked, 0.5),
            "p95_duration_ms": percentile(worked, 0.95),
            "records_new": sum(r["new"] for r in mine),
            "records_updated": sum(r["updated"] for r in mine),
            "records_removed": sum(r["removed"] for r in mine),
            "records_deleted": sum(r["deleted"] for r in mine),
            "last_success": last["finished"] if last else None,
            "failure_streak": streak,
        }
    return found


def seed_week(psql: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    s = seed_run
    return [
        # sync: the first instant of the week is in it, the first of the next is not
        s(psql, "sync", "completed", at(WEEK_START), 1000, new=100, updated=5),
        s(psql, "sync", "completed", at(date(2026, 11, 24), 6), 2000, new=7, removed=2),
        s(psql, "sync", "completed", at(date(2026, 11, 25), 6), 3000, updated=9),
        s(psql, "sync", "completed", at(date(2026, 11, 26), 6), 4000, new=1),
        s(psql, "sync", "failed", at(date(2026, 11, 27), 6), 10_000),
        s(psql, "sync", "skipped", at(date(2026, 11, 27), 6, 1)),
        s(psql, "sync", "completed", at(date(2026, 11, 28), 6), 99, new=5000, dry_run=True),
        s(psql, "sync", "completed", at(date(2026, 11, 22), 23, 59, 59), 500, new=55),
        s(psql, "sync", "completed", at(WEEK_END), 700, new=66),
        # cleanup never succeeded: a streak of three, one of them before the week
        s(psql, "cleanup", "failed", at(date(2026, 11, 15), 3), 300),
        s(psql, "cleanup", "failed", at(date(2026, 11, 29), 3), 250, deleted=40),
        s(psql, "cleanup", "abandoned", at(date(2026, 11, 29), 23, 59), None),
        # snapshot: a run before the week is its last success
        s(psql, "snapshot", "completed", at(date(2026, 11, 20), 3), 800, new=3),
    ]


def test_job_health_matches_figures_computed_from_the_seeded_ledger(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    configure(project, '[jobs.quiet_job]\nschedule = "0 5 * * *"\n')
    assert cli("db", "upgrade").code == 0
    seeded = seed_week(psql)
    result = cli("report", "--date", "2026-11-26", "--no-send", "--format", "json")
    assert result.code == 0, result.stderr
    (report,) = json.loads(result.stdout)["reports"]
    assert report["period"]["start"] == "2026-11-23" and report["period"]["end"] == "2026-11-30"
    got = {h.pop("job"): h for h in report["job_health"]}
    want = expected_health(seeded, {"quiet_job"})
    for figures in want.values():
        last = figures["last_success"]
        figures["last_success"] = last.astimezone(UTC) if last else None
    for figures in got.values():
        last = figures["last_success"]
        figures["last_success"] = datetime.fromisoformat(last).astimezone(UTC) if last else None
    assert got == want
    # spot checks of what the rule above computes
    assert got["sync"]["runs"] == 6 and got["sync"]["records_new"] == 108
    assert got["cleanup"]["failure_streak"] == 3 and got["cleanup"]["last_success"] is None
    assert got["quiet_job"]["runs"] == 0
    assert got["snapshot"]["runs"] == 0 and got["snapshot"]["last_success"] is not None
    # the text format shows the same figures, in 80 columns
    text = cli("report", "--date", "2026-11-26", "--no-send").stdout
    assert max(map(len, text.splitlines())) <= 80
    sync = next(line.split() for line in text.splitlines() if line.startswith("sync "))
    assert sync[:6] == ["sync", "6", "4", "1", "1", "0"]


# --------------------------------------------------------------------------- per recipient

CELLAR = """
CREATE TABLE users (id int PRIMARY KEY, email text, name text, weekly boolean);
CREATE TABLE cellar (user_id int, wine text, bottles int, peak_from date);
CREATE TABLE moves (user_id int, wine text, day date, delta int);
INSERT INTO users VALUES (1, 'ann@example.org', 'Ann', true), (2, 'bob@example.org', 'Bob', true),
    (3, 'cy@example.org', 'Cy', false);
INSERT INTO cellar VALUES (1, 'Barolo 2016', 6, '2026-01-01'), (1, 'Rioja 2019', 12, '2030-01-01'),
    (2, 'Chablis 2021', 3, '2026-11-25'), (3, 'Port 1985', 1, '2000-01-01');
INSERT INTO moves VALUES (1, 'Barolo 2016', '2026-11-23', 2), (1, 'Rioja 2019', '2026-11-29', -1),
    (1, 'Rioja 2019', '2026-11-30', 5), (2, 'Chablis 2021', '2026-11-22', 3),
    (2, 'Chablis 2021', '2026-11-27', -2);
"""

SECTIONS = """
[report]
title = "Your cellar"
channels = ["team"]
recipients = "SELECT id AS user_id, email, name FROM users WHERE weekly ORDER BY id"
subject = "Cellar of {{ recipient.name }}: {{ period.label }}"

[[report.sections]]
title = "Bottles in your cellar"
sql = "SELECT wine, bottles FROM cellar WHERE user_id = :user_id ORDER BY wine"

[[report.sections]]
title = "This week's ins and outs"
sql = '''
SELECT wine, sum(delta) FILTER (WHERE delta > 0) AS bottles_in,
       -sum(delta) FILTER (WHERE delta < 0) AS bottles_out
FROM moves WHERE user_id = :user_id AND day >= :period_start AND day < :period_end
GROUP BY wine ORDER BY wine'''

[[report.sections]]
title = "At their peak"
sql = "SELECT wine FROM cellar WHERE user_id = :user_id AND peak_from < :period_end ORDER BY wine"
"""


def cellar_project(project: Path, cli: Cli, psql: psycopg.Connection[Any], port: int) -> None:
    configure(project, SECTIONS + mail_channel(port))
    assert cli("db", "upgrade", env=ENV).code == 0
    psql.execute(CELLAR)


def by_recipient(box: Mailbox) -> dict[str, Message]:
    return {str(m["To"]): m for m in box.messages}


def test_one_mail_per_recipient_with_their_own_figures(
    project: Path, cli: Cli, psql: psycopg.Connection[Any], smtp_server: Mailbox
) -> None:
    cellar_project(project, cli, psql, smtp_server.port)
    result = cli("report", "--date", "2026-11-25", env=ENV)
    assert result.code == 0, result.stderr
    assert "report: 2 sent, 0 failed" in result.stderr
    mails = by_recipient(smtp_server)
    assert sorted(mails) == ["ann@example.org", "bob@example.org"]  # Cy is not weekly
    ann = mails["ann@example.org"]
    assert ann["Subject"] == "Cellar of Ann: week 2026-W48 (2026-11-23 to 2026-11-29)"
    assert ann["From"] == "reports@example.org" and ann["Auto-Submitted"] == "auto-generated"
    body = parts(ann)
    text, html = body["plain"], body["html"]
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    assert "JOB HEALTH" not in text  # per-recipient reports leave the ops part out
    # Ann's cellar: Barolo 6, Rioja 12; this week +2 Barolo, -1 Rioja (the +5 is next week's)
    assert any(line.split() == ["Barolo", "2016", "6"] for line in lines)
    assert any(line.split() == ["Rioja", "2019", "12"] for line in lines)
    assert any(line.split() == ["Barolo", "2016", "2"] for line in lines)
    assert any(line.split() == ["Rioja", "2019", "1"] for line in lines)
    assert "Chablis" not in text and "Port" not in text  # nobody else's rows
    assert "Barolo 2016" in html and "Rioja 2019" not in html.split("At their peak")[1]
    bob = parts(mails["bob@example.org"])["plain"]
    # Bob: +3 was last week; -2 this week; Chablis peaks from 2026-11-25 (< period end)
    assert any(line.split() == ["Chablis", "2021", "2"] for line in bob.splitlines())
    assert bob.split("AT THEIR PEAK")[1].strip().splitlines()[2] == "Chablis 2021"
    run = last_run(psql)
    assert run["status"] == "completed" and run["partition"] == "2026-11-23"
    assert run["stats"]["sent"] == 2 and run["stats"]["failed"] == 0
    assert run["records_total"] == 2
    # the password went to the server only: not in a mail, the output or the run row
    everything = b"".join(smtp_server.raw).decode() + result.stdout + result.stderr
    everything += json.dumps(run, default=str)
    assert PASSWORD not in everything

    # the same week again: everything was delivered already, nothing is sent twice
    again = cli("report", "--date", "2026-11-25", env=ENV)
    assert again.code == 0 and "report: 0 sent, 0 failed (2 sent before)" in again.stderr
    assert len(smtp_server.messages) == 2
    forced = cli("report", "--date", "2026-11-25", "--force", env=ENV)
    assert forced.code == 0 and "report: 2 sent, 0 failed" in forced.stderr
    assert len(smtp_server.messages) == 4
    # --to picks one recipient of the query (a re-send to one user)
    one = cli("report", "--date", "2026-11-25", "--force", "--to", "bob@example.org", env=ENV)
    assert one.code == 0 and "report: 1 sent, 0 failed" in one.stderr
    assert str(smtp_server.messages[-1]["To"]) == "bob@example.org"


class RefusingMailbox(Mailbox):
    """Refuses one address at RCPT, as a server does for an unknown mailbox."""

    refused = "bob@example.org"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address == self.refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def refusing_smtp() -> Iterator[RefusingMailbox]:
    with plain_server(RefusingMailbox(free_port())) as box:
        yield box


def test_a_refused_recipient_is_named_and_the_others_still_get_theirs(
    project: Path, cli: Cli, psql: psycopg.Connection[Any], refusing_smtp: RefusingMailbox
) -> None:
    cellar_project(project, cli, psql, refusing_smtp.port)
    psql.execute("INSERT INTO users VALUES (4, 'dee@example.org', 'Dee', true)")
    # a row whose address would inject a header: refused before any SMTP
    psql.execute(
        "INSERT INTO users VALUES (5, E'eve@example.org\\nBcc: all@example.org', 'Eve', true)"
    )
    result = cli("report", "--date", "2026-11-25", env=ENV)
    assert result.code == 1, result.stderr
    assert "report: 2 sent, 2 failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(by_recipient(refusing_smtp)) == ["ann@example.org", "dee@example.org"]
    run = last_run(psql)
    assert run["status"] == "failed" and run["records_errors"] == 2
    assert "2 of 4 report deliveries failed" in run["error_message"]
    bob, eve = run["stats"]["failures"]
    assert bob["to"] == "bob@example.org" and "no such mailbox" in bob["error"]
    assert eve["error"].startswith("not an e-mail address: 'eve@example.org\\nBcc:")
    assert all("Bcc" not in str(m) for m in refusing_smtp.messages)
    sent = psql.execute(
        "SELECT recipient FROM jobctl.report_deliveries ORDER BY recipient"
    ).fetchall()
    assert [r[0] for r in sent] == ["ann@example.org", "dee@example.org"]
    # the next run tries Bob only
    again = cli("report", "--date", "2026-11-25", env=ENV)
    assert again.code == 1 and "report: 0 sent, 2 failed (2 sent before)" in again.stderr
    assert len(refusing_smtp.messages) == 2


def test_a_mail_server_that_is_down_fails_the_run_quickly_and_cleanly(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    cellar_project(project, cli, psql, free_port())  # nothing listens there
    psql.execute(
        "INSERT INTO users SELECT g, 'u' || g || '@example.org', 'U' || g, true"
        " FROM generate_series(10, 29) g"
    )
    started = time.monotonic()
    result = cli("report", "--date", "2026-11-25", env=ENV)
    elapsed = time.monotonic() - started
    assert result.code == 1 and "Traceback" not in result.stderr
    assert "report: 0 sent, 22 failed" in result.stderr
    run = last_run(psql)
    # three recipients tried (with their retries), then the channel is given up
    assert sum("not sent:" in f["error"] for f in run["stats"]["failures"]) == 19
    assert run["stats"]["failed"] == 22
    assert elapsed < 45, "22 recipients must not each wait through their retries"
    assert psql.execute("SELECT count(*) FROM jobctl.report_deliveries").fetchone() == (0,)


def test_sigterm_while_mailing_keeps_what_was_sent_and_the_next_run_sends_the_rest(
    project: Path, cli: Cli, psql: psycopg.Connection[Any], smtp_server: Mailbox
) -> None:
    cellar_project(project, cli, psql, smtp_server.port)
    psql.execute(
        "INSERT INTO users SELECT g, 'u' || g || '@example.org', 'U' || g, true"
        " FROM generate_series(10, 17) g"
    )
    original = smtp_server.handle_DATA

    async def slow(server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        await asyncio.sleep(0.3)
        return await original(server, session, envelope)

    smtp_server.handle_DATA = slow  # type: ignore[method-assign]
    proc = cli.popen("report", "--date", "2026-11-25", env=ENV)
    deadline = time.monotonic() + 30
    while len(smtp_server.messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    first = len(smtp_server.messages)
    assert 2 <= first < 10
    run = last_run(psql)
    assert run["status"] == "cancelled"
    recorded = psql.execute("SELECT count(*) FROM jobctl.report_deliveries").fetchone()
    assert recorded is not None and recorded[0] in (first - 1, first)

    smtp_server.handle_DATA = original  # type: ignore[method-assign]
    rest = cli("report", "--date", "2026-11-25", env=ENV)
    assert rest.code == 0, rest.stderr
    counts = Counter(str(m["To"]) for m in smtp_server.messages)
    assert len(counts) == 10, "every recipient got the report"
    # at most the one mail in flight when the signal came went twice
    assert sum(counts.values()) - 10 <= 1


# --------------------------------------------------------------------------- webhook, file


def test_webhook_gets_the_team_report_as_slack_json_retrying_a_500(
    project: Path,
    cli: Cli,
    psql: psycopg.Connection[Any],
    local_http_server: HTTPTestServer,
) -> None:
    local_http_server.serve("/hook", b"ok", statuses=[500, 200])
    configure(
        project,
        f"""
[report]
channels = ["chat"]
[[report.sections]]
title = "Totals"
sql = "SELECT 'bottles' AS what, 4217 AS n"

[alerts.channels.chat]
type = "webhook"
url = "{local_http_server.url("/hook")}"
""",
    )
    result = cli("report", "--date", "2026-11-25")
    assert result.code == 0, result.stderr
    assert "report: 1 sent, 0 failed" in result.stderr
    requests = local_http_server.requests_for("/hook")
    assert len(requests) == 2
    payload = json.loads(requests[-1].body)
    assert list(payload) == ["text"]
    assert payload["text"].startswith("*jobctl weekly report: week 2026-W48")
    assert "bottles" in payload["text"] and "4217" in payload["text"]


def test_output_file_is_written_atomically_in_the_format_of_its_suffix(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    configure(
        project,
        """
[[report.sections]]
title = "Totals"
sql = "SELECT 42 AS answer, :period_start::date AS since"
""",
    )
    out = project / "out" / "week.html"
    out.parent.mkdir()
    result = cli("report", "--date", "2026-11-25", "--output", str(out))
    assert result.code == 0, result.stderr
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "42" in html and "2026-11-23" in html
    assert result.stdout == ""
    assert [p.name for p in out.parent.iterdir()] == ["week.html"]  # no temporary left
    md = cli("report", "--date", "2026-11-25", "--output", str(out.with_suffix(".md")))
    assert md.code == 0 and out.with_suffix(".md").read_text().startswith("# jobctl weekly")

    # a run that fails leaves the last good file as it was, and no partial one
    (project / "jobctl.toml").write_text(
        (project / "jobctl.toml").read_text().replace("42 AS answer", "1/0 AS answer")
    )
    failed = cli("report", "--date", "2026-11-25", "--output", str(out))
    assert failed.code == 1
    assert "section 'Totals'" in failed.stderr and "division by zero" in failed.stderr
    assert out.read_text() == html
    assert sorted(p.name for p in out.parent.iterdir()) == ["week.html", "week.md"]


# --------------------------------------------------------------------------- refused input


@pytest.mark.parametrize(
    ("args", "toml", "message"),
    [
        (
            ["--date", "2999-01-06"],
            "",
            "--date 2999-01-06: its week starts 2998-12-31, after today",
        ),
        (["--date", "2026-13-01"], "", "--date '2026-13-01' is not a valid date"),
        (["--format", "pdf", "--no-send"], "", "--format 'pdf' is not one of"),
        (["--to", "not-an-address"], "", "--to 'not-an-address' is not an e-mail address"),
        (["--to", "a@example.org"], "", "--to needs an e-mail channel"),
        (
            ["--no-send"],
            '[report]\ntemplates = "nowhere"\n',
            "report.templates: ",
        ),
        (
            ["--no-send"],
            '[report]\nrecipients = "SELECT 1"\nchannels = ["chat"]\n'
            '[alerts.channels.chat]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\n',
            "report.channels: 'chat' is a webhook",
        ),
        (
            ["--no-send"],
            '[[report.sections]]\ntitle = "x"\nsql = "UPDATE users SET name = \'x\'"\n',
            "report.sections[0].sql: starts with 'UPDATE'",
        ),
        (
            ["--no-send"],
            '[report]\nchannels = ["nope"]\n',
            "report.channels: 'nope' is not an alert channel",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_no_run(
    project: Path,
    cli: Cli,
    psql: psycopg.Connection[Any],
    args: list[str],
    toml: str,
    message: str,
) -> None:
    assert cli("db", "upgrade").code == 0
    configure(project, toml)
    result = cli("report", *args)
    assert result.code == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert psql.execute("SELECT count(*) FROM jobctl.runs").fetchone() == (0,)


def test_a_section_binding_a_column_the_recipients_lack_sends_nothing(
    project: Path, cli: Cli, psql: psycopg.Connection[Any], smtp_server: Mailbox
) -> None:
    cellar_project(project, cli, psql, smtp_server.port)
    path = project / "jobctl.toml"
    path.write_text(path.read_text().replace("SELECT id AS user_id,", "SELECT id,"))
    result = cli("report", "--date", "2026-11-25", env=ENV)
    assert result.code == 1
    assert "bind :user_id, which the recipients query does not return" in result.stderr
    assert smtp_server.messages == []


def test_the_operators_templates_are_used(
    project: Path, cli: Cli, psql: psycopg.Connection[Any], smtp_server: Mailbox
) -> None:
    cellar_project(project, cli, psql, smtp_server.port)
    templates = project / "mail"
    templates.mkdir()
    (templates / "report.txt.j2").write_text(
        "{% for r in reports %}Dear {{ r.recipient.name }}, "
        "{{ r.sections[0].rows | length }} wines.{% endfor %}\n"
    )
    path = project / "jobctl.toml"
    path.write_text(path.read_text().replace("[report]\n", '[report]\ntemplates = "mail"\n'))
    result = cli("report", "--date", "2026-11-25", "--to", "ann@example.org", env=ENV)
    assert result.code == 0, result.stderr
    (mail,) = smtp_server.messages
    body = parts(mail)
    assert body["plain"] == "Dear Ann, 2 wines.\n"
    assert "Barolo 2016" in body["html"]  # jobctl's own HTML template still


def test_sigterm_during_a_section_query_cancels_cleanly_and_writes_nothing(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    configure(
        project,
        """
[[report.sections]]
title = "Slow"
sql = "SELECT pg_sleep(60) AS slept"
""",
    )
    assert cli("db", "upgrade").code == 0
    out = project / "week.txt"
    proc = cli.popen("report", "--date", "2026-11-25", "--output", str(out))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        active = psql.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'"
            " AND state = 'active'"
        ).fetchone()
        if active and active[0]:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert not out.exists() and list(project.glob(".week.txt.*")) == []
    assert last_run(psql)["status"] == "cancelled"
    # the server is not left running the query (for its 60 s)
    still: Any = None
    for _ in range(100):
        still = psql.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'"
            " AND state = 'active'"
        ).fetchone()
        if still == (0,):
            break
        time.sleep(0.05)
    assert still == (0,)
