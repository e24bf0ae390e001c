"""The shipped example (examples/): retention policies on the app's log tables, the
per-user weekly mail to a file outbox, and alerts to a file, as the Quickstart runs them."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import Cli
from tests.fixtures.example import example_project

TODAY = date(2026, 11, 30)


def test_the_example_cleans_up_mails_every_user_and_alerts_to_a_file(
    project: Path, cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    example = example_project(project / "example", TODAY)
    run = Cli(example, cli.env)
    assert run("run", "seed_app").code == 0
    old_mail = "SELECT count(*) FROM email_log WHERE sent_at < now() - interval '90 days'"
    before = psql.execute(old_mail).fetchone()
    assert before is not None and before[0] > 1000
    total = psql.execute("SELECT count(*) FROM email_log").fetchone()

    dry = run("cleanup", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert f"policy email_log: would delete {before[0]} rows" in dry.stderr
    assert psql.execute("SELECT count(*) FROM email_log").fetchone() == total

    done = run("cleanup")
    assert done.code == 0, done.stderr
    assert psql.execute(old_mail).fetchone() == (0,)
    for table, column, keep in (("activity_log", "at", "180"), ("api_usage", "at", "30")):
        left = psql.execute(
            f"SELECT count(*) FROM {table} WHERE {column} < now() - interval '{keep} days'"
        ).fetchone()
        assert left == (0,), table
    assert psql.execute("SELECT count(*) FROM cache WHERE expires_at < now()").fetchone() == (0,)
    assert psql.execute("SELECT count(*) FROM cache").fetchone() != (0,)

    weekly = psql.execute("SELECT email FROM users WHERE weekly_mail ORDER BY id").fetchall()
    sent = run("report")
    assert sent.code == 0, sent.stderr
    assert f"report: {len(weekly)} sent, 0 failed" in sent.stderr
    outbox = (example / "outbox" / "weekly.txt").read_text()
    assert re.findall(r"^==> \S+  To: (\S+)  Subject: ", outbox, re.M) == [w[0] for w in weekly]
    assert "BOTTLES IN YOUR CELLAR" in outbox and "JOB HEALTH" not in outbox
    assert run("report").stderr.count(f"({len(weekly)} sent before)") == 1
    assert (example / "outbox" / "weekly.txt").read_text() == outbox

    failed = run(
        "sync", "--source", "permits", "--url", "http://127.0.0.1:9/x.json", "--retries", "0"
    )
    assert failed.code == 1
    run_id = re.search(r"\(run (\d+)\)", failed.stderr)
    assert run_id is not None
    alerts = (example / "outbox" / "alerts.txt").read_text()
    assert f"Subject: [jobctl] FAILED: sync (run {run_id.group(1)})" in alerts
    assert f"jobctl runs show {run_id.group(1)}" in alerts
