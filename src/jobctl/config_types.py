"""The value types of ``jobctl.toml`` that msgspec does not know, and its errors in our words.

The models (:mod:`jobctl.config_models`) declare each field's type; msgspec walks the
tables, refuses unknown keys and checks ``Literal`` choices. A value that needs our
own parsing (a duration, a zone, a boolean written ``yes``, a table name...) is
declared with one of the custom types below: msgspec hands the raw value to
:func:`dec_hook`, which returns the plain Python value (a ``timedelta``, a ``str``...)
or raises ``ValueError`` with our message. :func:`config_error` turns any failure
into the one-line ``ConfigError`` naming the key and where the value came from.

Light on purpose: a skipped ``jobctl run NAME`` tick reads the configuration, so
nothing here may import the ``jobctl.sources`` package (tests/test_startup.py).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Mapping
from datetime import date, time, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from jobctl.durations import parse_duration, shown
from jobctl.errors import ConfigError, UsageError
from jobctl.periods import PERIOD_TYPES, WEEKDAYS

#: The origin named for a value read from the real environment.
ENVIRONMENT = "environment"
MAX_RETRIES = 100
MAX_LOG_TAIL_LINES = 100_000
#: The jobs ``jobctl backfill`` runs for each date, in this order.
BACKFILL_JOBS = ("sync", "snapshot")
#: Where a value came from when it is not the config file: the key to name, its origin.
Blame = Mapping[str, tuple[str, str | None]]


class FieldError(Exception):
    """A rule about a value's place in its table (a cross-field rule, a key inside a
    table-valued setting), naming the key relative to that table.

    Not a ValueError on purpose: msgspec would wrap one into a ValidationError with
    the path of the whole table, losing the key.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class _Custom(type):
    """The metaclass of a custom value type.

    msgspec hands a custom type's raw value to ``dec_hook`` and checks the result with
    ``isinstance``; an instance of the type is whatever its decoder returns (a bool, a
    timedelta, ...), so each attribute holds the plain type its readers expect.
    """

    result: type | tuple[type, ...]

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, cls.result)


_DECODERS: dict[type, Callable[[Any], Any]] = {}


def _custom(name: str, result: type | tuple[type, ...], decode: Callable[[Any], Any]) -> Any:
    cls = _Custom(name, (), {"result": result, "__module__": __name__})
    _DECODERS[cls] = decode
    return cls


def dec_hook(type_: type, value: Any) -> Any:
    """msgspec's hook for the custom types: our decoder, or msgspec's own refusal."""
    decode = _DECODERS.get(type_)
    if decode is None:
        raise NotImplementedError(type_)
    return decode(value)


# --------------------------------------------------------------------------- decoders


def timezone_message(name: object) -> str | None:
    """Why ``name`` is not an IANA zone this host knows (None: it is one)."""
    if not isinstance(name, str):
        return f"{shown(name)} is not a time zone name"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"time zone {shown(name)} is not a known IANA zone"
    return None


def check_timezone(name: object, *, key: str, origin: str | None) -> str:
    """``name`` if it is an IANA zone this host knows; any other value is a ConfigError."""
    message = timezone_message(name)
    if message is not None:
        raise ConfigError(message, key=key, origin=origin)
    assert isinstance(name, str)  # timezone_message refuses anything else
    return name


_PG_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")


def database_url_message(url: str) -> str | None:
    """Why ``url`` is not a PostgreSQL URL (None: it is one). The message shows it with
    its password redacted, and never the parser's detail when that quotes the password."""
    from jobctl.redact import redact_dsn

    shown_url = shown(redact_dsn(url))
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError as exc:
        password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
        detail = str(exc) if not password or password not in str(exc) else "bad host or port"
        return f"{shown_url} is not a valid URL ({detail})"
    if parts.scheme not in _PG_SCHEMES:
        return f"{shown_url} is not a PostgreSQL URL (postgresql://user@host/db)"
    return None


def check_database_url(url: str, *, key: str, origin: str | None) -> str:
    """``url`` if it parses as a PostgreSQL URL; else a ConfigError (password redacted)."""
    message = database_url_message(url)
    if message is not None:
        raise ConfigError(message, key=key, origin=origin)
    return url


def _zone(value: object) -> str:
    message = timezone_message(value)
    if message is not None:
        raise ValueError(message)
    return str(value)


#: What a boolean setting accepts, exactly as its error message lists it: TOML
#: true/false, and (the form an environment variable takes) these words and 1/0,
#: as strings or TOML integers. Nothing else (not 2, not "").
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value) if isinstance(value, int) else value
    if isinstance(word, str) and word.strip().lower() in _TRUE:
        return True
    if isinstance(word, str) and word.strip().lower() in _FALSE:
        return False
    raise ValueError(f"{shown(value)} is not a boolean (true/false, yes/no, on/off, 1/0)")


_WHOLE = re.compile(r"\s*\d{1,18}\s*", re.ASCII)


def _whole(maximum: int) -> Callable[[object], int]:
    """A whole number from 0 to ``maximum``: a TOML integer or (from the environment) a
    string of digits."""

    def decode(value: object) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _WHOLE.fullmatch(value):
            number = int(value)
        if number is None or not 0 <= number <= maximum:
            raise ValueError(f"{shown(value)} is not a whole number from 0 to {maximum}")
        return number

    return decode


def _at_least(minimum: int) -> Callable[[object], int]:
    """A TOML integer >= ``minimum`` (a setting the environment never overrides)."""

    def decode(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{shown(value)} is not a whole number >= {minimum}")
        return value

    return decode


def _duration(allow_zero: bool) -> Callable[[object], timedelta]:
    def decode(value: object) -> timedelta:
        try:
            return parse_duration(value, what="duration", allow_zero=allow_zero)
        except UsageError as exc:
            raise ValueError(str(exc)) from None

    return decode


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not a string")
    if "\x00" in value:
        raise ValueError(f"{shown(value)} contains a NUL character")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{shown(value)} is not a non-empty string")
    return value


def _schedule(value: object) -> str | None:
    """A schedule as written, stripped; blank means none. Parsed by the loader, which
    knows the job's zone and the scheduler flavour."""
    return _string(value).strip() or None


def _database_url(value: object) -> str | None:
    url = _string(value).strip()
    if not url:
        return None
    message = database_url_message(url)
    if message is not None:
        raise ValueError(message)
    return url


def _source_database_url(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("is not a non-empty string")
    message = database_url_message(value)
    if message is not None:
        raise ValueError(message)
    return value


def _params(value: object) -> dict[str, str]:
    """``params = { region = "eu", days = 3 }``: scalar values, stored as text with the run
    (a TOML date or time as its ISO text); a nested table or a list is refused."""
    if not isinstance(value, dict):
        raise ValueError("must be a table of key = value")
    params: dict[str, str] = {}
    for k, v in value.items():
        # A key with a line break (or any odd character) is named quoted: the error
        # stays one line.
        key = f"params.{k}" if re.fullmatch(r"[A-Za-z0-9_-]+", k) else f"params.{shown(k)}"
        if isinstance(v, (date, time)):  # datetime is a date
            v = v.isoformat()
        if not isinstance(v, (str, int, float)):
            raise FieldError(key, f"{shown(v)} is not a string, number, boolean or date")
        try:
            params[_string(k)] = _string(str(v))
        except ValueError as exc:
            raise FieldError(key, str(exc)) from None
    return params


TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


def _table_name(value: object) -> str:
    """A target table name: an identifier, optionally schema-qualified."""
    if not isinstance(value, str) or not TABLE_NAME.match(value):
        raise ValueError(f"{shown(value)} is not a table name (letters, digits, _; schema.table)")
    return value


#: Schemas no job writes into: jobctl's own ledger, and PostgreSQL's.
_NOT_WRITTEN = ("jobctl", "information_schema")


def _written_table(value: object) -> str:
    """A table a job writes into (a feed's, a snapshot set's): not in a schema of its own."""
    name = _table_name(value)
    schema = name.partition(".")[0] if "." in name else ""  # quoted: case counts
    if schema in _NOT_WRITTEN or schema.startswith("pg_"):
        owner = "jobctl's own tables" if schema == "jobctl" else "PostgreSQL's catalog"
        raise ValueError(f"{shown(name)} is in the {schema} schema, which holds {owner}")
    return name


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _column_name(value: object) -> str:
    """A column name: one identifier (quoted in every statement, never pasted)."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ValueError(f"{shown(value)} is not a column name (letters, digits, _)")
    return value


KEY_FIELDS_NEEDED = (
    'must name one or more key fields, e.g. key = ["id"] (key = [] only for a '
    "source whose location depends on {date}, or whose query binds :date: then the "
    "date is the key)"
)


def _key_fields(value: object) -> tuple[str, ...]:
    """A source's key: one field name or a list of them (``[]``: see SourceConfig)."""
    fields = [value] if isinstance(value, str) else value
    if not isinstance(fields, list) or not all(isinstance(k, str) and k for k in fields):
        raise ValueError(KEY_FIELDS_NEEDED)
    return tuple(fields)


_COLUMN = re.compile(r"^[a-z_][a-z0-9_]*$")


def _key_columns(value: object) -> tuple[str, ...]:
    """A snapshot set's key: the query's key columns, lower-case identifiers."""
    columns = [value] if isinstance(value, str) else value
    if (
        not columns
        or not isinstance(columns, list)
        or not all(isinstance(k, str) and _COLUMN.match(k) for k in columns)
    ):
        raise ValueError("must name the query's key columns (lower-case identifiers)")
    return tuple(columns)


def _str_table(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError('must be a table of name = "string"')
    return dict(value)


def _ratio(value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{shown(value)} is not a number between 0 and 1")
    return float(value)


def _field_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError(f'{shown(value)} is not a list of field names, e.g. ["", "_id"]')
    return tuple(dict.fromkeys(value))


def _error_when(value: object) -> dict[str, Any]:
    """An API's error answered with HTTP 200: dotted path → scalar value."""
    if (
        not isinstance(value, dict)
        or not value
        or not all(isinstance(k, str) and k for k in value)
        or not all(isinstance(v, (str, int, float, bool)) for v in value.values())
    ):
        raise ValueError(
            f'{shown(value)} is not a table of field = value, e.g. {{ result = "error" }}'
        )
    return dict(value)


def _field_name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{shown(value)} is not a field name (a non-empty string)")
    return value


def _one_char(value: object) -> str:
    text = _text(value)
    if len(text) != 1:
        raise ValueError(f"{shown(text)} must be one character")
    if text in ('"', "\r", "\n"):
        # csv reads a quote as the delimiter without complaint, and every row is bad
        raise ValueError(f"{shown(text)} cannot separate fields (a quote or a line end)")
    return text


def _encoding(value: object) -> str:
    text = _text(value)
    try:
        codecs.lookup(text)
    except LookupError:
        raise ValueError(
            f"{shown(text)} is not an encoding Python knows (e.g. utf-8, latin-1)"
        ) from None
    return text


def _http_url(value: object) -> str:
    text = _text(value)
    if not re.match(r"^https?://", text):
        raise ValueError("must start with http:// or https://")
    try:
        host = urlsplit(text).hostname
    except ValueError:  # an unclosed IPv6 bracket, a port that is not a number
        host = None
    if not host:
        raise ValueError("is not a URL with a host (write e.g. https://example.org/path)")
    return text


def _query(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{shown(value)} is not a non-empty string")
    return value


def _period_query(value: object) -> str:
    if not isinstance(value, str) or ":period_start" not in value or ":period_end" not in value:
        raise ValueError("must be a SQL query using :period_start and :period_end")
    return value


def _choices(allowed: tuple[str, ...], *, one_word: bool) -> Callable[[object], tuple[str, ...]]:
    """A list of ``allowed`` words, deduplicated (``one_word``: a word alone is a list of one)."""

    def decode(value: object) -> tuple[str, ...]:
        words = [value] if isinstance(value, str) and one_word else value
        if not isinstance(words, list) or not words or any(w not in allowed for w in words):
            raise ValueError(f"{shown(value)}: use a list of {', '.join(allowed)}")
        return tuple(dict.fromkeys(words))

    return decode


def _names(what: str, example: str) -> Callable[[object], tuple[str, ...]]:
    """A list of non-empty strings, deduplicated in order (``[]`` allowed)."""

    def decode(value: object) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{shown(value)} is not a list of {what}, e.g. {example}")
        return tuple(dict.fromkeys(value))

    return decode


def _addresses(value: object) -> tuple[str, ...]:
    found = _names("e-mail addresses", '["ops@example.org"]')(value)
    if not found or not all("@" in a for a in found):
        raise ValueError(
            f'{shown(value)} is not a list of e-mail addresses, e.g. ["ops@example.org"]'
        )
    return found


def _port(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"{shown(value)} is not a port number (1 to 65535)")
    return value


def _weekday(value: object) -> int:
    if not isinstance(value, str) or value.lower() not in WEEKDAYS:
        raise ValueError(f"{shown(value)} is not a weekday name")
    return WEEKDAYS.index(value.lower())


if TYPE_CHECKING:
    # What mypy and the readers see: each custom type is the plain type it decodes to.
    Flag = bool
    Zone = str
    String = str
    Text = str
    Duration = timedelta
    PositiveDuration = timedelta
    Retries = int
    TailLines = int
    Count = int
    PositiveCount = int
    Schedule = str
    DatabaseUrl = str
    SourceDatabaseUrl = str
    Params = Mapping[str, str]
    TableName = str
    WrittenTable = str
    ColumnName = str
    KeyFields = tuple[str, ...]
    KeyColumns = tuple[str, ...]
    StrTable = Mapping[str, str]
    Ratio = float
    FieldNames = tuple[str, ...]
    ErrorWhen = Mapping[str, Any]
    FieldName = str
    OneChar = str
    Encoding = str
    HttpUrl = str
    Query = str
    PeriodQuery = str
    Periods = tuple[Literal["day", "week", "month"], ...]
    BackfillJobs = tuple[Literal["sync", "snapshot"], ...]
    Weekday = int
    ChannelNames = tuple[str, ...]
    Addresses = tuple[str, ...]
    Port = int
else:
    Flag = _custom("Flag", bool, _flag)
    Zone = _custom("Zone", str, _zone)
    String = _custom("String", str, _string)
    Text = _custom("Text", str, _text)
    Duration = _custom("Duration", timedelta, _duration(allow_zero=True))
    # A zero timeout fails every run; a zero grace makes every tick "late".
    PositiveDuration = _custom("PositiveDuration", timedelta, _duration(allow_zero=False))
    Retries = _custom("Retries", int, _whole(MAX_RETRIES))
    TailLines = _custom("TailLines", int, _whole(MAX_LOG_TAIL_LINES))
    Count = _custom("Count", int, _at_least(0))
    PositiveCount = _custom("PositiveCount", int, _at_least(1))
    Schedule = _custom("Schedule", (str, type(None)), _schedule)
    DatabaseUrl = _custom("DatabaseUrl", (str, type(None)), _database_url)
    SourceDatabaseUrl = _custom("SourceDatabaseUrl", str, _source_database_url)
    Params = _custom("Params", dict, _params)
    TableName = _custom("TableName", str, _table_name)
    WrittenTable = _custom("WrittenTable", str, _written_table)
    ColumnName = _custom("ColumnName", str, _column_name)
    KeyFields = _custom("KeyFields", tuple, _key_fields)
    KeyColumns = _custom("KeyColumns", tuple, _key_columns)
    StrTable = _custom("StrTable", dict, _str_table)
    Ratio = _custom("Ratio", float, _ratio)
    FieldNames = _custom("FieldNames", tuple, _field_names)
    ErrorWhen = _custom("ErrorWhen", dict, _error_when)
    FieldName = _custom("FieldName", str, _field_name)
    OneChar = _custom("OneChar", str, _one_char)
    Encoding = _custom("Encoding", str, _encoding)
    HttpUrl = _custom("HttpUrl", str, _http_url)
    Query = _custom("Query", str, _query)
    PeriodQuery = _custom("PeriodQuery", str, _period_query)
    Periods = _custom("Periods", tuple, _choices(PERIOD_TYPES, one_word=True))
    BackfillJobs = _custom("BackfillJobs", tuple, _choices(BACKFILL_JOBS, one_word=False))
    Weekday = _custom("Weekday", int, _weekday)
    ChannelNames = _custom("ChannelNames", tuple, _names("channel names", '["ops"]'))
    Addresses = _custom("Addresses", tuple, _addresses)
    Port = _custom("Port", int, _port)


# --------------------------------------------------------------------------- errors

_EXPECTED = re.compile(r"^Expected `(?P<what>[a-z]+)[^`]*`(?P<bound>\s*[<>=]+\s*[-\d.]+)?")
_NAMED_FIELD = re.compile(r"^Object (?P<how>contains unknown|missing required) field `(?P<f>.*)`$")
_WHAT = {
    "str": "a string",
    "bool": "true or false",
    "int": "a whole number",
    "float": "a number",
    "array": "a list",
}
_MISSING = object()


def _value_at(raw: Any, parts: list[str | int]) -> Any:
    for part in parts:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return raw


def _unwrap(declared: Any) -> Any:
    """``X | None`` and ``tuple[X, ...]`` → ``X`` (None when there is no single X)."""
    while get_origin(declared) is not None and get_origin(declared) is not Literal:
        args = [a for a in get_args(declared) if a is not type(None) and a is not Ellipsis]
        if len(args) != 1:
            return None
        declared = args[0]
    return declared


def _model_at(model: Any, parts: list[str | int]) -> Any:
    """The declared type at ``parts`` inside ``model`` (None when it cannot be told)."""
    for part in parts:
        model = _unwrap(model)
        if isinstance(part, int):
            continue  # an element of a tuple: unwrapped above
        if not (isinstance(model, type) and issubclass(model, msgspec.Struct)):
            return None
        found = [f.type for f in msgspec.structs.fields(model) if f.encode_name == part]
        model = found[0] if found else None
    return _unwrap(model)


def known_keys(model: Any) -> str:
    """The keys a table of type ``model`` may hold, for an "unknown key" message."""
    if not (isinstance(model, type) and issubclass(model, msgspec.Struct)):
        return "?"
    hidden = getattr(model, "not_in_file", ())
    # As written in the file: a field may be renamed (``sender`` is the key ``from``).
    fields = msgspec.structs.fields(model)
    return ", ".join(sorted(f.encode_name for f in fields if f.name not in hidden))


def _split_path(path: str) -> list[str | int]:
    """``$.checks[0].min`` → ``["checks", 0, "min"]``; ``[...]`` (a key msgspec does not
    name) ends the path: the key is blamed on its table."""
    parts: list[str | int] = []
    for token in re.findall(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]", path):
        name, index = token
        if index == "...":
            break
        parts.append(int(index) if index else name)
    return parts


def _key_text(parts: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def config_error(
    exc: msgspec.ValidationError | FieldError,
    *,
    model: type[msgspec.Struct],
    raw: Any,
    prefix: str,
    origin: str | None,
    blame: Blame | None = None,
) -> ConfigError:
    """The one-line ConfigError for a table of type ``model`` read from ``raw`` at key
    ``prefix`` (``""``: the top level) that msgspec or a model's rule refused.

    msgspec's messages ("Expected `int`, got `str` - at `$.retries`") are said as ours
    ("'x' is not a whole number"); a key in ``blame`` (an environment override) is
    named as its variable and that variable's origin.
    """
    if isinstance(exc, FieldError):
        parts: list[str | int] = [exc.key] if exc.key else []
        message = exc.message
    else:
        message, _, path = str(exc).rpartition(" - at `")
        if not message:
            message, path = path, "$`"
        parts = _split_path(path.rstrip("`"))
        named = _NAMED_FIELD.match(message)
        message = _our_words(message, parts, model, raw)
        if named is not None:
            parts.append(named.group("f"))
    if blame and parts and isinstance(parts[0], str) and parts[0] in blame:
        key, where = blame[parts[0]]
        return ConfigError(message, key=key, origin=where)
    key = ".".join(k for k in (prefix, _key_text(parts)) if k)
    return ConfigError(message, key=key, origin=origin)


def _our_words(message: str, parts: list[str | int], model: Any, raw: Any) -> str:
    value = _value_at(raw, parts)
    if (named := _NAMED_FIELD.match(message)) is not None:
        if named.group("how") == "missing required":
            return "is required"
        return f"unknown key (known: {known_keys(_model_at(model, parts))})"
    expected = _EXPECTED.match(message)
    if message.startswith("Invalid enum value") or expected is not None:
        declared = _model_at(model, parts)
        if get_origin(declared) is Literal:
            return f"{shown(value)} is not one of {', '.join(map(str, get_args(declared)))}"
    if expected is None:
        return message  # ours, from a decoder
    if expected.group("what") == "object":
        return "must be a table"
    what = _WHAT.get(expected.group("what"), f"a {expected.group('what')}")
    bound = expected.group("bound") or ""
    shown_value = "it" if value is _MISSING else shown(value)
    return f"{shown_value} is not {what}{bound}"
