from __future__ import annotations

import gzip
import hashlib
import io
import json
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from jobctl.errors import DocumentError, SourceError, UndecodableFeed, UsageError
from jobctl.sources.parse import (
    CSV_FIELD_LIMIT,
    Item,
    error_answer,
    iter_records,
    json_backend,
    open_source,
)
from jobctl.sources.records import (
    BadRecord,
    Projector,
    UnstorableRecord,
    canonical_bytes,
    canonical_hash,
    exact_float,
    extract_key,
    project,
)


def records(data: bytes, fmt: Any, **kw: Any) -> list[Item]:
    return list(iter_records(io.BytesIO(data), fmt, **kw))


# --------------------------------------------------------------------------- json


def test_json_backend_is_the_c_one() -> None:
    assert json_backend().__name__.endswith("yajl2_c")


def test_json_top_level_array() -> None:
    data = b'[{"a": 1, "b": "x"}, {"a": 2.5, "b": null}]'
    assert records(data, "json") == [{"a": 1, "b": "x"}, {"a": 2.5, "b": None}]


def test_json_numbers_are_exact_and_keep_the_canonical_bytes_of_floats() -> None:
    (rec,) = records(b'[{"f": 1.25, "e": 1e3, "i": 7, "z": 0.1}]', "json")
    assert isinstance(rec, dict)
    assert rec == {"f": Decimal("1.25"), "e": Decimal("1E+3"), "i": 7, "z": Decimal("0.1")}
    assert type(rec["i"]) is int
    # what the float parse of earlier versions stored and hashed: existing hashes hold
    assert canonical_bytes(rec) == b'{"e":1000.0,"f":1.25,"i":7,"z":0.1}'


def test_json_nested_record_path() -> None:
    data = b'{"meta": {"n": 2}, "result": {"records": [{"id": 1}, {"id": 2}]}}'
    assert records(data, "json", record_path="result.records.item") == [{"id": 1}, {"id": 2}]


def test_json_utf8_bom_is_skipped() -> None:
    assert records(b'\xef\xbb\xbf[{"a": "\xc3\xa9"}]', "json") == [{"a": "é"}]


def test_json_other_encoding_is_transcoded() -> None:
    data = '[{"name": "Café"}]'.encode("latin-1")
    assert records(data, "json", encoding="latin-1") == [{"name": "Café"}]


def test_json_non_object_element_is_bad_record() -> None:
    out = records(b'[{"a": 1}, [1, 2], "x", {"a": 2}]', "json")
    assert out[0] == {"a": 1} and out[3] == {"a": 2}
    assert out[1] == BadRecord(2, "element 2 is an array, not an object")
    assert isinstance(out[2], BadRecord) and out[2].position == 3


def test_json_truncated_is_document_error_after_good_records() -> None:
    seen: list[Item] = []
    with pytest.raises(DocumentError, match=r"truncated\?\) at byte 25 after 2 records"):
        for rec in iter_records(io.BytesIO(b'[{"a": 1}, {"a": 2}, {"a"'), "json"):
            seen.append(rec)
    assert seen == [{"a": 1}, {"a": 2}]


def test_json_syntax_error_names_byte_and_reason() -> None:
    with pytest.raises(DocumentError, match=r"not valid JSON near byte \d+.*expect ',' or '\]'"):
        records(b'[{"a": 1} {"b": 2}]', "json")


def test_json_invalid_utf8_is_document_error() -> None:
    with pytest.raises(DocumentError, match=r"not valid JSON.*UTF8"):
        records(b'[{"a": "\xff\xfe"}]', "json")


def test_json_empty_document_is_document_error() -> None:
    with pytest.raises(DocumentError, match="truncated"):
        records(b"", "json")


def test_json_empty_array_is_zero_records() -> None:
    assert records(b"[]", "json") == []
    assert records(b'{"data": []}', "json", record_path="data.item") == []


def test_json_wrong_record_path_is_document_error() -> None:
    with pytest.raises(DocumentError, match=r"record path 'data.item' not found.*'data'"):
        records(b'{"result": [{"a": 1}]}', "json", record_path="data.item")
    with pytest.raises(DocumentError, match="no array at the top level"):
        records(b'{"data": [{"a": 1}]}', "json")
    with pytest.raises(DocumentError, match='or format = "json-object" if the document is one'):
        records(b'{"id": 1, "name": "one record"}', "json")


def test_json_large_feed_streams(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with open(path, "w") as f:
        f.write("[")
        f.write(",".join(json.dumps({"id": i, "pad": "x" * 100}) for i in range(5000)))
        f.write("]")
    with open_source(path) as stream:
        ids = [r["id"] for r in iter_records(stream, "json") if isinstance(r, dict)]
    assert ids == list(range(5000))


# --------------------------------------------------------------------------- ndjson


def test_ndjson_records_blank_lines_and_bad_lines() -> None:
    data = b'{"a": 1}\n\n  \n{"a": 2}\r\nnot json\n[1]\n{"a": 3}\n'
    out = records(data, "ndjson")
    assert out[:2] == [{"a": 1}, {"a": 2}]
    assert isinstance(out[2], BadRecord) and out[2].position == 5
    assert out[2].reason.startswith("line 5 is not valid JSON")
    assert out[3] == BadRecord(6, "line 6 is an array, not an object")
    assert out[4] == {"a": 3}
    assert len(out) == 5


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
@pytest.mark.parametrize("tail", ['{"a": 2}', '{"a": 2', "  {"])
def test_ndjson_last_line_without_newline_is_truncation(encoding: str, tail: str) -> None:
    """``head -c`` of a feed: even a last line that parses may be a record cut short."""
    data = ('{"a": 1}\n' + tail).encode(encoding)
    seen: list[Item] = []
    with pytest.raises(DocumentError, match=r"line 2: the last line has no newline \(truncated"):
        seen.extend(iter_records(io.BytesIO(data), "ndjson", encoding=encoding))
    assert seen == [{"a": 1}]


def test_ndjson_whitespace_after_the_last_newline_is_no_record() -> None:
    assert records(b'{"a": 1}\n{"a": 2}\r\n  ', "ndjson") == [{"a": 1}, {"a": 2}]
    assert records(b"", "ndjson") == []


def test_ndjson_bom_and_invalid_utf8() -> None:
    assert records(b'\xef\xbb\xbf{"a": 1}\n', "ndjson") == [{"a": 1}]
    with pytest.raises(DocumentError, match=r"not valid utf-8 near byte 16 \(line 2\)"):
        records(b'{"a": 1}\n{"b": "\xff"}\n', "ndjson")


def test_ndjson_other_encoding() -> None:
    data = '{"a": "é"}\n{"a": "ü"}\n'.encode("utf-16")
    assert records(data, "ndjson", encoding="utf-16") == [{"a": "é"}, {"a": "ü"}]


# --------------------------------------------------------------------------- csv


def test_csv_rows_bom_and_quoting() -> None:
    data = b'\xef\xbb\xbfid,name,note\r\n1,Ann,"a, b"\r\n2,Bob,"multi\nline"\r\n3,,\r\n'
    assert records(data, "csv") == [
        {"id": "1", "name": "Ann", "note": "a, b"},
        {"id": "2", "name": "Bob", "note": "multi\nline"},
        {"id": "3", "name": "", "note": ""},
    ]


def test_csv_wrong_column_count_is_bad_record() -> None:
    out = records(b"a;b\n1;2\n1;2;3\n\n4\n5;6\n", "csv", delimiter=";")
    assert out[0] == {"a": "1", "b": "2"}
    assert out[1] == BadRecord(3, "line 3 has 3 fields, the header has 2")
    assert out[2] == BadRecord(5, "line 5 has 1 fields, the header has 2")
    assert out[3] == {"a": "5", "b": "6"}


def test_csv_bad_encoding_is_document_error_with_offset() -> None:
    data = b"a,b\n" + b"x,y\n" * 3000 + b"caf\xe9,1\n"
    with pytest.raises(DocumentError, match=r"not valid utf-8 near byte 12007"):
        records(data, "csv")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("csv", b"a\ncaf\xe9\n"),
        ("ndjson", b'{"a": "caf\xe9"}\n'),
        ("json-object", b'{"a": "caf\xe9"}'),
    ],
)
def test_undecodable_bytes_are_an_undecodable_feed(fmt: str, data: bytes, encoding: str) -> None:
    """One type for 'not text in this encoding', whatever the format and the codec's way
    of failing (UTF-16 without its BOM raised a bare UnicodeError, not a DocumentError):
    what the sync looks for to name the charset an HTTP server declared."""
    if fmt == "json-object" and encoding == "utf-8":
        # read as bytes by orjson, which says so itself: "not valid JSON … UTF-8"
        with pytest.raises(DocumentError, match="not valid JSON"):
            records(data, fmt, encoding=encoding)
        return
    with pytest.raises(UndecodableFeed, match=f"not valid {encoding}"):
        records(data, fmt, encoding=encoding)


def test_csv_latin1_encoding() -> None:
    assert records(b"a\ncaf\xe9\n", "csv", encoding="latin-1") == [{"a": "café"}]


def test_csv_long_fields_are_records_not_a_malformed_feed() -> None:
    # An open-data export's geometry column as WKT: far beyond the csv module's
    # default limit of 131,072 characters (which failed the whole feed).
    wkt = "MULTIPOLYGON (((" + ", ".join(f"-79.{i:06d} 43.{i:06d}" for i in range(30_000)) + ")))"
    assert len(wkt) > 500_000
    data = f'id,geom,note\n1,"{wkt}",a\n2,{wkt.replace(",", ";")},b\n3,POINT (1 2),c\n'
    out = records(data.encode(), "csv")
    assert out == [
        {"id": "1", "geom": wkt, "note": "a"},
        {"id": "2", "geom": wkt.replace(",", ";"), "note": "b"},
        {"id": "3", "geom": "POINT (1 2)", "note": "c"},
    ]


def test_csv_a_field_beyond_the_limit_fails_the_feed_naming_the_line() -> None:
    # A quote left open on line 3: the rest of the file would be one field.
    data = b'id,note\n1,a\n2,"open\n' + b"3,filler line\n" * (CSV_FIELD_LIMIT // 14 + 10)
    with pytest.raises(DocumentError, match=r"more than 16,777,216 characters at line \d+ "):
        records(data, "csv")


def test_csv_empty_and_duplicate_header() -> None:
    with pytest.raises(DocumentError, match="no header"):
        records(b"", "csv")
    with pytest.raises(DocumentError, match="'a' twice"):
        records(b"a,b,a\n1,2,3\n", "csv")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"id,name\n1,Ann\n2,Bo", "line 3: the last line has no newline"),
        (b"id,name\r\n1,Ann\r\n2,Bob", "line 3: the last line has no newline"),
        (b"id,name", "line 1: the last line has no newline"),
        (b'id,note\n1,"two\nlines"\n2,"cut after\n', "inside a quoted field at line 4"),
        (b'id,note\n1,"cut', "line 2: the last line has no newline"),
    ],
)
def test_csv_cut_short_is_truncation(data: bytes, match: str) -> None:
    with pytest.raises(DocumentError, match=match):
        records(data, "csv")


def test_csv_complete_feed_with_a_stray_quote_is_fine() -> None:
    assert records(b'id,size\n1,5\'11"\n2,"a ""b"""\r', "csv") == [
        {"id": "1", "size": "5'11\""},
        {"id": "2", "size": 'a "b"'},
    ]


def test_csv_does_not_close_the_callers_stream() -> None:
    stream = io.BytesIO(b"a\n1\n")
    assert list(iter_records(stream, "csv")) == [{"a": "1"}]
    assert not stream.closed


# --------------------------------------------------------------------------- json-object


def test_json_object_is_one_record() -> None:
    data = b'{"nb_visits": 12, "nb_actions": 30}'
    assert records(data, "json-object") == [{"nb_visits": 12, "nb_actions": 30}]


def test_json_object_record_path_to_list_and_object() -> None:
    data = b'{"data": [{"id": 1}, 5, {"id": 2}], "meta": {"totals": {"n": 2}}}'
    out = records(data, "json-object", record_path="data")
    assert out == [{"id": 1}, BadRecord(2, "element 2 is a number"), {"id": 2}]
    assert records(data, "json-object", record_path="data.item") == out
    assert records(data, "json-object", record_path="meta.totals") == [{"n": 2}]


def test_json_object_top_level_array_yields_items() -> None:
    assert records(b'[{"label": "a"}, {"label": "b"}]', "json-object") == [
        {"label": "a"},
        {"label": "b"},
    ]


def test_json_object_errors() -> None:
    with pytest.raises(DocumentError, match="record path 'nope' not found"):
        records(b'{"data": 1}', "json-object", record_path="nope")
    with pytest.raises(DocumentError, match="holds a number"):
        records(b'{"data": 1}', "json-object", record_path="data")
    with pytest.raises(DocumentError, match="truncated"):
        records(b'{"data": [1, 2', "json-object")
    with pytest.raises(DocumentError, match="near byte 9"):
        records(b'{"a": 1, x}', "json-object")


def test_unknown_format_and_encoding_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown feed format 'xml'"):
        records(b"", "xml")
    with pytest.raises(UsageError, match="unknown encoding 'klingon'"):
        records(b"[]", "json", encoding="klingon")


# --------------------------------------------------------------------------- gzip / files


def test_open_source_detects_gzip(tmp_path: Path) -> None:
    plain = tmp_path / "feed.json"
    packed = tmp_path / "feed.json.gz"
    plain.write_bytes(b'[{"a": 1}]')
    packed.write_bytes(gzip.compress(b'[{"a": 2}]'))
    with open_source(plain) as s1, open_source(packed) as s2:
        assert list(iter_records(s1, "json")) == [{"a": 1}]
        assert list(iter_records(s2, "json")) == [{"a": 2}]


def test_truncated_gzip_is_document_error(tmp_path: Path) -> None:
    packed = tmp_path / "feed.ndjson.gz"
    blob = gzip.compress(b"".join(b'{"id": %d}\n' % i for i in range(20000)))
    packed.write_bytes(blob[: len(blob) // 2])
    with open_source(packed) as stream, pytest.raises(DocumentError, match="compressed feed"):
        list(iter_records(stream, "ndjson"))


@pytest.mark.parametrize("compress", [False, True])
def test_the_digest_taken_while_parsing_is_the_files(tmp_path: Path, compress: bool) -> None:
    body = b"[\n" + b",\n".join(b'{"id": %d, "pad": "%s"}' % (i, b"x" * 300) for i in range(9000))
    data = gzip.compress(body + b"\n]\n") if compress else body + b"\n]\n"
    path = tmp_path / "feed.json"
    path.write_bytes(data)
    digest = hashlib.sha256()
    with open_source(path, digest.update) as stream:
        assert len(list(iter_records(stream, "json"))) == 9000
        while stream.read(1 << 20):  # what sync does before it records the digest
            pass
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("compress", [False, True])
def test_a_file_with_no_record_at_its_path_is_checked_and_digested_once(
    tmp_path: Path, compress: bool
) -> None:
    """No record found: the parser reads the file again to tell a wrong record path from
    an empty array — through the digest tap too (it failed silently: zero records)."""
    pad = b" " * (3 << 20)  # beyond the first reads: the check reads the file again
    cases = [
        (
            b'{"success": true, "result": {"records": [{"id": 1}]}}' + pad,
            "item",
            "no array at the top level",
        ),
        (b'{"result": [{"id": 1}]}' + pad, "data.item", "record path 'data.item' not found"),
        (b'{"data": []}' + pad, "data.item", None),  # really empty: zero records
    ]
    for body, record_path, error in cases:
        data = gzip.compress(body) if compress else body
        path = tmp_path / "feed.json"
        path.write_bytes(data)
        digest = hashlib.sha256()
        with open_source(path, digest.update) as stream:
            if error is None:
                assert list(iter_records(stream, "json", record_path=record_path)) == []
            else:
                with pytest.raises(DocumentError, match=error):
                    list(iter_records(stream, "json", record_path=record_path))
            while stream.read(1 << 20):
                pass
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest(), record_path


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("json", '[{"id": 1, "name": "Caf\u00e9"},\n{"id": 2, "name": "\u00c5s"}]\n'),
        ("ndjson", '{"id": 1, "name": "Caf\u00e9"}\n{"id": 2, "name": "\u00c5s"}\n'),
        ("csv", "id,name\r\n1,Caf\u00e9\r\n2,\u00c5s\r\n"),
    ],
)
def test_a_utf16_or_utf32_export_is_read_by_its_byte_order_mark(
    tmp_path: Path, codec: str, fmt: str, text: str
) -> None:
    """A Windows "Unicode" export starts with a mark no UTF-8 text can start with: read
    as it says, from memory and from a gzip file alike, the file digested as it is."""
    data = ("\ufeff" + text).encode(codec)
    expected = records(text.encode(), fmt)
    assert len(expected) == 2
    assert records(data, fmt) == expected
    path = tmp_path / "feed"
    path.write_bytes(gzip.compress(data))
    digest = hashlib.sha256()
    with open_source(path, digest.update) as stream:
        assert list(iter_records(stream, fmt)) == expected
        while stream.read(1 << 20):
            pass
    assert digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_byte_order_mark_does_not_override_a_configured_encoding() -> None:
    # Read as the latin-1 it is configured to be: UTF-16's NULs and all (the last
    # "line" is the NUL after the final newline: a cut file).
    data = "\ufeffid\n1\n".encode("utf-16-le")
    with pytest.raises(DocumentError, match="the last line has no newline"):
        records(data, "csv", encoding="latin-1")
    assert records(data + b"\n", "csv", encoding="latin-1")[0] == {
        "\xff\xfei\x00d\x00": "\x001\x00"
    }


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_zip_of_one_file_is_read_as_that_file(tmp_path: Path, method: int) -> None:
    """As open data portals ship a CSV: the one file (beside folders and a Mac's
    __MACOSX/ and dot files) is the feed; the digest is the archive's."""
    body = b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(20000))
    path = _zip(
        tmp_path / "permits.zip",
        {"data/permits.csv": body, "__MACOSX/data/._permits.csv": b"x", "data/.DS_Store": b"y"},
        method,
    )
    digest = hashlib.sha256()
    with open_source(path, digest.update) as stream:
        out = list(iter_records(stream, "csv"))
        while stream.read(1 << 20):
            pass
    assert out == records(body, "csv") and len(out) == 20000
    assert digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_zip_that_is_not_one_readable_file_is_document_error(tmp_path: Path) -> None:
    two = _zip(tmp_path / "two.zip", {"a.csv": b"id\n1\n", "b.csv": b"id\n2\n"})
    with pytest.raises(DocumentError, match=r"holds 2 files \(a.csv, b.csv\): jobctl reads a zip"):
        open_source(two)
    with pytest.raises(DocumentError, match="holds no file"):
        open_source(_zip(tmp_path / "empty.zip", {}))
    cut = tmp_path / "cut.zip"
    whole = _zip(tmp_path / "whole.zip", {"a.csv": b"id\n" + b"1\n" * 50000}).read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DocumentError, match="zip feed is truncated or corrupt"):
        open_source(cut)


def test_the_truncated_gzip_of_a_json_dump_is_document_error(tmp_path: Path) -> None:
    body = b"[\n" + b",\n".join(b'{"id": %d}' % i for i in range(30000)) + b"\n]\n"
    packed = tmp_path / "feed.json.gz"
    blob = gzip.compress(body)
    packed.write_bytes(blob[: len(blob) // 2])
    seen = 0
    with open_source(packed) as stream, pytest.raises(DocumentError, match="compressed feed"):
        for _ in iter_records(stream, "json"):
            seen += 1
    assert 0 < seen < 30000


def test_open_source_missing_file_is_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open") as info:
        open_source(tmp_path / "missing.json")
    assert info.value.transient is False


# --------------------------------------------------------------------------- hashing


def test_canonical_hash_ignores_key_order_including_nested() -> None:
    a = {"x": 1, "y": {"p": [1, 2], "q": None}, "z": "é"}
    b = {"z": "é", "y": {"q": None, "p": [1, 2]}, "x": 1}
    assert canonical_hash(a) == canonical_hash(b)
    assert len(canonical_hash(a)) == 16


def test_canonical_hash_sees_changes() -> None:
    base = {"x": 1, "y": [1, 2]}
    assert canonical_hash(base) != canonical_hash({"x": 2, "y": [1, 2]})
    assert canonical_hash(base) != canonical_hash({"x": 1, "y": [2, 1]})
    assert canonical_hash(base) != canonical_hash({"x": 1, "y": [1, 2], "z": None})
    # documented choice: int 1 and float 1.0 are different data
    assert canonical_hash({"x": 1}) != canonical_hash({"x": 1.0})


def test_canonical_hash_is_stable_across_runs() -> None:
    # a fixed value: a change of canonical form would silently mark every row 'updated'
    assert canonical_hash({"b": 1, "a": "x"}).hex() == (
        __import__("xxhash").xxh3_128_hexdigest(b'{"a":"x","b":1}')
    )


def test_canonical_hash_odd_values() -> None:
    assert canonical_hash(cast(Any, {1: "a"})) == canonical_hash({"1": "a"})
    big = {"n": 2**80}
    assert canonical_hash(big) == canonical_hash({"n": 2**80})
    assert canonical_hash(big) != canonical_hash({"n": 2**80 + 1})


def test_parsed_formats_hash_alike() -> None:
    a = records(b'[{"id": 1, "v": "x"}]', "json")[0]
    b = records(b'{"v": "x", "id": 1}\n', "ndjson")[0]
    assert isinstance(a, dict) and isinstance(b, dict)
    assert canonical_hash(a) == canonical_hash(b)


EXACT = (
    '{"big": 18446744073709551616, "u64": 18446744073709551615, "i64": 9223372036854775808,'
    ' "neg": -9223372036854775809, "money": 12345678901234567.89, "huge": 1e400,'
    ' "tiny": -1e-400, "long": 0.1000000000000000055511151231257827, "plain": 1.25,'
    ' "exp": 1e3, "trail": 1.50, "int": 7, "nested": [{"n": 123456789012345678901234567890}]}'
)
EXACT_CANONICAL = (
    b'{"big":18446744073709551616,"exp":1000.0,"huge":1E+400,"i64":9223372036854775808,'
    b'"int":7,"long":0.1000000000000000055511151231257827,"money":12345678901234567.89,'
    b'"neg":-9223372036854775809,"nested":[{"n":123456789012345678901234567890}],'
    b'"plain":1.25,"tiny":-1E-400,"trail":1.5,"u64":18446744073709551615}'
)


@pytest.mark.parametrize(
    ("fmt", "data", "encoding"),
    [
        ("json", f"[{EXACT}]", "utf-8"),
        ("json", f'{{"data": [{EXACT}]}}', "utf-8"),
        ("ndjson", f'{{"a": 1}}\n{EXACT}\n', "utf-8"),
        ("ndjson", f"{EXACT}\n", "utf-16"),
        ("json-object", EXACT, "utf-8"),
        ("json-object", f"[{EXACT}]", "latin-1"),
    ],
)
def test_numbers_are_kept_exactly_whatever_the_format(fmt: str, data: str, encoding: str) -> None:
    path = "data.item" if data.startswith('{"data"') else "item"
    rec = records(data.encode(encoding), fmt, encoding=encoding, record_path=path)[-1]
    assert isinstance(rec, dict)
    assert rec["big"] == 2**64 and rec["neg"] == -(2**63) - 1
    assert rec["money"] == Decimal("12345678901234567.89")
    assert rec["huge"] == Decimal("1e400") and rec["tiny"] == Decimal("-1e-400")
    assert rec["nested"][0]["n"] == 123456789012345678901234567890
    # one canonical form (and hash) for every format: exact where a double is not
    assert canonical_bytes(rec) == EXACT_CANONICAL
    assert canonical_hash(rec) == __import__("xxhash").xxh3_128_digest(EXACT_CANONICAL)


def test_ndjson_reads_again_exactly_only_lines_that_may_need_it() -> None:
    fast, slow = records(
        b'{"a": 0.1, "b": 900719925474099, "c": "x"}\n'
        b'{"a": 0.1, "b": 900719925474099, "c": "1234567890123456789"}\n',
        "ndjson",
    )
    assert isinstance(fast, dict) and isinstance(slow, dict)
    assert type(fast["a"]) is float and type(fast["b"]) is int  # orjson's own values
    assert type(slow["a"]) is Decimal  # a long digit run (in a string): read exactly
    assert canonical_bytes({**slow, "c": "x"}) == canonical_bytes(fast)


def test_json_object_beyond_a_double_is_valid_json() -> None:
    assert records(b'{"v": 1e400, "w": 2}', "json-object") == [{"v": Decimal("1e400"), "w": 2}]


def test_exact_float_and_stringified_numbers() -> None:
    assert exact_float(Decimal("0.1")) == 0.1 and exact_float(Decimal("1E+3")) == 1000.0
    assert exact_float(Decimal("12345678901234567.89")) is None
    assert exact_float(Decimal("1e400")) is None and exact_float(Decimal("1e-400")) is None
    # keys and text of a Decimal read from one format equal those of a float from another
    assert extract_key({"k": Decimal("2.50")}, ["k"]) == extract_key({"k": 2.5}, ["k"])
    assert extract_key({"k": Decimal("1E+3")}, ["k"]) == ("1000",)
    assert extract_key({"k": Decimal("12345678901234567.89")}, ["k"]) == ("12345678901234567.89",)
    assert project({"x": Decimal("2.50")}, None, {"x": "text"}) == {"x": "2.5"}


def test_unstorable_numbers_and_strings_are_record_errors() -> None:
    with pytest.raises(UnstorableRecord, match="beyond PostgreSQL's numeric range"):
        canonical_bytes({"x": Decimal("1e-20000")})
    with pytest.raises(UnstorableRecord, match="cannot be written as JSON"):
        canonical_bytes({"x": "\ud800"})


# --------------------------------------------------------------------------- project


def test_project_selects_renames_and_reaches_into_nested() -> None:
    rec = {"PERMIT_NUM": "10 1 BLD", "geo": {"lat": 43.7, "pts": [1, 2]}, "other": 1}
    out = project(
        rec,
        {"permit": "PERMIT_NUM", "lat": "geo.lat", "p2": "geo.pts.1", "gone": "nope.x"},
        None,
    )
    assert out == {"permit": "10 1 BLD", "lat": 43.7, "p2": 2, "gone": None}


def test_project_flat_key_with_dot_wins() -> None:
    assert project({"a.b": 1, "a": {"b": 2}}, {"v": "a.b"}, None) == {"v": 1}


def test_project_without_fields_keeps_everything_and_coerces() -> None:
    rec = {"n": "42", "f": "1.5", "ok": "yes", "d": "2024-01-05", "t": "2024-01-05T10:00:00Z"}
    types = {"n": "int", "f": "float", "ok": "bool", "d": "date", "t": "timestamp"}
    assert project(rec, None, types) == {
        "n": 42,
        "f": 1.5,
        "ok": True,
        "d": "2024-01-05",
        "t": "2024-01-05T10:00:00+00:00",
    }
    assert rec["n"] == "42"  # the input is not modified


@pytest.mark.parametrize(
    ("value", "type_name", "expected"),
    [
        ("", "int", None),
        (None, "float", None),
        (3.0, "int", 3),
        ("1e3", "int", 1000),
        (7, "text", "7"),
        ("12345678901234567.89", "float", Decimal("12345678901234567.89")),
        ("1.5", "float", 1.5),
        (2**70 + 1, "float", Decimal(2**70 + 1)),
        (Decimal("1E+3"), "int", 1000),
        (False, "text", "false"),
        ("2024-01-05T00:00:00", "date", "2024-01-05"),
        (0, "timestamp", "1970-01-01T00:00:00+00:00"),
        ("0", "bool", False),
        ("", "text", ""),
    ],
)
def test_project_coercions(value: Any, type_name: str, expected: Any) -> None:
    assert project({"x": value}, None, {"x": type_name}) == {"x": expected}


@pytest.mark.parametrize(
    ("value", "type_name", "reason"),
    [
        ("abc", "int", "field 'x': 'abc' is not an int"),
        (2.5, "int", "field 'x': 2.5 is not an int"),
        (True, "int", "field 'x': True is not an int"),
        ("nan", "float", "field 'x': 'nan' is not a float"),
        ("maybe", "bool", "field 'x': 'maybe' is not a bool"),
        ("2024-13-01", "date", "field 'x': '2024-13-01' is not a date"),
        ("2024-01-05T10:30:00", "date", "field 'x': '2024-01-05T10:30:00' is not a date"),
        ("yesterday", "timestamp", "field 'x': 'yesterday' is not a timestamp"),
    ],
)
def test_project_failed_coercion_is_bad_record(value: Any, type_name: str, reason: str) -> None:
    out = project({"x": value}, None, {"x": type_name}, position=9)
    assert out == BadRecord(9, reason)


def test_exclude_drops_volatile_columns() -> None:
    rec = {"": "17", "_id": 99, "id": "a", "v": 1}
    assert Projector(exclude=["", "_id"])(rec) == {"id": "a", "v": 1}
    assert rec[""] == "17"  # the input is not modified
    with pytest.raises(UsageError, match="fields or exclude"):
        Projector({"id": "id"}, None, ["_id"])


def test_projector_unknown_type_is_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown type 'integer' for field 'n'"):
        Projector(None, {"n": "integer"})


# --------------------------------------------------------------------------- extract_key


def test_extract_key_stringifies() -> None:
    rec = {"PERMIT_NUM": "10 398618 BLD", "REV": 0, "F": 7.0, "G": 2.5, "B": True, "n": {"k": 5}}
    assert extract_key(rec, ["PERMIT_NUM", "REV", "F", "G", "B", "n.k"]) == (
        "10 398618 BLD",
        "0",
        "7",
        "2.5",
        "true",
        "5",
    )


@pytest.mark.parametrize("value", [None, "", "   "])
def test_extract_key_missing_null_or_empty(value: Any) -> None:
    out = extract_key({"PERMIT_NUM": value, "R": "00"}, ["PERMIT_NUM", "R"], position=4)
    assert out == BadRecord(4, "missing key field 'PERMIT_NUM'")
    assert extract_key({"R": "00"}, ["PERMIT_NUM"]) == BadRecord(
        0, "missing key field 'PERMIT_NUM'"
    )


def test_extract_key_rejects_non_scalar() -> None:
    out = extract_key({"k": [1, 2]}, ["k"])
    assert isinstance(out, BadRecord)
    assert out.reason == "key field 'k' is an array, not a scalar"


def test_json_transcoding_error_names_encoding() -> None:
    with pytest.raises(DocumentError, match=r"not valid ascii near byte 7"):
        records('[{"a":"é"}]'.encode(), "json", encoding="ascii")


def test_json_wrong_path_checked_from_the_starting_position() -> None:
    stream = io.BytesIO(b"HEADER" + b'{"data": []}')
    stream.seek(6)
    assert list(iter_records(stream, "json", record_path="data.item")) == []


# --------------------------------------------------------------------------- error answers

WHEN = {"result": "error"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"result": "error", "message": "Invalid token_auth"}', "Invalid token_auth"),
        (b'{"message": "comes first", "result": "error"}', "comes first"),
        (b'{"result": "error"}', ""),
        (b'{"result": "success", "message": "x"}', None),
        (b'{"data": {"result": "error"}}', None),
        (b'[{"result": "error", "message": "a record"}]', None),
        (b'{"result": "err', None),
        (b"not json", None),
    ],
)
def test_error_answer(body: bytes, expected: str | None) -> None:
    assert error_answer(io.BytesIO(body), WHEN, "message") == expected


def test_error_answer_nested_paths_and_types() -> None:
    body = b'{"error": {"code": 5, "text": "quota"}, "ok": false}'
    assert error_answer(io.BytesIO(body), {"error.code": 5}, "error.text") == "quota"
    assert error_answer(io.BytesIO(body), {"ok": False}, None) == ""
    assert error_answer(io.BytesIO(body), {"ok": 0}, None) is None  # false is not 0
