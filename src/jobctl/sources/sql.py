"""A source whose records are the rows of a SQL query (``[sources.NAME] query = "..."``).

The query is checked when the configuration is read (:func:`parse_query`): it must be
a query that reads (it starts with ``SELECT``, ``WITH``, ``VALUES`` or ``TABLE``), and
the only parameter it may bind is ``:date`` (the sync's date, a SQL ``date``; binding it
makes the source date-dependent, as ``{date}`` does in a ``url`` or ``path``). It runs
in a READ ONLY transaction through a server-side cursor (:mod:`jobctl.db.query`), so a
write hidden in a function or a data-modifying ``WITH`` is refused by the server.

Each row becomes one record, column name → field, with values made JSON-ready exactly
(:func:`record_of`), so the record goes through the same projection, key, canonical
form and hash as a file's:

* ``NULL`` → null; booleans, integers (any size) and text as they are;
* ``numeric`` → the exact ``Decimal`` (stored and hashed as the other formats store a
  number written with the same digits); ``double precision`` / ``real`` → the float
  (NaN and ±Infinity are a bad record: JSON has no such number);
* ``date``, ``time``, ``timestamp``, ``timestamptz`` → ISO-8601 text (``timestamptz`` in
  the source's time zone, which the query's session uses: ``:date`` and ``now()`` mean
  the same day as the source's ``date = "today"``);
* ``uuid``, ``inet``/``cidr`` → their text; ``json``/``jsonb`` → the value itself (its
  numbers exact), arrays → lists of converted values;
* ``bytea`` is refused (a bad record naming the column): binary data has no JSON form,
  and silently choosing hex or base64 would change what the value means — select
  ``encode(col, 'hex')`` to store it as text. So is ``interval`` (``extract(epoch FROM
  col)`` or ``col::text``) and any other type: cast it to ``text`` in the query.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from jobctl.errors import DocumentError
from jobctl.sources.records import BadRecord

__all__ = ["READ_KEYWORDS", "ParsedQuery", "parse_query", "record_of", "records_of"]

#: The statements a query source may start with: the ones that only read.
READ_KEYWORDS = ("SELECT", "WITH", "VALUES", "TABLE")
#: The parameters jobctl binds. ``:date`` is the sync's date.
BOUND = ("date",)

_IDENT_START = re.compile(r"[A-Za-z_]")
_IDENT = re.compile(r"\w+")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class ParsedQuery:
    """A query in psycopg's placeholder style, the ``:name`` parameters it uses, and its
    first keyword (upper case)."""

    text: str
    params: tuple[str, ...]
    first_word: str


def parse_query(query: str) -> ParsedQuery:
    """``:date`` → ``%(date)s`` (and ``%`` → ``%%``), outside string literals, quoted
    identifiers, dollar quotes and comments; ``::`` casts and ``a[lo:hi]`` slices are left
    alone. Trailing semicolons are dropped (one statement only).

    >>> parse_query("SELECT * FROM t WHERE d = :date::date AND s LIKE 'a%:x'").text
    "SELECT * FROM t WHERE d = %(date)s::date AND s LIKE 'a%%:x'"
    """
    out: list[str] = []
    params: list[str] = []
    first_word = ""
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if (j := _opaque_end(query, i)) is not None:
            # Text the server reads as data or comment: no parameters in it, but its
            # ``%`` still reaches psycopg, which would take it for a placeholder.
            out.append(query[i:j].replace("%", "%%"))
            i = j
        elif query.startswith("::", i):
            out.append("::")
            i += 2
        elif (
            c == ":"
            and i + 1 < n
            and _IDENT_START.match(query[i + 1])
            and not _word_before(query, i)
        ):
            name = _IDENT.match(query, i + 1)
            assert name is not None
            params.append(name.group(0))
            out.append(f"%({name.group(0)})s")
            i = name.end()
        elif c == "%":
            out.append("%%")
            i += 1
        else:
            if not first_word and (word := _WORD.match(query, i)) and not _word_before(query, i):
                first_word = word.group(0).upper()
                out.append(word.group(0))
                i = word.end()
                continue
            out.append(c)
            i += 1
    text = "".join(out).rstrip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return ParsedQuery(text, tuple(dict.fromkeys(params)), first_word)


def _opaque_end(query: str, i: int) -> int | None:
    """Where the literal, quoted identifier, comment or dollar quote at ``i`` ends.

    None when none starts at ``i``. An unterminated one runs to the end of the query
    (the server then reports the error, with its own position).
    """
    c = query[i]
    if c == "'" or c == '"':
        return _quoted_end(query, i)
    if query.startswith("--", i):
        j = query.find("\n", i)
        return len(query) if j < 0 else j
    if query.startswith("/*", i):
        return _block_comment_end(query, i)
    if c == "$" and (tag := _DOLLAR_TAG.match(query, i)) and not _word_before(query, i):
        end = query.find(tag.group(0), tag.end())
        return len(query) if end < 0 else end + len(tag.group(0))
    return None


def _quoted_end(query: str, i: int) -> int:
    """The end of a literal or quoted identifier: ``''`` / ``""`` escape the quote,
    and in an ``E'...'`` literal a backslash escapes the next character."""
    c, n = query[i], len(query)
    escapes = c == "'" and i > 0 and query[i - 1] in "eE" and not _word_before(query, i - 1)
    j = i + 1
    while j < n:
        if escapes and query[j] == "\\":
            j += 2
            continue
        if query[j] == c:
            if j + 1 < n and query[j + 1] == c:
                j += 2
                continue
            break
        j += 1
    return j + 1


def _block_comment_end(query: str, i: int) -> int:
    """The end of a ``/* ... */`` comment; PostgreSQL's nest."""
    depth, j, n = 1, i + 2, len(query)
    while j < n and depth:
        if query.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif query.startswith("*/", j):
            depth, j = depth - 1, j + 2
        else:
            j += 1
    return j


def _word_before(query: str, i: int) -> bool:
    return i > 0 and (query[i - 1].isalnum() or query[i - 1] in "_$")


# --------------------------------------------------------------------------- values


class _Refused(Exception):
    pass


_PLAIN = (str, int, bool, type(None))


def _json_value(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused(f"{value} is not a number JSON can hold")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _Refused(f"{value} is not a number JSON can hold")
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return str(value)
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        raise _Refused("is binary (bytea); select encode(col, 'hex') to store it as text")
    if isinstance(value, dt.timedelta):
        raise _Refused("is an interval; select extract(epoch FROM col) or col::text")
    raise _Refused(f"is a {type(value).__name__} value; cast it to text in the query")


def record_of(
    columns: Sequence[str], row: Sequence[Any], position: int = 0
) -> dict[str, Any] | BadRecord:
    """One row as a record (column → JSON-ready value), or a BadRecord naming the column
    whose value has no exact JSON form."""
    record: dict[str, Any] = {}
    for name, value in zip(columns, row, strict=True):
        if isinstance(value, _PLAIN):
            record[name] = value
            continue
        try:
            record[name] = _json_value(value)
        except _Refused as exc:
            return BadRecord(position, f"column {name!r} {exc}")
    return record


def records_of(
    columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> Iterator[dict[str, Any] | BadRecord]:
    """The records of a query's rows. Two columns of one name are a DocumentError: one
    of them would silently be lost."""
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise DocumentError(
                f"the query returns two columns named {name!r}; give one an alias (AS ...)"
            )
        seen.add(name)
    for position, row in enumerate(rows, 1):
        yield record_of(columns, row, position)
