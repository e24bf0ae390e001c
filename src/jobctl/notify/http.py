"""The HTTP side of webhook alerts: one JSON POST with retries (httpx, tenacity).

Retried: network errors and timeouts, HTTP 5xx and 429; never another 4xx (the
request itself is wrong: sending it again changes nothing). A few attempts with a
short backoff: an alert is sent while the run still holds its job's lock.
Every failure is a :class:`~jobctl.notify.DeliveryFailed` whose text is redacted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from jobctl import __version__
from jobctl.notify import DeliveryFailed
from jobctl.redact import redact_url

#: Requests per message at most, and the first wait between them (doubling, jittered).
ATTEMPTS = 4
FIRST_WAIT = 0.2


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
    requests = 0
    shown = clean(redact_url(url))

    def once(client: httpx.Client) -> None:
        nonlocal requests
        requests += 1
        try:
            response = client.post(url, json=dict(payload))
        except httpx.HTTPError as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retry(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise DeliveryFailed(clean(f"{shown} answered HTTP {response.status_code}"))

    retrying = Retrying(
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_exponential_jitter(multiplier=FIRST_WAIT, max=2.0, jitter=FIRST_WAIT),
        retry=retry_if_exception_type(_Retry),
        reraise=True,
    )
    sent_headers = {"User-Agent": f"jobctl/{__version__}", **headers}
    try:
        with httpx.Client(timeout=timeout, headers=sent_headers, follow_redirects=False) as client:
            retrying(once, client)
    except _Retry as exc:
        tries = "1 request" if requests == 1 else f"{requests} requests"
        raise DeliveryFailed(clean(f"{shown}: {exc} ({tries})")) from None
    return requests
