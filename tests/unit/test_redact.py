from __future__ import annotations

from typing import Any, cast

import pytest

from jobctl.redact import MASK, is_secret_name, redact_dsn, redact_text, redact_url


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
        "header Bearer s3cr3tvalue rejected; tiny 'ab' stays"
    )
    out = redact_text(text, ["s3cr3tvalue", "ab", ""])
    assert "abcdef" not in out
    assert "s3cr3tvalue" not in out
    assert "token_auth=***&date=2024-01-01" in out
    assert f"Bearer {MASK}" in out
    assert "'ab' stays" in out


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
