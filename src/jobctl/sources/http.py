"""HTTP(S) side of ``jobctl sync``: download a feed to a file.

With :mod:`jobctl.notify.http` (webhook alerts), the only module of jobctl that imports
httpx; every httpx exception is translated here into
:class:`~jobctl.errors.SourceError` (``transient`` says whether a later run may succeed),
with ``raise ... from exc``.

Retry policy (per call, inside one attempt of a jobctl run):

* retried: connection errors, timeouts, a body cut short (``RemoteProtocolError``,
  Content-Length mismatch: a transport error, never a feed), HTTP 5xx and 429; an
  error answered with HTTP 200 (``check_body``) only when ``retry_check_failures``;
* not retried: other 4xx (``SourceError(transient=False)``), 3xx left unfollowed, bad
  URLs, local file-system errors;
* wait: exponential backoff with full jitter (``uniform(0, min(max_backoff,
  backoff * 2**(n-1)))``), except that a ``Retry-After`` header (seconds or HTTP-date)
  on a 429/503 is honoured, capped at ``max_backoff``;
* after ``retries`` retries (``retries + 1`` requests) :class:`FetchFailed` naming the
  last cause and the number of requests. It is ``transient=False`` — the runner does
  not repeat what was already retried here, so the two layers do not multiply — unless
  ``retries`` is 0: a source without retries of its own leaves a passing failure to the
  runner's ``retries`` (one request per runner attempt). Every failure after a request
  was made is a :class:`FetchFailed` carrying ``requests``.

Credentials: every message and log line carries :func:`~jobctl.redact.redact_url` of
the URL, and cause texts are passed through :func:`~jobctl.redact.redact_text` with the
secret values taken from the URL and the request headers. httpx's own ``INFO`` line
("HTTP Request: GET https://…?token=…") is redacted by a logging filter installed on the
``httpx`` and ``httpcore`` loggers when this module is imported.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from jobctl import __version__
from jobctl.errors import SourceError, UsageError
from jobctl.redact import is_secret_name, redact_text, redact_url

__all__ = [
    "DownloadResult",
    "ErrorAnswer",
    "FetchFailed",
    "download",
]

log = logging.getLogger("jobctl.sources")

T = TypeVar("T")

CHUNK_SIZE = 1 << 20
USER_AGENT = f"jobctl/{__version__}"


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download` did.

    ``path`` is ``dest`` after a 2xx, ``None`` after a 304 (``not_modified``); ``bytes``
    and ``sha256`` describe the stored (Content-Encoding-decoded) file — 0 and ``""``
    after a 304. ``etag`` / ``last_modified`` are the response validators to send next
    time (after a 304: the server's if it repeated them, else the ones sent).
    ``charset``: what the response's ``Content-Type`` declared, if anything (the feed
    is read with the configured encoding all the same: a declared charset is as often
    a server's default as the truth; it only explains an undecodable feed).
    """

    path: Path | None
    not_modified: bool
    status: int
    etag: str | None
    last_modified: str | None
    bytes: int
    attempts: int
    sha256: str
    charset: str | None = None

    @property
    def requests(self) -> int:
        """HTTP requests made (one per attempt of this call)."""
        return self.attempts


# --------------------------------------------------------------------------- redaction


class _RedactHttpxFilter(logging.Filter):
    """Rewrite httpx/httpcore log records so that URLs in them are redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: let logging report it as usual
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


def _install_log_filter() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactHttpxFilter) for f in logger.filters):
            logger.addFilter(_RedactHttpxFilter())


_install_log_filter()


def _secrets_of(url: str, headers: Mapping[str, str] | None) -> list[str]:
    """Secret values present in the URL (password, secret query values) and headers."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        for chunk in (parts.query, parts.fragment):
            for pair in chunk.split("&"):
                name, eq, value = pair.partition("=")
                if eq and value and is_secret_name(name):
                    found += [value, unquote(value)]
    except ValueError:
        pass
    for name, value in (headers or {}).items():
        lname = name.lower()
        if lname in ("authorization", "proxy-authorization", "cookie") or is_secret_name(lname):
            found.append(value)
            found += value.split()  # "Bearer abc" → "abc"
    return [s for s in found if len(s) >= 4]


class FetchFailed(SourceError):
    """A GET failed after ``requests`` HTTP requests (the run's stats record the number)."""

    def __init__(self, message: str, *, requests: int, transient: bool = False) -> None:
        super().__init__(message, transient=transient)
        self.requests = requests


def _requests(n: int) -> str:
    return "1 request" if n == 1 else f"{n} requests"


class ErrorAnswer(FetchFailed):
    """The server answered 2xx with a body that says it is an error (``check_body``).

    ``answer`` is the API's own message (redacted); ``requests`` how many requests got it.
    """

    def __init__(self, answer: str, *, requests: int = 1, transient: bool = False) -> None:
        tries = f" ({_requests(requests)})" if requests > 1 else ""
        super().__init__(
            f"the API answered an error: {answer}{tries}", requests=requests, transient=transient
        )
        self.answer = answer

    @property
    def attempts(self) -> int:
        return self.requests


class _Retryable(Exception):
    """One attempt failed in a way a retry may fix. ``reason`` is already redacted."""

    def __init__(
        self, reason: str, *, retry_after: float | None = None, answer: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.answer = answer  # an error answer's message (see ErrorAnswer)


# --------------------------------------------------------------------------- retry policy


def _parse_retry_after(value: str | None, now: Callable[[], datetime]) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


class _Wait:
    """tenacity wait strategy: Retry-After when the server sent one, else full jitter.

    tenacity's ``wait_random_exponential`` *is* the "full jitter" algorithm
    (uniform(0, min(cap, base * 2**n))) and its ``stop_after_attempt`` / ``Retrying``
    loop are well tested; using them avoids a hand-rolled off-by-one in the attempt
    arithmetic. What tenacity does not know about is HTTP: this wrapper lets a
    ``Retry-After`` from the server take precedence (capped at ``max_backoff``).
    """

    def __init__(self, backoff: float, max_backoff: float) -> None:
        self._jitter = wait_random_exponential(multiplier=backoff, max=max_backoff)
        self._max = max_backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self._max)
        return float(self._jitter(retry_state))


def _run_with_retries(
    attempt_once: Callable[[int], T],
    *,
    shown_url: str,
    retries: int,
    backoff: float,
    max_backoff: float,
    sleep: Callable[[float], None],
) -> tuple[T, int]:
    """Call ``attempt_once(n)`` until it succeeds, a non-retryable error, or retries run out."""

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        wait = state.upcoming_sleep
        log.warning(
            "GET %s failed (%s), request %d of %d; retrying in %.1fs",
            shown_url,
            exc.reason if isinstance(exc, _Retryable) else type(exc).__name__,
            state.attempt_number,
            retries + 1,
            wait,
        )

    retrying = Retrying(
        stop=stop_after_attempt(retries + 1),
        wait=_Wait(backoff, max_backoff),
        retry=retry_if_exception_type(_Retryable),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    attempts = 0
    # Exhausted retries are not retried again by the runner: that would multiply the
    # two budgets (and the waits). Only a source with no retries of its own hands a
    # passing failure on to the runner's retries.
    hand_over = retries == 0
    try:
        for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                result = attempt_once(attempts)
        return result, attempts
    except _Retryable as exc:
        if exc.answer is not None:
            raise ErrorAnswer(exc.answer, requests=attempts, transient=hand_over) from exc
        raise FetchFailed(
            f"GET {shown_url} failed after {_requests(attempts)}: {exc.reason}",
            requests=attempts,
            transient=hand_over,
        ) from exc
    except FetchFailed as exc:  # an error answer not to be retried
        exc.requests = attempts
        raise
    except SourceError as exc:  # not retryable (a 4xx, an unwritable file): as it is
        if attempts == 0:
            raise
        raise FetchFailed(str(exc), requests=attempts, transient=exc.transient) from exc


# --------------------------------------------------------------------------- one request


def _check_params(retries: int, backoff: float, max_backoff: float, timeout: float) -> None:
    if retries < 0:
        raise UsageError(f"retries must be >= 0, not {retries}")
    if backoff < 0 or max_backoff < 0:
        raise UsageError("backoff and max_backoff must be >= 0")
    if timeout <= 0:
        raise UsageError(f"timeout must be > 0, not {timeout}")


def _status_error(resp: httpx.Response, shown_url: str) -> Exception | None:
    """None for 2xx/304; a _Retryable for 5xx/429; a SourceError for everything else."""
    status = resp.status_code
    if 200 <= status < 300 or status == 304:
        return None
    text = f"HTTP {status} {resp.reason_phrase or ''}".rstrip()
    if status == 429 or status >= 500:
        retry_after = _parse_retry_after(resp.headers.get("Retry-After"), lambda: datetime.now(UTC))
        return _Retryable(text, retry_after=retry_after)
    if 300 <= status < 400:
        where = redact_url(resp.headers.get("Location", "?"))
        return SourceError(
            f"{text} from {shown_url}: redirect to {where} not followed", transient=False
        )
    return SourceError(f"{text} from {shown_url}", transient=False)


def _stream_request(
    client: httpx.Client,
    url: str,
    headers: Mapping[str, str],
    timeout: httpx.Timeout,
    shown_url: str,
    secrets: Iterable[str],
    consume: Callable[[httpx.Response], T],
) -> T:
    """One GET; ``consume`` reads the (2xx/304) response. Translates httpx errors."""
    secrets = list(secrets)
    try:
        with client.stream("GET", url, headers=headers, timeout=timeout) as resp:
            problem = _status_error(resp, shown_url)
            if problem is not None:
                raise problem
            result = consume(resp)
            _check_complete(resp)
            return result
    except httpx.TimeoutException as exc:
        raise _Retryable(f"timed out ({type(exc).__name__})") from exc
    except httpx.UnsupportedProtocol as exc:
        raise SourceError(
            f"cannot GET {shown_url}: {redact_text(str(exc), secrets)}", transient=False
        ) from exc
    except httpx.RemoteProtocolError as exc:
        # the usual shape of a body cut short: "peer closed connection without sending
        # complete message body (received N bytes, expected M)"
        raise _Retryable(
            f"incomplete response ({redact_text(str(exc), secrets) or 'protocol error'})"
        ) from exc
    except (httpx.TransportError, httpx.DecodingError) as exc:
        cause = redact_text(str(exc), secrets) or type(exc).__name__
        raise _Retryable(f"{type(exc).__name__}: {cause}") from exc
    except httpx.TooManyRedirects as exc:
        raise SourceError(f"too many redirects from {shown_url}", transient=False) from exc
    except httpx.HTTPError as exc:
        cause = redact_text(str(exc), secrets) or type(exc).__name__
        raise SourceError(f"GET {shown_url} failed: {cause}", transient=False) from exc
    except httpx.InvalidURL as exc:
        raise SourceError(f"invalid URL {shown_url}", transient=False) from exc


def _check_complete(resp: httpx.Response) -> None:
    """Raise _Retryable when fewer bytes arrived than Content-Length announced."""
    if resp.status_code == 304:  # a 304 may repeat the representation's length, bodiless
        return
    declared = resp.headers.get("Content-Length")
    if declared is None or not declared.strip().isdigit():
        return
    expected = int(declared)
    got = resp.num_bytes_downloaded  # raw (still encoded) bytes, comparable to the header
    if got == 0 and "Content-Encoding" not in resp.headers:
        # a response built in memory (MockTransport) never went through the raw stream
        with contextlib.suppress(httpx.ResponseNotRead):
            got = len(resp.content)
    if got != expected:
        raise _Retryable(f"incomplete body: received {got} of {expected} bytes")


def _timeout(timeout: float, connect_timeout: float) -> httpx.Timeout:
    return httpx.Timeout(timeout, connect=connect_timeout)


def _make_client(timeout: float, connect_timeout: float) -> httpx.Client:
    return httpx.Client(
        follow_redirects=True,
        timeout=_timeout(timeout, connect_timeout),
        headers={"User-Agent": USER_AGENT},
    )


# --------------------------------------------------------------------------- public API


def download(
    url: str,
    dest: Path,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    connect_timeout: float = 10.0,
    retries: int = 3,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    etag: str | None = None,
    last_modified: str | None = None,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    check_body: Callable[[Path], str | None] | None = None,
    retry_check_failures: bool = False,
) -> DownloadResult:
    """GET ``url`` and stream the body to ``dest`` (via ``dest.part``, then an atomic rename).

    ``timeout`` is httpx's read/write/pool timeout (the longest silence tolerated, not
    a total deadline — the runner's ``--timeout`` bounds the whole run);
    ``connect_timeout`` bounds connecting. They apply to every request, also on a
    caller-supplied ``client``. A ``Content-Encoding: gzip`` body is decoded by httpx;
    a gzip *file* (``feed.json.gz``) is stored as is and decompressed by
    :func:`jobctl.sources.parse.open_source`.

    With ``etag`` / ``last_modified`` the request is conditional (If-None-Match /
    If-Modified-Since); a 304 returns ``not_modified=True, path=None`` and leaves
    ``dest`` untouched. Raises :class:`SourceError` (see the module docstring).

    ``check_body`` sees every downloaded body (a file) before it becomes ``dest`` and
    returns the API's message when the body is an error answer (else None): then
    :class:`ErrorAnswer` is raised — after retries like a 5xx when
    ``retry_check_failures``, at once (``transient=False``) otherwise.
    """
    _check_params(retries, backoff, max_backoff, timeout)
    dest = Path(dest)
    shown = redact_url(url)
    secrets = _secrets_of(url, headers)
    req_headers: dict[str, str] = {"Accept-Encoding": "gzip, deflate"}
    req_headers.update(headers or {})
    if etag:
        req_headers["If-None-Match"] = etag
    if last_modified:
        req_headers["If-Modified-Since"] = last_modified
    part = dest.with_name(dest.name + ".part")
    tmo = _timeout(timeout, connect_timeout)

    declared: list[str | None] = [None]  # the charset of the response kept

    def consume(resp: httpx.Response) -> tuple[int, str | None, str | None, int, str]:
        new_etag = resp.headers.get("ETag")
        new_lm = resp.headers.get("Last-Modified")
        if resp.status_code == 304:
            return 304, new_etag or etag, new_lm or last_modified, 0, ""
        declared[0] = resp.charset_encoding
        digest = hashlib.sha256()
        size = 0
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "wb", buffering=0) as out:
                for chunk in resp.iter_bytes(CHUNK_SIZE):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise SourceError(
                f"cannot write {part} while downloading {shown}: {exc.strerror or exc}",
                transient=False,
            ) from exc
        return resp.status_code, new_etag, new_lm, size, digest.hexdigest()

    def attempt_once(n: int) -> tuple[int, str | None, str | None, int, str]:
        log.debug("GET %s -> %s (attempt %d)", shown, dest, n)
        try:
            got = _stream_request(active, url, req_headers, tmo, shown, secrets, consume)
            if got[0] != 304:
                _check_answer(part)
                os.replace(part, dest)
            return got
        finally:
            part.unlink(missing_ok=True)

    def _check_answer(body: Path) -> None:
        answer = check_body(body) if check_body is not None else None
        if answer is None:
            return
        answer = redact_text(answer, secrets)
        answer = answer if len(answer) <= 300 else answer[:297] + "..."
        shown_answer = answer or "(no message in the answer)"
        if retry_check_failures:
            raise _Retryable(f"the API answered an error: {shown_answer}", answer=shown_answer)
        raise ErrorAnswer(shown_answer)

    active = client if client is not None else _make_client(timeout, connect_timeout)
    try:
        (status, new_etag, new_lm, size, sha), attempts = _run_with_retries(
            attempt_once,
            shown_url=shown,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            sleep=sleep,
        )
    finally:
        if client is None:
            active.close()
    if status == 304:
        log.info("GET %s: 304 not modified (attempts=%d)", shown, attempts)
        return DownloadResult(None, True, 304, new_etag, new_lm, 0, attempts, "")
    log.info("GET %s: HTTP %d, %d bytes (attempts=%d)", shown, status, size, attempts)
    return DownloadResult(
        dest, False, status, new_etag, new_lm, size, attempts, sha, charset=declared[0]
    )
