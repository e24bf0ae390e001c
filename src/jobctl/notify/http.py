"""The HTTP side of webhook alerts and dead-man pings: one request with retries
(httpx, tenacity).

Retried: network errors and timeouts, HTTP 5xx and 429; never another 4xx (the
request itself is wrong: sending it again changes nothing). A few attempts with a
short backoff: alerts and pings are sent while the run still holds its job's lock.
Every failure is a :class:`~jobctl.notify.DeliveryFailed` whose text is redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from jobctl import __version__
from jobctl.notify import DeliveryFailed
from jobctl.redact import redact_url

#: Requests per message at most, and the first wait between them (doubling, jittered).
ATTEMPTS = 4
FIRST_WAIT = 0.2


@dataclass(frozen=True)
class Policy:
    """How hard one message is pushed: requests at most, each one's timeout, and the
    time after which no further request is started (None: no such limit)."""

    timeout: float
    attempts: int = ATTEMPTS
    deadline: float | None = None


class _Retry(Exception):
    """One request failed in a way a later one may not."""


def post_json(
    url: str,
    payload: Mapping[str, Any],
    *,
    headers: Mapping[str, str],
    timeout: float,
    clean: Callable[[str], str],
) -> int:
    """POST ``payload`` to ``url``; the number of requests it took."""
    return send(
        "POST", url, headers=headers, policy=Policy(timeout), clean=clean, json=dict(payload)
    )


def send(
    method: str,
    url: str,
    *,
    policy: Policy,
    clean: Callable[[str], str],
    headers: Mapping[str, str] | None = None,
    shown: str | None = None,
    **body: Any,
) -> int:
    """Send one request (``body``: httpx's ``json=`` or ``content=``) until it gets a
    2xx/3xx answer or retrying stops; the number of requests it took.

    ``shown`` is how the target is named in an error (default: ``url`` redacted).
    """
    requests = 0
    shown = clean(shown if shown is not None else redact_url(url))

    def once(client: httpx.Client) -> None:
        nonlocal requests
        requests += 1
        try:
            response = client.request(method, url, **body)
        except httpx.HTTPError as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retry(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise DeliveryFailed(clean(f"{shown} answered HTTP {response.status_code}"))

    stop: stop_base = stop_after_attempt(policy.attempts)
    if policy.deadline is not None:
        stop = stop | stop_after_delay(policy.deadline)
    retrying = Retrying(
        stop=stop,
        wait=wait_exponential_jitter(multiplier=FIRST_WAIT, max=2.0, jitter=FIRST_WAIT),
        retry=retry_if_exception_type(_Retry),
        reraise=True,
    )
    sent_headers = {"User-Agent": f"jobctl/{__version__}", **(headers or {})}
    try:
        with (
            _httpx_log_cleaned(clean),
            httpx.Client(
                timeout=policy.timeout, headers=sent_headers, follow_redirects=False
            ) as client,
        ):
            retrying(once, client)
    except _Retry as exc:
        tries = "1 request" if requests == 1 else f"{requests} requests"
        raise DeliveryFailed(clean(f"{shown}: {exc} ({tries})")) from None
    return requests


class _CleanFilter(logging.Filter):
    """Redacts httpx's own log lines ("HTTP Request: POST https://…"): a webhook's or a
    ping's URL is itself the credential, in its path, where no URL rule finds it."""

    def __init__(self, clean: Callable[[str], str]) -> None:
        super().__init__()
        self.clean = clean

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: let logging report it as usual
            return True
        cleaned = self.clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


@contextmanager
def _httpx_log_cleaned(clean: Callable[[str], str]) -> Iterator[None]:
    """While a message is sent: httpx's records go through ``clean`` first. A filter of
    another thread's message may see them too; that only masks more."""
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    log_filter = _CleanFilter(clean)
    for logger in loggers:
        logger.addFilter(log_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(log_filter)
