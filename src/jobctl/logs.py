"""Logging set-up (text or JSON lines on stderr) and the per-run log tail."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime

from jobctl.redact import redact_text


class SecretFilter(logging.Filter):
    """Removes configured secrets and URL credentials from every record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
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
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")


def setup_logging(verbosity: int, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Configure the ``jobctl`` logger tree once per process (stderr only)."""
    root = logging.getLogger("jobctl")
    for handler in list(root.handlers):
        if getattr(handler, "_jobctl", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._jobctl = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretFilter(secrets))
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler.setLevel(level)
    root.addHandler(handler)
    # The logger itself passes INFO on: the run's log tail keeps it even under -q.
    root.setLevel(min(level, logging.INFO))
    root.propagate = False


class TailHandler(logging.Handler):
    """Keeps the last ``size`` lines a run logged, for ``runs show``."""

    def __init__(self, size: int, secrets: Iterable[str] = ()) -> None:
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
