"""Schema migrations (the numbered files in sql/) on a real database."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from jobctl.db.engine import Database
from jobctl.db.migrate import Migration, ensure_schema, migrations, sql_dir, status, upgrade
from tests.conftest import ROOT

SQL_FILES = sorted((ROOT / "sql").glob("*.sql"))


@pytest.fixture
def empty_db(empty_db_url: str) -> Iterator[Database]:
    db = Database(empty_db_url)
    yield db
    db.dispose()


def _recorded(url: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(url) as conn:
        return [
            (int(v), n, c)
            for v, n, c in conn.execute(
                "SELECT version, name, checksum FROM jobctl.schema_migrations ORDER BY version"
            ).fetchall()
        ]


def _regclass(url: str, name: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass(%s)::text", (name,)).fetchone()
    return row[0] if row else None


def _expected() -> list[tuple[int, str, str]]:
    out = []
    for path in SQL_FILES:
        version, name = path.stem.split("_", 1)
        out.append((int(version), name, hashlib.sha256(path.read_text().encode()).hexdigest()))
    return out


def test_migrations_are_the_files_in_sql_dir() -> None:
    assert SQL_FILES, "sql/ holds no migration"
    assert sorted(p.name for p in sql_dir().glob("*.sql")) == [p.name for p in SQL_FILES]
    found = migrations()
    assert [(m.version, m.name, m.checksum) for m in found] == _expected()
    versions = [m.version for m in found]
    assert versions == sorted(set(versions)), "versions must be unique and ordered"


def test_upgrade_applies_every_file_once(empty_db: Database, empty_db_url: str) -> None:
    assert _regclass(empty_db_url, "jobctl.runs") is None
    before = status(empty_db)
    assert [s.applied_at for s in before] == [None] * len(SQL_FILES)
    assert _regclass(empty_db_url, "jobctl.schema_migrations") is None, "status must not write"

    applied = upgrade(empty_db)
    assert [(m.version, m.name, m.checksum) for m in applied] == _expected()
    assert _recorded(empty_db_url) == _expected()
    assert _regclass(empty_db_url, "jobctl.runs") == "jobctl.runs"

    assert upgrade(empty_db) == []
    assert _recorded(empty_db_url) == _expected()

    after = status(empty_db)
    assert [(s.version, s.name) for s in after] == [(v, n) for v, n, _ in _expected()]
    assert all(s.applied_at is not None for s in after)
    assert all(s.checksum_ok for s in after)


def test_status_flags_a_migration_edited_after_it_was_applied(
    empty_db: Database, empty_db_url: str
) -> None:
    upgrade(empty_db)
    first = migrations()[0]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE jobctl.schema_migrations SET checksum = 'x' WHERE version = %s",
            (first.version,),
        )
    states = {s.version: s for s in status(empty_db)}
    assert states[first.version].checksum_ok is False
    assert states[first.version].applied_at is not None
    assert all(s.checksum_ok for v, s in states.items() if v != first.version)


def test_concurrent_upgrades_apply_each_migration_once(empty_db_url: str) -> None:
    n = 8
    barrier = threading.Barrier(n)
    results: list[list[Migration]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        db = Database(empty_db_url)
        try:
            barrier.wait(timeout=30)
            done = upgrade(db)
            with lock:
                results.append(done)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results) == n
    applied = sorted(m.version for done in results for m in done)
    assert applied == [v for v, _, _ in _expected()], "each migration applied by exactly one"
    assert sum(1 for done in results if done) == 1
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute(
            "SELECT version, count(*) FROM jobctl.schema_migrations GROUP BY version"
        ).fetchall()
    assert sorted(rows) == [(v, 1) for v, _, _ in _expected()]


def test_ensure_schema_upgrades_a_database_without_the_schema(
    empty_db: Database, empty_db_url: str
) -> None:
    ensure_schema(empty_db)
    assert _regclass(empty_db_url, "jobctl.runs") == "jobctl.runs"
    assert _recorded(empty_db_url) == _expected()
    with psycopg.connect(empty_db_url) as conn:
        stamp = conn.execute("SELECT max(applied_at) FROM jobctl.schema_migrations").fetchone()
    ensure_schema(empty_db)  # up to date: applies nothing
    with psycopg.connect(empty_db_url) as conn:
        again = conn.execute("SELECT max(applied_at) FROM jobctl.schema_migrations").fetchone()
        count = conn.execute("SELECT count(*) FROM jobctl.schema_migrations").fetchone()
    assert again == stamp
    assert count == (len(SQL_FILES),)


def test_ensure_schema_upgrades_a_database_that_is_behind(
    empty_db: Database, empty_db_url: str
) -> None:
    """The migrations table exists but records nothing: everything is applied again."""
    upgrade(empty_db)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'jobctl'"
                " AND tablename <> 'schema_migrations'"
            ).fetchall()
        ]
        assert "runs" in tables
        for table in tables:
            conn.execute(f'DROP TABLE IF EXISTS jobctl."{table}" CASCADE')
        conn.execute("DELETE FROM jobctl.schema_migrations")
    assert all(s.applied_at is None for s in status(empty_db))
    ensure_schema(empty_db)
    assert _regclass(empty_db_url, "jobctl.runs") == "jobctl.runs"
    assert _recorded(empty_db_url) == _expected()


def test_cli_db_upgrade_and_status(cli: Any, empty_db_url: str) -> None:
    env = {"DATABASE_URL": empty_db_url}
    res = cli("db", "status", "--json", env=env)
    assert res.code == 0, res.stderr
    pending = json.loads(res.stdout)
    assert [(s["version"], s["applied_at"]) for s in pending] == [
        (v, None) for v, _, _ in _expected()
    ]

    res = cli("db", "upgrade", env=env)
    assert res.code == 0, res.stderr
    for version, name, _ in _expected():
        assert f"applied {version:04d}_{name}" in res.stderr
    assert "up to date" in res.stderr
    assert "Traceback" not in res.stderr
    assert _recorded(empty_db_url) == _expected()

    res = cli("db", "upgrade", env=env)
    assert res.code == 0, res.stderr
    assert "applied" not in res.stderr
    assert "up to date" in res.stderr

    res = cli("db", "status", "--json", env=env)
    assert res.code == 0, res.stderr
    states = json.loads(res.stdout)
    assert [(s["version"], s["name"]) for s in states] == [(v, n) for v, n, _ in _expected()]
    assert all(s["applied_at"] for s in states)
    assert all(s["checksum_ok"] is True for s in states)

    res = cli("db", "status", env=env)
    assert res.code == 0, res.stderr
    for version, name, _ in _expected():
        assert f"{version:04d}" in res.stdout and name in res.stdout
    assert "pending" not in res.stdout + res.stderr


def test_cli_concurrent_db_upgrades(cli: Any, empty_db_url: str) -> None:
    env = {"DATABASE_URL": empty_db_url}
    procs = [cli.popen("db", "upgrade", env=env) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    appliers = [err for _out, err in outs if "applied 0001" in err]
    assert len(appliers) == 1, outs
    assert _recorded(empty_db_url) == _expected()


def test_upgrade_from_0002_flags_existing_runs_not_dry(
    empty_db: Database, empty_db_url: str
) -> None:
    """A database released at 0002 with runs in it: 0003 adds ``dry_run``, false for them."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA jobctl")
        conn.execute(
            "CREATE TABLE jobctl.schema_migrations (version integer PRIMARY KEY,"
            " name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in migrations():
            if m.version <= 2:
                conn.execute(m.sql.encode())
                conn.execute(
                    "INSERT INTO jobctl.schema_migrations (version, name, checksum)"
                    " VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum),
                )
        conn.execute(
            "INSERT INTO jobctl.runs (job, trigger, status, host, pid, jobctl_version)"
            " VALUES ('sync', 'manual', 'completed', 'h', 1, 'old')"
        )
        has_column = "SELECT count(*) FROM information_schema.columns WHERE table_schema"
        has_column += " = 'jobctl' AND table_name = 'runs' AND column_name = 'dry_run'"
        assert conn.execute(has_column).fetchone() == (0,)

    applied = upgrade(empty_db)
    # 0003, then whatever came after it (0004 alert_state, ...)
    later = [(m.version, m.name) for m in migrations() if m.version > 3]
    assert [(m.version, m.name) for m in applied] == [(3, "runs_dry_run"), *later]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT job, dry_run FROM jobctl.runs").fetchall() == [("sync", False)]
        conn.execute(
            "INSERT INTO jobctl.runs (job, trigger, status, host, pid, jobctl_version)"
            " VALUES ('sync', 'manual', 'completed', 'h', 1, 'new')"
        )
        assert conn.execute(
            "SELECT dry_run FROM jobctl.runs WHERE jobctl_version = 'new'"
        ).fetchone() == (False,)
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute("UPDATE jobctl.runs SET dry_run = NULL")
    assert _recorded(empty_db_url) == _expected()
