"""SQL source: the query's placeholders and how a row's values become a record."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from decimal import Decimal

import pytest

from jobctl.errors import DocumentError
from jobctl.sources.records import BadRecord, canonical_bytes
from jobctl.sources.sql import parse_query, record_of, records_of


@pytest.mark.parametrize(
    ("query", "text", "params"),
    [
        (
            "SELECT * FROM t WHERE d >= :date AND d < :date + 1;",
            "SELECT * FROM t WHERE d >= %(date)s AND d < %(date)s + 1",
            ("date",),
        ),
        ("SELECT x::date, a[lo:hi] FROM t", "SELECT x::date, a[lo:hi] FROM t", ()),
        ("SELECT ':date %', \"a:b\"", "SELECT ':date %%', \"a:b\"", ()),
        ("SELECT E'it\\'s :date' -- :date", "SELECT E'it\\'s :date' -- :date", ()),
        ("SELECT $$ :date $$, $q$ :x $q$ /* :y */", "SELECT $$ :date $$, $q$ :x $q$ /* :y */", ()),
        ("SELECT 5 % 2, :foo", "SELECT 5 %% 2, %(foo)s", ("foo",)),
    ],
)
def test_placeholders_outside_literals_and_comments(
    query: str, text: str, params: tuple[str, ...]
) -> None:
    parsed = parse_query(query)
    assert parsed.text == text
    assert parsed.params == params


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ("  -- report\n(SELECT 1)", "SELECT"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH"),
        ("/* a */ VALUES (1)", "VALUES"),
        ("table t", "TABLE"),
        ("DELETE FROM t", "DELETE"),
        ("", ""),
    ],
)
def test_first_keyword(query: str, word: str) -> None:
    assert parse_query(query).first_word == word


def test_values_become_exact_json() -> None:
    stamp = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    record = record_of(
        ["n", "big", "f", "d", "ts", "t", "u", "ip", "j", "arr", "none", "b"],
        [
            7,
            Decimal("12345678901234567.89"),
            1.5,
            dt.date(2026, 3, 1),
            stamp,
            dt.time(9, 30),
            ident,
            ipaddress.ip_address("10.0.0.1"),
            {"x": Decimal("0.1"), "when": [dt.date(2026, 1, 2)]},
            [Decimal("1.50"), None],
            None,
            True,
        ],
    )
    assert record == {
        "n": 7,
        "big": Decimal("12345678901234567.89"),
        "f": 1.5,
        "d": "2026-03-01",
        "ts": "2026-03-01T09:30:00+01:00",
        "t": "09:30:00",
        "u": str(ident),
        "ip": "10.0.0.1",
        "j": {"x": Decimal("0.1"), "when": ["2026-01-02"]},
        "arr": [Decimal("1.50"), None],
        "none": None,
        "b": True,
    }
    assert isinstance(record, dict)
    # numeric is stored as the other formats store the same digits: exact, 1.50 as 1.5
    assert canonical_bytes(record).startswith(
        b'{"arr":[1.5,null],"b":true,"big":12345678901234567.89,'
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x00\x01", "column 'v' is binary (bytea)"),
        (memoryview(b"ab"), "column 'v' is binary (bytea)"),
        (float("nan"), "column 'v' nan is not a number"),
        (Decimal("NaN"), "column 'v' NaN is not a number"),
        (dt.timedelta(hours=1), "column 'v' is an interval"),
        (object(), "column 'v' is a object value"),
    ],
)
def test_values_without_a_json_form_are_bad_records(value: object, reason: str) -> None:
    bad = record_of(["id", "v"], [1, value], position=4)
    assert isinstance(bad, BadRecord)
    assert bad.position == 4
    assert bad.reason.startswith(reason)


def test_two_columns_of_one_name_are_a_document_error() -> None:
    with pytest.raises(DocumentError, match="two columns named 'id'"):
        list(records_of(["id", "id"], [(1, 2)]))


def test_records_are_numbered_from_one() -> None:
    out = list(records_of(["id", "v"], [(1, "a"), (2, b"x")]))
    assert out[0] == {"id": 1, "v": "a"}
    assert isinstance(out[1], BadRecord) and out[1].position == 2
