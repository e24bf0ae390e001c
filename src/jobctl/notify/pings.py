"""Dead-man pings in the healthchecks.io convention, per job (``[jobs.NAME] ping_url``).

* ``URL/start`` when a run's row is written ``running``;
* ``URL`` when it ends ``completed``;
* ``URL/fail`` when it ends ``failed`` (after its retries, timed out included),
  ``cancelled``, or is found ``abandoned``; the error's first line is the POST body,
  which healthchecks.io shows with the event.

Each carries ``?rid=<uuid>``: healthchecks.io pairs a start with its end by that run
id (a canonical lower-case UUID) and so measures the run even when two overlap. It is
derived from the job and the jobctl run id (:func:`run_uuid`), so the process that
finds a run abandoned sends the same ``rid`` as the one that started it.

Only top-level runs ping (a backfill's or a catch-up's children do not: each success
would reset the check's timer while the schedule itself may be failing), and never a
dry run or a run that does not start (lock held, slot done).

The URL is a credential (its path holds the check's UUID or the project's ping key):
it is never shown; errors name its scheme and host only. A ping that cannot be
delivered is logged (action ``ping.failed``) and returned as ``"failed: <reason>"``
for the run's ``stats["pings"]``: :func:`send` never raises and never changes a run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from jobctl.config import Settings
from jobctl.db import ledger
from jobctl.db.engine import Database
from jobctl.notify import DeliveryFailed

log = logging.getLogger("jobctl.pings")

Clean = Callable[[str], str]

START = "start"
SUCCESS = "success"
FAIL = "fail"
_SUFFIX = {START: "/start", SUCCESS: "", FAIL: "/fail"}

#: A ping holds the run (and its lock): a few short tries, then it is given up.
TIMEOUT = 5.0
ATTEMPTS = 3
DEADLINE = 10.0
#: healthchecks.io keeps the first 100 kB of a body; the first line of an error
#: needs far less, and a run's ping should not upload a log.
MAX_BODY = 10_000

#: The namespace of :func:`run_uuid` (fixed: a changed one would break pairing).
NAMESPACE = uuid.UUID("6f1c1d2e-5b0a-4c59-9a57-3f4f0b7f2c11")


def run_uuid(job: str, run_id: int) -> str:
    """The ``rid`` of a run: stable, so every process sends the same one for it."""
    return str(uuid.uuid5(NAMESPACE, f"jobctl:{job}:{run_id}"))


def ping_url(base: str, kind: str, rid: str) -> str:
    """``base`` with the kind's suffix on its path and ``rid`` added to its query."""
    parts = urlsplit(base)
    query = "&".join(q for q in (parts.query, urlencode({"rid": rid})) if q)
    path = parts.path.rstrip("/") + _SUFFIX[kind]
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def shown(url: str) -> str:
    """How a ping URL is named in a message: scheme and host, never the path."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the ping URL"
    return f"ping URL {parts.scheme}://{host}{port}/…"


def body_of(message: str | None, clean: Clean) -> bytes:
    """The POST body of a ``/fail`` ping: the error's first line, redacted, truncated."""
    first = (message or "").strip().splitlines()[0:1]
    text = clean(first[0]) if first else "failed"
    return text.encode()[:MAX_BODY].decode(errors="ignore").encode()


def send(
    kind: str,
    base: str,
    job: str,
    run_id: int,
    clean: Clean,
    message: str | None = None,
) -> str:
    """Send one ping about run ``run_id``: ``"ok"``, or ``"failed: <reason>"``."""
    url = ping_url(base, kind, run_uuid(job, run_id))
    try:
        from jobctl.notify.http import Policy
        from jobctl.notify.http import send as request

        policy = Policy(timeout=TIMEOUT, attempts=ATTEMPTS, deadline=DEADLINE)
        if kind == FAIL:
            content = body_of(message, clean)
            request("POST", url, policy=policy, clean=clean, shown=shown(base), content=content)
        else:
            request("GET", url, policy=policy, clean=clean, shown=shown(base))
        result = "ok"
    except DeliveryFailed as exc:
        result = f"failed: {exc}"
    except Exception as exc:  # a bug here must not reach the run
        result = clean(f"failed: {type(exc).__name__}: {exc}")
    extra = {"action": "ping.sent" if result == "ok" else "ping.failed", "run_id": run_id}
    if result == "ok":
        log.debug("%s: %s ping for run %s sent", job, kind, run_id, extra={**extra, "job": job})
    else:
        log.warning(
            "%s: %s ping for run %s %s", job, kind, run_id, result, extra={**extra, "job": job}
        )
    return result


def pings_for(run: dict[str, Any] | None, settings: Settings) -> str | None:
    """The ping URL of a recorded run's job, if that run pings at all."""
    if run is None or run.get("dry_run") or run.get("parent_id") is not None:
        return None
    return settings.job(str(run["job"])).ping_url


def after_sweep(settings: Settings, db: Database, clean: Clean, run_ids: Iterable[int]) -> None:
    """Runs just marked ``abandoned``: a ``/fail`` for each that pings, on its stats."""
    for run_id in run_ids:
        with db.begin() as conn:
            run = ledger.get_run(conn, run_id)
        base = pings_for(run, settings)
        if run is None or base is None:
            continue
        message = f"abandoned: {run.get('error_message') or 'its process died'}"
        result = send(FAIL, base, str(run["job"]), run_id, clean, message)
        done = dict((run.get("stats") or {}).get("pings") or {})
        with db.begin() as conn:
            ledger.note_stats(conn, run_id, {"pings": {**done, FAIL: result}})
