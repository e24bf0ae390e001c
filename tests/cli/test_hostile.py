"""Hostile values through the real ``jobctl`` executable: exit 2, one line naming where
the bad value came from (key and file, variable, ``.env`` line, option), no traceback,
nothing recorded. Property tests spawn a process per example, so they keep to a few
examples each; the parsers themselves get many more in tests/unit/test_config.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Cli, Result

#: each example starts a process (~0.5 s); the fixtures (one database) are shared
#: by the examples of a test, which is what these tests want
few = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
#: what a shell can pass as one argument: no NUL, no lone surrogates
arg_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=20,
)


def configure(cli: Cli, text: str) -> Path:
    path = cli.cwd / "jobctl.toml"
    path.write_text('jobs_module = "myjobs"\n' + text, encoding="utf-8")
    return path


def run_count(psql: psycopg.Connection[Any]) -> int:
    row = psql.execute("SELECT count(*) FROM jobctl.runs").fetchone()
    assert row is not None
    return int(row[0])


def assert_clean_exit(result: Result) -> None:
    """Exit 0 or 2; never an internal error or a traceback; a refusal is one line."""
    assert result.code in (0, 2), (result.code, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if result.code == 2:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("jobctl: error: "), result.stderr


def assert_refused(result: Result, *needles: str) -> str:
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert_clean_exit(result)
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return result.stderr


# --- the values of issue 8, one by one ------------------------------------------------


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("timeout = inf", "jobs.sleepy.timeout: duration inf is not a finite number"),
        ("timeout = nan", "jobs.sleepy.timeout: duration nan is not a finite number"),
        ("timeout = -5", "jobs.sleepy.timeout: duration -5 is negative"),
        ("timeout = 0", "jobs.sleepy.timeout: duration 0 must be more than zero"),
        ("timeout = 1e308", "jobs.sleepy.timeout: duration 1e+308 is too long"),
        ('timeout = "99999999999d"', "jobs.sleepy.timeout: duration '99999999999d' is too long"),
        ("retry_delay = -inf", "jobs.sleepy.retry_delay: duration -inf is not a finite"),
        ('misfire_grace = "0s"', "jobs.sleepy.misfire_grace: duration '0s' must be more"),
        ("catchup_window = 1e300", "jobs.sleepy.catchup_window: duration 1e+300 is too long"),
        ("enabled = 2", "jobs.sleepy.enabled: 2 is not a boolean (true/false, yes/no, on/off"),
        ("retries = 1e3", "jobs.sleepy.retries: 1000.0 is not a whole number"),
    ],
)
def test_a_hostile_job_value_is_exit_2_naming_key_and_file(
    cli: Cli, psql: psycopg.Connection[Any], line: str, needle: str
) -> None:
    path = configure(cli, f"[jobs.sleepy]\n{line}\n")
    result = cli("run", "sleepy", "-p", "seconds=0")
    assert_refused(result, f"jobctl: error: {path.name}: {needle}")
    assert run_count(psql) == 0


def test_heartbeat_below_zero_names_the_top_level_key(cli: Cli) -> None:
    configure(cli, "heartbeat = -1\n")
    assert_refused(cli("run", "sleepy", "-p", "seconds=0"), "jobctl.toml: heartbeat: ")


def test_enabled_0_means_disabled_as_its_message_says(cli: Cli) -> None:
    configure(cli, "[jobs.sleepy]\nenabled = 0\n")
    result = cli("run", "sleepy", "-p", "seconds=0")
    assert result.code == 0, result.stderr
    assert "disabled" in result.stderr


def test_a_malformed_database_url_is_exit_2_with_its_password_redacted(cli: Cli) -> None:
    url = "postgresql://u:pw@[::1/db"
    result = cli("--database-url", url, "runs", "list")
    err = assert_refused(result, "--database-url: 'postgresql://u:***@[::1/db'", "IPv6")
    assert ":pw@" not in err
    from_env = cli("runs", "list", env={"DATABASE_URL": url})
    assert_refused(from_env, "environment: DATABASE_URL: ", "u:***@")


def test_a_url_libpq_refuses_is_exit_2(cli: Cli) -> None:
    result = cli("--database-url", "postgresql://u:pw9@127.0.0.1:1/db?foo=bar", "runs", "list")
    err = assert_refused(result, 'invalid URI query parameter: "foo"')
    assert "pw9" not in err


def test_an_environment_value_is_blamed_on_the_variable(cli: Cli) -> None:
    configure(cli, 'scheduler = "cron"\n')
    result = cli("jobs", "list", env={"JOBCTL_SCHEDULER": "bogus"})
    err = assert_refused(result, "environment: JOBCTL_SCHEDULER: 'bogus' is not one of")
    assert "jobctl.toml" not in err
    override = cli("run", "sleepy", env={"JOBCTL_SLEEPY_TIMEOUT": "-1s"})
    assert_refused(override, "environment: JOBCTL_SLEEPY_TIMEOUT: duration '-1s'")


def test_a_malformed_dotenv_is_a_config_error_naming_file_and_line(
    cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    (cli.cwd / ".env").write_text('GOOD=1\nAPI_TOKEN="tok-unterminated\n')
    result = cli("run", "sleepy", "-p", "seconds=0")
    err = assert_refused(result, "jobctl: error: .env: line 2: python-dotenv cannot parse")
    assert "could not parse statement" not in err and "tok-unterminated" not in err
    assert run_count(psql) == 0
    explicit = cli("--env-file", "other.env", "runs", "list")
    assert_refused(explicit, "env file 'other.env' does not exist")


# --- without a config file ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("sync",), ("snapshot",), ("backfill", "--from", "2026-01-01", "--to", "2026-01-02")],
)
def test_a_command_that_needs_a_config_says_where_it_looked(cli: Cli, args: tuple[str]) -> None:
    (cli.cwd / "jobctl.toml").unlink()
    result = cli(*args)
    err = assert_refused(
        result,
        f"no config file: looked for {cli.cwd / 'jobctl.toml'} (set --config or JOBCTL_CONFIG)",
    )
    assert "no sources are configured" not in err


def test_an_unknown_job_without_a_config_names_the_missing_file(
    cli: Cli, psql: psycopg.Connection[Any]
) -> None:
    (cli.cwd / "jobctl.toml").unlink()
    err = assert_refused(
        cli("run", "nightly"),
        "unknown job 'nightly' (known jobs: backfill, cleanup, report, snapshot, sync); ",
        f"no config file: looked for {cli.cwd / 'jobctl.toml'} (set --config or JOBCTL_CONFIG)",
        "jobs_module",
    )
    assert len(err.strip().splitlines()) == 1
    assert run_count(psql) == 0


@pytest.mark.parametrize(
    "args", [("runs", "list"), ("runs", "list", "--json"), ("jobs", "list"), ("db", "status")]
)
def test_commands_that_need_no_config_work_without_one(cli: Cli, args: tuple[str]) -> None:
    (cli.cwd / "jobctl.toml").unlink()
    result = cli(*args)
    assert result.code == 0, result.stderr
    assert "error" not in result.stderr


def test_an_explicit_config_that_is_missing_is_named(cli: Cli) -> None:
    result = cli("--config", "nope.toml", "jobs", "list")
    assert_refused(result, "config file 'nope.toml' does not exist")
    from_env = cli("jobs", "list", env={"JOBCTL_CONFIG": "gone.toml"})
    assert_refused(from_env, "'gone.toml' does not exist")


# --- command-line durations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--timeout", "inf", "--timeout 'inf' is not a duration"),
        ("--timeout", "-5s", "--timeout '-5s' is not a duration"),
        ("--timeout", "0s", "--timeout '0s' must be more than zero"),
        ("--timeout", "1e308s", "--timeout '1e308s' is not a duration"),
        ("--timeout", "99999999999d", "--timeout '99999999999d' is too long"),
        ("--retry-delay", "nan", "--retry-delay 'nan' is not a duration"),
        ("--retry-delay", "9" * 400 + "s", "is too long"),
        ("--wait-timeout", "-1m", "--wait-timeout '-1m' is not a duration"),
        ("--wait-timeout", "5300w", "--wait-timeout '5300w' is too long"),
    ],
)
def test_a_hostile_duration_option_is_exit_2(
    cli: Cli, psql: psycopg.Connection[Any], option: str, value: str, needle: str
) -> None:
    assert_refused(cli("run", "sleepy", "-p", "seconds=0", option, value), needle)
    assert run_count(psql) == 0


@pytest.mark.parametrize(
    ("value", "needle"), [("0s", "must be more than zero"), ("inf", "is not a duration")]
)
def test_a_hostile_since_is_exit_2(cli: Cli, value: str, needle: str) -> None:
    assert_refused(cli("runs", "list", "--since", value), f"--since {value!r} {needle}")


def test_a_param_that_is_not_utf8_is_exit_2(cli: Cli, psql: psycopg.Connection[Any]) -> None:
    # a shell hands over bytes; Python sees the invalid ones as lone surrogates
    result = cli("run", "sleepy", "-p", "seconds=0", "-p", "name=caf\udce9")
    assert_refused(result, "--param", "is not valid UTF-8 text")
    assert run_count(psql) == 0


# --- property tests: any value, exit 0 or 2, never a traceback -------------------------------

durations = st.one_of(
    arg_text,
    st.builds(
        lambda n, unit: f"{n}{unit}",
        st.one_of(st.integers(min_value=-5, max_value=10**12), st.floats()),
        st.sampled_from(["ms", "s", "m", "h", "d", "w", "", "y"]),
    ),
)


@pytest.mark.slow
@pytest.mark.timeout(900)
@few
@given(
    st.sampled_from(["--timeout", "--retry-delay", "--wait-timeout"]),
    durations,
)
@example("--timeout", "1e308s")
@example("--wait-timeout", "0s")
def test_any_duration_option(cli: Cli, option: str, value: str) -> None:
    result = cli("run", "sleepy", "-p", "seconds=0", f"{option}={value}")
    assert_clean_exit(result)


@pytest.mark.slow
@pytest.mark.timeout(900)
@few
@given(durations)
def test_any_since(cli: Cli, value: str) -> None:
    result = cli("runs", "list", f"--since={value}")
    assert_clean_exit(result)


@pytest.mark.slow
@pytest.mark.timeout(900)
@few
@given(st.lists(st.one_of(arg_text, st.builds("{}={}".format, arg_text, arg_text)), max_size=3))
@example(["=x", "a=b"])
@example(["k=v=w", "k=", "x"])
def test_any_params(cli: Cli, psql: psycopg.Connection[Any], items: list[str]) -> None:
    # sleepy reads "seconds": keep random items away from it
    items = [i for i in items if i.partition("=")[0].strip() != "seconds"]
    before = run_count(psql)
    args = [f"--param={item}" for item in items]
    result = cli("run", "sleepy", "-p", "seconds=0", *args)
    assert_clean_exit(result)
    ok = all("=" in i and i.partition("=")[0].strip() for i in items)
    assert (result.code == 0) == ok, (items, result.stderr)
    assert run_count(psql) == before + (1 if ok else 0)
    if ok:
        row = psql.execute("SELECT params FROM jobctl.runs ORDER BY id DESC LIMIT 1").fetchone()
        assert row is not None
        expected = {"seconds": "0"}
        for item in items:
            key, _, value = item.partition("=")
            expected[key.strip()] = value
        assert row[0] == expected


scalars = st.one_of(
    arg_text,
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(),
    st.booleans(),
    st.dates(),
)


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value == float("inf") else repr(value))
    if isinstance(value, str):
        return json.dumps(value)
    return str(value) if isinstance(value, int) else value.isoformat()


@pytest.mark.slow
@pytest.mark.timeout(900)
@few
@given(
    st.dictionaries(
        st.sampled_from(
            ["enabled", "timeout", "retries", "retry_delay", "schedule", "timezone", "catchup"]
        ),
        scalars,
        min_size=1,
        max_size=3,
    ),
    st.dictionaries(
        st.sampled_from(["heartbeat", "log_tail_lines", "timezone", "scheduler"]),
        scalars,
        max_size=2,
    ),
)
def test_any_config_values(cli: Cli, job: dict[str, Any], top: dict[str, Any]) -> None:
    lines = [f"{k} = {toml(v)}" for k, v in top.items()]
    lines += ["[jobs.sleepy]", *(f"{k} = {toml(v)}" for k, v in job.items())]
    configure(cli, "\n".join(lines) + "\n")
    result = cli("jobs", "list")
    assert_clean_exit(result)
    if result.code == 2:
        assert "jobctl.toml: " in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
@few
@given(st.one_of(arg_text, st.dates().map(str)))
@example("0001-01-01")
@example("9999-12-31")
@example("1000-01-01")
def test_any_date(cli: Cli, value: str) -> None:
    configure(
        cli,
        '[snapshots.t]\ntable = "snap_t"\nkey = ["k"]\nperiods = ["day", "week", "month"]\n'
        'week_start = "sunday"\n'
        'query = "SELECT 1 AS k WHERE CAST(:period_start AS date) < :period_end"\n',
    )
    result = cli("snapshot", f"--date={value}")
    assert_clean_exit(result)


database_urls = st.builds(
    "{}://{}{}{}{}{}".format,
    st.sampled_from(["postgresql", "postgres", "postgresql+psycopg", "mysql", ""]),
    st.sampled_from(["", "u@", "u:pw@", "u:p%zz@", "u:@"]),
    st.sampled_from(["127.0.0.1", "[::1]", "[::1", "::1]", "", "[zz]"]),
    st.sampled_from(["", ":1", ":abc", ":99999", ":", ":1,127.0.0.1:2"]),
    st.sampled_from(["", "/db", "/d%zzb"]),
    st.sampled_from(["", "?sslmode=disable", "?foo=bar", "?sslmode=bogus", "?connect_timeout=1"]),
)


@pytest.mark.slow
@pytest.mark.timeout(900)
@few
@given(database_urls)
@example("postgresql://u:pw@[::1/db")
def test_any_database_url(cli: Cli, url: str) -> None:
    # every host here answers at once (refused, or a local server): no slow timeouts
    result = cli("--database-url", url, "runs", "list")
    assert_clean_exit(result)
    assert ":pw@" not in result.stderr
