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

Truncation: a JSON document cut short is a DocumentError; so is an ``ndjson`` or ``csv``
feed whose last line has no newline (``head -c`` of a file, a close-delimited HTTP body
cut by the network): a line format is only complete when its last line is. A cut that
falls exactly on a line boundary cannot be seen in the bytes; ``max_removed_ratio``
(:mod:`jobctl.jobs.sync`) guards against the shrunken feed that leaves.

Encoding: ``encoding`` (UTF-8 by default; a UTF-8 BOM is dropped). A feed read as
UTF-8 that starts with a UTF-16 or UTF-32 byte order mark — a Windows "Unicode" export;
no UTF-8 text can start so — is read in the encoding the mark names.

Numbers are kept exactly as written (see :mod:`jobctl.sources.records`): integers are
``int`` of any size; a number with a fraction or an exponent is a ``float`` when a double
is exactly that number as written, else a ``Decimal``.

Formats (``fmt``):

``json``
    ``ijson.items(stream, record_path)`` with the yajl2 C backend (pure Python is ~20x
    slower; a warning is logged once if the C backend is missing). ``record_path`` uses
    ijson's prefix syntax: ``item`` for a top-level array, ``data.item`` for
    ``{"data": [...]}``, ``result.records.item`` deeper down. Numbers with a fraction
    or exponent become ``Decimal`` (``use_float=False``: yajl's doubles would round
    ``12345678901234567.89`` and overflow above 2**63), integers ``int``. When no
    record is found, the stream is re-read (if seekable) to tell an empty array from a
    wrong ``record_path``; the latter is a DocumentError. A top-level array laid out
    one element per line (``[`` alone on the first line, then ``{...},`` lines: how
    open-data dumps are written) is parsed a block of lines at a time by msgspec
    instead, ~3x cheaper, with ijson's very results — elements, numbers, errors and
    their offsets — and ijson taking over wherever the layout does not hold (see
    :mod:`jobctl.sources.arraylines`).
``ndjson``
    one JSON value per line (orjson); blank lines are skipped; a line that is not JSON,
    or not an object, is a BadRecord; a last line without its newline is a
    DocumentError (truncated). orjson reads numbers as doubles and 64-bit integers: a
    record holding a float whose line has a number that a double may not hold exactly
    (16+ digits, a 3-digit exponent) is parsed again, exactly (stdlib json, Decimal).
``csv``
    header row + rows via :mod:`csv`; every value is a ``str`` (an empty field is
    ``""``: CSV has no null — :func:`project` with a type turns ``""`` into ``None``).
    A UTF-8 BOM is dropped. Duplicate header names are a DocumentError; so is a last
    line without its newline, or a quoted field still open at the end (truncated).
``json-object``
    the whole document is read (at most :data:`JSON_OBJECT_MAX_BYTES`, 100 MB) and
    parsed at once (orjson; again, exactly, when a number needs it, as for ``ndjson``).
    With the default ``record_path`` (``item``) or ``""`` a top-level object is the one
    record (an analytics API's answer) and a top-level array yields its elements. Any
    other ``record_path`` is a dotted path into the document (``data`` or ``data.item``
    for ``{"data": [...]}``, ``report.totals`` for one nested object): a list there
    yields its elements, an object is yielded once, and a missing path is a
    DocumentError.

Byte offsets in JSON syntax errors are where the parser stood in the input: for
``json`` the end of the 64 KiB block being parsed (yajl does not report finer), for
``json-object`` and ``ndjson`` the exact byte.

Files: :func:`open_source` opens a local file, sniffing the gzip magic bytes, so
``feed.json.gz`` needs no configuration.

What a record becomes (canonical form, hash, projection, key) is in
:mod:`jobctl.sources.records`.
"""

from __future__ import annotations

import ast
import codecs
import contextlib
import csv
import gzip
import io
import json
import logging
import re
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import IO, Any, BinaryIO, Literal, cast

import ijson
import orjson

from jobctl.config_models import FORMATS
from jobctl.errors import DocumentError, SourceError, UndecodableFeed, UsageError
from jobctl.sources.arraylines import READ_SIZE, ArrayLines
from jobctl.sources.records import BadRecord, _kind

__all__ = [
    "CSV_FIELD_LIMIT",
    "JSON_OBJECT_MAX_BYTES",
    "Format",
    "Item",
    "iter_records",
    "json_backend",
    "open_source",
]

log = logging.getLogger("jobctl.sources")

Format = Literal["json", "ndjson", "csv", "json-object"]
JSON_OBJECT_MAX_BYTES = 100 * 1024 * 1024
FILE_BUFFER = 1 << 20
_BOM = codecs.BOM_UTF8
_GZIP_MAGIC = b"\x1f\x8b"


Item = dict[str, Any] | BadRecord

#: The longest run of digits a JSON feed may hold (a number, or a string of digits).
#: ijson's C backend builds an integer with ``PyLong_FromString`` and does not check
#: for failure: an integer beyond Python's limit on digits (4300 by default) kills
#: the process with a segmentation fault. So the limit is raised to this (every
#: integer PostgreSQL's numeric can hold — 131072 digits — parses, in every format,
#: at ~0.1 s for the longest), and :class:`_Reader` refuses a feed with a longer
#: run before the parser reaches its end.
DIGITS_LIMIT = 150_000
if 0 < sys.get_int_max_str_digits() < DIGITS_LIMIT:
    sys.set_int_max_str_digits(DIGITS_LIMIT)
_DIGITS = re.compile(rb"[0-9]*")

#: The longest CSV field, in characters. The csv module's default, 131,072, fails a
#: whole feed for one long field — open-data exports carry geometries as WKT text (a
#: city boundary is often several hundred KB, a country's a few MB). Not unbounded:
#: a quote left open makes the rest of the file one field, which the csv module holds
#: at 4 bytes a character (16 Mi characters: ~64 MB before the feed fails, naming the
#: line). Process-wide like the digit limit above (a sync is a process of its own).
CSV_FIELD_LIMIT = 16 * 1024 * 1024
if csv.field_size_limit() < CSV_FIELD_LIMIT:
    csv.field_size_limit(CSV_FIELD_LIMIT)


# --------------------------------------------------------------------------- opening


class _Tap(io.RawIOBase):
    """A raw file that hands every chunk it reads to ``on_chunk`` (e.g. a digest).

    The chunk is a memoryview of the reader's buffer, valid during the call only (a
    digest's ``update`` takes it as it is: no copy of every megabyte read). Seekable,
    so that a parser may read a part again (the check that a JSON feed with no record
    has its record path at all): ``on_chunk`` still sees every byte once, in order —
    only what lies beyond the furthest point read so far.
    """

    def __init__(self, raw: io.FileIO, on_chunk: Callable[[memoryview], None]) -> None:
        super().__init__()
        self._raw = raw
        self._on_chunk = on_chunk
        self._pos = 0
        self._seen = 0  # bytes [0, _seen) went to on_chunk

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer) or 0
        seen = self._seen - self._pos  # of this chunk, the bytes on_chunk had already
        self._pos += count
        if count > seen:  # (a parser reads again what it read; it never skips ahead)
            self._on_chunk(memoryview(buffer)[max(seen, 0) : count])
            self._seen = self._pos
        return count

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_source(path: Path, on_chunk: Callable[[memoryview], None] | None = None) -> BinaryIO:
    """Open a local feed file for reading; gzip files (magic ``1f 8b``) are decompressed,
    a zip archive of one file is read as that file (:func:`_zip_member`).

    ``on_chunk`` sees every raw (still compressed) byte read, in order — a digest of
    the file computed while it is parsed instead of in a pass of its own (for a zip,
    whose index is at its end, in a pass of its own first). It gets a
    memoryview valid during the call only: use it there (``digest.update``), or copy it.
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
        magic = raw.peek(4)[:4]
    except OSError as exc:
        raw.close()
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}", transient=False) from exc
    if magic[:2] == _GZIP_MAGIC:
        unzipped = gzip.GzipFile(fileobj=raw, mode="rb")
        unzipped.myfileobj = raw  # type: ignore[assignment]  # closed with it
        return cast(BinaryIO, unzipped)
    if magic in _ZIP_MAGICS:
        with contextlib.closing(raw):
            if on_chunk is not None:  # the digest covers the zip file as it is
                while raw.read(FILE_BUFFER):
                    pass
        return _zip_member(path)
    return cast(BinaryIO, raw)


_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive


def _zip_member(path: Path) -> BinaryIO:
    """The one file of a zip archive, as open data portals often ship a CSV.

    The archive may hold folders and a Mac's ``__MACOSX/`` and dot files beside it;
    more than one file is a DocumentError naming them (which one is the feed is not
    jobctl's to guess). A cut or corrupt archive is a DocumentError too. The member is
    read as it is decompressed; the archive closes with it.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            files = [
                info
                for info in archive.infolist()
                if not info.is_dir()
                and not info.filename.startswith("__MACOSX/")
                and not info.filename.rpartition("/")[2].startswith(".")
            ]
            if len(files) != 1:
                names = ", ".join(info.filename for info in files[:5])
                more = ", …" if len(files) > 5 else ""
                what = f"{len(files)} files ({names}{more})" if files else "no file"
                raise DocumentError(f"the zip feed holds {what}: jobctl reads a zip of one file")
            return cast(BinaryIO, archive.open(files[0]))  # keeps the file open until closed
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DocumentError(f"zip feed is truncated or corrupt: {exc}") from exc
    except NotImplementedError as exc:  # a compression method zipfile lacks
        raise DocumentError(f"zip feed cannot be read: {exc}") from exc
    except RuntimeError as exc:  # encrypted
        raise DocumentError(f"zip feed cannot be read: {exc}") from exc
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}", transient=False) from exc


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
        self.utf8 = _is_utf8(encoding)  # read as it is (else transcoded to UTF-8)
        self._digits = 0  # the run of digits the bytes read so far end with
        if not self.utf8:
            self._decoder = codecs.getincrementaldecoder(encoding)()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.offset += len(data)
        if self._decoder is not None:
            try:
                text = self._decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                where = self.offset - len(data) + exc.start
                raise UndecodableFeed(
                    f"feed is not valid {self._encoding} near byte {max(where, 0)}: {exc.reason}"
                ) from exc
            except UnicodeError as exc:  # the whole stream: UTF-16 without its BOM
                raise UndecodableFeed(f"feed is not valid {self._encoding}: {exc}") from exc
            data = text.encode("utf-8")
        if self._first and data:
            self._first = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
            elif len(data) < len(_BOM) and _BOM.startswith(data):  # pragma: no cover
                rest = self._stream.read(len(_BOM) - len(data))
                self.offset += len(rest)
                data = (data + rest).removeprefix(_BOM)
        if data:
            self._count_digits(data)  # what the parser gets: UTF-8
        return data

    def _count_digits(self, data: bytes) -> None:
        """Raise DocumentError at a run of more than :data:`DIGITS_LIMIT` digits.

        Nearly free: ``isdigit`` stops at the first other byte, and only a chunk that
        ends in a digit is looked at from its end.
        """
        if data.isdigit():
            self._digits += len(data)
        else:
            if self._digits:
                self._digits += _DIGITS.match(data).end()  # type: ignore[union-attr]
                self._check_digits()
            end = len(data)
            while 0x30 <= data[end - 1] <= 0x39:  # stops: not every byte is a digit
                end -= 1
            self._digits = len(data) - end
        self._check_digits()

    def _check_digits(self) -> None:
        if self._digits > DIGITS_LIMIT:
            raise DocumentError(
                f"feed holds a run of more than {DIGITS_LIMIT:,} digits before byte "
                f"{self.offset}: a number that long is beyond PostgreSQL's numeric range "
                "(refused before it is parsed)"
            )


#: Byte order marks no UTF-8 text can start with (0xFF / 0xFE are never UTF-8), as
#: Windows tools write "Unicode" exports: the feed is read in what they announce.
#: UTF-32 first: its little-endian mark starts with UTF-16's.
_UNICODE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _unicode_bom(stream: IO[bytes]) -> str | None:
    """The encoding a UTF-16 or UTF-32 byte order mark at the start of ``stream`` names.

    Looked at without consuming: ``peek`` (a buffered or gzip file), else read and seek
    back; a stream that can do neither is read as configured.
    """
    try:
        if hasattr(stream, "peek"):
            head = stream.peek(4)[:4]
        elif stream.seekable():
            at = stream.tell()
            head = stream.read(4)
            stream.seek(at)
        else:
            return None
    except (OSError, ValueError, AttributeError):
        return None
    for bom, name in _UNICODE_BOMS:
        if head.startswith(bom):
            log.info("the feed starts with a %s byte order mark: read as %s", name, name)
            return name
    return None


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
    if _is_utf8(encoding):  # (also validates: UsageError for an unknown encoding)
        encoding = _unicode_bom(stream) or encoding
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
    except (EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile) as exc:
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
    items: Iterable[Any]
    where: ArrayLines | _Reader
    if record_path == "item" and reader.utf8 and backend.__name__.endswith("yajl2_c"):
        items = where = ArrayLines(reader, backend)  # ijson's items, a block of lines at a time
    else:
        items = backend.items(reader, record_path, use_float=False, buf_size=READ_SIZE)
        where = reader
    count = 0
    try:
        for obj in items:
            count += 1
            if type(obj) is dict:
                yield obj
            else:
                yield BadRecord(count, f"element {count} is {_kind(obj)}, not an object")
    except ijson.JSONError as exc:
        raise _json_document_error(exc, where.offset, count) from exc
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
        + (
            ""
            if container
            else " (set record_path, e.g. 'data.item'; or format = \"json-object\""
            " if the document is one record)"
        )
    )


# Numbers orjson may not read exactly: a run of 16+ digits (with the point: more than a
# double's 15 significant digits, or an integer beyond 64 bits) or a 3-digit exponent
# (beyond a double's range). Found with bytes.translate + find, ~10x faster than a
# regex; only lines that hold a float are looked at (orjson turns an integer beyond
# 64 bits into one), and for the exponent only those with a float so large or so
# small (or 0: underflow) that a 3-digit exponent could have written it.
_NUMBER_CLASSES = bytearray(b" " * 256)
for _c in b"0123456789.":
    _NUMBER_CLASSES[_c] = ord("D")
for _c in b"eE":
    _NUMBER_CLASSES[_c] = ord("e")
for _c in b"+-":
    _NUMBER_CLASSES[_c] = ord("s")
_NUMBER_TABLE = bytes(_NUMBER_CLASSES)
_LONG_RUN = b"D" * 16


def _risky(data: bytes, *, exponents: bool = True) -> bool:
    """Whether ``data`` may hold a number that a double or a 64-bit integer cannot."""
    shape = data.translate(_NUMBER_TABLE)
    if _LONG_RUN in shape:
        return True
    return exponents and (b"DeDDD" in shape or b"DesDDD" in shape)


_NO_FLOAT, _FLOAT, _EXTREME_FLOAT = 0, 1, 2


def _floats(value: dict[str, Any] | list[Any]) -> int:
    """_NO_FLOAT; _FLOAT; or _EXTREME_FLOAT: one whose text may have a 3-digit exponent.

    A mantissa of at most 15 digits (longer ones are found as a long run) with an
    exponent of 100 or more gives at least 1e85; with -100 or less, at most 1e-85.
    """
    found = _NO_FLOAT
    for item in value.values() if isinstance(value, dict) else value:
        kind = type(item)
        if kind is float:
            if not 1e-85 < abs(item) < 1e85:
                return _EXTREME_FLOAT
            found = _FLOAT
        elif kind is dict or kind is list:
            inner = _floats(item)
            if inner == _EXTREME_FLOAT:
                return inner
            found = found or inner
    return found


_MAY_HOLD_FLOATS = frozenset({float, dict, list})


def _inexact(value: Any, line: bytes) -> bool:
    """Whether orjson's ``value`` of ``line`` may not be the numbers as written."""
    # The common record holds no float: one pass in C over its types says so (~2x
    # cheaper than the walk below).
    if type(value) is not dict or _MAY_HOLD_FLOATS.isdisjoint(map(type, value.values())):
        return False
    floats = _floats(value)
    return floats != _NO_FLOAT and _risky(line, exponents=floats == _EXTREME_FLOAT)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _exact_loads(data: bytes | str) -> Any:
    """Parse JSON keeping every number exact (Decimal, int of any size), or None."""
    try:
        return json.loads(data, parse_float=Decimal, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return None


def _truncated_line(line_no: int) -> DocumentError:
    return DocumentError(
        f"feed ends in the middle of line {line_no}: the last line has no newline (truncated?)"
    )


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
        if not line.endswith(b"\n") and line.strip():
            raise _truncated_line(line_no)
        try:
            value = loads(line)
        except decode_error as exc:
            if not line.strip():
                continue
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as uexc:
                raise UndecodableFeed(
                    f"feed is not valid utf-8 near byte {start + uexc.start} "
                    f"(line {line_no}): {uexc.reason}"
                ) from uexc
            # orjson refuses numbers a double cannot hold (1e400): valid JSON all the same
            value = _exact_loads(line) if _risky(line) else None
            if value is None:
                yield BadRecord(line_no, f"line {line_no} is not valid JSON: {exc.msg}")
                continue
        else:
            if _inexact(value, line):
                value = _exact_loads(line) or value  # None: beyond even Python (4300 digits)
        if type(value) is dict:
            yield value
        else:
            yield BadRecord(line_no, f"line {line_no} is {_kind(value)}, not an object")


def _iter_ndjson_text(stream: IO[bytes], encoding: str) -> Iterator[Item]:
    text = io.TextIOWrapper(stream, encoding=encoding, newline=None)
    line_no = 0
    try:
        for line in _decoding(text, stream, encoding):
            line_no += 1
            if not line.strip():
                continue
            if not line.endswith("\n"):
                raise _truncated_line(line_no)
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                value = _exact_loads(line) if _risky(line.encode()) else None
                if value is None:
                    yield BadRecord(line_no, f"line {line_no} is not valid JSON: {exc.msg}")
                    continue
            else:
                if _inexact(value, line.encode()):
                    value = _exact_loads(line) or value
            if type(value) is dict:
                yield value
            else:
                yield BadRecord(line_no, f"line {line_no} is {_kind(value)}, not an object")
    finally:
        text.detach()


def _decoding(text: io.TextIOWrapper, raw: IO[bytes], encoding: str) -> Iterator[str]:
    """Iterate lines of ``text``, turning a UnicodeError into UndecodableFeed."""
    it = iter(text)
    while True:
        try:
            line = next(it)
        except StopIteration:
            return
        except UnicodeError as exc:
            raise _decode_error(exc, raw, encoding) from exc
        yield line


def _decode_error(exc: UnicodeError, raw: IO[bytes], encoding: str) -> UndecodableFeed:
    """UndecodableFeed naming the encoding and, when the stream can tell, the byte offset.

    Not every UnicodeError has one: UTF-16 read without its BOM fails as a whole.
    """
    if not isinstance(exc, UnicodeDecodeError):
        return UndecodableFeed(f"feed is not valid {encoding}: {exc}")
    where = ""
    try:
        # TextIOWrapper decodes chunk by chunk: the failing chunk ends at raw.tell()
        pos = raw.tell() - len(exc.object) + exc.start
        if pos >= 0:
            where = f" near byte {pos}"
    except (OSError, AttributeError, ValueError):
        pass
    return UndecodableFeed(f"feed is not valid {encoding}{where}: {exc.reason}")


def _iter_csv(stream: IO[bytes], encoding: str, delimiter: str) -> Iterator[Item]:
    enc = "utf-8-sig" if _is_utf8(encoding) else encoding
    text = io.TextIOWrapper(stream, encoding=enc, newline="")
    # The physical lines of the row being read: csv.reader asks for a line only when the
    # row needs it, so when a row comes out these are exactly its lines.
    rows: list[list[str]] = [[]]

    def lines() -> Iterator[str]:
        for line in _decoding(text, stream, encoding):
            rows[0].append(line)
            yield line

    try:
        reader = csv.reader(lines(), delimiter=delimiter)
        try:
            header = next(reader, None)
            last, rows[0] = rows[0], []
            if header is None:
                raise DocumentError("CSV feed is empty: no header row")
            seen: set[str] = set()
            for name in header:
                if name in seen:
                    raise DocumentError(f"CSV header has the column {name!r} twice")
                seen.add(name)
            width = len(header)
            for row in reader:
                last, rows[0] = rows[0], []
                if not last[-1].endswith(("\n", "\r")):  # the end of a cut file: no record
                    raise _truncated_line(reader.line_num)
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
            if "field larger than field limit" in str(exc):
                raise DocumentError(
                    f"CSV feed has a field of more than {CSV_FIELD_LIMIT:,} characters at"
                    f" line {reader.line_num} (a quote left open?)"
                ) from exc
            raise DocumentError(f"CSV feed is malformed at line {reader.line_num}: {exc}") from exc
        _check_csv_end(last, delimiter, reader.line_num)
    finally:
        text.detach()


def _check_csv_end(lines: list[str], delimiter: str, line_num: int) -> None:
    """DocumentError when the last row is where a file was cut: no newline, or an open quote.

    A quoted field still open at the end is seen by parsing the row's lines again in
    strict mode (which the feed as a whole is not: a stray quote inside a field stays
    tolerated).
    """
    if not lines:
        return
    if not lines[-1].endswith(("\n", "\r")):
        raise _truncated_line(line_num)
    if any('"' in line for line in lines):
        try:
            list(csv.reader(lines, delimiter=delimiter, strict=True))
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise DocumentError(
                    f"CSV feed ends inside a quoted field at line {line_num} (truncated?)"
                ) from exc


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
        if _risky(data):  # a number a double may not hold: parse again, exactly
            exact = _exact_loads(data)
            doc = doc if exact is None else exact
    except orjson.JSONDecodeError as exc:
        # orjson refuses numbers a double cannot hold (1e400): valid JSON all the same
        doc = _exact_loads(data) if _risky(data) else None
        if doc is None:
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


# --------------------------------------------------------------------------- error answers

_SCALAR_EVENTS = frozenset({"string", "number", "boolean", "null"})


def _same(found: Any, wanted: Any) -> bool:
    if isinstance(found, bool) or isinstance(wanted, bool):  # true is not 1
        return type(found) is type(wanted) and found == wanted
    return bool(found == wanted)


def error_answer(
    stream: IO[bytes],
    when: Mapping[str, Any],
    message_path: str | None,
    *,
    encoding: str = "utf-8",
) -> str | None:
    """The API's error message when the document is an error answer, else None.

    An error answer is a top-level object whose scalar at every dotted path of ``when``
    equals the given value (``{"result": "error"}``). The document is streamed as
    parse events — nothing is built — and the scan stops as soon as a value differs
    or the top level is an array, so a large feed costs next to nothing. A document
    that is not JSON is no error answer: parsing it reports what is wrong with it.
    The message is the scalar at ``message_path`` (``""`` when there is none).
    """
    pending = dict(when)
    message: Any = None
    first = True
    try:
        for prefix, event, value in json_backend().parse(_Reader(stream, encoding)):
            if first:
                if event != "start_map":
                    return None  # an array (or a scalar) at the top: records, not an answer
                first = False
            if event not in _SCALAR_EVENTS:
                continue
            if prefix == message_path:
                message = value
            if prefix in pending and not _same(value, pending.pop(prefix)):
                return None
            if not pending and (message_path is None or message is not None):
                break
    except (ijson.JSONError, DocumentError):
        return None
    if pending:
        return None
    return "" if message is None else str(message)
