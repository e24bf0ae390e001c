"""Streaming record parsers for feeds: JSON array, NDJSON, CSV, single JSON object.

:func:`iter_records` turns a binary stream into dicts, one at a time, so memory stays flat
whatever the feed size. Two kinds of problems are kept apart:

* the *document* is broken (truncated or invalid JSON, undecodable bytes, a corrupt gzip
  stream, a record path that does not exist): :class:`~jobctl.errors.DocumentError` is
  raised — the feed cannot be trusted as a whole, so a sync must change nothing;
* one *record* is broken (an NDJSON line that is not JSON, a CSV row with the wrong
  number of fields, a JSON array element that is not an object): a :class:`BadRecord`
  value is yielded in its place and iteration goes on. :func:`project` and
  :func:`extract_key` report their failures the same way.

``BadRecord.position`` is 1-based: the element number for ``json``, the line number for
``ndjson`` and ``csv`` (the line on which the row ends), 1 for ``json-object``.

Formats (``fmt``):

``json``
    ``ijson.items(stream, record_path)`` with the yajl2 C backend (pure Python is ~20x
    slower; a warning is logged once if the C backend is missing). ``record_path`` uses
    ijson's prefix syntax: ``item`` for a top-level array, ``data.item`` for
    ``{"data": [...]}``, ``result.records.item`` deeper down. Numbers with a fraction
    or exponent become ``float`` (``use_float=True``), integers stay ``int``. When no
    record is found, the stream is re-read (if seekable) to tell an empty array from a
    wrong ``record_path``; the latter is a DocumentError.
``ndjson``
    one JSON value per line; blank lines are skipped; a line that is not JSON, or not
    an object, is a BadRecord — also a last line cut short without its newline.
``csv``
    header row + rows via :mod:`csv`; every value is a ``str`` (an empty field is
    ``""``: CSV has no null — :func:`project` with a type turns ``""`` into ``None``).
    A UTF-8 BOM is dropped. Duplicate header names are a DocumentError.
``json-object``
    the whole document is read (at most :data:`JSON_OBJECT_MAX_BYTES`, 100 MB) and
    parsed at once. With the default ``record_path`` (``item``) or ``""`` a top-level
    object is the one record (an analytics API's answer) and a top-level array yields
    its elements. Any other ``record_path`` is a dotted path into the document
    (``data`` or ``data.item`` for ``{"data": [...]}``, ``report.totals`` for one
    nested object): a list there yields its elements, an object is yielded once, and
    a missing path is a DocumentError.

Byte offsets in JSON syntax errors are where the parser stood in the input: for
``json`` the end of the 64 KiB block being parsed (yajl does not report finer), for
``json-object`` and ``ndjson`` the exact byte.

Files: :func:`open_source` opens a local file, sniffing the gzip magic bytes, so
``feed.json.gz`` needs no configuration.

Hashing: :func:`canonical_hash` — see its docstring for the 1 vs 1.0 choice.
"""

from __future__ import annotations

import ast
import codecs
import contextlib
import csv
import datetime as dt
import gzip
import io
import json
import logging
import math
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import IO, Any, BinaryIO, Literal, cast

import ijson
import orjson
import xxhash

from jobctl.errors import DocumentError, SourceError, UsageError

__all__ = [
    "JSON_OBJECT_MAX_BYTES",
    "BadRecord",
    "Format",
    "Item",
    "Projector",
    "canonical_hash",
    "extract_key",
    "iter_records",
    "json_backend",
    "open_source",
    "project",
]

log = logging.getLogger("jobctl.sources")

Format = Literal["json", "ndjson", "csv", "json-object"]
FORMATS: tuple[str, ...] = ("json", "ndjson", "csv", "json-object")
JSON_OBJECT_MAX_BYTES = 100 * 1024 * 1024
READ_SIZE = 1 << 16  # ijson buffer: 64 KiB, the sweet spot for yajl2_c
FILE_BUFFER = 1 << 20
_BOM = codecs.BOM_UTF8
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class BadRecord:
    """A record that could not be used; yielded in its place, never raised."""

    position: int
    reason: str
    key: str | None = None


Item = dict[str, Any] | BadRecord


# --------------------------------------------------------------------------- opening


class _Tap(io.RawIOBase):
    """A raw file that hands every chunk it reads to ``on_chunk`` (e.g. a digest)."""

    def __init__(self, raw: io.FileIO, on_chunk: Callable[[bytes], None]) -> None:
        super().__init__()
        self._raw = raw
        self._on_chunk = on_chunk

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)
        if count:
            self._on_chunk(bytes(memoryview(buffer)[:count]))
        return count or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_source(path: Path, on_chunk: Callable[[bytes], None] | None = None) -> BinaryIO:
    """Open a local feed file for reading; gzip files (magic ``1f 8b``) are decompressed.

    ``on_chunk`` sees every raw (still compressed) byte read, in order — a digest of
    the file computed while it is parsed instead of in a pass of its own.
    Raises SourceError(transient=False) when the file cannot be opened.
    """
    path = Path(path)
    try:
        file = io.FileIO(path, "rb")
        source: io.RawIOBase = _Tap(file, on_chunk) if on_chunk is not None else file
        raw = io.BufferedReader(source, buffer_size=FILE_BUFFER)
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror or exc}", transient=False) from exc
    try:
        magic = raw.peek(2)[:2]
    except OSError as exc:
        raw.close()
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}", transient=False) from exc
    if magic == _GZIP_MAGIC:
        unzipped = gzip.GzipFile(fileobj=raw, mode="rb")
        unzipped.myfileobj = raw  # type: ignore[assignment]  # closed with it
        return cast(BinaryIO, unzipped)
    return cast(BinaryIO, raw)


# --------------------------------------------------------------------------- ijson backend

_backend: ModuleType | None = None


def json_backend() -> ModuleType:
    """The ijson backend in use: yajl2_c if available, else ijson's default (logged once)."""
    global _backend
    if _backend is None:
        try:
            _backend = cast(ModuleType, ijson.get_backend("yajl2_c"))
        except (ImportError, ValueError) as exc:
            _backend = cast(ModuleType, ijson)
            log.warning(
                "ijson C backend yajl2_c unavailable (%s); using %s — JSON parsing will be "
                "~20x slower",
                exc,
                getattr(ijson, "backend", "?"),
            )
    return _backend


class _Reader:
    """The ``read`` side of a stream for ijson: counts bytes, drops a UTF-8 BOM, transcodes.

    ijson's C backend calls ``read(n)`` once per 64 KiB, so the Python-level wrapper
    costs nothing measurable.
    """

    def __init__(self, stream: IO[bytes], encoding: str) -> None:
        self._stream = stream
        self.offset = 0  # bytes consumed from the underlying stream
        self._first = True
        self._encoding = encoding
        self._decoder: codecs.IncrementalDecoder | None = None
        if not _is_utf8(encoding):
            self._decoder = codecs.getincrementaldecoder(encoding)()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.offset += len(data)
        if self._decoder is not None:
            try:
                text = self._decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                where = self.offset - len(data) + exc.start
                raise DocumentError(
                    f"feed is not valid {self._encoding} near byte {max(where, 0)}: {exc.reason}"
                ) from exc
            data = text.encode("utf-8")
        if self._first and data:
            self._first = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
            elif len(data) < len(_BOM) and _BOM.startswith(data):  # pragma: no cover
                rest = self._stream.read(len(_BOM) - len(data))
                self.offset += len(rest)
                data = (data + rest).removeprefix(_BOM)
        return data


def _is_utf8(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    except LookupError as exc:
        raise UsageError(f"unknown encoding {encoding!r}") from exc


def _ijson_message(exc: Exception) -> str:
    """First line of a yajl error, plus the text it points at."""
    text = str(exc)
    if text[:2] in ("b'", 'b"'):
        with contextlib.suppress(ValueError, SyntaxError, AttributeError):
            text = ast.literal_eval(text).decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0]
    if len(lines) > 1 and "(right here)" not in lines[1]:
        context = lines[1] if len(lines[1]) <= 60 else lines[1][:57] + "..."
        return f"{first} (at {context!r})"
    return first


# --------------------------------------------------------------------------- formats


def iter_records(
    stream: IO[bytes],
    fmt: Format,
    *,
    record_path: str = "item",
    encoding: str = "utf-8",
    delimiter: str = ",",
) -> Iterator[Item]:
    """Yield each record of ``stream`` as a dict, or a :class:`BadRecord` in its place.

    Raises DocumentError for a malformed document (see the module docstring),
    UsageError for an unknown ``fmt`` or ``encoding``. The stream is not closed.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown feed format {fmt!r}; expected one of {', '.join(FORMATS)}")
    _is_utf8(encoding)  # validate early: UsageError for an unknown encoding
    if fmt == "json":
        inner = _iter_json(stream, record_path, encoding)
    elif fmt == "ndjson":
        inner = _iter_ndjson(stream, encoding)
    elif fmt == "csv":
        inner = _iter_csv(stream, encoding, delimiter)
    else:
        inner = _iter_json_object(stream, record_path, encoding)
    try:
        yield from inner
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # gzip.open() raises these while reading: EOFError for a cut-short stream
        raise DocumentError(f"compressed feed is truncated or corrupt: {exc}") from exc
    except OSError as exc:
        raise SourceError(f"cannot read feed: {exc.strerror or exc}", transient=False) from exc


def _iter_json(stream: IO[bytes], record_path: str, encoding: str) -> Iterator[Item]:
    backend = json_backend()
    try:
        start: int | None = stream.tell()
    except (OSError, AttributeError, ValueError):
        start = None
    reader = _Reader(stream, encoding)
    count = 0
    try:
        for obj in backend.items(reader, record_path, use_float=True, buf_size=READ_SIZE):
            count += 1
            if type(obj) is dict:
                yield obj
            else:
                yield BadRecord(count, f"element {count} is {_kind(obj)}, not an object")
    except ijson.JSONError as exc:
        raise _json_document_error(exc, reader.offset, count) from exc
    if count == 0:
        _check_record_path(stream, start, record_path, encoding)


def _json_document_error(exc: Exception, offset: int, count: int) -> DocumentError:
    message = _ijson_message(exc)
    after = f" after {count} records" if count else ""
    if "premature EOF" in message or "Incomplete JSON" in message:
        return DocumentError(
            f"feed is not valid JSON: it ends before the document is complete "
            f"(truncated?) at byte {offset}{after}"
        )
    return DocumentError(f"feed is not valid JSON near byte {offset}{after}: {message}")


def _check_record_path(
    stream: IO[bytes], start: int | None, record_path: str, encoding: str
) -> None:
    """No record at ``record_path``: raise DocumentError unless it is an empty array."""
    try:
        if start is None:
            raise ValueError("position unknown")
        stream.seek(start)
    except (OSError, AttributeError, ValueError):
        log.warning(
            "no records at %r; the stream cannot be re-read to check that the path exists",
            record_path,
        )
        return
    container, _, last = record_path.rpartition(".")
    if last != "item":  # the path names the record itself (any value there counts)
        container, want = record_path, None
    else:
        want = "start_array"
    try:
        for prefix, event, _value in json_backend().parse(_Reader(stream, encoding)):
            if prefix == container and (want is None or event == want):
                if want is None and event in ("map_key", "end_map", "end_array"):
                    continue
                return  # an empty array (or a value) is there: zero records is true
    except ijson.JSONError as exc:  # pragma: no cover - the first pass would have failed
        raise DocumentError(f"feed is not valid JSON: {_ijson_message(exc)}") from exc
    where = f"'{container}'" if container else "the top level"
    raise DocumentError(
        f"record path {record_path!r} not found: the document has no array at {where}"
        + ("" if container else " (set record_path, e.g. 'data.item')")
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _iter_ndjson(stream: IO[bytes], encoding: str) -> Iterator[Item]:
    if not _is_utf8(encoding):
        yield from _iter_ndjson_text(stream, encoding)
        return
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    offset = 0
    line_no = 0
    for line in stream:
        line_no += 1
        start = offset
        offset += len(line)
        if line_no == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        try:
            value = loads(line)
        except decode_error as exc:
            if not line.strip():
                continue
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as uexc:
                raise DocumentError(
                    f"feed is not valid utf-8 near byte {start + uexc.start} "
                    f"(line {line_no}): {uexc.reason}"
                ) from uexc
            yield _bad_line(line_no, line.endswith(b"\n"), exc.msg)
            continue
        if type(value) is dict:
            yield value
        else:
            yield BadRecord(line_no, f"line {line_no} is {_kind(value)}, not an object")


def _bad_line(line_no: int, complete: bool, msg: str) -> BadRecord:
    if not complete:
        return BadRecord(
            line_no, f"last line {line_no} is incomplete (no newline at end of file): {msg}"
        )
    return BadRecord(line_no, f"line {line_no} is not valid JSON: {msg}")


def _iter_ndjson_text(stream: IO[bytes], encoding: str) -> Iterator[Item]:
    text = io.TextIOWrapper(stream, encoding=encoding, newline=None)
    line_no = 0
    try:
        for line in _decoding(text, stream, encoding):
            line_no += 1
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield _bad_line(line_no, line.endswith("\n"), exc.msg)
                continue
            if type(value) is dict:
                yield value
            else:
                yield BadRecord(line_no, f"line {line_no} is {_kind(value)}, not an object")
    finally:
        text.detach()


def _decoding(text: io.TextIOWrapper, raw: IO[bytes], encoding: str) -> Iterator[str]:
    """Iterate lines of ``text``, turning UnicodeDecodeError into DocumentError."""
    it = iter(text)
    while True:
        try:
            line = next(it)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise _decode_error(exc, raw, encoding) from exc
        yield line


def _decode_error(exc: UnicodeDecodeError, raw: IO[bytes], encoding: str) -> DocumentError:
    """DocumentError naming the encoding and, when the stream can tell, the byte offset."""
    where = ""
    try:
        # TextIOWrapper decodes chunk by chunk: the failing chunk ends at raw.tell()
        pos = raw.tell() - len(exc.object) + exc.start
        if pos >= 0:
            where = f" near byte {pos}"
    except (OSError, AttributeError, ValueError):
        pass
    return DocumentError(f"feed is not valid {encoding}{where}: {exc.reason}")


def _iter_csv(stream: IO[bytes], encoding: str, delimiter: str) -> Iterator[Item]:
    enc = "utf-8-sig" if _is_utf8(encoding) else encoding
    text = io.TextIOWrapper(stream, encoding=enc, newline="")
    try:
        reader = csv.reader(_decoding(text, stream, encoding), delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                raise DocumentError("CSV feed is empty: no header row")
            seen: set[str] = set()
            for name in header:
                if name in seen:
                    raise DocumentError(f"CSV header has the column {name!r} twice")
                seen.add(name)
            width = len(header)
            for row in reader:
                if len(row) == width:
                    yield dict(zip(header, row, strict=True))
                elif not row:
                    continue  # blank line
                else:
                    yield BadRecord(
                        reader.line_num,
                        f"line {reader.line_num} has {len(row)} fields, the header has {width}",
                    )
        except csv.Error as exc:
            raise DocumentError(f"CSV feed is malformed at line {reader.line_num}: {exc}") from exc
    finally:
        text.detach()


def _iter_json_object(stream: IO[bytes], record_path: str, encoding: str) -> Iterator[Item]:
    reader = _Reader(stream, encoding)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = reader.read(FILE_BUFFER)
        if not chunk:
            break
        size += len(chunk)
        if size > JSON_OBJECT_MAX_BYTES:
            raise DocumentError(
                f"single-object JSON feed is larger than {JSON_OBJECT_MAX_BYTES} bytes; "
                "use format 'json' with a record_path to stream it"
            )
        chunks.append(chunk)
    data = b"".join(chunks)
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if not data.strip() or exc.pos >= len(data.rstrip()):
            raise DocumentError(
                f"feed is not valid JSON: it ends before the document is complete "
                f"(truncated?) at byte {len(data)}"
            ) from exc
        raise DocumentError(f"feed is not valid JSON near byte {exc.pos}: {exc.msg}") from exc
    path = record_path.strip(".")
    if path in ("", "item"):
        target: Any = doc
    else:
        target = doc
        parts = path.split(".")
        if parts[-1] == "item":
            parts = parts[:-1]
        for depth, part in enumerate(parts):
            if isinstance(target, dict) and part in target:
                target = target[part]
            else:
                missing = ".".join(parts[: depth + 1])
                raise DocumentError(f"record path {record_path!r} not found: no {missing!r}")
    if isinstance(target, dict):
        yield target
    elif isinstance(target, list):
        for i, obj in enumerate(target, 1):
            yield obj if type(obj) is dict else BadRecord(i, f"element {i} is {_kind(obj)}")
    else:
        raise DocumentError(
            f"record path {record_path!r} holds {_kind(target)}, not an object or an array"
        )


# --------------------------------------------------------------------------- hashing

_HASH_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _hash_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"cannot hash a {type(value).__name__}")


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The record's canonical JSON (keys sorted, compact, UTF-8): what is hashed and stored."""
    try:
        return orjson.dumps(record, default=_hash_default, option=_HASH_OPTS)
    except orjson.JSONEncodeError:
        return json.dumps(
            record,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=_hash_default,
        ).encode("utf-8")


def canonical_hash(record: Mapping[str, Any]) -> bytes:
    """16-byte XXH3-128 digest of the record's canonical JSON (keys sorted, compact, UTF-8).

    XXH3 rather than a cryptographic hash: it detects changes, nobody attacks it,
    and at ~0.1 µs a record it is ten times cheaper than BLAKE2b (measured: 1.1 µs),
    which matters at a quarter of a million records a sync.

    Two records that are equal as JSON up to key order hash equal, nested objects
    included. Numbers are hashed as parsed: ``1`` (int) and ``1.0`` (float) hash
    *differently* — this is deliberate: normalising would need a Python walk over every
    value (several µs a record), parsing is deterministic so an unchanged feed still
    hashes the same, and a feed that switches ``1`` to ``1.0`` has changed the data
    it publishes (jsonb keeps the difference too). ``Decimal`` hashes as its string.
    Integers beyond 64 bits (which orjson refuses) fall back to the stdlib encoder.
    """
    return xxhash.xxh3_128_digest(canonical_bytes(record))


# --------------------------------------------------------------------------- projection

TYPES: tuple[str, ...] = ("text", "int", "float", "bool", "date", "timestamp")
_ARTICLE = {"int": "an int", "float": "a float", "bool": "a bool", "date": "a date"}
_INT_RE = re.compile(r"[+-]?\d+")
_TRUE = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off"})
_MISSING = object()


class _CoerceError(Exception):
    pass


def _to_text(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float | Decimal):
        return str(v)
    return orjson.dumps(v, option=_HASH_OPTS, default=_hash_default).decode()


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _to_int(v: Any) -> Any:
    if _blank(v):
        return None
    if isinstance(v, bool):
        raise _CoerceError
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if v.is_integer():
            return int(v)
        raise _CoerceError
    if isinstance(v, str):
        s = v.strip()
        if _INT_RE.fullmatch(s):
            return int(s)
        try:
            f = float(s)
        except ValueError:
            raise _CoerceError from None
        if math.isfinite(f) and f.is_integer():
            return int(f)
    raise _CoerceError


def _to_float(v: Any) -> Any:
    if _blank(v):
        return None
    if isinstance(v, bool):
        raise _CoerceError
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            raise _CoerceError from None
    else:
        raise _CoerceError
    if not math.isfinite(f):
        raise _CoerceError
    return f


def _to_bool(v: Any) -> Any:
    if _blank(v):
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise _CoerceError


def _to_date(v: Any) -> Any:
    if _blank(v):
        return None
    if not isinstance(v, str):
        raise _CoerceError
    s = v.strip()
    try:
        return dt.date.fromisoformat(s).isoformat()
    except ValueError:
        pass
    try:
        stamp = dt.datetime.fromisoformat(s)
    except ValueError:
        raise _CoerceError from None
    if stamp.time() != dt.time(0, 0):
        raise _CoerceError  # a real time of day: refuse to drop it silently
    return stamp.date().isoformat()


def _to_timestamp(v: Any) -> Any:
    if _blank(v):
        return None
    if isinstance(v, int | float) and not isinstance(v, bool):
        try:
            return dt.datetime.fromtimestamp(v, dt.UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            raise _CoerceError from None
    if not isinstance(v, str):
        raise _CoerceError
    try:
        return dt.datetime.fromisoformat(v.strip()).isoformat()
    except ValueError:
        raise _CoerceError from None


_COERCERS: dict[str, Callable[[Any], Any]] = {
    "text": _to_text,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "date": _to_date,
    "timestamp": _to_timestamp,
}


def _getter(path: str) -> Callable[[Mapping[str, Any]], Any]:
    """A function reading ``path`` (``a`` or ``a.b.0``) from a record; missing → _MISSING."""
    if "." not in path:
        return lambda rec: rec.get(path, _MISSING)
    parts = path.split(".")

    def get(rec: Mapping[str, Any]) -> Any:
        if path in rec:  # a flat key that contains dots wins
            return rec[path]
        cur: Any = rec
        for part in parts:
            if isinstance(cur, Mapping):
                if part not in cur:
                    return _MISSING
                cur = cur[part]
            elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
                cur = cur[int(part)]
            else:
                return _MISSING
        return cur

    return get


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Projector:
    """Compiled :func:`project`: build once per source, call once per record.

    ``fields`` maps target name → source field (dotted paths ``a.b`` / ``a.0`` reach into
    nested objects and arrays; a flat key containing dots wins). A missing source field
    gives ``None``. Without ``fields`` the record's own fields are kept (a shallow copy).
    ``types`` maps target name → one of ``text int float bool date timestamp``;
    ``None`` and, for non-text types, blank strings become ``None``; ``date`` and
    ``timestamp`` values are returned as ISO-8601 strings (JSON-ready). A value that
    does not convert makes the whole record a BadRecord.
    """

    def __init__(
        self, fields: Mapping[str, str] | None = None, types: Mapping[str, str] | None = None
    ) -> None:
        self._fields = (
            [(target, _getter(source)) for target, source in fields.items()]
            if fields is not None
            else None
        )
        coercions: list[tuple[str, Callable[[Any], Any], str]] = []
        for name, type_name in (types or {}).items():
            fn = _COERCERS.get(type_name)
            if fn is None:
                raise UsageError(
                    f"unknown type {type_name!r} for field {name!r}; "
                    f"expected one of {', '.join(TYPES)}"
                )
            coercions.append((name, fn, type_name))
        self._coercions = coercions

    def __call__(self, record: Mapping[str, Any], position: int = 0) -> dict[str, Any] | BadRecord:
        if self._fields is None:
            out = dict(record)
        else:
            out = {}
            for target, get in self._fields:
                value = get(record)
                out[target] = None if value is _MISSING else value
        for name, fn, type_name in self._coercions:
            value = out.get(name)
            try:
                out[name] = fn(value)
            except (_CoerceError, ValueError, TypeError, OverflowError):
                article = _ARTICLE.get(type_name, f"a {type_name}")
                return BadRecord(position, f"field {name!r}: {_show(value)} is not {article}")
        return out


def project(
    record: Mapping[str, Any],
    fields: Mapping[str, str] | None,
    types: Mapping[str, str] | None,
    *,
    position: int = 0,
) -> dict[str, Any] | BadRecord:
    """Select/rename ``fields`` and coerce ``types`` (see :class:`Projector`) for one record."""
    return Projector(fields, types)(record, position)


def _key_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Decimal):
        return str(int(value)) if value == value.to_integral_value() else str(value)
    raise TypeError


def extract_key(
    record: Mapping[str, Any], key_fields: Sequence[str], *, position: int = 0
) -> tuple[str, ...] | BadRecord:
    """The record's natural key as strings (``7`` and ``7.0`` both give ``"7"``).

    A missing, null or blank key field → ``BadRecord(reason="missing key field 'X'")``;
    an object or array as a key value → BadRecord too. Dotted paths work as in
    :class:`Projector`.
    """
    parts: list[str] = []
    for name in key_fields:
        value = record.get(name, _MISSING) if "." not in name else _getter(name)(record)
        if value is _MISSING or value is None:
            return BadRecord(position, f"missing key field {name!r}")
        try:
            text = _key_text(value)
        except TypeError:
            return BadRecord(position, f"key field {name!r} is {_kind(value)}, not a scalar")
        if text is None:
            return BadRecord(position, f"missing key field {name!r}")
        parts.append(text)
    return tuple(parts)
