"""Schema migrations: the numbered files in ``sql/``, applied in order, recorded.

``upgrade`` runs in one transaction behind a transaction-scoped advisory lock,
so two hosts upgrading at once is safe (the second waits, then finds nothing to
do), and it works behind PgBouncer in transaction mode.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jobctl.db.engine import Database

MIGRATION_LOCK = (0x6A6F6263, 0)  # ('jobc', 0): distinct from every job lock key
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    applied_at: datetime | None
    checksum_ok: bool


def sql_dir() -> Path:
    """The ``sql/`` directory: inside the installed package, or at the top of a source
    checkout. (The package is a directory: what ``importlib.resources`` would find,
    without importing it on every command's schema check.)"""
    here = Path(__file__).resolve()
    packaged = here.parents[1] / "sql"
    if packaged.is_dir():
        return packaged
    return here.parents[3] / "sql"


def migrations() -> list[Migration]:
    found = []
    for path in sorted(sql_dir().glob("*.sql")):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    return found


def _applied(conn: Any) -> dict[int, tuple[str, datetime]]:
    from sqlalchemy import text

    rows = conn.execute(text("SELECT version, checksum, applied_at FROM jobctl.schema_migrations"))
    return {r.version: (r.checksum, r.applied_at) for r in rows}


def upgrade(db: Database) -> list[Migration]:
    """Apply every migration not yet applied; return those applied now."""
    from sqlalchemy import text

    done: list[Migration] = []
    with db.begin() as conn:
        # Bounded: a stuck upgrade elsewhere must not hang every command forever.
        conn.execute(text("SET LOCAL lock_timeout = '120s'"))
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:a, :b)"),
            {"a": MIGRATION_LOCK[0], "b": MIGRATION_LOCK[1]},
        )
        conn.execute(text("CREATE SCHEMA IF NOT EXISTS jobctl"))
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS jobctl.schema_migrations ("
                " version integer CONSTRAINT schema_migrations_pkey PRIMARY KEY,"
                " name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        applied = _applied(conn)
        for migration in migrations():
            if migration.version in applied:
                continue
            conn.exec_driver_sql(migration.sql)
            conn.execute(
                text(
                    "INSERT INTO jobctl.schema_migrations (version, name, checksum) "
                    "VALUES (:v, :n, :c)"
                ),
                {"v": migration.version, "n": migration.name, "c": migration.checksum},
            )
            done.append(migration)
    return done


def status(db: Database) -> list[MigrationState]:
    from sqlalchemy import text

    with db.connect() as conn:
        exists = conn.execute(text("SELECT to_regclass('jobctl.schema_migrations')")).scalar()
        applied = _applied(conn) if exists else {}
    return [
        MigrationState(
            m.version,
            m.name,
            applied[m.version][1] if m.version in applied else None,
            m.version not in applied or applied[m.version][0] == m.checksum,
        )
        for m in migrations()
    ]


def latest_version() -> int:
    """The highest version in ``sql/`` (from the file names: nothing is read)."""
    found = (_FILE.match(path.name) for path in sql_dir().glob("*.sql"))
    return max((int(match.group(1)) for match in found if match), default=0)


def ensure_schema(db: Database) -> None:
    """Upgrade if the database is behind; one cheap query when it is not.

    Plain SQL on psycopg: every command runs this check, and a command that
    finds the schema current (and its job's lock held) never needs SQLAlchemy.
    """
    latest = latest_version()
    with db.plain() as conn:
        row = conn.execute(
            "SELECT CASE WHEN to_regclass('jobctl.schema_migrations') IS NULL THEN -1 END"
        ).fetchone()
        current = row[0] if row else None
        if current is None:
            row = conn.execute(
                "SELECT coalesce(max(version), 0) FROM jobctl.schema_migrations"
            ).fetchone()
            current = row[0] if row else None
    if current is None or current < latest:
        upgrade(db)
