"""Helpers shared by the ``jobctl sync`` tests (real PostgreSQL, real ``jobctl`` executable).

Feeds come from the project's own generator (:mod:`tests.fixtures.feeds`): the same
arguments give the same bytes, so each feed is generated once per test session (in
process) and copied where a test needs it.
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from tests.conftest import Cli
from tests.fixtures import feeds

GEN_FEED = Path(feeds.__file__)  # runs as a script too (standard library only)
KEY = ("PERMIT_NUM", "REVISION_NUM")
PERMITS_SOURCE = """
[sources.permits]
path = "feed.json"
key = ["PERMIT_NUM", "REVISION_NUM"]
table = "permits"
"""

_cache_dir: Path | None = None
_cache: dict[tuple[Any, ...], tuple[Path, feeds.FeedStats]] = {}


def _dir() -> Path:
    global _cache_dir
    if _cache_dir is None:
        _cache_dir = Path(tempfile.mkdtemp(prefix="jobctl-test-feeds-"))
        atexit.register(shutil.rmtree, _cache_dir, True)
    return _cache_dir


def gen_command(records: int, change_pct: float | None, fmt: str, out: Path) -> list[str]:
    """The generator as a separate process (for a feed made in the background)."""
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []  # yield to the tests' work
    cmd = [*nice, sys.executable, str(GEN_FEED), "--records", str(records), "--format", fmt]
    if change_pct is not None:
        cmd += ["--change-pct", str(change_pct)]
    return [*cmd, "-o", str(out)]


def parse_gen_stats(stderr: str) -> dict[str, int]:
    """``feeds: ... records_written=N base=B changed=X new=Y`` → the numbers."""
    found = dict(re.findall(r"(\w+)=(\d+)", stderr))
    return {k: int(found[k]) for k in ("records_written", "base", "changed", "new")}


@dataclass(frozen=True)
class Feed:
    path: Path
    written: int
    changed: int
    new: int


def gen_feed(records: int, change_pct: float | None = None, fmt: str = "json") -> Feed:
    """A generated feed (cached for the session); its counts come from the generator."""
    key = (records, change_pct, fmt)
    if key not in _cache:
        out = _dir() / f"feed_{records}_{change_pct}.{fmt}"
        _cache[key] = (out, feeds.generate(out, records, change_pct=change_pct, fmt=fmt))
    path, made = _cache[key]
    return Feed(path, made.written, made.changed, made.new)


def load_records(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(path.read_bytes())
    return records


def write_json(path: Path, records: list[Any]) -> Path:
    """A JSON array feed, one record a line (like the generator's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
    return path


def write_ndjson(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def key_of(record: dict[str, Any]) -> tuple[str, str]:
    return (record["PERMIT_NUM"], record["REVISION_NUM"])


def configure(project: Path, body: str) -> None:
    (project / "jobctl.toml").write_text('timezone = "UTC"\n' + body)


def runs(cli: Cli, *args: str) -> list[dict[str, Any]]:
    result = cli("runs", "list", "--json", "--limit", "0", *args)
    assert result.code == 0, result.stderr
    listed: list[dict[str, Any]] = json.loads(result.stdout)
    return listed


def last_run(cli: Cli) -> dict[str, Any]:
    return runs(cli, "--job", "sync", "--limit", "1")[0]


def latest(psql: psycopg.Connection[Any], job: str = "sync") -> dict[str, Any]:
    """The newest run of ``job`` straight from ``jobctl.runs`` (cheaper than ``runs list``)."""
    cur = psql.cursor(row_factory=dict_row)
    row = cur.execute(
        "SELECT * FROM jobctl.runs WHERE job = %s ORDER BY id DESC LIMIT 1", (job,)
    ).fetchone()
    assert row is not None, f"no {job} run"
    return row


def counts(run: dict[str, Any]) -> dict[str, int]:
    return {
        k: run[f"records_{k}"]
        for k in ("total", "new", "updated", "unchanged", "removed", "errors")
    }


def expect(
    total: int,
    new: int = 0,
    updated: int = 0,
    unchanged: int = 0,
    removed: int = 0,
    errors: int = 0,
) -> dict[str, int]:
    return {
        "total": total,
        "new": new,
        "updated": updated,
        "unchanged": unchanged,
        "removed": removed,
        "errors": errors,
    }


def source_stats(run: dict[str, Any], name: str = "permits") -> dict[str, Any]:
    stats: dict[str, Any] = run["stats"]["sources"][name]
    return stats


def sync(cli: Cli, *args: str, code: int | None = 0) -> Any:
    result = cli("sync", *args, timeout=120)
    if code is not None:
        assert result.code == code, (result.stdout, result.stderr)
    return result


def sync_fails(cli: Cli, psql: psycopg.Connection[Any], *args: str) -> str:
    """Run a sync that must fail (exit 1, run ``failed``); its error message."""
    sync(cli, *args, code=1)
    run = latest(psql)
    assert run["status"] == "failed", run
    message: str = run["error_message"]
    return message


def table_exists(psql: psycopg.Connection[Any], table: str) -> bool:
    row = psql.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def checksum(psql: psycopg.Connection[Any], table: str = "permits") -> tuple[int, str] | None:
    """Row count and an md5 of every column of every row (None when there is no table)."""
    if not table_exists(psql, table):
        return None
    row = psql.execute(
        sql.SQL(
            "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '')"
            " FROM {} t"
        ).format(sql.Identifier(*table.split(".")))
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def xmins(psql: psycopg.Connection[Any], table: str = "permits") -> dict[tuple[str, ...], Any]:
    """(permit_num, revision_num) → (xmin, updated_at) of every row."""
    rows = psql.execute(
        sql.SQL("SELECT permit_num, revision_num, xmin::text, updated_at FROM {}").format(
            sql.Identifier(*table.split("."))
        )
    ).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def stored(psql: psycopg.Connection[Any], table: str = "permits") -> dict[tuple[str, ...], Any]:
    """(permit_num, revision_num) → data of the active rows."""
    rows = psql.execute(
        sql.SQL("SELECT permit_num, revision_num, data FROM {} WHERE removed_at IS NULL").format(
            sql.Identifier(*table.split("."))
        )
    ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def wait_until(predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
