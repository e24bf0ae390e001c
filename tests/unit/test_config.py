"""Configuration: every bad value is a ConfigError / UsageError naming its origin.

Origins are the key and the file (``jobctl.toml: jobs.sync.timeout: …``), the
environment variable (``environment: JOBCTL_SYNC_TIMEOUT: …``), the ``.env`` file and
line, or the command-line option. Property tests feed the parsers (durations, dates,
``--param``, database URLs, whole TOML documents and environment overrides) arbitrary
values: the only exceptions that may come out are UsageError and its ConfigError.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from jobctl.cli.options import duration, parse_params
from jobctl.config import (
    MAX_LOG_TAIL_LINES,
    MAX_RETRIES,
    check_database_url,
    check_timezone,
    load_env,
    load_settings,
)
from jobctl.db.engine import normalise_url
from jobctl.durations import MAX_DATE, MAX_SECONDS, MIN_DATE, parse_date, parse_duration
from jobctl.errors import ConfigError, UsageError

ENV = {"HOME": "/nonexistent"}
HUNDRED_YEARS = timedelta(seconds=MAX_SECONDS)
#: no per-example deadline (the machine is shared and loaded); the tests that write
#: a config reuse one tmp_path for all their examples, which is fine here
relaxed = settings(deadline=None)
with_tmp = [HealthCheck.function_scoped_fixture]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobctl.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **environ: str) -> Any:
    return load_settings(config_path=write(tmp_path, text), environ={**ENV, **environ})


def toml(value: Any) -> str:
    """A TOML literal for a Python value (enough of TOML for these tests)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (int, date, datetime, time)):
        return value.isoformat() if not isinstance(value, int) else str(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid in TOML basic strings
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


# --- durations -----------------------------------------------------------------

DURATION_KEYS = [
    ("jobs.sync", "timeout"),
    ("jobs.sync", "retry_delay"),
    ("jobs.sync", "catchup_window"),
    ("jobs.sync", "misfire_grace"),
    ("", "heartbeat"),
]
HOSTILE_DURATIONS = [
    ("inf", "not a finite number"),
    ("-inf", "not a finite number"),
    ("nan", "not a finite number"),
    ("-5", "negative"),
    ("-0.5", "negative"),
    ("1e308", "too long"),
    ('"99999999999d"', "too long"),
    ('"' + "9" * 400 + 's"', "too long"),
    ('"-5s"', "not a duration"),
    ('"inf s"', "not a duration"),
    ('"5"', "not a duration"),
    ('"٣s"', "not a duration"),  # a Unicode digit is not a digit here
    ("true", "not a duration"),
    ("[1]", "not a duration"),
    ("1979-05-27", "not a duration"),
]


def _table(table: str, key: str, value: str) -> str:
    return f"[{table}]\n{key} = {value}\n" if table else f"{key} = {value}\n"


@pytest.mark.parametrize(("table", "key"), DURATION_KEYS)
@pytest.mark.parametrize(("value", "reason"), HOSTILE_DURATIONS)
def test_a_hostile_duration_names_key_and_file(
    tmp_path: Path, table: str, key: str, value: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, _table(table, key, value))
    full_key = f"{table}.{key}" if table else key
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'jobctl.toml'}: {full_key}: duration ")
    assert reason in message
    assert "\n" not in message and len(message) < 250


@pytest.mark.parametrize(
    ("table", "key", "zero_ok"),
    [
        ("jobs.sync", "timeout", False),  # every run would time out at once
        ("jobs.sync", "misfire_grace", False),  # every tick would be late
        ("", "heartbeat", False),  # a busy loop
        ("jobs.sync", "retry_delay", True),  # retry at once
        ("jobs.sync", "catchup_window", True),  # catch nothing up
    ],
)
@pytest.mark.parametrize("zero", ["0", '"0s"', "0.0", "-0.0", '"0.0000001s"'])
def test_zero_only_where_it_means_something(
    tmp_path: Path, table: str, key: str, zero_ok: bool, zero: str
) -> None:
    text = _table(table, key, zero)
    if zero_ok:
        settings_ = load(tmp_path, text)
        value = getattr(settings_.job("sync"), key)
        assert value == timedelta(0)
    else:
        with pytest.raises(ConfigError, match="must be more than zero"):
            load(tmp_path, text)


def test_a_toml_number_is_seconds(tmp_path: Path) -> None:
    s = load(tmp_path, '[jobs.sync]\ntimeout = 90\nretry_delay = 1.5\nmisfire_grace = "2h"\n')
    job = s.job("sync")
    assert (job.timeout, job.retry_delay) == (timedelta(seconds=90), timedelta(seconds=1.5))
    assert job.misfire_grace == timedelta(hours=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        (" 5m ", timedelta(minutes=5)),
        ("1.5h", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("2w", timedelta(weeks=2)),
        ("36500d", timedelta(days=36500)),
        (36500 * 86400, timedelta(days=36500)),
    ],
)
def test_durations_that_are_accepted(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "value", [math.inf, -math.inf, math.nan, -1, 10**400, 1e308, "36501d", True, None, b"5s"]
)
def test_durations_that_are_refused(value: object) -> None:
    with pytest.raises(UsageError, match=r"^duration "):
        parse_duration(value)


def test_an_environment_override_is_named_as_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[jobs.sync]\ntimeout = "5m"\n', JOBCTL_SYNC_TIMEOUT="0s")
    assert str(caught.value).startswith("environment: JOBCTL_SYNC_TIMEOUT: duration '0s'")
    assert "jobctl.toml" not in str(caught.value)


def test_a_dotenv_override_is_named_as_the_variable_in_that_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("JOBCTL_SNAPSHOT_RETRY_DELAY=-1s\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=ENV)  # no jobctl.toml: the override alone
    assert str(caught.value).startswith(".env: JOBCTL_SNAPSHOT_RETRY_DELAY: duration '-1s'")


# --- other settings: messages say what is accepted, values named by origin --------


def _accepted_words(message: str) -> list[str]:
    listed = re.search(r"\(([^)]*)\)", message)
    assert listed, message
    return [w for pair in listed.group(1).split(", ") for w in pair.split("/")]


@pytest.mark.parametrize("bad", ["2", "-1", '""', '"maybe"', "1.0", "[]", '"truee"'])
def test_enabled_accepts_exactly_what_its_message_lists(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"[jobs.sync]\nenabled = {bad}\n")
    message = str(caught.value)
    assert "jobs.sync.enabled" in message
    words = _accepted_words(message)
    assert {"true", "false", "1", "0"} <= set(words)
    for i, word in enumerate(words):
        expected = i % 2 == 0  # listed as true-ish/false-ish pairs
        as_string = load(tmp_path, f'[jobs.sync]\nenabled = "{word.upper()}"\n')
        assert as_string.job("sync").enabled is expected, word
        as_env = load(tmp_path, "", JOBCTL_SYNC_ENABLED=f" {word} ")
        assert as_env.job("sync").enabled is expected, word
        if word in ("true", "false", "1", "0"):  # TOML booleans and integers
            as_toml = load(tmp_path, f"[jobs.sync]\nenabled = {word}\n")
            assert as_toml.job("sync").enabled is expected, word


def test_a_top_level_variable_is_blamed_not_the_file(tmp_path: Path) -> None:
    text = 'scheduler = "cron"\ntimezone = "UTC"\n'
    for var, value, needle in [
        ("JOBCTL_SCHEDULER", "bogus", "'bogus' is not one of systemd, cron, k8s"),
        ("JOBCTL_TIMEZONE", "Mars/Olympus", "'Mars/Olympus' is not a known IANA zone"),
        ("DATABASE_URL", "mysql://u@h/db", "is not a PostgreSQL URL"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, text, **{var: value})
        assert str(caught.value).startswith(f"environment: {var}: "), var
        assert needle in str(caught.value)
        assert "jobctl.toml" not in str(caught.value)
    # and a bad value in the file is still blamed on the file
    with pytest.raises(ConfigError, match=r"jobctl\.toml: scheduler: 'bogus'"):
        load(tmp_path, 'scheduler = "bogus"\n')


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("log_tail_lines", str(MAX_LOG_TAIL_LINES + 1), "from 0 to"),
        ("log_tail_lines", "-1", "from 0 to"),
        ("log_tail_lines", "99999999999999999999999999", "from 0 to"),
        ("log_tail_lines", "1.5", "from 0 to"),
        ("timezone", "5", "is not a time zone name"),
        ("timezone", '"../../etc/passwd"', "is not a known IANA zone"),
        ("timezone", '"' + "x" * 5000 + '"', "is not a known IANA zone"),
        ("scheduler", "[]", "is not one of systemd"),
        ("jobs_module", "false", "is not a string"),
        ("data_dir", '"a\\u0000b"', "NUL"),
    ],
)
def test_top_level_values(tmp_path: Path, key: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"{key} = {value}\n")
    assert str(caught.value).startswith(f"{tmp_path / 'jobctl.toml'}: {key}: ")
    assert needle in str(caught.value)
    assert len(str(caught.value)) < 250  # a 5000-character value is shown cut


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("retries = -1", "jobs.sync.retries: -1 is not a whole number from 0 to 100"),
        (f"retries = {MAX_RETRIES + 1}", "is not a whole number"),
        ('retries = "٣"', "is not a whole number"),
        ("timezone = 0", "jobs.sync.timezone: 0 is not a time zone name"),
        ('catchup = "sometimes"', "'sometimes' is not one of latest, all, none"),
        ("params = { a = [1] }", "jobs.sync.params.a: [1] is not a string, number, boolean"),
        ('params = { a = "x\\u0000y" }', "jobs.sync.params.a: 'x\\x00y' contains a NUL"),
        ("params = 3", "jobs.sync.params: must be a table"),
    ],
)
def test_job_values(tmp_path: Path, line: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load(tmp_path, f"[jobs.sync]\n{line}\n")


def test_params_keep_scalars_as_text(tmp_path: Path) -> None:
    s = load(
        tmp_path, '[jobs.sync.params]\nregion = "eu"\ndays = 3\nratio = 0.5\nfrom = 2026-01-02\n'
    )
    assert s.job("sync").params == {
        "region": "eu",
        "days": "3",
        "ratio": "0.5",
        "from": "2026-01-02",
    }


# --- .env -------------------------------------------------------------------------


def test_a_malformed_dotenv_line_is_a_config_error_naming_file_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env_file = tmp_path / "prod.env"
    env_file.write_text('OK=1\n# a comment\n\nAPI_TOKEN="s3cr3t-unterminated\nLATER=2\n')
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as caught:
        load_env(env_file, {})
    assert str(caught.value).startswith(f"{env_file}: line 4: python-dotenv cannot parse")
    assert "s3cr3t" not in str(caught.value)  # the line may hold a secret
    assert not [r for r in caplog.records if "could not parse" in r.getMessage()]


@pytest.mark.parametrize(
    ("text", "line"),
    [("this is bad\n", 1), ("A=1\n\n\nnot valid here\n", 4), ("A=1\r\nB='x\r\n", 2)],
)
def test_dotenv_error_line_numbers(tmp_path: Path, text: str, line: int) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(text.encode())
    with pytest.raises(ConfigError, match=f": line {line}: "):
        load_env(env_file, {})


def test_a_wellformed_dotenv_loads_with_the_real_environment_winning(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nexport A=1\nB='two words'\nC=\"multi\nline\"\nD=${A}x\nBARE\nE=\n"
    )
    env = load_env(env_file, {"A": "real"})
    assert env["A"] == "real" and env["B"] == "two words" and env["C"] == "multi\nline"
    assert env["D"] == "1x" and env["E"] == "" and "BARE" not in env


def test_a_dotenv_that_is_not_utf8_or_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "latin1.env").write_bytes(b"A=caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.env: is not UTF-8 text"):
        load_env(tmp_path / "latin1.env", {})
    with pytest.raises(UsageError, match="is not a file"):
        load_env(tmp_path, {})
    with pytest.raises(UsageError, match="does not exist"):
        load_env(tmp_path / "missing.env", {})


# --- the config file itself ---------------------------------------------------------


def test_without_a_config_file_the_error_says_where_it_looked(tmp_path: Path) -> None:
    s = load_settings(environ=ENV)  # cwd is tmp_path (conftest), no jobctl.toml there
    assert s.config_path is None and s.looked_for == tmp_path / "jobctl.toml"
    message = str(s.nothing_configured("sources", "[sources.NAME]"))
    assert message.startswith(f"no config file: looked for {tmp_path / 'jobctl.toml'} ")
    assert "--config or JOBCTL_CONFIG" in message
    with_file = load(tmp_path, "")
    assert str(with_file.nothing_configured("sources", "[sources.NAME]")) == (
        f"no sources are configured: add a [sources.NAME] table to {tmp_path / 'jobctl.toml'}"
    )


def test_an_explicit_config_that_is_missing_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_settings(config_path=tmp_path / "nope.toml", environ=ENV)
    with pytest.raises(UsageError, match="is not a file"):
        load_settings(config_path=tmp_path, environ=ENV)
    with pytest.raises(UsageError, match="does not exist"):
        load_settings(environ={**ENV, "JOBCTL_CONFIG": str(tmp_path / "nope.toml")})


# --- database URLs --------------------------------------------------------------------

BAD_URLS = [
    ("postgresql://u:pw1234@[::1/db", "Invalid IPv6 URL"),
    ("postgresql://u:pw1234@h:abc/db", "Port could not be cast"),
    ("postgresql://u:pw1234@h:99999999/db", "Port out of range"),
    ("mysql://u:pw1234@h/db", "is not a PostgreSQL URL"),
    ("host=h password=pw1234", "is not a PostgreSQL URL"),
]


@pytest.mark.parametrize(("url", "needle"), BAD_URLS)
def test_a_bad_database_url_in_the_file_is_named_and_redacted(
    tmp_path: Path, url: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"database_url = {json.dumps(url)}\n")
    assert str(caught.value).startswith(f"{tmp_path / 'jobctl.toml'}: database_url: ")
    assert needle in str(caught.value) and "pw1234" not in str(caught.value)


def test_the_option_is_named_unless_the_value_came_from_the_variable(tmp_path: Path) -> None:
    url = "postgresql://u:pw1234@[::1/db"
    with pytest.raises(ConfigError, match=r"^--database-url: "):
        load_settings(database_url=url, environ=ENV)
    with pytest.raises(ConfigError, match=r"^environment: DATABASE_URL: "):
        load_settings(database_url=url, environ={**ENV, "DATABASE_URL": url})
    (tmp_path / ".env").write_text(f"DATABASE_URL={url}\n")
    with pytest.raises(ConfigError, match=r"^.env: DATABASE_URL: "):
        load_settings(environ=ENV)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        *BAD_URLS[:4],
        ("postgresql://u:pw1234@127.0.0.1/db?foo=bar", 'invalid URI query parameter: "foo"'),
        ("postgresql://u:pw1234@%zz/db", "invalid percent-encoded token"),
        ("postgresql://u:pw1234@[::1/db?x", "IPv6"),
    ],
)
def test_normalise_url_refuses_what_libpq_or_sqlalchemy_would(url: str, needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        normalise_url(url)
    assert needle in str(caught.value)
    assert "pw1234" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("postgres://u@h/db", "postgresql://u@h/db"),
        ("postgresql+psycopg://u:p@h:5433/db", "postgresql://u:p@h:5433/db"),
        ("postgresql:///db?host=/tmp/sock", "postgresql:///db?host=/tmp/sock"),
        (
            "postgresql://u@[::1]:5432/db?sslmode=disable",
            "postgresql://u@[::1]:5432/db?sslmode=disable",
        ),
    ],
)
def test_normalise_url_accepts_good_urls(url: str, normal: str) -> None:
    assert normalise_url(url) == normal
    assert check_database_url(url, key="database_url", origin=None) == url


def test_check_timezone_refuses_anything_but_a_zone_name() -> None:
    for value in (None, 5, ["UTC"], "", "UTC ", "a\x00b", "/etc/localtime"):
        with pytest.raises(ConfigError):
            check_timezone(value, key="timezone", origin="f")
    assert check_timezone("America/Toronto", key="timezone", origin="f") == "America/Toronto"


# --- --param and CLI durations ---------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["a=1", " b =x=y", "c="], {"a": "1", "b": "x=y", "c": ""}),
        (["a=1", "a=2"], {"a": "2"}),
        (["k= spaced "], {"k": " spaced "}),
    ],
)
def test_params_that_parse(items: list[str], expected: dict[str, str]) -> None:
    assert parse_params(items) == expected


@pytest.mark.parametrize("item", ["novalue", "=1", "  =1", "", "a=\x00", "a=\udcff"])
def test_params_that_are_refused(item: str) -> None:
    with pytest.raises(UsageError, match=r"^--param "):
        parse_params([item])


def test_cli_durations_zero_where_meaningless() -> None:
    for option in ("--timeout", "--since"):
        with pytest.raises(UsageError, match=f"^{option} '0s' must be more than zero"):
            duration("0s", option)
    assert duration("0s", "--retry-delay") == timedelta(0)
    assert duration("0s", "--wait-timeout") == timedelta(0)
    assert duration(None, "--timeout") is None
    with pytest.raises(UsageError, match="too long"):
        duration("99999999999d", "--wait-timeout")


# --- dates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("2026-02-30", "is not a valid date"),
        ("0000-01-01", "is not a valid date"),
        ("0001-01-01", "out of range"),
        ("9999-12-31", "out of range"),
        ("２０２６-01-01", "is not an ISO date"),
        ("2026-1-1", "is not an ISO date"),
        ("20260101", "is not an ISO date"),
    ],
)
def test_dates_that_are_refused(text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        parse_date(text, what="--date")


# --- property tests: never anything but a UsageError ----------------------------------------

scalars = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.times(),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
duration_texts = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda sign, n, unit, pad: f"{pad}{sign}{n}{unit}{pad}",
        st.sampled_from(["", "-", "+"]),
        st.one_of(
            st.integers(min_value=0, max_value=10**30).map(str),
            st.floats().map(lambda f: str(abs(f))),
            st.text(alphabet="0123456789.eE", max_size=12),
        ),
        st.sampled_from(["ms", "s", "m", "h", "d", "w", "", "y", "S", " s", "sec"]),
        st.sampled_from(["", " ", "\t", "\n"]),
    ),
)


@relaxed
@given(st.one_of(duration_texts, toml_values), st.booleans())
@example("inf", True)
@example(math.nan, True)
@example(-0.0, False)
def test_parse_duration_returns_a_safe_value_or_a_usage_error(
    value: object, allow_zero: bool
) -> None:
    try:
        delta = parse_duration(value, what="duration", allow_zero=allow_zero)
    except UsageError as exc:
        assert str(exc).startswith("duration ") and "\n" not in str(exc)
        assert len(str(exc)) < 200
        return
    assert timedelta(0) <= delta <= HUNDRED_YEARS
    assert allow_zero or delta > timedelta(0)
    now = datetime.now()
    assert now - delta <= now <= now + delta  # usable in arithmetic without overflow


@relaxed
@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["ms", "s", "m", "h", "d", "w"]),
)
def test_every_number_and_unit_within_100_years_is_that_many_seconds(n: int, unit: str) -> None:
    seconds = n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assume(seconds <= MAX_SECONDS)
    assert parse_duration(f"{n}{unit}") == timedelta(seconds=seconds)


@relaxed
@given(st.one_of(st.text(max_size=20), st.dates().map(date.isoformat), toml_values))
@example("9998-12-31")
@example("1000-01-01")
def test_parse_date_returns_a_safe_date_or_a_usage_error(text: object) -> None:
    try:
        day = parse_date(text, what="--date")
    except UsageError as exc:
        assert str(exc).startswith("--date ") and "\n" not in str(exc)
        return
    assert MIN_DATE <= day <= MAX_DATE
    # a week or month around the date, and its midnight anywhere, are valid too
    assert day - timedelta(days=40) < day < day + timedelta(days=40)
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12"):
        midnight = datetime.combine(day, time(), ZoneInfo(zone))
        assert midnight.astimezone(UTC).date() - day in (timedelta(-1), timedelta(0), timedelta(1))


@relaxed
@given(st.dates(min_value=MIN_DATE, max_value=MAX_DATE))
def test_every_date_in_range_round_trips(day: date) -> None:
    assert parse_date(day.isoformat()) == day
    assert parse_date(f" {day.isoformat()}\n") == day


param_items = st.one_of(
    st.text(max_size=20),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=10), st.text(max_size=10)),
)


@relaxed
@given(st.lists(param_items, max_size=5))
@example(["a=\udcff"])
@example(["=x"])
def test_parse_params_returns_a_dict_or_a_usage_error(items: list[str]) -> None:
    try:
        params = parse_params(items)
    except UsageError as exc:
        assert str(exc).startswith("--param ")
        return
    # every item was KEY=VALUE with a key; the last one of each key wins
    expected = {}
    for item in items:
        key, _, value = item.partition("=")
        expected[key.strip()] = value
    assert params == expected
    assert all(k and "\x00" not in k + v for k, v in params.items())
    json.dumps(params).encode("utf-8")  # storable as jsonb text


url_parts = st.builds(
    lambda scheme, user, host, port, path, query: (
        f"{scheme}://{user}s3cr3tPW@{host}{port}{path}{query}"
    ),
    st.sampled_from(["postgresql", "postgres", "postgresql+psycopg", "mysql", "http", ""]),
    st.sampled_from([":", "u:", "user:", "%zz:", "u@x:"]),  # s3cr3tPW is the password
    st.one_of(
        st.sampled_from(["h", "127.0.0.1", "[::1]", "[::1", "::1]", "", "h,h2", "[zz]"]),
        st.text(max_size=8),
    ),
    st.one_of(
        st.sampled_from(["", ":5432", ":0", ":65536", ":abc", ":", ":-1", ":5432,h2:5433"]),
        st.text(max_size=6).map(lambda t: ":" + t),
    ),
    st.sampled_from(["", "/db", "/", "/d%b", "/db/x"]),
    st.one_of(
        st.sampled_from(["", "?sslmode=disable", "?foo=bar", "?sslmode=", "?host=/tmp", "?=x"]),
        st.text(max_size=8).map(lambda t: "?" + t),
    ),
)


@relaxed
@given(url_parts)
def test_a_database_url_is_accepted_or_refused_without_leaking_the_password(url: str) -> None:
    for check in (
        lambda: check_database_url(url, key="database_url", origin="jobctl.toml"),
        lambda: normalise_url(url),
    ):
        try:
            check()
        except UsageError as exc:
            assert "s3cr3tPW" not in str(exc)
            assert "\n" not in str(exc)


@relaxed
@given(st.text(max_size=60))
def test_any_text_as_a_database_url(url: str) -> None:
    for check in (
        lambda: check_database_url(url, key="database_url", origin="jobctl.toml"),
        lambda: normalise_url(url),
    ):
        with contextlib.suppress(UsageError):
            check()


TOP_KEYS = ["timezone", "scheduler", "log_tail_lines", "heartbeat", "database_url", "data_dir"]
JOB_KEYS = [
    "enabled",
    "schedule",
    "timezone",
    "timeout",
    "retries",
    "retry_delay",
    "catchup",
    "catchup_window",
    "misfire_grace",
    "params",
    "description",
    "ping_url",
]
top_tables = st.dictionaries(st.sampled_from(TOP_KEYS), toml_values, max_size=3)
job_tables = st.dictionaries(st.sampled_from(JOB_KEYS), toml_values, max_size=4)


def config_text(top: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> str:
    lines = [f"{k} = {toml(v)}" for k, v in top.items()]
    for name, table in jobs.items():
        lines.append(f"[jobs.{json.dumps(name)}]")
        lines += [f"{k} = {toml(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _loads_or_usage_error(tmp_path: Path, text: str, environ: dict[str, str]) -> None:
    path = write(tmp_path, text)
    try:
        s = load_settings(config_path=path, environ={**ENV, **environ})
        for name in (*s.jobs, "sync", "custom"):
            s.job(name)
    except UsageError as exc:
        message = str(exc)
        assert "\n" not in message.strip(), message
        assert any(where in message for where in (str(path), "environment", "--")), message


@settings(max_examples=300, deadline=None, suppress_health_check=with_tmp)
@given(
    top_tables,
    st.dictionaries(st.sampled_from(["sync", "snapshot", "my-job", "x y"]), job_tables, max_size=2),
)
def test_any_toml_values_load_or_raise_a_config_error(
    tmp_path: Path, top: dict[str, Any], jobs: dict[str, dict[str, Any]]
) -> None:
    _loads_or_usage_error(tmp_path, config_text(top, jobs), {})


@settings(max_examples=200, deadline=None, suppress_health_check=with_tmp)
@given(st.text(max_size=200))
def test_any_text_as_a_config_file(tmp_path: Path, text: str) -> None:
    assume(not any("\ud800" <= c <= "\udfff" for c in text))
    _loads_or_usage_error(tmp_path, text, {})


env_names = st.sampled_from(
    ["JOBCTL_SYNC_" + k.upper() for k in JOB_KEYS if k not in ("params",)]
    + ["JOBCTL_TIMEZONE", "JOBCTL_SCHEDULER", "JOBCTL_JOBS_MODULE", "DATABASE_URL"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=with_tmp)
@given(st.dictionaries(env_names, st.text(max_size=20), min_size=1, max_size=3))
def test_any_environment_overrides_load_or_name_the_variable(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    assume(not any("\ud800" <= c <= "\udfff" or c == "\x00" for v in environ.values() for c in v))
    path = write(tmp_path, '[jobs.sync]\ntimeout = "5m"\n')
    try:
        load_settings(config_path=path, environ={**ENV, **environ})
    except ConfigError as exc:
        assert str(exc).startswith("environment: "), str(exc)
        assert exc.key in environ, (exc.key, environ)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("timeout", '"0s"', "must be more than zero"),
        ("connect_timeout", "-1", "is negative"),
        ("timeout", "inf", "is not a finite number"),
        ("backoff", '"99999999999d"', "is too long"),
    ],
)
def test_source_durations_are_checked_like_every_other(key: str, value: str, needle: str) -> None:
    import tomllib

    from jobctl.config_models import parse_sources

    raw = tomllib.loads(
        f'[s]\nurl = "https://example.org/f.json"\nkey = ["id"]\ntable = "t"\n{key} = {value}\n'
    )
    with pytest.raises(ConfigError, match=f"^jobctl.toml: sources.s.{key}: duration .*{needle}"):
        parse_sources(raw, origin="jobctl.toml", default_tz="UTC")
    zero_backoff = tomllib.loads(
        '[s]\nurl = "https://example.org/f.json"\nkey = ["id"]\ntable = "t"\nbackoff = "0s"\n'
    )
    assert parse_sources(zero_backoff, origin="jobctl.toml", default_tz="UTC")["s"].backoff == (
        timedelta(0)
    )


def test_a_bad_value_from_a_secret_reference_is_not_echoed(tmp_path: Path) -> None:
    config = tmp_path / "jobctl.toml"
    config.write_text('[jobs.sync]\ntimeout = "${T}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=config, environ={"T": "hunter2secret", "HOME": str(tmp_path)})
    assert "hunter2secret" not in str(info.value)
    assert "jobs.sync.timeout" in str(info.value)


# --- typed models: every section validated by load_settings --------------------

SOURCE = (
    '[sources.feed]\nurl = "https://example.org/f.json?token=${TOKEN}"\nkey = ["id"]\ntable = "t"\n'
)
SNAPSHOT = (
    '[snapshots.daily]\ntable = "snap"\nkey = "ward"\nperiods = "day"\nweek_start = "Sunday"\n'
    'query = "SELECT 1 AS ward WHERE :period_start < :period_end"\n'
)


def test_every_section_is_read_into_typed_frozen_models(tmp_path: Path) -> None:
    import msgspec

    from jobctl.config_models import BackfillConfig, SnapshotSet, SourceConfig

    s = load(
        tmp_path,
        'timezone = "America/Toronto"\n[backfill]\njobs = ["snapshot"]\nmax_days = 30\n'
        + SOURCE
        + SNAPSHOT,
        TOKEN="tok3n",
    )
    source, snap = s.sources["feed"], s.snapshots["daily"]
    assert isinstance(source, SourceConfig) and isinstance(snap, SnapshotSet)
    assert source.timezone == snap.timezone == "America/Toronto"  # the top-level default
    assert source.url == "https://example.org/f.json?token=tok3n" and source.key == ("id",)
    assert (snap.key, snap.periods, snap.week_start) == (("ward",), ("day",), 6)
    assert s.backfill == BackfillConfig(jobs=("snapshot",), max_days=30)
    assert s.origin == str(tmp_path / "jobctl.toml") and s.secret_values == ("tok3n",)
    assert hash(snap) == hash(msgspec.structs.replace(snap, description=""))
    with pytest.raises(AttributeError):
        snap.table = "other"  # type: ignore[misc]
    moved = msgspec.structs.replace(source, table="t2")
    assert moved.table == "t2" and moved != source and source.table == "t"


def test_defaults_of_the_sections_that_are_absent(tmp_path: Path) -> None:
    s = load(tmp_path, "")
    assert (s.sources, s.snapshots, s.channels, s.checks) == ({}, {}, {}, ())
    assert (s.backfill.jobs, s.backfill.max_days) == (None, 366)
    assert s.retention.runs == timedelta(days=180)
    assert s.retention.snapshots.day == timedelta(days=90)
    assert s.alerts.escalate_after == 3 and s.alerts.repeat_after == timedelta(hours=24)
    assert s.report.format == "text" and s.report.channels == () and s.report.recipients is None
    assert s.report.shows_job_health


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SNAPSHOT + "colour = 1\n", "snapshots.daily.colour: unknown key (known: description, "),
        (SNAPSHOT.replace('"day"', '"year"'), "snapshots.daily.periods: 'year': use a list of"),
        (SNAPSHOT.replace("Sunday", "Caturday"), "snapshots.daily.week_start: 'Caturday' is not"),
        (SNAPSHOT + "name = 'x'\n", "snapshots.daily.name: unknown key"),
        (SNAPSHOT + "requires_sync = 'yes'\n", "requires_sync: 'yes' is not true or false"),
        ('[snapshots.x]\ntable = "t"\nkey = ["k"]\n', "snapshots.x.query: is required"),
        ("snapshots = 3\n", "snapshots: must be a table of [snapshots.NAME] tables"),
        ("[snapshots]\nx = 3\n", "snapshots.x: must be a table"),
        ('[backfill]\njobs = ["cleanup"]\n', "backfill.jobs: ['cleanup']: use a list of sync"),
        ("[backfill]\nmax_days = 0\n", "backfill.max_days: 0 is not a whole number >= 1"),
        ("[backfill]\nmax_days = true\n", "backfill.max_days: True is not a whole number >= 1"),
        ("backfill = 1\n", "backfill: must be a table"),
        ("[backfill]\nfrom = 1\n", "backfill.from: unknown key (known: jobs, max_days)"),
        (SOURCE + "statement_timeout = '1s'\n", "sources.feed.statement_timeout: unknown key"),
        (SOURCE + "[[sources.feed.checks]]\nsql = 1\n", "sources.feed.checks[0].sql: 1 is not a"),
        (SOURCE + "[[sources.feed.checks]]\nsql = 's'\nmin = 'a'\n", "checks[0].min: 'a' is not"),
        ('[retention]\nruns = "0s"\n', "retention.runs: duration '0s' must be more than zero"),
        ("[retention.snapshots]\nyear = 1\n", "retention.snapshots.year: unknown key"),
        (
            '[alerts.channels.ops]\ntype = "pager"\n',
            "alerts.channels.ops.type: 'pager' is not one of email,",
        ),
        ('[alerts.channels.f]\ntype = "file"\n', "alerts.channels.f.path: is required"),
        ('[jobs.sync]\nparams = { "\\n" = [1] }\n', "jobs.sync.params.'\\n': [1] is not a"),
        ('[report]\nformat = "fax"\n', "report.format: 'fax' is not one of text, markdown,"),
        ("[report]\nquery_timeout = 0\n", "report.query_timeout: duration 0"),
        ('[report]\nrecipients = "DELETE FROM u"\n', "report.recipients: starts with 'DELETE'"),
        (
            '[report]\nrecipients = "SELECT * FROM u WHERE id = :id"\n',
            "report.recipients: binds :id; a recipients query may bind :period_start",
        ),
        ("[[report.sections]]\ntitle = 'x'\n", "report.sections[0].sql: is required"),
        ("[alerts]\nescalate_after = 0\n", "alerts.escalate_after: 0 is not a whole number >= 1"),
        ("[alerts]\nrepeat_after = 0\n", "alerts.repeat_after: duration 0"),
        ('[jobs.sync]\nalerts = ["ops"]\n', "jobs.sync.alerts: 'ops' is not an alert channel"),
        ("[jobs.sync]\nname = 'x'\n", "jobs.sync.name: unknown key (known: alerts, catchup, "),
        ('[jobs.sync]\ncatchup = "some"\n', "jobs.sync.catchup: 'some' is not one of latest, all"),
    ],
)
def test_a_bad_table_in_any_section_fails_loading(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, TOKEN="t")
    assert str(caught.value).startswith(f"{tmp_path / 'jobctl.toml'}: "), str(caught.value)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_precedence_option_environment_dotenv_file_default(tmp_path: Path) -> None:
    path = write(tmp_path, 'database_url = "postgresql://file/db"\ntimezone = "Europe/Paris"\n')
    dotenv = tmp_path / ".env"
    dotenv.write_text("DATABASE_URL=postgresql://dotenv/db\nJOBCTL_TIMEZONE=Asia/Tokyo\n")

    def settings_with(**kw: Any) -> Any:
        environ = kw.pop("environ", {})
        return load_settings(config_path=path, env_file=dotenv, environ={**ENV, **environ}, **kw)

    assert settings_with().database_url == "postgresql://dotenv/db"
    assert settings_with().timezone == "Asia/Tokyo"
    real = {"DATABASE_URL": "postgresql://env/db", "JOBCTL_TIMEZONE": "UTC"}
    assert settings_with(environ=real).database_url == "postgresql://env/db"
    assert settings_with(environ=real).timezone == "UTC"
    chosen = settings_with(environ=real, database_url="postgresql://option/db")
    assert chosen.database_url == "postgresql://option/db"
    dotenv.write_text("")
    assert settings_with().database_url == "postgresql://file/db"
    assert load(tmp_path, "").timezone == "UTC" and load(tmp_path, "").database_url is None


def test_job_overrides_win_over_the_table_and_are_blamed_by_name(tmp_path: Path) -> None:
    text = '[jobs.sync]\nretries = 2\ntimeout = "1m"\n[jobs.my-job]\nenabled = true\n'
    s = load(tmp_path, text, JOBCTL_SYNC_RETRIES="5", JOBCTL_MY_JOB_ENABLED="off")
    assert (s.job("sync").retries, s.job("sync").timeout) == (5, timedelta(minutes=1))
    assert s.job("my-job").enabled is False
    # a job with no table, overridden from the environment, is read when asked for
    assert load(tmp_path, "", JOBCTL_CUSTOM_RETRIES="7").job("custom").retries == 7
    with pytest.raises(ConfigError, match=r"^environment: JOBCTL_SYNC_SCHEDULE: cron "):
        load(tmp_path, text, JOBCTL_SYNC_SCHEDULE="not cron")
    with pytest.raises(ConfigError, match=r"^environment: JOBCTL_SYNC_CATCHUP: 'x' is not one"):
        load(tmp_path, text, JOBCTL_SYNC_CATCHUP="x")


def test_secrets_come_from_the_typed_sources(tmp_path: Path) -> None:
    text = (
        'database_url = "postgresql://u:dbpw@h/db"\n'
        '[sources.feed]\nurl = "https://x.org/f?api_key=k3y"\nkey = "id"\ntable = "t"\n'
        'token = "t0ken"\nheaders = { Authorization = "Bearer b3arer", Accept = "json" }\n'
        '[sources.q]\nquery = "SELECT 1 AS id"\nkey = "id"\ntable = "q"\n'
        'database_url = "postgresql://u:otherpw@h/db"\n'
        '[sources.file]\npath = "${DIR}/f.json"\nkey = "id"\ntable = "f"\n'
    )
    found = load(tmp_path, text, DIR="/srv/d1r").secrets()
    for secret in ("dbpw", "k3y", "t0ken", "Bearer b3arer", "b3arer", "otherpw", "/srv/d1r"):
        assert secret in found, (secret, found)
    assert "json" not in found


def test_parsing_settings_does_not_import_the_sources_package(tmp_path: Path) -> None:
    import subprocess
    import sys

    write(
        tmp_path,
        SOURCE + SNAPSHOT + '[sources.q]\nquery = "SELECT 1 AS id"\nkey = "id"\ntable = "q"\n',
    )
    code = (
        "import sys; from pathlib import Path; from jobctl.config import load_settings; "
        f"s = load_settings(config_path=Path({str(tmp_path / 'jobctl.toml')!r}), "
        "environ={'TOKEN': 't', 'HOME': '/nonexistent'}); "
        "print(sorted(m for m in sys.modules if m.startswith(('jobctl.sources', 'pydantic'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# Property tests: random values in every section never raise anything but a UsageError
# (ConfigError is one), always one line naming where the value came from.

SOURCE_KEYS = [
    "url", "path", "query", "database_url", "format", "record_path", "key", "table",
    "complete", "date", "timezone", "fields", "types", "headers", "token", "timeout",
    "connect_timeout", "retries", "backoff", "max_error_ratio", "max_removed_ratio",
    "exclude", "error_when", "error_message", "retry_on_error_body", "encoding", "delimiter",
    "conditional", "checks", "description", "date_key", "backfill", "statement_timeout",
]  # fmt: skip
SNAPSHOT_KEYS = [
    "table", "key", "periods", "query", "week_start", "requires_sync", "description",
    "timezone", "name",
]  # fmt: skip
#: plausible values, so that random tables also get past the first check
SOURCE_VALUES = st.one_of(
    toml_values,
    st.sampled_from(
        [
            "https://example.org/{date}.json",
            "feed.json",
            "SELECT 1 AS id WHERE :date IS NOT NULL",
            "json",
            "csv",
            "yesterday",
            ["id"],
            [],
            "t",
            {"a": "int"},
            {"result": "error"},
            [{"sql": "SELECT 1", "min": 0}],
            "postgresql://u:pw@h/db",
            "10s",
            0.5,
        ]
    ),
)
SNAPSHOT_VALUES = st.one_of(
    toml_values,
    st.sampled_from(
        ["snap", ["k"], "k", "SELECT :period_start, :period_end", ["day", "week"], "sunday"]
    ),
)
BASE_SOURCE = {"url": "https://example.org/f.json", "key": ["id"], "table": "t"}
BASE_SNAPSHOT = {"table": "snap", "key": ["k"], "query": "SELECT :period_start, :period_end"}


def tables_text(section: str, tables: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{section}.{json.dumps(name)}]")
        lines += [f"{k} = {toml(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def section_tables(keys: list[str], values: Any, base: dict[str, Any]) -> Any:
    changes = st.dictionaries(st.sampled_from(keys), values, max_size=4)
    return st.builds(
        lambda start, change, drop: {
            k: v for k, v in ({**base, **change} if start else change).items() if k != drop
        },
        st.booleans(),
        changes,
        st.sampled_from([None, *keys]),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=with_tmp)
@given(
    st.dictionaries(
        st.sampled_from(["feed", "my-src", "x y", "a.b"]),
        section_tables(SOURCE_KEYS, SOURCE_VALUES, BASE_SOURCE),
        max_size=2,
    )
)
def test_any_source_tables_load_or_raise_a_config_error(
    tmp_path: Path, tables: dict[str, dict[str, Any]]
) -> None:
    _loads_or_usage_error(tmp_path, tables_text("sources", tables), {})


@settings(max_examples=200, deadline=None, suppress_health_check=with_tmp)
@given(
    st.dictionaries(
        st.sampled_from(["daily", "x y"]),
        section_tables(SNAPSHOT_KEYS, SNAPSHOT_VALUES, BASE_SNAPSHOT),
        max_size=2,
    )
)
def test_any_snapshot_tables_load_or_raise_a_config_error(
    tmp_path: Path, tables: dict[str, dict[str, Any]]
) -> None:
    _loads_or_usage_error(tmp_path, tables_text("snapshots", tables), {})


OTHER_SECTIONS = {
    "backfill": ["jobs", "max_days", "from"],
    "retention": ["runs", "schedules", "snapshots", "policies"],
    "report": ["sections", "recipients", "format", "channels", "templates", "job_health"],
    "alerts": ["channels", "default", "escalate_after", "escalation_channels", "repeat_after"],
}
OTHER_VALUES = st.one_of(
    toml_values,
    st.sampled_from(
        [["sync"], ["snapshot", "sync"], 3, "30d", {"day": "1d"}, "stdout", ["ops"], []]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=with_tmp)
@given(
    st.dictionaries(
        st.sampled_from(sorted(OTHER_SECTIONS)),
        st.dictionaries(
            st.sampled_from(sorted(set().union(*OTHER_SECTIONS.values()))), OTHER_VALUES, max_size=3
        ),
        max_size=3,
    ),
    st.one_of(
        toml_values,
        st.sampled_from([{"ops": {"type": "webhook", "url": "http://h/x"}}, {"ops": {"to": 1}}]),
    ),
)
def test_any_other_sections_load_or_raise_a_config_error(
    tmp_path: Path, sections: dict[str, dict[str, Any]], channels: Any
) -> None:
    lines: list[str] = []
    for section, table in sections.items():
        if section == "alerts":
            table = {**table, "channels": channels}
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml(v)}" for k, v in table.items()]
    _loads_or_usage_error(tmp_path, "\n".join(lines) + "\n", {})


CSV_SOURCE = """
[sources.feed]
path = "feed.csv"
format = "csv"
key = ["id"]
table = "feed"
"""


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ('delimiter = "||"', "'||' must be one character"),
        ("delimiter = '\"'", "'\"' cannot separate fields (a quote or a line end)"),
        ('delimiter = "\\n"', "cannot separate fields"),
        ('delimiter = "\\r"', "cannot separate fields"),
        ('encoding = "klingon"', "'klingon' is not an encoding Python knows"),
        ('encoding = ""', "sources.feed.encoding"),
    ],
)
def test_a_csv_source_refuses_a_delimiter_or_encoding_it_cannot_read(
    tmp_path: Path, setting: str, reason: str
) -> None:
    """Refused when the config is read (exit 2, no run): a quote as the delimiter made
    every row bad, an unknown encoding failed the run after it had started."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, CSV_SOURCE + setting + "\n")
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_csv_source_takes_the_usual_delimiters_and_encodings(tmp_path: Path) -> None:
    for delimiter, encoding in ((";", "latin-1"), ("\\t", "cp1252"), ("|", "utf-8-sig")):
        text = CSV_SOURCE + f'delimiter = "{delimiter}"\nencoding = "{encoding}"\n'
        source = load(tmp_path, text).sources["feed"]
        assert (source.delimiter, source.encoding) == (delimiter.replace("\\t", "\t"), encoding)


@pytest.mark.parametrize(
    ("section", "extra"),
    [
        ("sources", 'path = "f.json"\nkey = ["id"]'),
        ("snapshots", 'key = ["k"]\nquery = "SELECT 1"'),
    ],
)
@pytest.mark.parametrize(
    ("table", "owner"),
    [
        ("jobctl.runs", "jobctl's own tables"),
        ("jobctl.feed_state", "jobctl's own tables"),
        ("pg_catalog.pg_class", "PostgreSQL's catalog"),
        ("information_schema.tables", "PostgreSQL's catalog"),
        ("pg_toast.x", "PostgreSQL's catalog"),
    ],
)
def test_a_job_never_writes_into_jobctls_or_the_catalogs_schema(
    tmp_path: Path, section: str, extra: str, table: str, owner: str
) -> None:
    text = f'[{section}.s]\ntable = "{table}"\n{extra}\n'
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert f"{section}.s.table" in str(caught.value) and owner in str(caught.value)


def test_a_job_may_write_into_its_own_schemas(tmp_path: Path) -> None:
    for table in ("permits", "public.permits", "jobctl_data.permits", "JobCtl.runs"):
        source = load(tmp_path, f'[sources.s]\ntable = "{table}"\npath = "f.json"\nkey = ["id"]\n')
        assert source.sources["s"].table == table
