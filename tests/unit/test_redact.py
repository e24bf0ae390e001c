from __future__ import annotations

import io
import json
import logging
from typing import Any, cast

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jobctl.logs import JsonFormatter, SecretFilter, TailHandler, TextFormatter
from jobctl.redact import (
    MASK,
    Redactor,
    is_secret_header,
    is_secret_name,
    redact_dsn,
    redact_text,
    redact_url,
    url_secrets,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://bob:hunter2@example.org/a/b?token_auth=abc123&period=day",
            "https://bob:***@example.org/a/b?token_auth=***&period=day",
        ),
        (
            "https://example.org/x?TOKEN=t&Api-Key=k&page=2",
            "https://example.org/x?TOKEN=***&Api-Key=***&page=2",
        ),
        (
            "https://s3.example/o?X-Amz-Signature=deadbeef&X-Amz-Date=20240101",
            "https://s3.example/o?X-Amz-Signature=***&X-Amz-Date=20240101",
        ),
        ("https://h/p?key=1&keyword=cats", "https://h/p?key=***&keyword=cats"),
        (
            "https://h/p?my_refresh_token=r&client_secret=c",
            "https://h/p?my_refresh_token=***&client_secret=***",
        ),
        ("https://h/cb#access_token=abc&state=s", "https://h/cb#access_token=***&state=s"),
        ("https://h/p?sig=1;signature=2;x=3", "https://h/p?sig=***;signature=***;x=3"),
        ("postgresql://postgres@localhost/db", "postgresql://postgres@localhost/db"),
        ("https://u:p%40ss@h:8443/p", "https://u:***@h:8443/p"),
        ("https://u:p@ss@h/p?q=1", "https://u:***@h/p?q=1"),
        ("https://example.org/plain?a=1&b", "https://example.org/plain?a=1&b"),
        ("https://h/p?token=", "https://h/p?token="),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize("weird", ["", "::::", "http://[::1", "?", "#", "@@@", "http://", "a=b&c"])
def test_redact_url_never_raises_and_keeps_plain_input(weird: str) -> None:
    assert redact_url(weird) == weird


def test_redact_url_non_string_input_does_not_raise() -> None:
    assert redact_url(cast(Any, 123)) == "123"


@pytest.mark.parametrize(
    "name",
    ["token", "ACCESS_TOKEN", "api-key", "apikey", "Secret", "passwd", "auth", "x_csrf_token"],
)
def test_is_secret_name_true(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["page", "period", "date", "keyword", "format", "idSite"])
def test_is_secret_name_false(name: str) -> None:
    assert not is_secret_name(name)


def test_redact_text_masks_secrets_and_urls() -> None:
    text = (
        "GET https://api.example/x?token_auth=abcdef&date=2024-01-01 failed; "
        "header Bearer s3cr3tvalue rejected; tiny 'ab' goes, the tab stays"
    )
    out = redact_text(text, ["s3cr3tvalue", "ab", ""])
    assert "abcdef" not in out
    assert "s3cr3tvalue" not in out
    assert "token_auth=***&date=2024-01-01" in out
    assert f"Bearer {MASK}" in out
    # a short secret is masked as a whole token, not inside a word
    assert "tiny '***' goes, the tab stays" in out


def test_redact_text_longest_secret_first() -> None:
    assert redact_text("key=abcd1234", ["abcd", "abcd1234"]) == "key=***"


def test_redact_text_masks_dsn_password_in_text() -> None:
    out = redact_text("connect failed: host=db user=app password=hunter2 dbname=x", [])
    assert "hunter2" not in out
    assert "user=app" in out


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://app:s3cret@db:5432/app?sslmode=require",
            "postgresql://app:***@db:5432/app?sslmode=require",
        ),
        ("postgres://app@db/app?password=x1y2", "postgres://app@db/app?password=***"),
        ("host=db user=app password=s3cret dbname=app", "host=db user=app password=*** dbname=app"),
        ("host=db password = 'two \\' words' dbname=app", "host=db password = *** dbname=app"),
        ("host=db user=app", "host=db user=app"),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected


# --------------------------------------------------------------------------- Redactor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("login u:p@x@db failed", "login u:***@db failed"),
        ("password was p@x.", "password was ***."),
        ("p@x", "***"),
        ("(p@x)", "(***)"),
        # inside a word (or next to a word character) a short value is kept
        ("ap@xe", "ap@xe"),
        ("p@x_1", "p@x_1"),
        ("p@xp@x", "p@xp@x"),
    ],
)
def test_short_secret_is_masked_as_whole_token_only(text: str, expected: str) -> None:
    assert Redactor(["p@x"]).text(text) == expected


def test_one_character_secret_is_masked_as_a_token() -> None:
    assert Redactor(["7"]).text("run 7 of job 17 took 7s") == "run *** of job 17 took 7s"


def test_long_secret_is_masked_inside_words() -> None:
    assert Redactor(["hunter2"]).text("xhunter2y") == "x***y"


def test_percent_encoded_password_masked_in_both_forms() -> None:
    url = "postgresql://app:p%40ss%2Fw0rd@db/app"
    red = Redactor(url_secrets(url))
    out = red.text("server said: password authentication failed for p@ss/w0rd (p%40ss%2Fw0rd)")
    assert "p@ss" not in out and "w0rd" not in out
    assert out.count(MASK) == 2


def test_secret_forms_in_repr_json_and_urls_are_masked() -> None:
    secret = r'a"b\c d'
    red = Redactor([secret])
    forms = [
        secret,
        r'a"b\\c d',  # repr(), as in a traceback
        r"a\"b\\c d",  # JSON
        "a%22b%5Cc%20d",  # percent-encoded
        "a%22b%5Cc+d",  # form-encoded
    ]
    for shown in forms:
        assert red.text(f"<{shown}>") == "<***>", shown
    assert set(forms) <= set(red)


def test_redactor_url_masks_secret_in_a_path_segment() -> None:
    red = Redactor(["tok3n"])
    assert (
        red.url("https://api.example/v1/tok3n/export.json?token=tok3n&page=2")
        == "https://api.example/v1/***/export.json?token=***&page=2"
    )


def test_redactor_data_redacts_nested_strings_and_keeps_structure() -> None:
    red = Redactor(["s3cr3t"])
    doc = {"id": 3, "source": "https://h/s3cr3t", "stats": {"x": ["s3cr3t", 1.5, None]}}
    assert red.data(doc) == {"id": 3, "source": "https://h/***", "stats": {"x": ["***", 1.5, None]}}


def test_redactor_never_shows_its_values() -> None:
    assert "hunter2" not in repr(Redactor(["hunter2"]))


def test_longer_secret_that_overlaps_a_shorter_one_is_masked_whole() -> None:
    assert Redactor(["xabc", "abcd1234"]).text("key xabcd1234") == "key x***"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p%40ss@h/db", ["p%40ss", "p@ss"]),
        ("postgresql://u:p@x@h/db", ["p@x"]),
        ("postgresql://u@h/db?password=pw&sslmode=require", ["pw"]),
        ("https://h/x?api_key=a%2Bb&page=1", ["a%2Bb", "a+b"]),
        ("postgresql://u:pw@[::1/db", ["pw"]),  # malformed, still known
        ("https://h/x", []),
        ("", []),
        (None, []),
    ],
)
def test_url_secrets(url: str | None, expected: list[str]) -> None:
    assert url_secrets(url) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Authorization", True), ("Cookie", True), ("X-Api-Key", True), ("Accept", False)],
)
def test_is_secret_header(name: str, expected: bool) -> None:
    assert is_secret_header(name) is expected


@given(
    secret=st.text(st.characters(codec="utf-8", exclude_characters="*"), min_size=1, max_size=12),
    before=st.sampled_from([" ", "(", "'", "=", ":", "@", "\n", "/"]),
    after=st.sampled_from([" ", ")", "'", "&", ".", "@", "\n", "/"]),
)
def test_property_a_delimited_secret_never_survives(secret: str, before: str, after: str) -> None:
    """Whatever the value and its length, bounded by non-word characters it is masked."""
    assume("://" not in secret and "password" not in secret.lower())
    assume(secret not in f"<< {before}{after} >>")
    text = f"<< {before}{secret}{after} >>"
    assert Redactor([secret]).text(text) == f"<< {before}***{after} >>"


# --------------------------------------------------------------------------- logging


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_records_are_redacted_in_message_args_and_traceback(fmt: str) -> None:
    red = Redactor(["p@x", "tk-7f3a9c"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretFilter(red))
    tail = TailHandler(10, red)
    logger = logging.getLogger(f"jobctl.test.redact.{fmt}")
    logger.addHandler(handler)
    logger.addHandler(tail)
    logger.propagate = False
    try:
        try:
            raise RuntimeError("login p@x for https://h/v1/tk-7f3a9c/x failed")
        except RuntimeError:
            logger.exception("password %s, token %s", "p@x", "tk-7f3a9c")
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(tail)
    out = stream.getvalue()
    assert "p@x" not in out and "tk-7f3a9c" not in out
    assert "password ***, token ***" in out
    assert "login *** for https://h/v1/***/x failed" in out  # the traceback
    if fmt == "json":
        doc = json.loads(out)
        assert "login *** for" in doc["exc"]
    assert tail.snapshot() and "password ***, token ***" in tail.snapshot()[0]
    assert "p@x" not in repr(tail.snapshot())
