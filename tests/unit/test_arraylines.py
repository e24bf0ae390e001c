"""The one-element-per-line JSON parser gives what ijson gives: elements, errors, offsets.

The reference is what ``iter_records`` did for every ``json`` feed before: ijson's
``items(reader, "item", use_float=False, buf_size=N)`` on the same reader. Both are run
on the same bytes and must agree on the elements (``repr``: types, exact numbers and key
order included), on the exception (type and message) and on the reader offset an error
reports. Small read sizes put chunk boundaries everywhere in small documents.
"""

from __future__ import annotations

import io
import json
import random
from decimal import Decimal
from typing import Any

import ijson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobctl.errors import DocumentError
from jobctl.sources.arraylines import ArrayLines
from jobctl.sources.parse import _Reader, iter_records

BACKEND = ijson.get_backend("yajl2_c")

Outcome = tuple[str, str | None, int | None]


class _Failing(io.BytesIO):
    """A stream whose reads fail once they reach ``fail_at`` (a gzip stream cut short)."""

    def __init__(self, data: bytes, fail_at: int | None) -> None:
        super().__init__(data)
        self.fail_at = fail_at

    def read(self, size: int | None = -1, /) -> bytes:
        if self.fail_at is not None and size and self.tell() + size > self.fail_at:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        return super().read(size)


def _run(iterable: Any, reader: Any) -> Outcome:
    items: list[Any] = []
    try:
        for item in iterable:
            items.append(item)
    except Exception as exc:
        offset = reader.offset if isinstance(exc, ijson.JSONError) else None
        return repr(items), f"{type(exc).__name__}: {exc}", offset
    return repr(items), None, None


def reference(doc: bytes, read_size: int, fail_at: int | None = None) -> Outcome:
    reader = _Reader(_Failing(doc, fail_at), "utf-8")
    items = BACKEND.items(reader, "item", use_float=False, buf_size=read_size)
    return _run(items, reader)


def fast(
    doc: bytes, read_size: int, fail_at: int | None = None, line_limit: int = 1 << 20
) -> tuple[Outcome, int]:
    reader = _Reader(_Failing(doc, fail_at), "utf-8")
    lines = ArrayLines(reader, BACKEND, read_size=read_size, line_limit=line_limit)
    return _run(lines, lines), lines.fast


def same(doc: bytes, read_size: int, fail_at: int | None = None, line_limit: int = 1 << 20) -> int:
    got, parsed_fast = fast(doc, read_size, fail_at, line_limit)
    assert got == reference(doc, read_size, fail_at), doc
    return parsed_fast


# --------------------------------------------------------------------------- documents
#
# Values come from hypothesis; how they are written (whitespace, escapes, number forms,
# separators, a duplicate key, an invalid token now and then) and how the document is
# then damaged (cut short, a byte changed, bytes inserted) from a seeded random.Random.


class _Number(str):
    """A number's JSON text, exactly as it is to be written."""


@st.composite
def _numbers(draw: st.DrawFn) -> _Number:
    text = draw(st.sampled_from(["0", "-0", "1", "-12", "123456789012345678901234567890"]))
    if draw(st.booleans()):
        text += "." + draw(st.text("0123456789", min_size=1, max_size=20))
    if draw(st.booleans()):
        exponent = draw(st.integers(min_value=-400, max_value=400))
        text += draw(st.sampled_from(["e", "E", "e+", "E-"])) + str(abs(exponent))
    return _Number(text)


_TEXT = st.text(
    st.characters(codec="utf-8") | st.sampled_from('"\\/\x00\x1f\x7f\u2028é😀'), max_size=10
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(10**40), max_value=10**40),
    _numbers(),
    _TEXT,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "PERMIT_NUM", "", "é"]) | _TEXT, children, max_size=5
        )
    ),
    max_leaves=6,
)
_ELEMENTS = st.lists(st.dictionaries(_TEXT, _VALUES, max_size=4) | _VALUES, max_size=8)

_WS = ["", "", "", " ", "\t", "\n", "\r\n", " \n "]
_ODD = [
    "NaN",
    "Infinity",
    "01",
    "1.",
    ".5",
    "+1",
    "tru",
    '"\\ud800"',
    '"\\udc00x"',
    '"\\x"',
    '"a\tb"',
]
_SEPARATORS = [",\n"] * 12 + [",\r\n", " ,\n", ", \n", "\n,", ",", ", ", ",\n\n"]
_HEADS = ["[\n"] * 8 + ["\ufeff[\n", " \n[ \n", "[\r\n", "[", "[ ", "{\n", ""]
_ENDS = ["\n]\n"] * 6 + ["]", "\n]", "\n]\n\n", "\n]\nx", "\n],\n", "\n][]", ""]


def _string(text: str, rnd: random.Random) -> str:
    mode = rnd.randrange(4)
    if mode == 0:
        return json.dumps(text, ensure_ascii=False)
    if mode == 1:
        return json.dumps(text).replace("/", "\\/")
    return json.dumps(text)  # \uXXXX escapes, surrogate pairs for the astral plane


def _write(value: Any, rnd: random.Random, odd: float) -> str:
    if rnd.random() < odd:
        return rnd.choice(_ODD)  # an invalid token, or one the parsers read differently
    if isinstance(value, _Number):
        return str(value)
    if isinstance(value, str):
        return _string(value, rnd)
    if isinstance(value, list):
        ws = rnd.choice(_WS)
        return "[" + ws + ("," + rnd.choice(_WS)).join(_write(v, rnd, odd) for v in value) + "]"
    if isinstance(value, dict):
        pairs = [
            f"{_string(k, rnd)}:{rnd.choice(_WS)}{_write(v, rnd, odd)}" for k, v in value.items()
        ]
        if pairs and rnd.random() < 0.1:
            pairs.append(pairs[0].split(":", 1)[0] + ": 0")  # a duplicate key: the last wins
        return "{" + rnd.choice(_WS) + ("," + rnd.choice(_WS)).join(pairs) + "}"
    return json.dumps(value)


def _damage(doc: bytes, rnd: random.Random) -> bytes:
    mutation = rnd.randrange(6)
    if mutation == 1 and doc:  # cut short: a download that stopped
        return doc[: rnd.randrange(len(doc))]
    if mutation == 2 and doc:  # one byte changed
        at = rnd.randrange(len(doc))
        return (
            doc[:at]
            + rnd.choice([b'"', b",", b"}", b"]", b"\xff", b"\n", b"x", b"0"])
            + doc[at + 1 :]
        )
    if mutation == 3:  # bytes inserted
        at = rnd.randint(0, len(doc))
        return doc[:at] + rnd.choice([b",\n", b"\n", b"{", b"\xc3", b" ]", b"\x0c"]) + doc[at:]
    return doc


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """Half of them a dump as it should be, but for a cut now and then; half anything."""
    elements = draw(_ELEMENTS)
    rnd = draw(st.randoms(use_true_random=False))
    clean = rnd.random() < 0.5
    if clean:  # a few lines of records, so that blocks of them are parsed
        elements = [{"id": 1, "v": 0.5}, *elements, {"id": 2}]
    odd = 0.0 if clean else 0.02
    separators = [",\n"] if clean else _SEPARATORS
    body = "".join(
        _write(e, rnd, odd) + (rnd.choice(separators) if i < len(elements) - 1 else "")
        for i, e in enumerate(elements)
    )
    if clean:
        doc = ("[\n" + body + "\n]\n").encode()
        return doc[: rnd.randrange(len(doc))] if rnd.random() < 0.3 else doc
    trailing_comma = ",\n" if elements and rnd.random() < 0.1 else ""
    doc = rnd.choice(_HEADS) + body + trailing_comma + rnd.choice(_ENDS)
    return _damage(doc.encode(), rnd)


_SIZES = st.sampled_from([1, 2, 3, 5, 8, 13, 32, 64, 256, 1 << 16])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), _SIZES)
@example(b'[\n{"a": 1},\n{"a": 2},\n{"a"', 8)
@example(b'[\n{"a": 1},\n{"a": 1.50, "b": 1e400},\n{"c": [1,\n2]},\n{"d": 3}\n]\n', 4)
@example(b'[\n{"a": "\\ud800"},\n{"b": 2}\n]\n', 1 << 16)
@example(b"[\n,\n]\n", 2)
def test_same_elements_errors_and_offsets_as_ijson(doc: bytes, read_size: int) -> None:
    same(doc, read_size)


@settings(max_examples=200, deadline=None)
@given(documents(), _SIZES, st.data())
def test_a_read_that_fails_midway_fails_after_the_same_elements(
    doc: bytes, read_size: int, data: st.DataObject
) -> None:
    same(doc, read_size, fail_at=data.draw(st.integers(0, len(doc) + 1)))


@settings(max_examples=200, deadline=None)
@given(documents(), st.sampled_from([1, 5, 64]), st.sampled_from([0, 1, 10, 100]))
def test_a_long_line_hands_over_to_ijson(doc: bytes, read_size: int, line_limit: int) -> None:
    same(doc, read_size, line_limit=line_limit)


# --------------------------------------------------------------------------- the fast path is used


def _feed(n: int, sep: str = ",\n") -> bytes:
    records = [
        {"id": i, "name": f"permit {i}", "cost": None if i % 3 else 1000 * i, "x": [i, "é"]}
        for i in range(n)
    ]
    return ("[\n" + sep.join(json.dumps(r) for r in records) + "\n]\n").encode()


def test_one_element_per_line_is_parsed_a_block_at_a_time() -> None:
    doc = _feed(5000)
    assert same(doc, 1 << 16) == 4999  # all but the last, which ends the array
    assert same(doc, 1000) > 4900


def test_exact_numbers_as_ijson_gives_them() -> None:
    doc = b'[\n{"a": 1.50, "b": 1E400, "c": -0.0, "d": 18446744073709551616},\n{"e": 0.1}\n]\n'
    (first, _), parsed_fast = list(iter_records(io.BytesIO(doc), "json")), 1
    assert first == {"a": Decimal("1.50"), "b": Decimal("1E+400"), "c": Decimal("-0.0"), "d": 2**64}
    assert repr(first["a"]) == "Decimal('1.50')"
    assert same(doc, 1 << 16) == parsed_fast


def test_a_layout_change_midway_goes_on_with_ijson_without_losing_or_repeating() -> None:
    head = _feed(3000)[: -len("\n]\n")]
    pretty = json.dumps([{"id": -1, "nested": {"a": [1, 2]}}, {"id": -2}], indent=2)[1:]
    doc = head + b",\n" + pretty.encode() + b"\n"  # the rest pretty-printed
    parsed_fast = same(doc, 1 << 16)
    assert 2000 < parsed_fast < 3000
    ids = [r["id"] for r in iter_records(io.BytesIO(doc), "json") if isinstance(r, dict)]
    assert ids == [*range(3000), -1, -2]


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.999])
def test_a_cut_feed_fails_as_before(cut: int) -> None:
    doc = _feed(4000)
    doc = doc[: int(len(doc) * cut)]
    same(doc, 1 << 16)
    seen = 0
    with pytest.raises(DocumentError, match=rf"truncated\?\) at byte {len(doc)} after \d+ records"):
        for _ in iter_records(io.BytesIO(doc), "json"):
            seen += 1
    assert seen == doc.count(b"},\n")  # every complete element, nothing more


def test_errors_name_the_byte_and_count_as_before() -> None:
    doc = _feed(3000)
    at = doc.index(b"},\n", len(doc) // 2) + 1  # after the closing brace of a record
    broken = doc[:at] + b" garbage" + doc[at:]
    same(broken, 1 << 16)
    block_end = (at // (1 << 16) + 1) << 16  # yajl reports the end of the block it parsed
    records = doc[:at].count(b"},\n") + 1  # every record up to the garbage, as before
    with pytest.raises(
        DocumentError,
        match=rf"not valid JSON near byte {block_end} after {records} records: lexical error",
    ):
        list(iter_records(io.BytesIO(broken), "json"))


def test_bom_and_leading_whitespace() -> None:
    doc = b"\xef\xbb\xbf \n" + _feed(10)
    assert same(doc, 1 << 16) == 9
    assert len(list(iter_records(io.BytesIO(doc), "json"))) == 10
