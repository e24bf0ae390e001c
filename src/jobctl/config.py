"""Configuration: ``jobctl.toml`` + ``.env`` + environment, read once into frozen objects.

Precedence, highest first: command-line options > real environment > ``.env`` >
``jobctl.toml`` > defaults. Secrets are written in the file as ``${NAME}`` and
resolved from the environment (or ``.env``). Every per-job setting can be
overridden from the environment as ``JOBCTL_<JOB>_<SETTING>`` (for instance
``JOBCTL_SYNC_ENABLED=0`` or ``JOBCTL_SYNC_TIMEOUT=5m``) so an operator can switch a
job off without editing files. No other module reads ``os.environ``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from jobctl.durations import parse_duration
from jobctl.errors import ConfigError, UsageError

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

    def job(self, name: str) -> JobConfig:
        """The job's settings; a job with no ``[jobs.NAME]`` table gets the defaults."""
        if name in self.jobs:
            return self.jobs[name]
        return _job_from(name, {}, self, origin=None)

    def secrets(self) -> list[str]:
        """Values that must never be printed: everything substituted from ``${NAME}``."""
        return [v for v in self.sections.get("__secrets__", ()) if v]


def _default_data_dir(env: Mapping[str, str]) -> Path:
    if env.get("JOBCTL_DATA_DIR"):
        return Path(env["JOBCTL_DATA_DIR"]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local/share")
    return Path(base) / "jobctl"


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


def check_timezone(name: str, *, key: str, origin: str | None) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"time zone {name!r} is not a known IANA zone", key=key, origin=origin
        ) from None
    return name


def _bool(value: Any, key: str, origin: str | None) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{value!r} is not a boolean (true/false, 1/0)", key=key, origin=origin)


def _int(value: Any, key: str, origin: str | None, *, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{value!r} is not a whole number", key=key, origin=origin)
    try:
        number = int(value) if isinstance(value, (int, str)) else None
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise ConfigError(f"{value!r} is not a whole number >= {minimum}", key=key, origin=origin)
    return number


def _duration(value: Any, key: str, origin: str | None) -> timedelta:
    try:
        return parse_duration(value, what="duration")
    except UsageError as exc:
        raise ConfigError(str(exc), key=key, origin=origin) from None


def _str(value: Any, key: str, origin: str | None) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{value!r} is not a string", key=key, origin=origin)
    return value


def _job_from(
    name: str,
    table: Mapping[str, Any],
    settings: Settings | None,
    *,
    origin: str | None,
    default_tz: str | None = None,
    env: Mapping[str, str] | None = None,
    flavour: str = "systemd",
) -> JobConfig:
    env = env if env is not None else (settings.env if settings else {})
    default_tz = default_tz or (settings.timezone if settings else "UTC")
    if settings is not None:
        flavour = settings.scheduler
    values: dict[str, tuple[Any, str | None]] = {}
    for k, v in table.items():
        if k not in _JOB_KEYS:
            raise ConfigError(
                f"unknown key (known: {', '.join(sorted(_JOB_KEYS))})",
                key=f"jobs.{name}.{k}",
                origin=origin,
            )
        values[k] = (v, origin)
    prefix = "JOBCTL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_"
    for k in _JOB_KEYS - {"params", "alerts"}:
        var = prefix + k.upper()
        if var in env:
            values[k] = (env[var], "environment")

    def get(k: str) -> tuple[Any, str, str | None] | None:
        if k not in values:
            return None
        v, org = values[k]
        shown_key = f"jobs.{name}.{k}" if org != "environment" else prefix + k.upper()
        return v, shown_key, org

    kwargs: dict[str, Any] = {"name": name, "timezone": default_tz}
    if (g := get("enabled")) is not None:
        kwargs["enabled"] = _bool(*g)
    if (g := get("timezone")) is not None:
        kwargs["timezone"] = check_timezone(_str(*g), key=g[1], origin=g[2])
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
        kwargs["timeout"] = _duration(*g)
    if (g := get("retries")) is not None:
        kwargs["retries"] = _int(*g)
    if (g := get("retry_delay")) is not None:
        kwargs["retry_delay"] = _duration(*g)
    if (g := get("catchup")) is not None:
        catchup = _str(*g)
        if catchup not in ("latest", "all", "none"):
            raise ConfigError(f"{catchup!r} is not one of latest, all, none", key=g[1], origin=g[2])
        kwargs["catchup"] = catchup
    if (g := get("catchup_window")) is not None:
        kwargs["catchup_window"] = _duration(*g)
    if (g := get("misfire_grace")) is not None:
        kwargs["misfire_grace"] = _duration(*g)
    if (g := get("description")) is not None:
        kwargs["description"] = _str(*g)
    if (g := get("ping_url")) is not None:
        kwargs["ping_url"] = _str(*g)
    if (g := get("params")) is not None:
        if not isinstance(g[0], dict):
            raise ConfigError("must be a table of key = value", key=g[1], origin=g[2])
        kwargs["params"] = {str(k): str(v) for k, v in g[0].items()}
    return JobConfig(**kwargs)


def load_env(env_file: Path | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Real environment over ``.env`` (``env_file``, or ``./.env`` if present)."""
    environ = dict(os.environ if environ is None else environ)
    merged: dict[str, str] = {}
    path = env_file
    if path is None and Path(".env").is_file():
        path = Path(".env")
    if path is not None:
        if not path.is_file():
            raise UsageError(f"env file {str(path)!r} does not exist")
        for k, v in dotenv_values(path).items():
            if v is not None:
                merged[k] = v
    merged.update(environ)
    return merged


def load_settings(
    *,
    config_path: Path | None = None,
    env_file: Path | None = None,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the configuration once. ``environ`` defaults to ``os.environ``."""
    env = load_env(env_file, environ)
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
    elif explicit:
        raise UsageError(f"config file {str(path)!r} does not exist")
    base_dir = path.resolve().parent if path.is_file() else Path.cwd()
    for k in raw:
        if k not in _TOP_KEYS:
            raise ConfigError(
                f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})", key=k, origin=origin
            )
    secrets: list[str] = []
    raw = {k: _resolve_refs(v, env, k, origin, secrets) for k, v in raw.items()}

    timezone = raw.get("timezone", "UTC")
    tz_key, tz_origin = "timezone", origin
    if env.get("JOBCTL_TIMEZONE"):
        timezone, tz_key, tz_origin = env["JOBCTL_TIMEZONE"], "JOBCTL_TIMEZONE", "environment"
    check_timezone(_str(timezone, tz_key, tz_origin), key=tz_key, origin=tz_origin)

    scheduler = env.get("JOBCTL_SCHEDULER") or raw.get("scheduler", "systemd")
    if scheduler not in ("systemd", "cron", "k8s"):
        raise ConfigError(
            f"{scheduler!r} is not one of systemd, cron, k8s", key="scheduler", origin=origin
        )

    url = database_url or env.get("DATABASE_URL") or raw.get("database_url") or None
    if url is not None:
        url = _str(url, "database_url", origin).strip() or None

    data_dir = _default_data_dir(env)
    if not env.get("JOBCTL_DATA_DIR") and "data_dir" in raw:
        data_dir = base_dir / Path(_str(raw["data_dir"], "data_dir", origin)).expanduser()

    jobs_module = env.get("JOBCTL_JOBS_MODULE") or raw.get("jobs_module")
    if jobs_module is not None:
        jobs_module = _str(jobs_module, "jobs_module", origin)
    jobs_path = base_dir / _str(raw.get("jobs_path", "."), "jobs_path", origin)

    tail = _int(raw.get("log_tail_lines", 200), "log_tail_lines", origin)
    heartbeat = _duration(raw.get("heartbeat", "15s"), "heartbeat", origin)

    jobs_raw = raw.get("jobs", {})
    if not isinstance(jobs_raw, dict):
        raise ConfigError("must be a table of [jobs.NAME] tables", key="jobs", origin=origin)
    jobs: dict[str, JobConfig] = {}
    for name, table in jobs_raw.items():
        if not isinstance(table, dict):
            raise ConfigError("must be a table", key=f"jobs.{name}", origin=origin)
        jobs[name] = _job_from(
            name, table, None, origin=origin, default_tz=timezone, env=env, flavour=scheduler
        )
    # Environment overrides apply to jobs with no table in the file too.
    for name in BUILTIN_JOBS:
        if name not in jobs and any(k.startswith(f"JOBCTL_{name.upper()}_") for k in env):
            jobs[name] = _job_from(
                name, {}, None, origin=origin, default_tz=timezone, env=env, flavour=scheduler
            )

    sections = {k: v for k, v in raw.items() if k not in {"jobs"}}
    sections["__origin__"] = origin
    sections["__secrets__"] = tuple(s for s in secrets if len(s) >= 4)
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
    )
