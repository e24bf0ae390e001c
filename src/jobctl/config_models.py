"""Frozen typed models of ``jobctl.toml``, validated by msgspec.

Each model declares what its keys are (see :mod:`jobctl.config_types` for the custom
value types); msgspec walks the tables, refuses unknown keys and checks ``Literal``
choices, and a model's ``__post_init__`` holds its cross-field rules (raising
:class:`~jobctl.config_types.FieldError` with the key to blame). :func:`convert` is
the one way a table becomes a model; every failure becomes a one-line ConfigError.

msgspec, not pydantic: importing pydantic and building one model costs 110-160 ms
per process here, and a skipped timer tick reads the configuration; msgspec ~3 ms.
Nothing here imports the ``jobctl.sources`` package (tests/test_startup.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date as calendar_date
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar
from zoneinfo import ZoneInfo

import msgspec

from jobctl.config_deploy import DeployConfig
from jobctl.config_types import (
    KEY_FIELDS_NEEDED,
    Addresses,
    BackfillJobs,
    Blame,
    ChannelNames,
    ColumnName,
    Count,
    DatabaseUrl,
    Duration,
    Encoding,
    ErrorWhen,
    FieldError,
    FieldName,
    FieldNames,
    Flag,
    HttpUrl,
    KeyColumns,
    KeyFields,
    OneChar,
    Params,
    PeriodQuery,
    Periods,
    Port,
    PositiveCount,
    PositiveDuration,
    Query,
    Ratio,
    Retries,
    Schedule,
    SourceDatabaseUrl,
    String,
    StrTable,
    TableName,
    TailLines,
    Text,
    Weekday,
    WrittenTable,
    Zone,
    config_error,
    dec_hook,
    known_keys,
)
from jobctl.config_web import WebTable
from jobctl.durations import shown
from jobctl.errors import ConfigError
from jobctl.periods import PERIOD_TYPES
from jobctl.sqltext import BOUND, READ_KEYWORDS, condition_problem, parse_query

#: The formats a url / path source may have (read by :mod:`jobctl.sources.parse`).
FORMATS: tuple[str, ...] = ("json", "ndjson", "csv", "json-object")
#: The value types ``types = { field = "..." }`` may name (see :mod:`jobctl.sources.records`).
TYPES: tuple[str, ...] = ("text", "int", "float", "bool", "date", "timestamp")
DEFAULT_MAX_DAYS = 366
Catchup = Literal["latest", "all", "none"]
Flavour = Literal["systemd", "cron", "k8s"]
Format = Literal["json", "ndjson", "csv", "json-object"]

_Model = TypeVar("_Model", bound=msgspec.Struct)


class _Table(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A table of ``jobctl.toml``: immutable, hashable when its values are, no unknown key."""

    #: Fields set by jobctl, never by a key of the file.
    not_in_file: ClassVar[tuple[str, ...]] = ()


def convert(
    model: type[_Model],
    raw: Any,
    *,
    prefix: str,
    origin: str | None,
    blame: Blame | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> _Model:
    """``raw`` (the TOML table at key ``prefix``) as a ``model``, or a one-line ConfigError.

    ``defaults`` fill fields the table does not set: the model's ``not_in_file`` fields
    (a named table's name), or a default inherited from the top level (a zone).
    """
    if isinstance(raw, dict):
        written = sorted(raw.keys() & set(getattr(model, "not_in_file", ())))
        if written:
            unknown = FieldError(written[0], f"unknown key (known: {known_keys(model)})")
            raise config_error(unknown, model=model, raw=raw, prefix=prefix, origin=origin)
        raw = {**(defaults or {}), **raw}
    try:
        return msgspec.convert(raw, model, dec_hook=dec_hook)
    except (msgspec.ValidationError, FieldError) as exc:
        raise config_error(
            exc, model=model, raw=raw, prefix=prefix, origin=origin, blame=blame
        ) from None


# --------------------------------------------------------------------------- jobs


class JobConfig(_Table, frozen=True):
    """The operator's settings for one job (built-in or user-registered)."""

    not_in_file = ("name",)
    name: str
    enabled: Flag = True
    schedule: Schedule | None = None
    timezone: Zone = "UTC"
    timeout: PositiveDuration | None = None
    retries: Retries = 0
    retry_delay: Duration = timedelta(seconds=30)
    catchup: Catchup = "latest"
    catchup_window: Duration = timedelta(days=7)
    # 0 would make every tick "late", so a job with catchup = "none" never ran.
    misfire_grace: PositiveDuration | None = None
    params: Params = {}
    description: String | None = None
    #: healthchecks.io-style dead-man pings (``/start``, success, ``/fail``); a secret.
    ping_url: HttpUrl | None = None
    #: ``[alerts.channels.NAME]`` channels this job's alerts go to; None: ``[alerts] default``
    #: (``[]`` silences the job). Names are checked against the channels by the loader.
    alerts: ChannelNames | None = None


#: The settings of a job that ``JOBCTL_<JOB>_<SETTING>`` may override (the tables may not).
JOB_OVERRIDES = tuple(
    f for f in JobConfig.__struct_fields__ if f not in ("name", "params", "alerts")
)


# --------------------------------------------------------------------------- sources


class Check(_Table, frozen=True):
    """A data-quality check: a SQL query returning one number, with bounds."""

    sql: str
    #: "" in the file: named ``check_<i>`` by its source, after its place in the list.
    name: str = ""
    min: float | None = None
    max: float | None = None


#: Settings of url / path sources that mean nothing for a query.
FILE_ONLY = (
    "format",
    "record_path",
    "encoding",
    "delimiter",
    "headers",
    "token",
    "conditional",
    "error_when",
    "error_message",
    "retry_on_error_body",
    "retries",
    "backoff",
)


class SourceConfig(_Table, frozen=True):
    """A ``[sources.NAME]`` table (see :mod:`jobctl.sources`)."""

    not_in_file = ("name", "statement_timeout")
    name: str
    table: WrittenTable
    key: KeyFields
    format: Format = "json"
    url: HttpUrl | None = None
    path: Text | None = None
    record_path: Text = "item"
    complete: bool = True
    date: Literal["today", "yesterday"] = "today"
    timezone: Zone = "UTC"
    fields: StrTable | None = None
    types: StrTable | None = None
    headers: StrTable = {}
    token: str | None = None
    # a zero timeout fails every request; a zero backoff retries at once
    timeout: PositiveDuration = timedelta(seconds=60)
    connect_timeout: PositiveDuration = timedelta(seconds=10)
    retries: Count = 3
    backoff: Duration = timedelta(seconds=1)
    max_error_ratio: Ratio = 0.01
    #: A complete feed that would mark more than this fraction of the table's active
    #: rows (of the date's, for a date-dependent source) removed fails unless --force.
    max_removed_ratio: Ratio = 0.5
    #: Top-level fields dropped from every record before it is hashed and stored.
    exclude: FieldNames = ()
    #: An API's error answered with HTTP 200: dotted path → value, all must match.
    error_when: ErrorWhen | None = None
    error_message: FieldName | None = None
    retry_on_error_body: bool = False
    encoding: Encoding = "utf-8"
    delimiter: OneChar = ","
    conditional: bool = True
    checks: tuple[Check, ...] = ()
    description: Text = ""
    #: Set explicitly, or implied by ``{date}`` in the location: the date is part of the key.
    date_key: bool = False
    #: A SQL source: the query (as written) whose rows are the records; see
    #: :mod:`jobctl.sources.sql`. ``:date`` in it implies ``date_key``.
    query: Query | None = None
    #: The database the query runs on (None: the jobctl database).
    database_url: SourceDatabaseUrl | None = None
    #: A query's statement_timeout (each DECLARE / FETCH): ``timeout`` when given.
    statement_timeout: PositiveDuration | None = None
    #: Whether ``jobctl backfill`` re-reads this source per date (reserved: accepted by
    #: the file since the first sync, read by no job yet).
    backfill: bool = True

    def day_at(self, moment: datetime) -> calendar_date:
        """The date a run at ``moment`` reads by default: ``date`` (today or yesterday)
        in the source's own zone. The one place this rule is written."""
        local = moment.astimezone(ZoneInfo(self.timezone)).date()
        return local - timedelta(days=1) if self.date == "yesterday" else local

    @property
    def location(self) -> str:
        return self.url or self.path or ""

    @property
    def date_dependent(self) -> bool:
        """Whether the feed's location or content depends on the date."""
        return self.date_key or "{date" in self.location or _binds_date(self.query)

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9_.-]+$", self.name):
            raise FieldError("", "source names may hold letters, digits, '_', '-' and '.' only")
        if self.query is not None:
            self._check_query(self.query)
        elif (self.url is None) == (self.path is None):
            raise FieldError("url", "give exactly one of url, path or query")
        if self.database_url is not None and self.query is None:
            raise FieldError("database_url", "only means something with query")
        if not self.key and not self.date_dependent:
            raise FieldError("key", KEY_FIELDS_NEEDED)
        self._check_fields()
        self._check_error_body()
        # Checks are named after their place when the file does not name them.
        named = tuple(
            c if c.name else msgspec.structs.replace(c, name=f"check_{i}")
            for i, c in enumerate(self.checks)
        )
        msgspec.structs.force_setattr(self, "checks", named)
        try:
            self.location.format(date="2026-01-01")
        except (KeyError, IndexError, ValueError) as exc:
            raise FieldError(
                "url" if self.url else "path",
                f"template has an unknown placeholder {exc}; only {{date}} is filled",
            ) from None

    def _check_query(self, query: str) -> None:
        for other in ("url", "path"):
            if getattr(self, other) is not None:
                raise FieldError(
                    "query", f"give exactly one of url, path or query (not query and {other})"
                )
        parsed = parse_query(query)
        if parsed.first_word not in READ_KEYWORDS:
            raise FieldError(
                "query",
                f"starts with {parsed.first_word or '(nothing)'!r}: a sync only reads, so the "
                f"query must start with {', '.join(READ_KEYWORDS)}",
            )
        unknown = [p for p in parsed.params if p not in BOUND]
        if unknown:
            raise FieldError(
                "query", f"binds :{unknown[0]}; the only parameter a sync fills is :date"
            )
        if "{date" in query:
            raise FieldError("query", "{date} is not filled in a query: bind the date as :date")
        if self.date_key and "date" not in parsed.params:
            raise FieldError(
                "date_key",
                "the query does not bind :date, so every date would get the same rows "
                "(add e.g. WHERE created_at >= :date AND created_at < :date + 1)",
            )

    def _check_fields(self) -> None:
        for field, type_ in (self.types or {}).items():
            if type_ not in TYPES:
                raise FieldError(f"types.{field}", f"{type_!r} is not one of {', '.join(TYPES)}")
        if self.exclude and self.fields is not None:
            raise FieldError("exclude", "give fields or exclude, not both (fields already selects)")
        dropped_keys = [k for k in self.key if k in self.exclude]
        if dropped_keys:
            raise FieldError(
                "exclude", f"{dropped_keys[0]!r} is a key field; it cannot be excluded"
            )

    def _check_error_body(self) -> None:
        if self.error_when is not None and self.format not in ("json", "json-object"):
            raise FieldError("error_when", f"needs format json or json-object, not {self.format!r}")
        if self.error_message is not None and self.error_when is None:
            raise FieldError("error_message", "only means something with error_when")
        if self.retry_on_error_body and self.error_when is None:
            raise FieldError("retry_on_error_body", "only means something with error_when")


def _binds_date(query: str | None) -> bool:
    return query is not None and "date" in parse_query(query).params


def parse_source(name: str, table: Any, *, origin: str, default_tz: str) -> SourceConfig:
    """One ``[sources.NAME]`` table."""
    prefix = f"sources.{name}"
    defaults: dict[str, Any] = {"name": name, "timezone": default_tz}
    if isinstance(table, dict) and "query" in table:
        # Presence, not value: a url / path setting written next to a query is a mistake
        # even when it says the default.
        for key in FILE_ONLY:
            if key in table:
                raise ConfigError(
                    "only means something for a url or path source, not a query",
                    key=f"{prefix}.{key}",
                    origin=origin,
                )
        if "timeout" in table:  # unbounded unless asked: a report may be slow
            defaults["statement_timeout"] = table["timeout"]
    return convert(SourceConfig, table, prefix=prefix, origin=origin, defaults=defaults)


def parse_sources(raw: Any, *, origin: str, default_tz: str) -> dict[str, SourceConfig]:
    """The ``[sources.NAME]`` tables (``raw``: the ``sources`` table, or None)."""
    tables = _named_tables(raw, "sources", origin)
    return {n: parse_source(n, t, origin=origin, default_tz=default_tz) for n, t in tables.items()}


def _named_tables(raw: Any, section: str, origin: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a table of [{section}.NAME] tables", key=section, origin=origin)
    return raw


# --------------------------------------------------------------------------- snapshots


class SetRetention(_Table, frozen=True):
    """``retention = { day = "90d", week = "730d", month = "1826d" }`` in a
    ``[snapshots.NAME]`` table (None: the ``[retention.snapshots]`` duration)."""

    day: PositiveDuration | None = None
    week: PositiveDuration | None = None
    month: PositiveDuration | None = None


class SnapshotSet(_Table, frozen=True):
    """A ``[snapshots.NAME]`` table: a query per period, upserted into ``table``."""

    not_in_file = ("name",)
    name: str
    table: WrittenTable
    key: KeyColumns
    query: PeriodQuery
    periods: Periods = PERIOD_TYPES
    #: 0 = Monday (ISO weeks); written as a weekday name.
    week_start: Weekday = 0
    requires_sync: bool = False
    timezone: Zone = "UTC"
    description: String = ""
    #: This set's keep durations per period; a period not named keeps ``[retention.snapshots]``.
    retention: SetRetention = SetRetention()


def parse_snapshot_set(name: str, table: Any, origin: str, default_tz: str) -> SnapshotSet:
    """One ``[snapshots.NAME]`` table."""
    return convert(
        SnapshotSet,
        table,
        prefix=f"snapshots.{name}",
        origin=origin,
        defaults={"name": name, "timezone": default_tz},
    )


def parse_snapshot_sets(raw: Any, *, origin: str, default_tz: str) -> dict[str, SnapshotSet]:
    """The ``[snapshots.NAME]`` tables (``raw``: the ``snapshots`` table, or None)."""
    tables = _named_tables(raw, "snapshots", origin)
    return {n: parse_snapshot_set(n, t, origin, default_tz) for n, t in tables.items()}


# --------------------------------------------------------------------------- the rest


class BackfillConfig(_Table, frozen=True):
    """``[backfill]``: which jobs a plain ``jobctl backfill`` runs, and its longest range."""

    #: None: sync (when a source depends on the date) and snapshot (when sets exist).
    jobs: BackfillJobs | None = None
    max_days: PositiveCount = DEFAULT_MAX_DAYS


class SnapshotRetention(_Table, frozen=True):
    """``[retention.snapshots]``: how long each period's snapshot rows are kept, for every
    set that does not say otherwise (SPEC: cleanup)."""

    day: PositiveDuration = timedelta(days=90)
    week: PositiveDuration = timedelta(days=730)
    month: PositiveDuration = timedelta(days=1826)


class RetentionConfig(_Table, frozen=True):
    """``[retention]``: the keep durations of the built-in cleanup policies (jobctl's own
    runs, finished one-off schedules, snapshot rows); the operator's own policies are
    ``[cleanup.NAME]`` tables."""

    runs: PositiveDuration = timedelta(days=180)
    schedules: PositiveDuration = timedelta(days=30)
    snapshots: SnapshotRetention = SnapshotRetention()


class ScheduleConfig(_Table, frozen=True):
    """``[schedule]``: the worker of one-off schedules (``jobctl schedule run-due``)."""

    #: A due schedule not started this long after its time (its job kept busy, or no
    #: worker ran) is marked ``failed`` instead of being run late.
    deadline: PositiveDuration = timedelta(hours=1)


#: Cleanup policy names jobctl's built-in policies take (``snapshots.SET`` too: a
#: ``[cleanup.NAME]`` name has no dot, so it can never be one of those).
BUILTIN_POLICIES = ("runs", "schedules")
DEFAULT_BATCH_SIZE = 10_000


class CleanupPolicy(_Table, frozen=True):
    """A ``[cleanup.NAME]`` table: delete ``table``'s rows whose ``column`` is older than
    ``keep`` (and that match ``where``), ``batch_size`` rows per transaction.

    ``table`` and ``column`` are identifiers (checked here, quoted in every statement);
    ``where`` is the operator's own SQL, trusted like the rest of the file.
    """

    not_in_file = ("name",)
    name: str
    table: TableName
    column: ColumnName
    keep: PositiveDuration
    #: An extra SQL condition ANDed to the age test (the operator's SQL, as written).
    where: Text | None = None
    batch_size: PositiveCount = DEFAULT_BATCH_SIZE
    description: String = ""

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9_-]+$", self.name):
            raise FieldError("", "cleanup policy names may hold letters, digits, '_' and '-' only")
        if self.name in BUILTIN_POLICIES:
            raise FieldError(
                "",
                f"{self.name!r} is a built-in policy: set its keep duration in [retention]",
            )
        problem = condition_problem(self.where) if self.where is not None else None
        if problem is not None:
            raise FieldError("where", problem)


def parse_cleanup_policies(raw: Any, *, origin: str) -> dict[str, CleanupPolicy]:
    """The ``[cleanup.NAME]`` tables (``raw``: the ``cleanup`` table, or None)."""
    tables = _named_tables(raw, "cleanup", origin)
    return {
        n: convert(CleanupPolicy, t, prefix=f"cleanup.{n}", origin=origin, defaults={"name": n})
        for n, t in tables.items()
    }


#: The parameters every report query may bind (dates, half-open, in the report's zone).
PERIOD_BINDS = ("period_start", "period_end")
REPORT_FORMATS = ("text", "markdown", "html", "json")


def _report_query_problem(query: str, *, what: str) -> str | None:
    parsed = parse_query(query)
    if parsed.first_word not in READ_KEYWORDS:
        return (
            f"starts with {parsed.first_word or '(nothing)'!r}: a report only reads, so the "
            f"{what} must start with {', '.join(READ_KEYWORDS)}"
        )
    return None


class ReportSection(_Table, frozen=True):
    """One ``[[report.sections]]`` table: a title and a query whose rows become a table."""

    title: Text
    sql: Query
    #: A line under the title.
    description: String = ""
    #: Rows shown at most (the rest are counted, not listed): a mail stays readable.
    max_rows: PositiveCount = 100


class ReportConfig(_Table, frozen=True):
    """``[report]``: the sections, recipients, templates and delivery of ``jobctl report``."""

    title: Text = "jobctl weekly report"
    sections: tuple[ReportSection, ...] = ()
    #: A query whose rows are the recipients: one report each, the row's columns bound
    #: into the section queries as ``:column``.
    recipients: Query | None = None
    #: The recipients' column holding the e-mail address.
    address_column: ColumnName = "email"
    #: The run-ledger part (per job runs, failures, durations, records, last success);
    #: None: shown without a recipients query, left out of per-recipient reports.
    job_health: Flag | None = None
    #: ``[alerts.channels.NAME]`` channels the report goes to (e-mail and / or webhook).
    channels: ChannelNames = ()
    #: A Jinja2 template (``title``, ``period``, ``recipient``).
    subject: Text = "{{ title }}: {{ period.label }}"
    #: A directory whose ``report.txt.j2`` / ``report.md.j2`` / ``report.html.j2``
    #: replace jobctl's own (relative to the config file).
    templates: String | None = None
    #: What ``--output`` and stdout get without ``--format``.
    format: Literal["text", "markdown", "html", "json"] = "text"
    #: Bounds each section and recipients query.
    query_timeout: PositiveDuration = timedelta(seconds=60)

    def __post_init__(self) -> None:
        # Checked here, not in ReportSection: a nested struct's FieldError loses its path.
        for i, section in enumerate(self.sections):
            problem = _report_query_problem(section.sql, what="query")
            if problem is not None:
                raise FieldError(f"sections[{i}].sql", problem)
        if self.recipients is not None:
            problem = _report_query_problem(self.recipients, what="recipients query")
            if problem is not None:
                raise FieldError("recipients", problem)
            unknown = [p for p in parse_query(self.recipients).params if p not in PERIOD_BINDS]
            if unknown:
                raise FieldError(
                    "recipients",
                    f"binds :{unknown[0]}; a recipients query may bind :period_start and "
                    ":period_end only",
                )
            return
        for i, section in enumerate(self.sections):
            unknown = [p for p in parse_query(section.sql).params if p not in PERIOD_BINDS]
            if unknown:
                raise FieldError(
                    f"sections[{i}].sql",
                    f"binds :{unknown[0]}, but there is no recipients query to fill it "
                    "(without one, only :period_start and :period_end are bound)",
                )

    @property
    def shows_job_health(self) -> bool:
        return self.job_health if self.job_health is not None else self.recipients is None


def parse_report(raw: Any, *, origin: str) -> ReportConfig:
    """The ``[report]`` table (None: the defaults)."""
    return convert(ReportConfig, raw or {}, prefix="report", origin=origin)


def check_report_channels(
    report: ReportConfig, channels: Mapping[str, Channel], *, origin: str
) -> None:
    """The report's channels exist; per-recipient reports go by e-mail only."""
    for name in report.channels:
        channel = channels.get(name)
        if channel is None:
            known = ", ".join(sorted(channels)) or "none: add [alerts.channels.NAME]"
            raise ConfigError(
                f"{shown(name)} is not an alert channel (known: {known})",
                key="report.channels",
                origin=origin,
            )
        if report.recipients is not None and isinstance(channel, WebhookChannel):
            raise ConfigError(
                f"{shown(name)} is a webhook: with a recipients query every report goes to "
                "its recipient's address, so list e-mail channels only",
                key="report.channels",
                origin=origin,
            )


class AlertsConfig(_Table, frozen=True):
    """``[alerts]``: the channels, and when a failing job alerts, escalates and reminds."""

    #: The raw ``[alerts.channels.NAME]`` tables, converted one by one into
    #: ``Settings.channels`` (:func:`parse_channels`): msgspec paths do not name dict keys.
    channels: Any = None
    #: The channels of a job whose ``[jobs.NAME]`` names none.
    default: ChannelNames = ()
    #: The alert of this many consecutive failures (and the later ones) is an escalation.
    escalate_after: PositiveCount = 3
    #: Where escalations go; None: the job's own channels.
    escalation_channels: ChannelNames | None = None
    #: While a job keeps failing, at most one reminder per this long.
    repeat_after: PositiveDuration = timedelta(hours=24)


class EmailChannel(_Table, frozen=True):
    """``[alerts.channels.NAME]`` with ``type = "email"``: SMTP delivery."""

    not_in_file = ("name",)
    name: str
    type: Literal["email"]
    to: Addresses
    sender: Text = msgspec.field(name="from")
    smtp_host: Text
    smtp_port: Port = 25
    #: Upgrade the plain connection with STARTTLS (port 587, usually).
    starttls: bool = False
    #: Implicit TLS from the first byte (SMTPS, port 465).
    tls: bool = False
    username: Text | None = None
    password: Text | None = None
    #: A PEM file of CA certificates to trust instead of the system's (an internal CA).
    ca_file: Text | None = None
    timeout: PositiveDuration = timedelta(seconds=30)

    def __post_init__(self) -> None:
        if self.starttls and self.tls:
            raise FieldError("tls", "give starttls or tls, not both")
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise FieldError(missing, "is required with username / password (SMTP AUTH)")


class WebhookChannel(_Table, frozen=True):
    """``[alerts.channels.NAME]`` with ``type = "webhook"``: Slack-compatible JSON POST."""

    not_in_file = ("name",)
    name: str
    type: Literal["webhook"]
    url: HttpUrl
    headers: StrTable = {}
    timeout: PositiveDuration = timedelta(seconds=10)


class FileChannel(_Table, frozen=True):
    """``[alerts.channels.NAME]`` with ``type = "file"``: each message appended to a local
    file (relative to the config file), as text: an outbox to read, or a log shipper's."""

    not_in_file = ("name",)
    name: str
    type: Literal["file"]
    path: Text


Channel = EmailChannel | WebhookChannel | FileChannel
CHANNEL_TYPES: dict[str, type[EmailChannel] | type[WebhookChannel] | type[FileChannel]] = {
    "email": EmailChannel,
    "webhook": WebhookChannel,
    "file": FileChannel,
}


def parse_channel(name: str, table: Any, *, origin: str) -> Channel:
    """One ``[alerts.channels.NAME]`` table, its model chosen by ``type``."""
    prefix = f"alerts.channels.{name}"
    kind = table.get("type") if isinstance(table, dict) else None
    model = CHANNEL_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        # Said as the choice it is (msgspec would say the first model's Literal).
        if not isinstance(table, dict):
            err = FieldError("", "must be a table")
        elif kind is None:
            err = FieldError("type", "is required (email, webhook or file)")
        else:
            err = FieldError("type", f"{shown(kind)} is not one of {', '.join(CHANNEL_TYPES)}")
        raise config_error(err, model=EmailChannel, raw=table, prefix=prefix, origin=origin)
    return convert(model, table, prefix=prefix, origin=origin, defaults={"name": name})


def parse_channels(raw: Any, *, origin: str) -> dict[str, Channel]:
    """The ``[alerts.channels.NAME]`` tables (``raw``: ``alerts.channels``, or None)."""
    tables = _named_tables(raw, "alerts.channels", origin)
    return {n: parse_channel(n, t, origin=origin) for n, t in tables.items()}


def check_channel_names(
    alerts: AlertsConfig,
    jobs: Mapping[str, JobConfig],
    channels: Mapping[str, Channel],
    *,
    origin: str,
) -> None:
    """Every channel named by ``[alerts]`` or a job exists (else a ConfigError naming the key)."""
    lists: list[tuple[str, tuple[str, ...]]] = [
        ("alerts.default", alerts.default),
        ("alerts.escalation_channels", alerts.escalation_channels or ()),
    ]
    lists += [(f"jobs.{n}.alerts", j.alerts or ()) for n, j in jobs.items()]
    for key, names in lists:
        unknown = [n for n in names if n not in channels]
        if unknown:
            known = ", ".join(sorted(channels)) or "none: add [alerts.channels.NAME]"
            raise ConfigError(
                f"{shown(unknown[0])} is not an alert channel (known: {known})",
                key=key,
                origin=origin,
            )


class ConfigFile(_Table, frozen=True):
    """The top level of ``jobctl.toml`` (named tables are kept raw here and converted
    one by one, with their name in the key: msgspec paths do not name dict keys)."""

    #: With the option and the environment merged in by the loader (see config.py).
    database_url: DatabaseUrl | None = None
    timezone: Zone = "UTC"
    data_dir: String | None = None
    jobs_module: String | None = None
    jobs_path: String = "."
    scheduler: Flavour = "systemd"
    log_tail_lines: TailLines = 200
    # 0 would refresh the run row in a busy loop.
    heartbeat: PositiveDuration = timedelta(seconds=15)
    jobs: Any = None
    sources: Any = None
    snapshots: Any = None
    retention: RetentionConfig = RetentionConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    #: Converted by :func:`parse_report` (its errors then name ``report.…``).
    report: Any = None
    alerts: AlertsConfig = AlertsConfig()
    checks: tuple[Check, ...] = ()
    backfill: BackfillConfig = BackfillConfig()
    cleanup: Any = None
    deploy: DeployConfig = DeployConfig()
    #: ``[web]``: ``jobctl serve``'s defaults and whether ``jobctl deploy`` writes its unit.
    web: WebTable = WebTable()
