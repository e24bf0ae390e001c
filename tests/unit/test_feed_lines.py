"""COPY text lines of the feed store: escaping and the stored hash."""

from __future__ import annotations

from decimal import Decimal

from jobctl.db.copytext import copy_head, copy_line
from jobctl.sources.records import canonical_bytes, canonical_hash


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
