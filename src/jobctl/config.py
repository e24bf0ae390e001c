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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
from dotenv import dotenv_values
from dotenv.parser import parse_stream

from jobctl.config_deploy import DeployConfig
from jobctl.config_models import (
    JOB_OVERRIDES,
    AlertsConfig,
    BackfillConfig,
    Channel,
    Check,
    CleanupPolicy,
    ConfigFile,
    EmailChannel,
    Flavour,
    JobConfig,
    ReportConfig,
    RetentionConfig,
    ScheduleConfig,
    SnapshotSet,
    SourceConfig,
    WebhookChannel,
    check_channel_names,
    check_report_channels,
    convert,
    parse_channels,
    parse_cleanup_policies,
    parse_report,
    parse_snapshot_sets,
    parse_sources,
)
from jobctl.config_types import (
    ENVIRONMENT,
    MAX_LOG_TAIL_LINES,
    MAX_RETRIES,
    Blame,
    check_database_url,
    check_timezone,
)
from jobctl.config_web import TOKEN_VAR, WebTable
from jobctl.durations import shown
from jobctl.errors import ConfigError, UsageError

__all__ = [
    "ENVIRONMENT",
    "MAX_LOG_TAIL_LINES",
    "MAX_RETRIES",
    "JobConfig",
    "Settings",
    "check_database_url",
    "check_timezone",
    "job_config",
    "load_env",
    "load_settings",
    "terminal_forced",
]

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
    env: Mapping[str, str]
    log_tail_lines: int = 200
    heartbeat: timedelta = timedelta(seconds=15)
    #: where each variable of ``env`` came from: a ``.env`` path or ENVIRONMENT
    env_origins: Mapping[str, str] = field(default_factory=dict)
    #: the config file that was looked for and not found (None: one was read)
    looked_for: Path | None = None
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    snapshots: Mapping[str, SnapshotSet] = field(default_factory=dict)
    backfill: BackfillConfig = field(default_factory=BackfillConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    #: ``[schedule]``: the one-off schedules' worker.
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    #: The operator's ``[cleanup.NAME]`` retention policies (the built-in ones: ``retention``).
    cleanup: Mapping[str, CleanupPolicy] = field(default_factory=dict)
    report: ReportConfig = field(default_factory=ReportConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    channels: Mapping[str, Channel] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    #: the config file's path as errors name it (also when it does not exist)
    origin: str = "jobctl.toml"
    #: everything substituted from a ``${NAME}`` reference (see :meth:`secrets`)
    secret_values: tuple[str, ...] = ()
    #: ``[deploy]``: what ``jobctl deploy`` writes besides the schedules
    deploy: DeployConfig = field(default_factory=DeployConfig)
    #: ``[web]``: ``jobctl serve``'s defaults (its tokens: :func:`jobctl.config_web.web_config`)
    web: WebTable = field(default_factory=WebTable)

    def job(self, name: str) -> JobConfig:
        """The job's settings; a job with no ``[jobs.NAME]`` table gets the defaults."""
        if name in self.jobs:
            return self.jobs[name]
        return job_config(
            name,
            {},
            env=self.env,
            env_origins=self.env_origins,
            origin=None,
            default_tz=self.timezone,
            flavour=self.scheduler,
        )

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
        and percent-decoded), the credentials of HTTP sources written in the file:
        ``token``, secret-looking headers, secret query values of ``url``, and those of
        the alert channels' SMTP passwords, webhook URLs (a Slack-style URL is itself
        the credential) and their secret-looking headers, and the jobs' ping URLs
        (their path holds the check's UUID or ping key), and ``JOBCTL_WEB_TOKEN``.
        """
        from jobctl.redact import url_secrets

        found = [*self.secret_values, *url_secrets(self.database_url)]
        for source in self.sources.values():
            found += url_secrets(source.url)
            found += url_secrets(source.database_url)  # a SQL source's other database
            if source.token is not None:
                found.append(source.token)
            found += _header_secrets(source.headers)
        token = self.env.get(TOKEN_VAR, "").strip()
        if token:  # the web console's token: "name:secret" or a plain secret
            found += [token, token.partition(":")[2].strip()]
        for url in self.ping_urls():
            found += [url, *url_secrets(url), *_path_tokens(url)]
        for channel in self.channels.values():
            if isinstance(channel, WebhookChannel):
                found += [channel.url, *url_secrets(channel.url), *_path_tokens(channel.url)]
                found += _header_secrets(channel.headers)
            elif isinstance(channel, EmailChannel) and channel.password is not None:
                found.append(channel.password)
        return list(dict.fromkeys(v for v in found if v))

    def ping_urls(self) -> list[str]:
        """Every job's ``ping_url``: of the tables, and of ``JOBCTL_<JOB>_PING_URL``
        variables (a job with no table reads its variable only when it runs)."""
        urls = [job.ping_url for job in self.jobs.values() if job.ping_url]
        urls += [v for k, v in self.env.items() if _PING_VAR.match(k) and v]
        return urls


#: ``JOBCTL_<JOB>_PING_URL``: see :func:`job_config`.
_PING_VAR = re.compile(r"^JOBCTL_\w+_PING_URL$")


def _header_secrets(headers: Mapping[str, str]) -> list[str]:
    from jobctl.redact import is_secret_header

    found: list[str] = []
    for name, value in headers.items():
        if is_secret_header(name):
            found += [value, *value.split()[1:]]  # "Bearer abc": "abc" too
    return found


def _path_tokens(url: str) -> list[str]:
    """Long path segments of a webhook URL: Slack, Teams and Discord put the token there."""
    from urllib.parse import urlsplit

    try:
        path = urlsplit(url).path
    except ValueError:
        return []
    return [part for part in path.split("/") if len(part) >= 16]


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


def job_config(
    name: str,
    table: Any,
    *,
    env: Mapping[str, str],
    env_origins: Mapping[str, str],
    origin: str | None,
    default_tz: str,
    flavour: str,
) -> JobConfig:
    """One job's settings: its ``[jobs.NAME]`` table under its ``JOBCTL_<JOB>_<SETTING>``
    variables, which are blamed by name when their value is bad."""
    raw = dict(table) if isinstance(table, dict) else table
    blame: dict[str, tuple[str, str | None]] = {}
    prefix = "JOBCTL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_"
    for key in JOB_OVERRIDES if isinstance(raw, dict) else ():
        var = prefix + key.upper()
        if var in env:
            raw[key] = env[var]
            blame[key] = (var, env_origins.get(var, ENVIRONMENT))
    job = convert(
        JobConfig,
        raw,
        prefix=f"jobs.{name}",
        origin=origin,
        blame=blame,
        defaults={"name": name, "timezone": default_tz},
    )
    if job.schedule is not None:
        # Imported only when a schedule is set: jobctl.schedule may import cronsim.
        from jobctl.schedule import parse_schedule

        try:
            parse_schedule(job.schedule, job.timezone, flavour)
        except UsageError as exc:
            key, where = blame.get("schedule", (f"jobs.{name}.schedule", origin))
            raise ConfigError(str(exc), key=key, origin=where) from None
    return job


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


def _read_toml(path: Path, explicit: bool) -> dict[str, Any]:
    """The config file's tables ({} when it is absent and was not asked for)."""
    origin = str(path)
    if path.is_file():
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"is not valid TOML: {exc}", origin=origin) from None
        except UnicodeDecodeError:
            raise ConfigError("is not UTF-8 text", origin=origin) from None
        except OSError as exc:
            raise ConfigError(f"cannot be read: {exc.strerror}", origin=origin) from None
    if explicit:
        what = "is not a file" if path.exists() else "does not exist"
        raise UsageError(f"config file {shown(str(path))} {what}")
    return {}


#: Top-level settings the environment overrides (CLI > environment > .env > file).
_TOP_OVERRIDES = (
    ("timezone", "JOBCTL_TIMEZONE"),
    ("scheduler", "JOBCTL_SCHEDULER"),
    ("jobs_module", "JOBCTL_JOBS_MODULE"),
    ("database_url", "DATABASE_URL"),
)


def _top_level(
    raw: dict[str, Any],
    database_url: str | None,
    env: Mapping[str, str],
    env_origins: Mapping[str, str],
) -> tuple[dict[str, Any], Blame]:
    """The top-level table with the option and the environment merged in, and the
    variable (or option) to blame for each value that came from there."""
    top = dict(raw)
    blame: dict[str, tuple[str, str | None]] = {}
    for key, var in _TOP_OVERRIDES:
        if env.get(var):
            top[key] = env[var]
            blame[key] = (var, env_origins.get(var, ENVIRONMENT))
    if database_url:
        top["database_url"] = database_url
        # Typer hands over $DATABASE_URL as the option's value: blame the variable
        # when that is where it came from.
        came_from_env = env_origins.get("DATABASE_URL") == ENVIRONMENT
        from_var = came_from_env and env.get("DATABASE_URL") == database_url
        blame["database_url"] = (
            ("DATABASE_URL", ENVIRONMENT) if from_var else ("--database-url", None)
        )
    return top, blame


def _load_settings(
    config_path: Path | None,
    env_file: Path | None,
    database_url: str | None,
    environ: Mapping[str, str] | None,
    secrets: list[str],
) -> Settings:
    env, env_origins = _load_env(env_file, environ)
    explicit = config_path is not None or bool(env.get("JOBCTL_CONFIG"))
    path = config_path or Path(env.get("JOBCTL_CONFIG") or "jobctl.toml")
    origin = str(path)
    raw = _read_toml(path, explicit)
    base_dir = path.resolve().parent if path.is_file() else Path.cwd()
    raw = {k: _resolve_refs(v, env, k, origin, secrets) for k, v in raw.items()}
    top, blame = _top_level(raw, database_url, env, env_origins)
    file = convert(ConfigFile, top, prefix="", origin=origin, blame=blame)

    data_dir = _default_data_dir(env)
    if not env.get("JOBCTL_DATA_DIR") and file.data_dir is not None:
        data_dir = base_dir / Path(file.data_dir).expanduser()

    def job(name: str, table: Any) -> JobConfig:
        return job_config(
            name,
            table,
            env=env,
            env_origins=env_origins,
            origin=origin,
            default_tz=file.timezone,
            flavour=file.scheduler,
        )

    if file.jobs is not None and not isinstance(file.jobs, dict):
        raise ConfigError("must be a table of [jobs.NAME] tables", key="jobs", origin=origin)
    jobs = {name: job(name, table) for name, table in (file.jobs or {}).items()}
    # Environment overrides apply to built-in jobs with no table in the file too.
    from jobctl.registry import BUILTIN_MODULES  # the one list of built-in job names

    for name in BUILTIN_MODULES:
        if name not in jobs and any(k.startswith(f"JOBCTL_{name.upper()}_") for k in env):
            jobs[name] = job(name, {})
    channels = parse_channels(file.alerts.channels, origin=origin)
    check_channel_names(file.alerts, jobs, channels, origin=origin)
    report = parse_report(file.report, origin=origin)
    check_report_channels(report, channels, origin=origin)
    return Settings(
        config_path=path if path.is_file() else None,
        base_dir=base_dir,
        database_url=file.database_url,
        timezone=file.timezone,
        data_dir=data_dir,
        jobs_module=file.jobs_module,
        jobs_path=base_dir / file.jobs_path,
        scheduler=file.scheduler,
        jobs=jobs,
        env=env,
        log_tail_lines=file.log_tail_lines,
        heartbeat=file.heartbeat,
        env_origins=env_origins,
        looked_for=None if path.is_file() else path.absolute(),
        sources=parse_sources(file.sources, origin=origin, default_tz=file.timezone),
        snapshots=parse_snapshot_sets(file.snapshots, origin=origin, default_tz=file.timezone),
        backfill=file.backfill,
        retention=file.retention,
        schedule=file.schedule,
        cleanup=parse_cleanup_policies(file.cleanup, origin=origin),
        report=report,
        # The raw channel tables (passwords in them) stay out: Settings.channels has them.
        alerts=msgspec.structs.replace(file.alerts, channels=None),
        channels=channels,
        deploy=file.deploy,
        web=file.web,
        checks=file.checks,
        origin=origin,
        secret_values=tuple(s for s in secrets if s),  # any length: see redact.py
    )
