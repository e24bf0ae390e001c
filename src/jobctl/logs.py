"""Logging set-up (text or JSON lines on stderr) and the per-run log tail.

Both handlers carry a :class:`SecretFilter` around the invocation's one
:class:`~jobctl.redact.Redactor`: the message, the formatted traceback and the stack
of every record are redacted before any formatter sees them.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO

from jobctl.redact import Redactor


def _redactor(secrets: Redactor | Iterable[str]) -> Redactor:
    return secrets if isinstance(secrets, Redactor) else Redactor(secrets)


class SecretFilter(logging.Filter):
    """Removes known secret values and URL credentials from every record."""

    def __init__(self, secrets: Redactor | Iterable[str] = ()) -> None:
        super().__init__()
        self.redactor = _redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_jobctl_redacted", None) is self.redactor:
            return True  # already done by another handler with the same redactor
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: show the template, never the args
            message = str(record.msg)
        record.msg, record.args = self.redactor.text(message), None
        if record.exc_info and not record.exc_text:
            # Formatted here, once, so that no formatter prints the raw traceback.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        record.__dict__["_jobctl_redacted"] = self.redactor
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("action", "run_id", "job"):
            if hasattr(record, key):
                doc[key] = getattr(record, key)
        if record.exc_info and record.levelno >= logging.ERROR:
            # exc_text: the traceback as the SecretFilter redacted it
            doc["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (as ``logging.lastResort``)."""

    _jobctl = True

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup_logging(verbosity: int, fmt: str, secrets: Redactor | Iterable[str] = ()) -> None:
    """Configure the ``jobctl`` logger tree once per process (stderr only).

    ``secrets``: the invocation's redactor (or the values to build one from). The same
    handler serves the root logger, so that warnings a user job logs under its own
    logger name are redacted too (instead of reaching ``logging.lastResort`` raw).
    """
    root = logging.getLogger("jobctl")
    for logger in (root, logging.getLogger()):
        for handler in list(logger.handlers):
            if getattr(handler, "_jobctl", False):
                logger.removeHandler(handler)
    stderr = _StderrHandler()
    stderr.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    stderr.addFilter(SecretFilter(secrets))
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    stderr.setLevel(level)
    root.addHandler(stderr)
    logging.getLogger().addHandler(stderr)
    # The logger itself passes INFO on: the run's log tail keeps it even under -q.
    root.setLevel(min(level, logging.INFO))
    root.propagate = False


class TailHandler(logging.Handler):
    """Keeps the last ``size`` lines a run logged, for ``runs show``."""

    def __init__(self, size: int, secrets: Redactor | Iterable[str] = ()) -> None:
        super().__init__(logging.DEBUG)
        self.lines: deque[str] = deque(maxlen=max(1, size))
        self._lock_tail = threading.Lock()
        self.addFilter(SecretFilter(secrets))
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.INFO:
            return
        try:
            line = self.format(record)
        except Exception:  # a bad format string must not break the run
            line = str(record.msg)
        with self._lock_tail:
            self.lines.append(line[:2000])

    def snapshot(self) -> list[str]:
        with self._lock_tail:
            return list(self.lines)
