"""COPY text lines of the feed store: escaping and the stored hash."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson
import xxhash
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobctl.db.copytext import copy_head, copy_line
from jobctl.sources import records
from jobctl.sources.records import (
    BadRecord,
    UnstorableRecord,
    canonical_bytes,
    canonical_hash,
    extract_key,
)


def test_stored_hash_is_the_canonical_hash() -> None:
    record = {"b": [1, 2], "a": "x\\y", "c": None}
    data = canonical_bytes(record)
    head = copy_head("", ("k1", "k2"), data)
    assert head == b"k1\tk2\t\\\\x" + canonical_hash(record).hex().encode()


def test_keys_and_data_are_escaped_for_copy_text() -> None:
    data = canonical_bytes({"a": "back\\slash"})
    line = copy_line("2026-01-02\t", ("tab\there", "new\nline", "back\\x"), data)
    fields = line.rstrip(b"\n").split(b"\t")
    assert fields[0] == b"2026-01-02"
    assert fields[1:4] == [b"tab\\there", b"new\\nline", b"back\\\\x"]
    assert fields[5] == data.replace(b"\\", b"\\\\")
    assert line.count(b"\n") == 1


def test_exact_numbers_reach_copy_text_as_written() -> None:
    record = {"n": 2**70, "d": Decimal("12345678901234567.89"), "f": 0.5}
    data = canonical_bytes(record)
    assert data == b'{"d":12345678901234567.89,"f":0.5,"n":1180591620717411303424}'
    line = copy_line("", ("k",), data)
    assert line.rstrip(b"\n").split(b"\t")[2] == data
    assert copy_head("", ("k",), data) == b"k\t\\\\x" + canonical_hash(record).hex().encode()


# --------------------------------------------------------------------------- same bytes as before
#
# The per-record functions were made cheaper (issue 13); what they return must not move
# by a byte, or the re-sync of an existing table would see every row as changed. The
# references below are the earlier implementations, verbatim.

_ESC = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _head_before(prefix: str, key: tuple[str, ...], data: bytes) -> bytes:
    joined = "\t".join(key)
    if re.search(r"[\\\t\n\r]", joined):
        joined = "\t".join([k.translate(_ESC) for k in key])
    if not key:
        prefix = prefix[:-1]
    return f"{prefix}{joined}\t\\\\x{xxhash.xxh3_128_hexdigest(data)}".encode()


def _line_before(prefix: str, key: tuple[str, ...], data: bytes) -> bytes:
    escaped = data.replace(b"\\", b"\\\\") if b"\\" in data else data
    return _head_before(prefix, key, data) + b"\t" + escaped + b"\n"


def _canonical_before(record: Any) -> bytes:
    opts = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    try:
        return orjson.dumps(record, default=records._hash_default, option=opts)
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, UnstorableRecord):
            raise exc.__cause__ from None
        if "64-bit" not in str(exc):
            raise UnstorableRecord(f"the record cannot be written as JSON: {exc}") from None
    try:
        return orjson.dumps(records._wide_ints(record), default=records._hash_default, option=opts)
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, UnstorableRecord):
            raise exc.__cause__ from None
        raise UnstorableRecord(f"the record cannot be written as JSON: {exc}") from None


def _key_before(record: Any, key_fields: list[str]) -> tuple[str, ...] | BadRecord:
    parts: list[str] = []
    for name in key_fields:
        value = (
            record.get(name, records._MISSING) if "." not in name else records._getter(name)(record)
        )
        if value is records._MISSING or value is None:
            return BadRecord(0, f"missing key field {name!r}")
        try:
            text = records._key_text(value)
        except TypeError:
            return BadRecord(0, f"key field {name!r} is {records._kind(value)}, not a scalar")
        if text is None:
            return BadRecord(0, f"missing key field {name!r}")
        parts.append(text)
    return tuple(parts)


_KEY_PART = st.text(st.characters(codec="utf-8") | st.sampled_from("\\\t\n\r \x00\x85\xa0"))
_NUMBER = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, places=None),
    st.sampled_from([Decimal("1e400"), Decimal("1e-20000"), Decimal("NaN"), float("inf")]),
)
_LEAF = st.one_of(st.none(), st.booleans(), _NUMBER, st.text(max_size=8))
_VALUE = st.recursive(
    _LEAF,
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(st.text(max_size=4), kids, max_size=4)
        | st.dictionaries(st.integers(0, 3) | st.booleans(), kids, max_size=2)
    ),  # non-str keys
    max_leaves=8,
)
_RECORD = st.dictionaries(
    st.sampled_from(["id", "k", "a.b", "é", ""]) | st.text(max_size=4), _VALUE
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_KEY_PART, max_size=3).map(tuple), st.sampled_from(["", "2026-01-02\t"]))
@example(("a\tb", "c"), "")
@example(("x",), "")
@example((), "2026-01-02\t")
def test_copy_lines_are_the_bytes_of_before(key: tuple[str, ...], prefix: str) -> None:
    data = canonical_bytes({"k": list(key), "s": "back\\slash"})
    assert copy_head(prefix, key, data) == _head_before(prefix, key, data)
    assert copy_line(prefix, key, data) == _line_before(prefix, key, data)


@settings(max_examples=200, deadline=None)
@given(_RECORD)
@example({1: "a", "b": {2: [3]}})
@example({"n": 2**70, "d": Decimal("1.50")})
def test_canonical_bytes_are_the_bytes_of_before(record: dict[Any, Any]) -> None:
    try:
        expected: bytes | str = _canonical_before(record)
    except UnstorableRecord as exc:
        expected = f"UnstorableRecord: {exc}"
    try:
        got: bytes | str = canonical_bytes(record)
    except UnstorableRecord as exc:
        got = f"UnstorableRecord: {exc}"
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["id", "n", "a.b", "a"]), _VALUE | _KEY_PART, max_size=4),
    st.lists(st.sampled_from(["id", "n", "a.b", "a.0", "a.b.c"]), min_size=1, max_size=3),
)
@example({"a.b": " "}, ["a.b"])
@example({"a": {"b": "x"}}, ["a.b"])
@example({"id": "\x85"}, ["id"])
def test_extract_key_gives_what_it_gave_before(record: dict[str, Any], key: list[str]) -> None:
    assert extract_key(record, key) == _key_before(record, key)
