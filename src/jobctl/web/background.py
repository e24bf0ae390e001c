"""Runs started from the web (``POST /api/jobs/{name}/runs``), in the background.

Each run is a child process, ``python -m jobctl --log-format json run NAME --trigger
web --by WHO [--param K=V]...``: the very command an operator would type, so it goes
through the runner like any other run (lock, ledger row, retries, timeout, alerts,
pings), and the runner keeps what it needs from its process: the main thread, its
signal handlers (SIGTERM cancels, SIGALRM times out, SIGUSR2 stops a run whose lock
is lost). A job that crashes or leaks takes nothing of the server with it.

The child's stderr is a stream of JSON lines; the first that names a run decides the
answer: ``run.started`` → 202 with its id (the row exists, ``running``);
``run.outcome`` first → the run ended before starting work: 409 when skipped (its
lock is held: the message names the holder's run id, host, pid and age; or the job
is disabled), else 202 with the ended run; a jobctl ``error`` (exit 2) → 422 with the
CLI's message. Every line is passed on to the server's own log.

When the server stops (SIGTERM, SIGINT: uvicorn's shutdown), :meth:`WebRuns.close`
sends SIGTERM to every child, whose runner records its run ``cancelled`` and releases
the lock; a child still alive after ``stop_timeout`` is killed, and the sweep that
follows marks its run ``abandoned`` (its lock went with its connection). If the
server itself is killed, its children finish their runs and record them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

from jobctl.errors import ExitCode, UsageError
from jobctl.jobspec import Trigger

if TYPE_CHECKING:
    from jobctl.app import App
    from jobctl.web.requests import RunRequest

log = logging.getLogger("jobctl.web")

#: How long a request waits for its run's row (a child's start-up takes ~0.5 s).
START_TIMEOUT = 60.0
#: How long a stopping server waits for its runs to record their cancellation.
STOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Started:
    """The answer to a web trigger."""

    job: str
    run_id: int | None
    status: str
    http_status: int
    message: str | None = None
    holder: dict[str, Any] | None = None

    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"job": self.job, "run_id": self.run_id, "status": self.status}
        if self.http_status >= 400:
            doc = {"detail": self.message, **doc, "holder": self.holder}
        elif self.message:
            doc["message"] = self.message
        return doc


@dataclass
class _Child:
    job: str
    process: subprocess.Popen[str]
    #: the first line naming the run, once seen
    first: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None
    error: str | None = None
    decided: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)


class WebRuns:
    """The runs this server started and that are still going."""

    def __init__(
        self, app: App, *, start_timeout: float = START_TIMEOUT, stop_timeout: float = STOP_TIMEOUT
    ) -> None:
        self.app = app
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._children: dict[int, _Child] = {}
        self._lock = threading.Lock()
        self._closing = False

    # -- starting --------------------------------------------------------------------
    def start(self, job: str, request: RunRequest, *, by: str) -> Started:
        """Start ``job`` as ``by``; checked first as ``jobctl schedule add`` checks."""
        self._check(job, request)
        with self._lock:
            if self._closing:
                raise HTTPException(503, "the server is stopping: no new runs")
            child = self._spawn(job, request, by)
            self._children[child.process.pid] = child
        threading.Thread(
            target=self._follow, args=(child,), name=f"jobctl-web-run-{job}", daemon=True
        ).start()
        if not child.decided.wait(self.start_timeout):
            raise HTTPException(
                504, f"the run of {job!r} did not start within {self.start_timeout:.0f}s"
            )
        return self._answer(child)

    def _check(self, job: str, request: RunRequest) -> None:
        from jobctl.registry import builtin_jobs
        from jobctl.scheduling import check_job

        app = self.app
        if job not in builtin_jobs() and job not in app.jobs:
            from jobctl.registry import resolve_job

            try:
                resolve_job(job, app.jobs, app.settings)
            except UsageError as exc:
                raise HTTPException(404, exc.message) from None
        check_job(app, job, request.params)

    def _spawn(self, job: str, request: RunRequest, by: str) -> _Child:
        settings = self.app.settings
        argv = [sys.executable, "-m", "jobctl", "--log-format", "json"]
        if settings.config_path is not None:
            argv += ["--config", str(settings.config_path.resolve())]
        argv += ["run", job, "--trigger", str(Trigger.WEB), "--by", by]
        for key, value in request.params.items():
            argv += ["--param", f"{key}={value}"]
        env = dict(settings.env)  # the settings' environment: real over .env
        env.pop("DATABASE_URL", None)
        if settings.database_url:
            env["DATABASE_URL"] = settings.database_url  # never on the command line
        env.pop("INVOCATION_ID", None)  # systemd's: would make the trigger "timer"
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        log.info(
            "%s: started as pid %s for %s",
            job,
            process.pid,
            by,
            extra={"action": "web.run.spawned", "job": job},
        )
        return _Child(job, process)

    def _follow(self, child: _Child) -> None:
        """Read the child's log lines to its end; the first that names a run decides."""
        assert child.process.stderr is not None
        try:
            for line in child.process.stderr:
                self._line(child, line.rstrip("\n"))
            child.process.wait()
        finally:
            with self._lock:
                self._children.pop(child.process.pid, None)
            child.ended.set()
            child.decided.set()

    def _line(self, child: _Child, line: str) -> None:
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            if line.strip():
                log.warning("%s (pid %s): %s", child.job, child.process.pid, line)
            return
        action = doc.get("action")
        if action == "run.outcome":
            child.outcome = doc
        elif action == "error" and child.error is None:
            child.error = str(doc.get("message", "")).removeprefix("jobctl: error: ")
        if child.first is None and (
            (action == "run.started" and doc.get("run_id")) or action == "run.outcome"
        ):
            child.first = doc
            child.decided.set()
        # An error (exit 2, no run): decided when the process has ended (_follow), so
        # that its exit status is known.
        level = logging.getLevelName(str(doc.get("level", "info")).upper())
        fields = {k: doc[k] for k in ("action", "run_id") if k in doc}
        log.log(
            level if isinstance(level, int) else logging.INFO,
            "%s",
            doc.get("message", ""),
            extra={**fields, "job": child.job},
        )

    def _answer(self, child: _Child) -> Started:
        first = child.first or {}
        if first.get("action") == "run.started":
            return Started(child.job, int(first["run_id"]), "running", 202)
        outcome = child.outcome
        if outcome is not None:
            status = str(outcome.get("status"))
            message = _outcome_message(outcome)
            run_id = outcome.get("run_id")
            if outcome.get("exit_code") == ExitCode.LOCKED:
                return Started(child.job, run_id, status, 409, message, self._holder(child.job))
            if status == "skipped":
                return Started(child.job, run_id, status, 409, message)
            return Started(child.job, run_id, status, 202, message)
        code = child.process.poll()
        if child.error is not None and code == ExitCode.USAGE:
            raise UsageError(child.error)
        why = child.error or f"it exited with status {code} before recording a run"
        raise HTTPException(500, f"the run of {child.job!r} could not start: {why}")

    def _holder(self, job: str) -> dict[str, Any] | None:
        """Who holds the job's lock now: run id, host, pid, when and how long ago."""
        from dataclasses import asdict

        from jobctl.db import ledger
        from jobctl.db.locks import lock_key

        with self.app.db.plain() as conn:
            holder = ledger.lock_holder(conn, job, lock_key(job))
        found = asdict(holder)
        return found if any(v is not None for v in found.values()) else None

    # -- stopping --------------------------------------------------------------------
    def running(self) -> list[int]:
        """The pids of the children still running."""
        with self._lock:
            return list(self._children)

    def close(self) -> None:
        """Cancel every run still going (SIGTERM), kill what outlives ``stop_timeout``."""
        with self._lock:
            self._closing = True
            children = list(self._children.values())
        for child in children:
            log.warning(
                "%s: stopping its web-triggered run (pid %s)",
                child.job,
                child.process.pid,
                extra={"action": "web.run.stop", "job": child.job},
            )
            _signal(child.process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        killed = False
        for child in children:
            if not child.ended.wait(max(0.0, deadline - time.monotonic())):
                _signal(child.process, signal.SIGKILL)
                killed = True
                child.ended.wait(5.0)
        if killed:
            # The killed runs' locks went with their connections: marked abandoned now.
            self.app.read_ledger(lambda conn: None)


def _signal(process: subprocess.Popen[str], signum: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.kill(process.pid, signum)


def _outcome_message(outcome: dict[str, Any]) -> str:
    """The run's own message from a ``run.outcome`` line (after ``job: status (run N): ``)."""
    text = str(outcome.get("message", ""))
    _, sep, rest = text.partition("): ")
    return rest if sep else text
