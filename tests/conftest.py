"""Test fixtures: a real PostgreSQL server, a fresh database per test, a clean environment.

The server is ``JOBCTL_TEST_DATABASE_URL`` / ``DATABASE_URL`` when set, else the
embedded server jobctl itself uses. Each test gets its own database cloned from a
template that already holds the schema (``CREATE DATABASE … TEMPLATE``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_SERVER_URL = os.environ.get("JOBCTL_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
_SCRUB_PREFIXES = ("JOBCTL_", "PG")
_SCRUB = {"DATABASE_URL", "INVOCATION_ID", "NO_COLOR", "FORCE_COLOR"}


def _scrubbed(environ: dict[str, str]) -> dict[str, str]:
    return {
        k: v for k, v in environ.items() if k not in _SCRUB and not k.startswith(_SCRUB_PREFIXES)
    }


def _with_db(url: str, dbname: str) -> str:
    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    conninfo["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**conninfo)


def _as_url(conninfo: str) -> str:
    """A libpq key=value string as a postgresql:// URL (what DATABASE_URL holds)."""
    from urllib.parse import quote, urlencode

    d = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = quote(str(d.pop("user", "")))
    password = d.pop("password", None)
    host = str(d.pop("host", ""))
    port = d.pop("port", None)
    dbname = d.pop("dbname", "postgres")
    auth = f"{user}:{quote(str(password))}@" if password else (f"{user}@" if user else "")
    if host.startswith("/"):
        d["host"] = host
        host = ""
    netloc = auth + host + (f":{port}" if port and host else "")
    if port and not host:
        d["port"] = port
    query = urlencode({k: str(v) for k, v in d.items()})
    return f"postgresql://{netloc}/{dbname}" + (f"?{query}" if query else "")


@dataclass
class Server:
    url: str  # admin URL (database "postgres")
    data_dir: Path | None  # embedded server's JOBCTL_DATA_DIR, when embedded
    socket_dir: str | None

    def db_url(self, name: str) -> str:
        return _as_url(_with_db(self.url, name))


@contextmanager
def one_server_start() -> Iterator[None]:
    """One embedded server initialised at a time on this machine (see ``pg_server``)."""
    with open(Path(tempfile.gettempdir()) / "jobctl-test-pg-start.lock", "a+") as start_lock:
        fcntl.flock(start_lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if _SERVER_URL:
        yield Server(_SERVER_URL, None, None)
        return
    from jobctl.db.embedded import embedded_url, stop_embedded

    # Not under pytest's basetemp: pytest prunes old basetemps, which would pull the
    # data directory from under a server still used by a concurrent session.
    data_dir = Path(tempfile.mkdtemp(prefix="jobctl-test-pg-"))
    # pytest-xdist workers start their servers at the same moment; as root the
    # package creates its OS user on first use, and two racing `useradd`s leave
    # one initdb unable to chmod its directory. One start at a time, machine-wide.
    with one_server_start():
        url, _ = embedded_url(data_dir)
    host = psycopg.conninfo.conninfo_to_dict(url).get("host")
    yield Server(url, data_dir, str(host) if host else None)
    stop_embedded(data_dir)
    for _ in range(50):
        if not (data_dir / "pg" / "postmaster.pid").exists():
            break
        time.sleep(0.1)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> str:
    """A database holding jobctl's schema, cloned for every test."""
    from jobctl.db.engine import Database
    from jobctl.db.migrate import upgrade

    name = f"jobctl_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    db = Database(pg_server.db_url(name))
    upgrade(db)
    db.dispose()
    return name


@pytest.fixture
def db_url(pg_server: Server, template_db: str) -> Iterator[str]:
    """A fresh database for this test, with the schema already applied."""
    name = f"jobctl_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    yield pg_server.db_url(name)
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def empty_db_url(pg_server: Server) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = f"jobctl_e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.db_url(name)
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No JOBCTL_*, DATABASE_URL, PG* from the developer's shell; cwd in tmp_path."""
    for key in list(os.environ):
        if key in _SCRUB or key.startswith(_SCRUB_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("JOBCTL_DATA_DIR", str(tmp_path / "jobctl-data-unused"))
    monkeypatch.chdir(tmp_path)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


class Cli:
    """Runs the real ``jobctl`` executable in a subprocess, in a project directory."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.exe = shutil.which("jobctl", path=str(Path(sys.executable).parent)) or "jobctl"

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        input: str | None = None,
    ) -> Result:
        proc = subprocess.run(
            [self.exe, *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(
        self, *args: str, env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.exe, *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,
        )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory with a config and a user jobs module (sleepy, flaky, boom)."""
    (tmp_path / "jobctl.toml").write_text(
        'timezone = "UTC"\njobs_module = "myjobs"\n\n[jobs.sleepy]\ntimeout = "2m"\n'
    )
    shutil.copy(ROOT / "tests" / "fixtures" / "myjobs.py", tmp_path / "myjobs.py")
    return tmp_path


@pytest.fixture
def cli(project: Path, db_url: str) -> Cli:
    env = _scrubbed(dict(os.environ))
    env["DATABASE_URL"] = db_url
    env["JOBCTL_DATA_DIR"] = str(project / "data-unused")
    env["NO_COLOR"] = "1"
    return Cli(project, env)


@pytest.fixture
def psql(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A direct autocommit connection to the test database, for assertions."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn
