"""Configuration: ``jobctl.toml`` + ``.env`` + environment, read once into frozen objects.

Precedence, highest first: command-line options > real environment > ``.env`` >
``jobctl.toml`` > defaults. Secrets are written in the file as ``${NAME}`` and
resolved from the environment (or ``.env``). Every per-job setting can be
overridden from the environment as ``JOBCTL_<JOB>_<SETTING>`` (for instance
``JOBCTL_SYNC_ENABLED=0`` or ``JOBCTL_SYNC_TIMEOUT=5m``) so an operator can switch a
job off without editing files. No other module reads ``os.environ``.
"""

from __future__ import annotations

import io
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from jobctl.durations import parse_duration, shown
from jobctl.errors import ConfigError, UsageError

#: The origin named for a value read from the real environment.
ENVIRONMENT = "environment"
MAX_RETRIES = 100
MAX_LOG_TAIL_LINES = 100_000
BUILTIN_JOBS = ("sync", "snapshot", "backfill", "cleanup", "report")
Catchup = Literal["latest", "all", "none"]
Flavour = Literal["systemd", "cron", "k8s"]

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TOP_KEYS = {
    "database_url",
    "timezone",
    "data_dir",
    "jobs_module",
    "jobs_path",
    "scheduler",
    "log_tail_lines",
    "heartbeat",
    "jobs",
    "sources",
    "snapshots",
    "retention",
    "report",
    "alerts",
    "channels",
    "checks",
    "backfill",
}
_JOB_KEYS = {
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
    "alerts",
    "ping_url",
}


@dataclass(frozen=True)
class JobConfig:
    """The operator's settings for one job (built-in or user-registered)."""

    name: str
    enabled: bool = True
    schedule: str | None = None
    timezone: str = "UTC"
    timeout: timedelta | None = None
    retries: int = 0
    retry_delay: timedelta = timedelta(seconds=30)
    catchup: Catchup = "latest"
    catchup_window: timedelta = timedelta(days=7)
    misfire_grace: timedelta | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None
    ping_url: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything jobctl needs to know, resolved once per invocation."""

    config_path: Path | None
    base_dir: Path
    database_url: str | None
    timezone: str
    data_dir: Path
    jobs_module: str | None
    jobs_path: Path
    scheduler: Flavour
    jobs: Mapping[str, JobConfig]
    sections: Mapping[str, Any]
    env: Mapping[str, str]
    log_tail_lines: int = 200
    heartbeat: timedelta = timedelta(seconds=15)
    #: where each variable of ``env`` came from: a ``.env`` path or ENVIRONMENT
    env_origins: Mapping[str, str] = field(default_factory=dict)
    #: the config file that was looked for and not found (None: one was read)
    looked_for: Path | None = None

    def job(self, name: str) -> JobConfig:
        """The job's settings; a job with no ``[jobs.NAME]`` table gets the defaults."""
        if name in self.jobs:
            return self.jobs[name]
        return _job_from(name, {}, self, origin=None)

    def nothing_configured(self, what: str, table: str) -> UsageError:
        """The error for a command that needs ``[table]`` tables and finds none.

        Without a config file the cause is the missing file, not the missing
        table: say so, and where it was looked for.
        """
        if self.config_path is None:
            return UsageError(
                f"no config file: looked for {self.looked_for or 'jobctl.toml'} "
                f"(set --config or JOBCTL_CONFIG); {what} are configured there as {table} tables"
            )
        return UsageError(f"no {what} are configured: add a {table} table to {self.config_path}")

    def secrets(self) -> list[str]:
        """Values that must never be printed or stored (of any length).

        Everything substituted from ``${NAME}``, the database URL's password (as written
        and percent-decoded), and the credentials of HTTP sources written in the file:
        ``token``, secret-looking headers, secret query values of ``url``.
        """
        from jobctl.redact import is_secret_header, url_secrets

        found = [v for v in self.sections.get("__secrets__", ()) if v]
        found += url_secrets(self.database_url)
        sources = self.sections.get("sources")
        for table in sources.values() if isinstance(sources, dict) else ():
            if not isinstance(table, dict):
                continue
            found += url_secrets(table.get("url"))
            found += url_secrets(table.get("database_url"))  # a SQL source's other database
            if isinstance(table.get("token"), str):
                found.append(table["token"])
            headers = table.get("headers")
            for name, value in headers.items() if isinstance(headers, dict) else ():
                if is_secret_header(name) and isinstance(value, str):
                    found += [value, *value.split()[1:]]  # "Bearer abc": "abc" too
        return list(dict.fromkeys(v for v in found if v))


def _default_data_dir(env: Mapping[str, str]) -> Path:
    if env.get("JOBCTL_DATA_DIR"):
        return Path(env["JOBCTL_DATA_DIR"]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local/share")
    return Path(base) / "jobctl"


def terminal_forced() -> bool:
    """True when the process environment makes rich treat stderr as a terminal."""
    return "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ


def _resolve_refs(
    value: Any, env: Mapping[str, str], key: str, origin: str, secrets: list[str]
) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                secrets.append(env[name])
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"refers to ${{{name}}}, which is not set in the environment or .env",
                key=key,
                origin=origin,
            )

        return _REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _resolve_refs(v, env, f"{key}.{k}", origin, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_refs(v, env, f"{key}[{i}]", origin, secrets) for i, v in enumerate(value)]
    return value


TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
Complaint = Callable[[str, str], ConfigError]


def named_section(section: str, name: str, table: Any, known: set[str], origin: str) -> Complaint:
    """Check the shape of a ``[section.name]`` table; return its ``bad(key, msg)`` builder."""
    prefix = f"{section}.{name}"

    def bad(key: str, message: str) -> ConfigError:
        return ConfigError(message, key=f"{prefix}.{key}" if key else prefix, origin=origin)

    if not isinstance(table, dict):
        raise bad("", "must be a table")
    for key in table:
        if key not in known:
            raise bad(key, f"unknown key (known: {', '.join(sorted(known))})")
    return bad


def table_name(value: Any, bad: Complaint) -> str:
    """A target table name: an identifier, optionally schema-qualified."""
    if not isinstance(value, str) or not TABLE_NAME.match(value):
        raise bad("table", f"{value!r} is not a table name (letters, digits, _; schema.table)")
    return value


def check_timezone(name: object, *, key: str, origin: str | None) -> str:
    """``name`` if it is an IANA zone this host knows; any other value is a ConfigError."""
    if not isinstance(name, str):
        raise ConfigError(f"{shown(name)} is not a time zone name", key=key, origin=origin)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"time zone {shown(name)} is not a known IANA zone", key=key, origin=origin
        ) from None
    return name


#: What a boolean setting accepts, exactly as its error message lists it: TOML
#: true/false, and (the form an environment variable takes) these words and 1/0,
#: as strings or TOML integers. Nothing else (not 2, not "").
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _bool(value: Any, key: str, origin: str | None) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value) if isinstance(value, int) else value
    if isinstance(word, str) and word.strip().lower() in _TRUE:
        return True
    if isinstance(word, str) and word.strip().lower() in _FALSE:
        return False
    raise ConfigError(
        f"{shown(value)} is not a boolean (true/false, yes/no, on/off, 1/0)",
        key=key,
        origin=origin,
    )


_WHOLE = re.compile(r"\s*\d{1,18}\s*", re.ASCII)


def _int(
    value: Any, key: str, origin: str | None, *, minimum: int = 0, maximum: int = 10**9
) -> int:
    """A whole number in ``[minimum, maximum]``: a TOML integer or a string of digits."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _WHOLE.fullmatch(value):
        number = int(value)
    if number is None or not minimum <= number <= maximum:
        raise ConfigError(
            f"{shown(value)} is not a whole number from {minimum} to {maximum}",
            key=key,
            origin=origin,
        )
    return number


def _duration(value: Any, key: str, origin: str | None, *, allow_zero: bool = True) -> timedelta:
    try:
        return parse_duration(value, what="duration", allow_zero=allow_zero)
    except UsageError as exc:
        raise ConfigError(str(exc), key=key, origin=origin) from None


def _str(value: Any, key: str, origin: str | None) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{shown(value)} is not a string", key=key, origin=origin)
    if "\x00" in value:
        raise ConfigError(f"{shown(value)} contains a NUL character", key=key, origin=origin)
    return value


_PG_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")


def check_database_url(url: str, *, key: str, origin: str | None) -> str:
    """A URL that parses as a PostgreSQL URL; the message shows it with its password
    redacted, and never the parser's detail when that quotes the password."""
    from jobctl.redact import redact_dsn

    shown_url = shown(redact_dsn(url))
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError as exc:
        password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
        detail = str(exc) if not password or password not in str(exc) else "bad host or port"
        raise ConfigError(
            f"{shown_url} is not a valid URL ({detail})", key=key, origin=origin
        ) from None
    if parts.scheme not in _PG_SCHEMES:
        raise ConfigError(
            f"{shown_url} is not a PostgreSQL URL (postgresql://user@host/db)",
            key=key,
            origin=origin,
        )
    return url


def _job_from(
    name: str,
    table: Mapping[str, Any],
    settings: Settings | None,
    *,
    origin: str | None,
    default_tz: str | None = None,
    env: Mapping[str, str] | None = None,
    env_origins: Mapping[str, str] | None = None,
    flavour: str = "systemd",
) -> JobConfig:
    env = env if env is not None else (settings.env if settings else {})
    if env_origins is None:
        env_origins = settings.env_origins if settings else {}
    default_tz = default_tz or (settings.timezone if settings else "UTC")
    if settings is not None:
        flavour = settings.scheduler
    # (value, the key to name in a message, where it came from)
    values: dict[str, tuple[Any, str, str | None]] = {}
    for k, v in table.items():
        if k not in _JOB_KEYS:
            raise ConfigError(
                f"unknown key (known: {', '.join(sorted(_JOB_KEYS))})",
                key=f"jobs.{name}.{k}",
                origin=origin,
            )
        values[k] = (v, f"jobs.{name}.{k}", origin)
    prefix = "JOBCTL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_"
    for k in _JOB_KEYS - {"params", "alerts"}:
        var = prefix + k.upper()
        if var in env:
            values[k] = (env[var], var, env_origins.get(var, ENVIRONMENT))

    def get(k: str) -> tuple[Any, str, str | None] | None:
        return values.get(k)

    kwargs: dict[str, Any] = {"name": name, "timezone": default_tz}
    if (g := get("enabled")) is not None:
        kwargs["enabled"] = _bool(*g)
    if (g := get("timezone")) is not None:
        kwargs["timezone"] = check_timezone(g[0], key=g[1], origin=g[2])
    if (g := get("schedule")) is not None:
        expr = _str(*g).strip()
        if expr:
            from jobctl.schedule import parse_schedule

            try:
                parse_schedule(expr, kwargs["timezone"], flavour)
            except UsageError as exc:
                raise ConfigError(str(exc), key=g[1], origin=g[2]) from None
            kwargs["schedule"] = expr
    if (g := get("timeout")) is not None:
        kwargs["timeout"] = _duration(*g, allow_zero=False)  # 0: every run times out
    if (g := get("retries")) is not None:
        kwargs["retries"] = _int(*g, maximum=MAX_RETRIES)
    if (g := get("retry_delay")) is not None:
        kwargs["retry_delay"] = _duration(*g)
    if (g := get("catchup")) is not None:
        catchup = _str(*g)
        if catchup not in ("latest", "all", "none"):
            raise ConfigError(
                f"{shown(catchup)} is not one of latest, all, none", key=g[1], origin=g[2]
            )
        kwargs["catchup"] = catchup
    if (g := get("catchup_window")) is not None:
        kwargs["catchup_window"] = _duration(*g)
    if (g := get("misfire_grace")) is not None:
        # 0 would make every tick "late", so a job with catchup = "none" never ran.
        kwargs["misfire_grace"] = _duration(*g, allow_zero=False)
    if (g := get("description")) is not None:
        kwargs["description"] = _str(*g)
    if (g := get("ping_url")) is not None:
        kwargs["ping_url"] = _str(*g)
    if (g := get("params")) is not None:
        kwargs["params"] = _params(*g)
    return JobConfig(**kwargs)


def _params(value: Any, key: str, origin: str | None) -> dict[str, str]:
    """``params = { region = "eu", days = 3 }``: scalar values, stored as text with the run
    (a TOML date or time as its ISO text); a nested table or a list is refused."""
    if not isinstance(value, dict):
        raise ConfigError("must be a table of key = value", key=key, origin=origin)
    params: dict[str, str] = {}
    for k, v in value.items():
        if isinstance(v, (date, time)):  # datetime is a date
            v = v.isoformat()
        if not isinstance(v, (str, int, float)):
            raise ConfigError(
                f"{shown(v)} is not a string, number, boolean or date",
                key=f"{key}.{k}",
                origin=origin,
            )
        params[_str(k, key, origin)] = _str(str(v), f"{key}.{k}", origin)
    return params


def load_env(env_file: Path | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Real environment over ``.env`` (``env_file``, or ``./.env`` if present)."""
    return _load_env(env_file, environ)[0]


def _load_env(
    env_file: Path | None, environ: Mapping[str, str] | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The merged environment, and where each variable came from (a ``.env`` path or
    ENVIRONMENT), so that a bad value is blamed on the variable and its file."""
    environ = dict(os.environ if environ is None else environ)
    merged: dict[str, str] = {}
    path = env_file
    if path is None and Path(".env").is_file():
        path = Path(".env")
    if path is not None:
        merged = _read_dotenv(path)
    origins = dict.fromkeys(merged, str(path))
    merged.update(environ)
    origins.update(dict.fromkeys(environ, ENVIRONMENT))
    return merged, origins


def _read_dotenv(path: Path) -> dict[str, str]:
    """A ``.env`` file's variables; a line python-dotenv cannot parse is a ConfigError.

    python-dotenv itself only logs a warning and skips such a line, which would
    silently drop a setting or a secret.
    """
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise UsageError(f"env file {shown(str(path))} {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", origin=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror}", origin=str(path)) from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            lines = binding.original.string.splitlines()
            blank = next((i for i, line in enumerate(lines) if line.strip()), 0)
            # The line itself is not shown: it may hold a secret.
            raise ConfigError(
                "python-dotenv cannot parse this line (write NAME=value; "
                "close quotes; # starts a comment)",
                key=f"line {binding.original.line + blank}",
                origin=str(path),
            )
    values = dotenv_values(stream=io.StringIO(text))
    return {k: v for k, v in values.items() if v is not None}


def load_settings(
    *,
    config_path: Path | None = None,
    env_file: Path | None = None,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the configuration once. ``environ`` defaults to ``os.environ``."""
    secrets: list[str] = []
    try:
        return _load_settings(config_path, env_file, database_url, environ, secrets)
    except ConfigError as exc:
        # A bad value that came from a ${NAME} reference is a secret: never echo it.
        from jobctl.redact import Redactor

        exc.message = Redactor(secrets).text(exc.message)
        raise


def _load_settings(
    config_path: Path | None,
    env_file: Path | None,
    database_url: str | None,
    environ: Mapping[str, str] | None,
    secrets: list[str],
) -> Settings:
    env, env_origins = _load_env(env_file, environ)

    def from_env(var: str) -> tuple[str, str] | None:
        """``(key, origin)`` naming an environment variable, if ``var`` is set."""
        return (var, env_origins.get(var, ENVIRONMENT)) if env.get(var) else None

    explicit = config_path is not None or bool(env.get("JOBCTL_CONFIG"))
    path = config_path or Path(env.get("JOBCTL_CONFIG") or "jobctl.toml")
    raw: dict[str, Any] = {}
    origin = str(path)
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"is not valid TOML: {exc}", origin=origin) from None
        except UnicodeDecodeError:
            raise ConfigError("is not UTF-8 text", origin=origin) from None
        except OSError as exc:
            raise ConfigError(f"cannot be read: {exc.strerror}", origin=origin) from None
    elif explicit:
        what = "is not a file" if path.exists() else "does not exist"
        raise UsageError(f"config file {shown(str(path))} {what}")
    base_dir = path.resolve().parent if path.is_file() else Path.cwd()
    for k in raw:
        if k not in _TOP_KEYS:
            raise ConfigError(
                f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})", key=k, origin=origin
            )
    raw = {k: _resolve_refs(v, env, k, origin, secrets) for k, v in raw.items()}

    def setting(key: str, var: str | None, default: Any) -> tuple[Any, str, str | None]:
        """A top-level value with the key and origin to blame: the variable, else the file."""
        if var is not None and (found := from_env(var)) is not None:
            return env[var], *found
        return raw.get(key, default), key, origin

    tz_value, tz_key, tz_origin = setting("timezone", "JOBCTL_TIMEZONE", "UTC")
    timezone = check_timezone(tz_value, key=tz_key, origin=tz_origin)

    scheduler, key, where = setting("scheduler", "JOBCTL_SCHEDULER", "systemd")
    if scheduler not in ("systemd", "cron", "k8s"):
        raise ConfigError(
            f"{shown(scheduler)} is not one of systemd, cron, k8s", key=key, origin=where
        )

    if database_url:
        # Typer hands over $DATABASE_URL as the option's value: blame the variable
        # when that is where it came from.
        came_from_env = env_origins.get("DATABASE_URL") == ENVIRONMENT
        key, where = (
            ("DATABASE_URL", ENVIRONMENT)
            if came_from_env and env.get("DATABASE_URL") == database_url
            else ("--database-url", None)
        )
        url_value: Any = database_url
    else:
        url_value, key, where = setting("database_url", "DATABASE_URL", None)
    url = None
    if url_value is not None and url_value != "":
        url = _str(url_value, key, where).strip() or None
    if url is not None:
        url = check_database_url(url, key=key, origin=where)

    data_dir = _default_data_dir(env)
    if not env.get("JOBCTL_DATA_DIR") and "data_dir" in raw:
        data_dir = base_dir / Path(_str(raw["data_dir"], "data_dir", origin)).expanduser()

    module_value, key, where = setting("jobs_module", "JOBCTL_JOBS_MODULE", None)
    jobs_module = None if module_value is None else _str(module_value, key, where)
    jobs_path = base_dir / _str(raw.get("jobs_path", "."), "jobs_path", origin)

    tail = _int(
        raw.get("log_tail_lines", 200), "log_tail_lines", origin, maximum=MAX_LOG_TAIL_LINES
    )
    # 0 would refresh the run row in a busy loop.
    heartbeat = _duration(raw.get("heartbeat", "15s"), "heartbeat", origin, allow_zero=False)

    jobs_raw = raw.get("jobs", {})
    if not isinstance(jobs_raw, dict):
        raise ConfigError("must be a table of [jobs.NAME] tables", key="jobs", origin=origin)
    jobs: dict[str, JobConfig] = {}
    for name, table in jobs_raw.items():
        if not isinstance(table, dict):
            raise ConfigError("must be a table", key=f"jobs.{name}", origin=origin)
        jobs[name] = _job_from(
            name,
            table,
            None,
            origin=origin,
            default_tz=timezone,
            env=env,
            env_origins=env_origins,
            flavour=scheduler,
        )
    # Environment overrides apply to jobs with no table in the file too.
    for name in BUILTIN_JOBS:
        if name not in jobs and any(k.startswith(f"JOBCTL_{name.upper()}_") for k in env):
            jobs[name] = _job_from(
                name,
                {},
                None,
                origin=origin,
                default_tz=timezone,
                env=env,
                env_origins=env_origins,
                flavour=scheduler,
            )

    sections = {k: v for k, v in raw.items() if k not in {"jobs"}}
    sections["__origin__"] = origin
    sections["__secrets__"] = tuple(s for s in secrets if s)  # any length: see redact.py
    return Settings(
        config_path=path if path.is_file() else None,
        base_dir=base_dir,
        database_url=url,
        timezone=timezone,
        data_dir=data_dir,
        jobs_module=jobs_module,
        jobs_path=jobs_path,
        scheduler=cast(Flavour, scheduler),
        jobs=jobs,
        sections=sections,
        env=env,
        log_tail_lines=tail,
        heartbeat=heartbeat,
        env_origins=env_origins,
        looked_for=None if path.is_file() else path.absolute(),
    )
