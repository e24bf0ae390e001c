from __future__ import annotations

import gzip
import hashlib
import logging
import socket
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from tests.fixtures.httpserver import HTTPTestServer, Step, http_server

from jobctl.errors import SourceError, UsageError
from jobctl.sources.http import (
    DownloadResult,
    FetchFailed,
    _parse_retry_after,
    download,
)
from jobctl.sources.parse import iter_records, open_source

TOKEN = "tok_SuperSecret_123456"
BEARER = "bearer-secret-abcdef"
BODY = b'[{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]\n' * 50


@pytest.fixture
def srv() -> Iterator[HTTPTestServer]:
    with http_server() as server:
        yield server


class SleepRecorder:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(float(seconds))


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


def all_texts(exc: BaseException) -> str:
    """Every message in the exception chain plus the formatted traceback."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    parts.extend(traceback.format_exception(exc))
    return "\n".join(parts)


# --------------------------------------------------------------------------- real server


def test_download_plain(srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder) -> None:
    srv.serve("/feed.json", BODY, etag='"v1"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    dest = tmp_path / "out" / "feed.json"
    res = download(srv.url("/feed.json"), dest, sleep=sleeps)
    assert res == DownloadResult(
        path=dest,
        not_modified=False,
        status=200,
        etag='"v1"',
        last_modified="Mon, 01 Jan 2024 00:00:00 GMT",
        bytes=len(BODY),
        attempts=1,
        sha256=hashlib.sha256(BODY).hexdigest(),
    )
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "out" / "feed.json.part").exists()
    assert sleeps.calls == []
    assert srv.requests_for("/feed.json")[0].headers["user-agent"].startswith("jobctl/")


def test_retries_503_then_success(
    srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    srv.serve("/feed.json", BODY, statuses=[503, 503])
    res = download(srv.url("/feed.json"), tmp_path / "f.json", sleep=sleeps, backoff=0.5)
    assert res.attempts == 3
    assert res.status == 200
    assert len(srv.requests_for("/feed.json")) == 3
    assert len(sleeps.calls) == 2
    # full jitter: uniform(0, backoff * 2**(n-1))
    assert 0 <= sleeps.calls[0] <= 0.5 and 0 <= sleeps.calls[1] <= 1.0
    assert (tmp_path / "f.json").read_bytes() == BODY


def test_429_honours_retry_after(
    srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    srv.serve("/feed.json", BODY, statuses=[Step(429, retry_after="2")])
    res = download(srv.url("/feed.json"), tmp_path / "f.json", sleep=sleeps)
    assert sleeps.calls == [2.0]
    assert res.attempts == 2


def test_retry_after_is_capped(srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder) -> None:
    srv.serve("/f", BODY, statuses=[Step(503, retry_after="3600"), Step(429, retry_after="0")])
    res = download(srv.url("/f"), tmp_path / "f", sleep=sleeps, max_backoff=5.0)
    assert sleeps.calls == [5.0, 0.0]
    assert res.attempts == 3


def test_parse_retry_after_forms() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert _parse_retry_after("7", lambda: now) == 7.0
    assert _parse_retry_after(later, lambda: now) == 30.0
    assert (
        _parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), lambda: now) == 0
    )
    assert _parse_retry_after("soon", lambda: now) is None
    assert _parse_retry_after(None, lambda: now) is None


def test_404_is_not_retried(srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder) -> None:
    url = srv.url(f"/missing.json?token={TOKEN}&page=1")
    with pytest.raises(SourceError) as info:
        download(url, tmp_path / "f.json", sleep=sleeps)
    assert info.value.transient is False
    assert str(info.value) == f"HTTP 404 Not Found from {srv.url('/missing.json')}?token=***&page=1"
    assert len(srv.requests_for("/missing.json")) == 1
    assert sleeps.calls == []
    assert not (tmp_path / "f.json").exists()


def test_retries_exhausted_is_not_retried_again_by_the_runner(
    srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    srv.serve("/down", BODY, statuses=[503] * 10)
    with pytest.raises(SourceError) as info:
        download(srv.url("/down"), tmp_path / "f", retries=2, sleep=sleeps)
    # one retry budget: retried here, so not transient for the runner
    assert info.value.transient is False
    assert isinstance(info.value, FetchFailed) and info.value.requests == 3
    assert "failed after 3 requests: HTTP 503 Service Unavailable" in str(info.value)
    assert len(srv.requests_for("/down")) == 3
    assert len(sleeps.calls) == 2


def test_gzip_content_encoding_is_decoded(srv: HTTPTestServer, tmp_path: Path) -> None:
    srv.serve("/feed.json", BODY, gzip=True)
    res = download(srv.url("/feed.json"), tmp_path / "f.json")
    assert "gzip" in srv.requests_for("/feed.json")[0].headers["accept-encoding"]
    assert (tmp_path / "f.json").read_bytes() == BODY
    assert res.bytes == len(BODY)
    assert res.sha256 == hashlib.sha256(BODY).hexdigest()


def test_gz_file_is_stored_as_is_and_parsed(srv: HTTPTestServer, tmp_path: Path) -> None:
    packed = gzip.compress(b'{"id": 1}\n{"id": 2}\n')
    srv.serve("/feed.ndjson.gz", packed, content_type="application/gzip")
    res = download(srv.url("/feed.ndjson.gz"), tmp_path / "feed.ndjson.gz")
    assert res.path is not None and res.path.read_bytes() == packed
    with open_source(res.path) as stream:
        assert list(iter_records(stream, "ndjson")) == [{"id": 1}, {"id": 2}]


def test_304_with_if_none_match(srv: HTTPTestServer, tmp_path: Path) -> None:
    srv.serve("/feed.json", BODY, etag='"abc"')
    dest = tmp_path / "f.json"
    first = download(srv.url("/feed.json"), dest)
    assert first.etag == '"abc"'
    dest.write_bytes(b"previous")
    second = download(srv.url("/feed.json"), dest, etag=first.etag)
    assert second.not_modified is True
    assert second.path is None and second.status == 304 and second.bytes == 0
    assert second.etag == '"abc"'
    assert srv.requests_for("/feed.json")[1].headers["if-none-match"] == '"abc"'
    assert dest.read_bytes() == b"previous"  # untouched


def test_304_with_if_modified_since(srv: HTTPTestServer, tmp_path: Path) -> None:
    stamp = "Mon, 01 Jan 2024 00:00:00 GMT"
    srv.serve("/feed.json", BODY, last_modified=stamp)
    res = download(srv.url("/feed.json"), tmp_path / "f", last_modified=stamp)
    assert res.not_modified and res.last_modified == stamp
    assert srv.requests_for("/feed.json")[0].headers["if-modified-since"] == stamp
    changed = download(srv.url("/feed.json"), tmp_path / "f", etag='"other"')
    assert not changed.not_modified  # no ETag on the route: If-None-Match is not a match


def test_truncated_body_retried_then_fails(
    srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    srv.serve("/cut", BODY, truncate_at=100)
    with pytest.raises(SourceError) as info:
        download(srv.url("/cut"), tmp_path / "f", retries=2, sleep=sleeps)
    assert info.value.transient is False  # retried here: not again by the runner
    assert "after 3 requests: incomplete" in str(info.value)
    assert len(srv.requests_for("/cut")) == 3
    assert not (tmp_path / "f").exists()
    assert not (tmp_path / "f.part").exists()


def test_truncated_once_then_complete(
    srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    srv.serve("/cut", BODY, statuses=[Step(200, truncate_at=10)])
    res = download(srv.url("/cut"), tmp_path / "f", sleep=sleeps)
    assert res.attempts == 2
    assert (tmp_path / "f").read_bytes() == BODY


def test_redirect_followed_by_default_client(srv: HTTPTestServer, tmp_path: Path) -> None:
    srv.serve("/old", b"", statuses=[Step(301, headers={"Location": "/new"})] * 5)
    srv.serve("/new", BODY)
    res = download(srv.url("/old"), tmp_path / "f")
    assert res.status == 200 and (tmp_path / "f").read_bytes() == BODY


def test_token_never_in_messages_or_logs(
    srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    srv.serve("/ok", BODY)
    srv.serve("/flaky", BODY, statuses=[503] * 10)
    headers = {"Authorization": f"Bearer {BEARER}"}
    download(srv.url(f"/ok?token={TOKEN}"), tmp_path / "a", headers=headers, sleep=sleeps)
    with pytest.raises(SourceError) as retried:
        download(srv.url(f"/flaky?token={TOKEN}"), tmp_path / "b", retries=1, sleep=sleeps)
    with pytest.raises(SourceError) as refused:
        download(
            f"http://user:{TOKEN}@127.0.0.1:{_closed_port()}/x?api_key={TOKEN}",
            tmp_path / "c",
            headers=headers,
            retries=1,
            sleep=sleeps,
        )
    texts = [all_texts(retried.value), all_texts(refused.value)]
    texts += [r.getMessage() for r in caplog.records]
    assert srv.requests_for("/ok")[0].query["token"] == [TOKEN]  # the real token was sent
    assert any("HTTP Request: GET" in r.getMessage() for r in caplog.records)  # httpx logged
    assert any("token=***" in t for t in texts)
    for text in texts:
        assert TOKEN not in text
        assert BEARER not in text
    assert "ConnectError" in str(refused.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --------------------------------------------------------------------------- failures
# All real, no httpx.MockTransport: a refused connection is a closed local port, a silent
# server the fixture's delay, a body shorter than its Content-Length a chunked response
# that announces more (what a broken proxy sends).


def test_connection_refused_retried_and_named(tmp_path: Path, sleeps: SleepRecorder) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/x.json"
    with pytest.raises(SourceError) as info:
        download(url, tmp_path / "f", retries=3, sleep=sleeps)
    assert len(sleeps.calls) == 3  # 4 requests, a wait between each two
    # retried here already: the runner must not repeat them (one retry budget)
    assert info.value.transient is False
    assert isinstance(info.value, FetchFailed) and info.value.requests == 4
    message = str(info.value)
    assert message.startswith(f"GET {url} failed after 4 requests: ConnectError: "), message
    assert "refused" in message.lower()
    chain: list[BaseException] = []
    cause: BaseException | None = info.value
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    assert any(isinstance(c, httpx.ConnectError) for c in chain)  # raise ... from exc
    assert not (tmp_path / "f").exists()


def test_read_timeout_retried_then_success(
    srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    # the timeout leaves a loaded machine time to answer the fast request
    srv.serve("/slow-once", b"[]", statuses=[Step(200, delay=5.0)])
    res = download(srv.url("/slow-once"), tmp_path / "f", timeout=1.0, sleep=sleeps)
    assert res.attempts == 2 and (tmp_path / "f").read_bytes() == b"[]"
    assert len(srv.requests_for("/slow-once")) == 2 and len(sleeps.calls) == 1

    srv.serve("/slow", b"[]", delay=5.0)
    with pytest.raises(SourceError) as info:
        download(srv.url("/slow"), tmp_path / "g", timeout=1.0, retries=0, sleep=sleeps)
    assert info.value.transient is True
    assert str(info.value).endswith("failed after 1 request: timed out (ReadTimeout)")


def test_chunked_body_without_content_length(srv: HTTPTestServer, tmp_path: Path) -> None:
    srv.serve("/stream", BODY, chunked=True)
    res = download(srv.url("/stream"), tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == BODY and res.bytes == len(BODY)


def test_chunked_body_cut_short_is_retried(
    srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    srv.serve("/stream", BODY, chunked=True, statuses=[Step(200, truncate_at=100)])
    res = download(srv.url("/stream"), tmp_path / "f", sleep=sleeps)
    assert res.attempts == 2 and (tmp_path / "f").read_bytes() == BODY


def test_body_shorter_than_its_content_length_is_retried(
    srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    # a broken proxy: a complete chunked body of 3 bytes that announces 100; the
    # connection itself ends cleanly, only the header says the body is short
    srv.serve("/x", b"abc", chunked=True, headers={"Content-Length": "100"})
    with pytest.raises(SourceError, match="incomplete body: received 3 of 100 bytes"):
        download(srv.url("/x"), tmp_path / "f", retries=1, sleep=sleeps)
    assert len(srv.requests_for("/x")) == 2
    assert not (tmp_path / "f").exists() and not (tmp_path / "f.part").exists()


def test_redirect_the_client_cannot_follow_is_permanent(
    srv: HTTPTestServer, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    # 300 is not a redirect httpx follows, nor is a 302 without a Location
    srv.serve("/choices", b"", statuses=[Step(300, headers={"Location": "https://o/y?sig=zzzzzz"})])
    with pytest.raises(SourceError) as info:
        download(srv.url("/choices"), tmp_path / "f", sleep=sleeps)
    assert info.value.transient is False
    assert str(info.value) == (
        f"HTTP 300 Multiple Choices from {srv.url('/choices')}: "
        "redirect to https://o/y?sig=*** not followed"
    )
    srv.serve("/nowhere", b"", statuses=[302])
    with pytest.raises(SourceError, match=r"HTTP 302 Found .*: redirect to \? not followed"):
        download(srv.url("/nowhere"), tmp_path / "f", sleep=sleeps)
    assert sleeps.calls == []
    assert len(srv.requests_for("/choices")) == 1 and len(srv.requests_for("/nowhere")) == 1


def test_sends_conditional_headers(srv: HTTPTestServer, tmp_path: Path) -> None:
    # a 304 with new validators, repeating the representation's length without a body
    srv.serve("/x", BODY, statuses=[Step(304, headers={"ETag": '"e2"', "Content-Length": "1234"})])
    res = download(
        srv.url("/x"),
        tmp_path / "f",
        etag='"e1"',
        last_modified="Mon, 01 Jan 2024 00:00:00 GMT",
        headers={"X-Extra": "1"},
    )
    (seen,) = srv.requests_for("/x")
    assert seen.headers["if-none-match"] == '"e1"'
    assert seen.headers["if-modified-since"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert seen.headers["x-extra"] == "1"
    assert res.not_modified and res.etag == '"e2"' and res.attempts == 1
    assert not (tmp_path / "f").exists()


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="retries"):
        download("https://h/x", tmp_path / "f", retries=-1)


def test_unsupported_scheme_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        download("ftp://h/x", tmp_path / "f", retries=3, sleep=SleepRecorder())
    assert info.value.transient is False
