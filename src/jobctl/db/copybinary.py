"""COPY binary format for a first load: ``[partition_date,] key…, hash, data``.

Why binary and not the text format of :mod:`jobctl.db.copytext`: the server then
neither scans every byte of a row for delimiters and backslashes nor decodes the
hash from hex; measured on the 237,000-record feed (220 MB), a ``psql \\copy`` of
the same rows takes ~25 % less server time in binary (3.2–3.4 s against 4.2–4.5 s).
The client gains too: nothing to escape, the hash goes as its 16 raw bytes.

A row is: the field count (int16), then per field its length (int32) and bytes —
``date`` as int32 days since 2000-01-01, ``text`` as UTF-8, ``bytea`` raw, ``jsonb``
as version byte 1 followed by the JSON text. The stream starts with
:data:`SIGNATURE` and ends with :data:`TRAILER` (psycopg adds neither when it is
handed whole blocks).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import date

import xxhash

__all__ = [
    "HASH_FIELD",
    "NULL",
    "SIGNATURE",
    "TRAILER",
    "field_count",
    "int4_field",
    "jsonb_field",
    "key_encoder",
    "row_encoder",
]

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"

_LENGTH = struct.Struct(">i").pack
_HASH_LENGTH = _LENGTH(16)  # XXH3-128
_JSONB = struct.Struct(">iB").pack  # length, then jsonb's version byte (1)
_POSTGRES_EPOCH = date(2000, 1, 1)

#: (key parts, canonical JSON) -> one binary COPY row.
RowEncoder = Callable[[tuple[str, ...], bytes], bytes]


def row_encoder(key_fields: int, partition: date | None = None) -> RowEncoder:
    """An encoder of rows with ``key_fields`` text key columns (after ``partition``).

    The key parts must be free of NUL (PostgreSQL's text cannot hold one; the sync
    counts such records as errors before they get here).
    """
    head = struct.pack(">h", key_fields + 2 + (partition is not None))
    if partition is not None:
        head += _LENGTH(4) + struct.pack(">i", (partition - _POSTGRES_EPOCH).days)
    digest = xxhash.xxh3_128_digest
    length, hash_length, jsonb = _LENGTH, _HASH_LENGTH, _JSONB
    # The hot path of a first load (every record): one join, no loop, for the usual
    # keys of one or two fields.
    if key_fields == 1:

        def one(key: tuple[str, ...], data: bytes) -> bytes:
            (a,) = key
            ab = a.encode()
            return b"".join(
                (
                    head,
                    length(len(ab)),
                    ab,
                    hash_length,
                    digest(data),
                    jsonb(len(data) + 1, 1),
                    data,
                )
            )

        return one
    if key_fields == 2:

        def two(key: tuple[str, ...], data: bytes) -> bytes:
            a, b = key
            ab, bb = a.encode(), b.encode()
            return b"".join(
                (
                    head,
                    length(len(ab)),
                    ab,
                    length(len(bb)),
                    bb,
                    hash_length,
                    digest(data),
                    jsonb(len(data) + 1, 1),
                    data,
                )
            )

        return two

    def many(key: tuple[str, ...], data: bytes) -> bytes:
        parts = [head]
        for part in key:
            encoded = part.encode()
            parts += (length(len(encoded)), encoded)
        parts += (hash_length, digest(data), jsonb(len(data) + 1, 1), data)
        return b"".join(parts)

    return many


#: key parts -> the row's leading fields: [partition,] key… (no field count).
KeyEncoder = Callable[[tuple[str, ...]], bytes]

NULL = b"\xff\xff\xff\xff"  # a field's length -1: NULL
HASH_FIELD = _HASH_LENGTH  # the hash field's length, before its 16 bytes
_INT4 = struct.Struct(">ii").pack  # length 4, the value


def jsonb_field(data: bytes) -> bytes:
    """What goes before JSON text ``data`` to make it a jsonb field: length, version 1."""
    return _JSONB(len(data) + 1, 1)


def field_count(fields: int) -> bytes:
    """The int16 that starts a row of ``fields`` fields."""
    return struct.pack(">h", fields)


def int4_field(value: int) -> bytes:
    return _INT4(4, value)


def key_encoder(key_fields: int, partition: date | None = None) -> KeyEncoder:
    """The re-sync's leading fields of a row: ``[partition_date,] key…`` (text, UTF-8).

    The rows of ``_jobctl_keys`` / ``_jobctl_later`` (key, hash, ord) and of
    ``_jobctl_data`` (key, hash, data, ord) start with them; the caller adds the
    field count and what follows.
    """
    lead = b""
    if partition is not None:
        lead = _LENGTH(4) + struct.pack(">i", (partition - _POSTGRES_EPOCH).days)
    length = _LENGTH
    if key_fields == 2 and not lead:

        def two(key: tuple[str, ...]) -> bytes:
            a, b = key
            ab, bb = a.encode(), b.encode()
            return b"".join((length(len(ab)), ab, length(len(bb)), bb))

        return two

    def many(key: tuple[str, ...]) -> bytes:
        if len(key) != key_fields:
            raise ValueError(f"a key of {len(key)} fields, not {key_fields}")
        parts = [lead]
        for part in key:
            encoded = part.encode()
            parts += (length(len(encoded)), encoded)
        return b"".join(parts)

    return many
