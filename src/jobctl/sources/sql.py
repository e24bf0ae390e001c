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
import uuid
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from jobctl.errors import DocumentError
from jobctl.sources.records import BadRecord
from jobctl.sqltext import BOUND, READ_KEYWORDS, ParsedQuery, parse_query

__all__ = [
    "BOUND",
    "READ_KEYWORDS",
    "ParsedQuery",
    "parse_query",
    "record_of",
    "records_of",
]

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
