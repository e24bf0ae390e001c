#!/usr/bin/env python3
"""Benchmark of ``jobctl report`` to many recipients against a local SMTP server.

    .venv/bin/python bench/bench_report.py                    # 1,000 recipients x 3 sections
    .venv/bin/python bench/bench_report.py --recipients 200   # quick
    DATABASE_URL=postgresql://... bench/bench_report.py       # an existing server

Data: ``users`` (``--recipients`` rows, all weekly), ``wines`` (40) and ``cellar_moves``
(``--moves`` rows over the last 60 days, indexed on ``(user_id, moved_at)``), made
server-side with ``generate_series``. The report is the example's per-user cellar
mail: three sections per recipient (bottles held, the week's ins and outs, wines at
their peak), a multipart text + HTML mail each, over one SMTP session to an
aiosmtpd server on 127.0.0.1 (in this process, another thread, discarding the mails
after counting them and noting when each arrived).

Measured, one after the other on the same data:

  bare      what any script must do: the same three queries per recipient on one
            psycopg connection, and one plain-text mail per recipient over one
            smtplib session (no templates, no HTML part, no record of what was sent)
  jobctl    ``jobctl report --date D`` as a process: start-up, the runner, the
            recipients query, 3 read-only queries, two templates, one mail and one
            recorded delivery (its own fenced transaction) per recipient
  render    ``jobctl report --date D --no-send --output FILE``: the same without SMTP

Per-recipient median: the median gap between two mails' arrival at the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, jobctl_env, server_url, stop_server, uses_embedded

VENV_BIN = Path(sys.executable).parent
JOBCTL = str(VENV_BIN / "jobctl")

SECTIONS = {
    "Bottles in your cellar": """
SELECT w.name AS wine, w.vintage, sum(m.bottles) AS bottles
FROM cellar_moves m JOIN wines w ON w.id = m.wine_id
WHERE m.user_id = :user_id AND m.moved_at < :period_end
GROUP BY w.name, w.vintage HAVING sum(m.bottles) > 0 ORDER BY w.name, w.vintage""",
    "This week's ins and outs": """
SELECT w.name AS wine, w.vintage,
       coalesce(sum(m.bottles) FILTER (WHERE m.bottles > 0), 0) AS bottles_in,
       coalesce(-sum(m.bottles) FILTER (WHERE m.bottles < 0), 0) AS bottles_out
FROM cellar_moves m JOIN wines w ON w.id = m.wine_id
WHERE m.user_id = :user_id AND m.moved_at >= :period_start AND m.moved_at < :period_end
GROUP BY w.name, w.vintage ORDER BY w.name, w.vintage""",
    "At their peak": """
SELECT w.name AS wine, w.vintage, w.peak_until AS drink_before
FROM cellar_moves m JOIN wines w ON w.id = m.wine_id
WHERE m.user_id = :user_id AND m.moved_at < :period_end
  AND w.peak_from < :period_end AND w.peak_until >= :period_start
GROUP BY w.name, w.vintage, w.peak_until HAVING sum(m.bottles) > 0 ORDER BY w.peak_until""",
}

CONFIG = """
timezone = "UTC"

[report]
title = "Your cellar this week"
channels = ["mail"]
recipients = "SELECT id AS user_id, email, name FROM users ORDER BY id"
subject = "{{{{ title }}}}, {{{{ recipient.name }}}}: {{{{ period.label }}}}"

[alerts.channels.mail]
type = "email"
to = ["nobody@example.org"]
from = "reports@example.org"
smtp_host = "127.0.0.1"
smtp_port = {port}
"""

DATA = """
DROP TABLE IF EXISTS users, wines, cellar_moves;
CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, name text NOT NULL);
CREATE TABLE wines (id int PRIMARY KEY, name text, vintage int, peak_from date, peak_until date);
CREATE TABLE cellar_moves (user_id int, wine_id int, moved_at timestamptz, bottles int);
SELECT setseed(0.5);
INSERT INTO users SELECT g, 'user' || g || '@example.org', 'User ' || g
FROM generate_series(1, %(users)s) g;
INSERT INTO wines SELECT g, 'Wine ' || g, 1990 + g, current_date - 300 + g * 10,
       current_date + g * 30
FROM generate_series(1, 40) g;
INSERT INTO cellar_moves
SELECT 1 + floor(random() * %(users)s)::int, 1 + floor(random() * 40)::int,
       now() - random() * interval '60 days',
       CASE WHEN random() < 0.7 THEN 1 + floor(random() * 6)::int ELSE -1 END
FROM generate_series(1, %(moves)s);
CREATE INDEX ON cellar_moves (user_id, moved_at);
"""


class Inbox:
    """Counts the mails and notes when each arrived; keeps nothing else."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.arrivals.append(time.perf_counter())
        return "250 OK"

    def reset(self) -> None:
        with self.lock:
            self.arrivals.clear()

    def median_gap_ms(self) -> float:
        gaps = [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]
        return statistics.median(gaps) * 1000 if gaps else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def week_of(day: date) -> tuple[date, date]:
    start = day - timedelta(days=day.weekday())
    return start, start + timedelta(days=7)


def bare(url: str, port: int, period: tuple[date, date]) -> int:
    """Three queries and one plain mail per recipient, nothing else."""
    from jobctl.sqltext import parse_query

    queries = [parse_query(q).text for q in SECTIONS.values()]
    sent = 0
    with psycopg.connect(url) as conn, smtplib.SMTP("127.0.0.1", port) as smtp:
        users = conn.execute("SELECT id, email, name FROM users ORDER BY id").fetchall()
        for user_id, email, name in users:
            binds = {"user_id": user_id, "period_start": period[0], "period_end": period[1]}
            body = [name]
            for query in queries:
                for row in conn.execute(query, binds).fetchall():
                    body.append("  ".join(map(str, row)))
            mail = EmailMessage()
            mail["Subject"], mail["From"], mail["To"] = "Your cellar", "r@example.org", email
            mail.set_content("\n".join(body))
            smtp.send_message(mail)
            sent += 1
        conn.rollback()
    return sent


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipients", type=int, default=1000)
    p.add_argument("--moves", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=2, help="measured runs of each (best kept)")
    p.add_argument("--profile", action="store_true", help="also print where jobctl spends it")
    a = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="jobctl-bench-report-"))
    embedded = uses_embedded()
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    env = jobctl_env(tmp / "jobctl.toml", tmp / "data")
    toml = CONFIG.format(port=port) + "".join(
        f'\n[[report.sections]]\ntitle = "{title}"\nsql = """{sql}\n"""\n'
        for title, sql in SECTIONS.items()
    )
    (tmp / "jobctl.toml").write_text(toml)
    try:
        subprocess.run([JOBCTL, "db", "upgrade"], env=env, cwd=tmp, check=True, capture_output=True)
        url = server_url(tmp / "data")
        with psycopg.connect(url, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            # one script of several statements: sent as a simple query, the sizes pasted in
            script = DATA.replace("%(users)s", str(a.recipients))
            conn.execute(script.replace("%(moves)s", str(a.moves)).encode())
            conn.execute("VACUUM ANALYZE users, wines, cellar_moves")
        day = datetime.now(UTC).date() - timedelta(days=7)
        period = week_of(day)
        print(
            f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs "
            f"{platform.machine()} {cpu_model()}, Python {platform.python_version()}, "
            f"PostgreSQL {version[0] if version else '?'}{' (embedded)' if embedded else ''}"
        )
        print(f"# {a.recipients} recipients x {len(SECTIONS)} sections, {a.moves} cellar moves")

        def jobctl(*extra: str) -> float:
            seconds, proc = timed(
                lambda: subprocess.run(
                    [JOBCTL, "report", "--date", day.isoformat(), "--force", *extra],
                    env=env,
                    cwd=tmp,
                    capture_output=True,
                    text=True,
                )
            )
            if proc.returncode != 0:
                raise SystemExit(f"jobctl report failed ({proc.returncode}): {proc.stderr}")
            return float(seconds)

        results: dict[str, list[float]] = {"bare": [], "jobctl": [], "render": []}
        gaps: dict[str, list[float]] = {"bare": [], "jobctl": []}
        for _ in range(a.runs):
            inbox.reset()
            seconds, sent = timed(lambda: bare(url, port, period))
            assert sent == a.recipients and len(inbox.arrivals) == a.recipients
            results["bare"].append(seconds)
            gaps["bare"].append(inbox.median_gap_ms())
            inbox.reset()
            results["jobctl"].append(jobctl())
            assert len(inbox.arrivals) == a.recipients, len(inbox.arrivals)
            gaps["jobctl"].append(inbox.median_gap_ms())
            results["render"].append(jobctl("--no-send", "--output", str(tmp / "all.txt")))
        if a.profile:
            stats = tmp / "report.prof"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cProfile",
                    "-o",
                    str(stats),
                    JOBCTL,
                    "report",
                    "--date",
                    day.isoformat(),
                    "--force",
                ],
                env=env,
                cwd=tmp,
                capture_output=True,
                check=True,
            )
            import pstats

            pstats.Stats(str(stats)).sort_stats("cumulative").print_stats(
                "jobctl/(jobs|notify|reports|db|context)", 30
            )
        base = min(results["bare"])
        print()
        print(f"| run | total (best of {a.runs}) | per recipient, median | x bare |")
        print("|---|---|---|---|")
        for name in ("bare", "jobctl", "render"):
            best = min(results[name])
            gap = f"{min(gaps[name]):.1f} ms" if name in gaps else "-"
            print(f"| {name} | {best:.2f} s | {gap} | {best / base:.2f}x |")
        print(f"\nall runs: { {k: [round(v, 2) for v in vs] for k, vs in results.items()} }")
    finally:
        controller.stop()
        asyncio.set_event_loop(None)
        if embedded:
            stop_server(tmp / "data")
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
