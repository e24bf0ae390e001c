"""Alerts end to end: real runs through the runner, a real SMTP server (aiosmtpd) and a
real HTTP server (tests/fixtures/httpserver.py) on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobctl.app import App
from jobctl.errors import ExitCode
from jobctl.runner import RunOptions
from tests.conftest import Cli
from tests.fixtures.httpserver import HTTPTestServer
from tests.notify.conftest import PASSWORD, USER, Mailbox, free_port, starttls_server
from tests.runner.test_runner import make_app, row

HOOK_TOKEN = "hooktok3n-very-secret"
PATH_TOKEN = "T0AAAAAAA/B0BBBBBBB/XXXXXXXXXXXXXXXXXXXXXXXX"


def mail_toml(port: int, extra: str = "") -> str:
    return f"""
[alerts]
default = ["mail"]
repeat_after = "1h"
{extra}
[alerts.channels.mail]
type = "email"
to = ["ops@example.org"]
from = "jobctl@example.org"
smtp_host = "127.0.0.1"
smtp_port = {port}
username = "{USER}"
password = "${{SMTP_PASSWORD}}"
"""


def hook_toml(url: str) -> str:
    return f"""
[alerts]
default = ["hook"]

[alerts.channels.hook]
type = "webhook"
url = "{url}"
headers = {{ Authorization = "Bearer ${{HOOK_TOKEN}}" }}
"""


ENV = {"SMTP_PASSWORD": PASSWORD, "HOOK_TOKEN": HOOK_TOKEN}


def boom(app: App) -> Any:
    return app.run("boom", RunOptions())


def all_rows_text(psql: psycopg.Connection[Any]) -> str:
    rows = psql.execute("SELECT row_to_json(r)::text FROM jobctl.runs r").fetchall()
    return "\n".join(r[0] for r in rows)


def text_of(mail: Any) -> str:
    return str(mail.get_payload(decode=True).decode()).replace("\r\n", "\n")


def jobctl_log(caplog: pytest.LogCaptureFixture) -> str:
    """jobctl's own log lines (not the test SMTP server's debug lines)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("jobctl"))


def alerts_of(psql: psycopg.Connection[Any], run_id: int) -> Any:
    return row(psql, run_id)["stats"].get("alerts")


def test_one_alert_one_escalation_then_quiet_then_one_recovery(
    project: Path,
    db_url: str,
    psql: psycopg.Connection[Any],
    smtp_server: Mailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(project, db_url, mail_toml(smtp_server.port), ENV)
    failed = [boom(app) for _ in range(10)]
    assert {(o.status, o.exit_code) for o in failed} == {("failed", ExitCode.FAILED)}
    first, third = failed[0].run_id, failed[2].run_id
    assert smtp_server.subjects() == [
        f"[jobctl] FAILED: boom (run {first})",
        f"[jobctl] ESCALATION: boom failed 3 times in a row (run {third})",
    ]
    alert, escalation = smtp_server.messages
    assert (alert["X-Jobctl-Alert"], alert["X-Jobctl-Severity"]) == ("failure", "error")
    assert (escalation["X-Jobctl-Alert"], escalation["X-Jobctl-Severity"]) == (
        "escalation",
        "critical",
    )
    body = text_of(alert)
    assert f"run:       {first}\n" in body and "status:    failed\n" in body
    assert "error:     ValueError: the answer is not 42\n" in body
    assert "records:   0 processed before the failure" in body
    assert f"jobctl runs show {first}" in body and "host:      " in body
    assert smtp_server.logins == [USER, USER]
    assert alerts_of(psql, first) == {
        "kind": "failure",
        "severity": "error",
        "channels": {"mail": "sent"},
        "streak": 1,
    }
    assert alerts_of(psql, failed[1].run_id)["kind"] is None
    assert alerts_of(psql, third)["kind"] == "escalation"
    assert [alerts_of(psql, o.run_id)["kind"] for o in failed[3:]] == [None] * 7

    ok = app.run("sleepy", RunOptions(params={"seconds": "0"}))
    assert ok.status == "completed"  # another job: boom's streak goes on, no message
    assert len(smtp_server.messages) == 2
    app.close()


def test_the_next_completed_run_sends_one_recovery(
    project: Path, db_url: str, psql: psycopg.Connection[Any], smtp_server: Mailbox
) -> None:
    app = make_app(project, db_url, mail_toml(smtp_server.port), ENV)
    runs = [app.run("writer", RunOptions(params={"fail": "1"})) for _ in range(4)]
    assert [o.status for o in runs] == ["failed"] * 4
    done = app.run("writer", RunOptions())
    again = app.run("writer", RunOptions())
    assert (done.status, again.status) == ("completed", "completed")
    assert smtp_server.subjects() == [
        f"[jobctl] FAILED: writer (run {runs[0].run_id})",
        f"[jobctl] ESCALATION: writer failed 3 times in a row (run {runs[2].run_id})",
        f"[jobctl] RECOVERED: writer (run {done.run_id}) after 4 failures",
    ]
    assert smtp_server.messages[2]["X-Jobctl-Severity"] == "ok"
    assert alerts_of(psql, done.run_id)["channels"] == {"mail": "sent"}
    assert alerts_of(psql, again.run_id) is None
    # a new streak alerts afresh
    app.run("writer", RunOptions(params={"fail": "1"}))
    assert smtp_server.subjects()[-1].startswith("[jobctl] FAILED: writer")
    app.close()


def test_secrets_appear_in_no_mail_log_line_or_run_row(
    project: Path,
    db_url: str,
    psql: psycopg.Connection[Any],
    smtp_server: Mailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # the job's error quotes the password: the alert must not carry it
    (project / "myjobs.py").write_text(
        (project / "myjobs.py").read_text()
        + "\n\n@jobctl.job('leaky')\ndef leaky(ctx):\n"
        + f"    raise RuntimeError('login with {PASSWORD} and {HOOK_TOKEN} failed')\n"
    )
    hook = "http://127.0.0.1:9/hook/" + PATH_TOKEN
    extra = mail_toml(smtp_server.port).replace('default = ["mail"]', 'default = ["mail", "hook"]')
    extra += f'\n[alerts.channels.hook]\ntype = "webhook"\nurl = "{hook}"\n'
    extra += 'headers = { Authorization = "Bearer ${HOOK_TOKEN}" }\n'
    app = make_app(project, db_url, extra, ENV)
    outcome = app.run("leaky", RunOptions())
    assert outcome.status == "failed" and len(smtp_server.raw) == 1
    assert alerts_of(psql, outcome.run_id)["channels"]["mail"] == "sent"
    assert alerts_of(psql, outcome.run_id)["channels"]["hook"].startswith("failed: ")
    texts = {
        "mail": b"\n".join(smtp_server.raw).decode(),
        "log": jobctl_log(caplog),
        "runs": all_rows_text(psql),
    }
    assert "login with *** and *** failed" in texts["mail"]
    for where, text in texts.items():
        for secret in (PASSWORD, HOOK_TOKEN, "XXXXXXXXXXXXXXXXXXXXXXXX"):
            assert secret not in text, (where, secret)
    app.close()


def test_a_reminder_once_repeat_after_has_passed(
    project: Path, db_url: str, psql: psycopg.Connection[Any], smtp_server: Mailbox
) -> None:
    app = make_app(project, db_url, mail_toml(smtp_server.port), ENV)
    boom(app)
    boom(app)
    psql.execute("UPDATE jobctl.alert_state SET last_alert_at = last_alert_at - interval '2h'")
    second = boom(app)  # the third failure: the escalation, whatever the reminder clock
    psql.execute("UPDATE jobctl.alert_state SET last_alert_at = last_alert_at - interval '2h'")
    fourth = boom(app)
    boom(app)
    assert smtp_server.subjects()[1:] == [
        f"[jobctl] ESCALATION: boom failed 3 times in a row (run {second.run_id})",
        f"[jobctl] ESCALATION, STILL FAILING: boom, 4 failures in a row (run {fourth.run_id})",
    ]
    app.close()


def test_skipped_cancelled_and_dry_runs_leave_the_streak(
    project: Path, db_url: str, psql: psycopg.Connection[Any], smtp_server: Mailbox
) -> None:
    app = make_app(project, db_url, mail_toml(smtp_server.port, "escalate_after = 2"), ENV)
    boom(app)
    skipped = app.run("boom", RunOptions(already_done="slot already done (test)"))
    assert skipped.status == "skipped"
    boom(app)
    assert [m["X-Jobctl-Alert"] for m in smtp_server.messages] == ["failure", "escalation"]
    assert psql.execute("SELECT failures FROM jobctl.alert_state").fetchone() == (2,)
    app.close()


def test_escalations_go_to_the_escalation_channels(
    project: Path,
    db_url: str,
    psql: psycopg.Connection[Any],
    smtp_server: Mailbox,
    local_http_server: HTTPTestServer,
) -> None:
    local_http_server.serve("/page", b"ok")
    extra = mail_toml(smtp_server.port, 'escalate_after = 2\nescalation_channels = ["pager"]')
    extra += (
        f'\n[alerts.channels.pager]\ntype = "webhook"\nurl = "{local_http_server.url("/page")}"\n'
    )
    app = make_app(project, db_url, extra, ENV)
    boom(app)
    boom(app)
    assert len(smtp_server.messages) == 1
    (request,) = local_http_server.requests_for("/page")
    assert "ESCALATION: boom failed 2 times" in json.loads(request.body)["text"]
    app.run("writer", RunOptions())  # another job
    app.close()


# --------------------------------------------------------------------------- webhooks


def test_a_webhook_answering_500_500_200_gets_exactly_three_requests(
    project: Path,
    db_url: str,
    psql: psycopg.Connection[Any],
    local_http_server: HTTPTestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    path = "/hook/" + PATH_TOKEN
    local_http_server.serve(path, b"ok", statuses=[500, 500, 200])
    app = make_app(project, db_url, hook_toml(local_http_server.url(path)), ENV)
    outcome = boom(app)
    assert (outcome.status, outcome.exit_code) == ("failed", ExitCode.FAILED)
    requests = local_http_server.requests_for(path)
    assert len(requests) == 3
    assert all(r.method == "POST" for r in requests)
    assert requests[-1].headers["authorization"] == f"Bearer {HOOK_TOKEN}"
    payload = json.loads(requests[-1].body)
    assert list(payload) == ["text"]
    assert f"FAILED: boom (run {outcome.run_id})" in payload["text"]
    assert "ValueError: the answer is not 42" in payload["text"]
    assert alerts_of(psql, outcome.run_id)["channels"] == {"hook": "sent"}
    for text in (jobctl_log(caplog), all_rows_text(psql)):
        assert HOOK_TOKEN not in text and "XXXXXXXXXXXXXXXXXXXXXXXX" not in text
    app.close()


def test_a_webhook_answering_400_gets_exactly_one_request(
    project: Path, db_url: str, psql: psycopg.Connection[Any], local_http_server: HTTPTestServer
) -> None:
    local_http_server.serve("/bad", b"no", statuses=[400, 200])
    app = make_app(project, db_url, hook_toml(local_http_server.url("/bad")), ENV)
    outcome = boom(app)
    assert (outcome.status, outcome.exit_code) == ("failed", ExitCode.FAILED)
    assert len(local_http_server.requests_for("/bad")) == 1
    sent = alerts_of(psql, outcome.run_id)["channels"]["hook"]
    assert sent.startswith("failed: ") and "HTTP 400" in sent
    app.close()


def test_a_webhook_that_is_down_changes_no_outcome(
    project: Path, db_url: str, psql: psycopg.Connection[Any]
) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"
    app = make_app(project, db_url, hook_toml(down), ENV)
    outcome = boom(app)
    assert (outcome.status, outcome.exit_code) == ("failed", ExitCode.FAILED)
    r = row(psql, outcome.run_id)
    assert r["status"] == "failed" and r["error_message"] == "ValueError: the answer is not 42"
    sent = r["stats"]["alerts"]["channels"]["hook"]
    assert sent.startswith("failed: ") and "4 requests" in sent
    assert outcome.stats["alerts"]["channels"]["hook"] == sent
    ok = app.run("writer", RunOptions())
    assert ok.status == "completed"
    app.close()


def test_an_alert_that_reached_no_channel_is_sent_at_the_next_failure(
    project: Path, db_url: str, psql: psycopg.Connection[Any], local_http_server: HTTPTestServer
) -> None:
    # the first failure's alert finds the hook answering 400 (not retried); the second
    # failure's alert goes through: the first alert was not lost behind its claim
    local_http_server.serve("/flaky", b"ok", statuses=[400])
    app = make_app(project, db_url, hook_toml(local_http_server.url("/flaky")), ENV)
    first, second, third = boom(app), boom(app), boom(app)
    first_alert = alerts_of(psql, first.run_id)
    assert first_alert["kind"] == "failure" and first_alert["channels"]["hook"].startswith("failed")
    assert first_alert["note"] == "not delivered: the next failure sends it again"
    second_alert = alerts_of(psql, second.run_id)
    assert second_alert["kind"] == "failure" and second_alert["channels"] == {"hook": "sent"}
    assert alerts_of(psql, third.run_id)["kind"] == "escalation"  # the 3rd in a row
    texts = [json.loads(r.body)["text"] for r in local_http_server.requests_for("/flaky")]
    assert len(texts) == 3
    assert f"FAILED: boom (run {second.run_id})" in texts[1]
    app.close()


def test_the_command_exit_code_is_the_jobs_own_with_a_webhook_down(cli: Cli, project: Path) -> None:
    with (project / "jobctl.toml").open("a") as f:
        f.write(hook_toml(f"http://127.0.0.1:{free_port()}/hook"))
    result = cli("run", "boom", env=ENV)
    assert result.code == 1, result.stderr
    assert "alert for run" in result.stderr and HOOK_TOKEN not in result.stderr
    ok = cli("run", "sleepy", "--param", "seconds=0", env=ENV)
    assert ok.code == 0, ok.stderr


# --------------------------------------------------------------------------- abandoned


def test_a_run_found_abandoned_alerts_once(
    project: Path, db_url: str, psql: psycopg.Connection[Any], smtp_server: Mailbox
) -> None:
    from jobctl.db.locks import lock_key

    dead = psql.execute(
        "INSERT INTO jobctl.runs (job, trigger, status, host, pid, jobctl_version,"
        " lock_backend_pid, lock_key, records_total) VALUES ('boom', 'timer', 'running',"
        " 'gone', 4242, 'x', 2147483000, %s, 7) RETURNING id",
        (lock_key("boom"),),
    ).fetchone()
    assert dead is not None
    app = make_app(project, db_url, mail_toml(smtp_server.port), ENV)
    app.list_runs(job=None, status=None, since=None, limit=5)
    app.list_runs(job=None, status=None, since=None, limit=5)
    assert smtp_server.subjects() == [f"[jobctl] FAILED: boom (run {dead[0]})"]
    body = text_of(smtp_server.messages[0])
    assert "status:    abandoned" in body and "host:      gone (pid 4242)" in body
    assert "records:   7 processed before the failure" in body
    assert alerts_of(psql, dead[0])["channels"] == {"mail": "sent"}
    app.close()


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[jobs.boom]\nalerts = ["nope"]\n', "jobs.boom.alerts: 'nope' is not an alert channel"),
        ('[alerts]\ndefault = ["nope"]\n', "alerts.default: 'nope' is not an alert channel"),
        ('[alerts.channels.x]\ntype = "pager"\n', "alerts.channels.x.type: 'pager' is not one"),
        (
            '[alerts.channels.x]\ntype = "webhook"\nurl = "ftp://x"\n',
            "alerts.channels.x.url: must start with http://",
        ),
        (
            '[alerts.channels.x]\ntype = "email"\nto = ["a@b"]\nfrom = "j@b"\n'
            'smtp_host = "h"\nusername = "u"\n',
            "alerts.channels.x.password: is required",
        ),
    ],
)
def test_a_bad_alert_config_exits_2_naming_the_key(
    cli: Cli, project: Path, toml: str, message: str
) -> None:
    with (project / "jobctl.toml").open("a") as f:
        f.write("\n" + toml)
    result = cli("jobs", "list")
    assert result.code == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- STARTTLS


def test_email_over_starttls_with_auth(
    project: Path, db_url: str, tmp_path: Path, psql: psycopg.Connection[Any]
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: no throw-away certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    box, controller = starttls_server(str(cert), str(key))
    controller.start()
    try:
        extra = mail_toml(box.port).replace(
            'smtp_host = "127.0.0.1"',
            f'smtp_host = "127.0.0.1"\nstarttls = true\nca_file = "{cert}"',
        )
        app = make_app(project, db_url, extra, ENV)
        outcome = boom(app)
        assert box.subjects() == [f"[jobctl] FAILED: boom (run {outcome.run_id})"]
        assert box.logins == [USER]
        app.close()
    finally:
        controller.stop()
