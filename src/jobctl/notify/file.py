"""File "delivery": each message appended to a local text file.

For a host without a mail server (the example, a laptop), or a log shipper that reads
the file. One ``write`` per message under an exclusive ``flock``, so messages from
two processes never interleave.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from jobctl.notify import DeliveryFailed


def send(
    path: Path,
    subject: str,
    body: str,
    clean: Callable[[str], str],
    *,
    to: str | None = None,
) -> int:
    """Append one message; 1 (the tries it took, as the other channels count)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    head = f"==> {stamp}" + (f"  To: {to}" if to else "") + f"  Subject: {subject}"
    block = clean(f"{head}\n{body.rstrip()}\n\n")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # an outbox directory, first time
        with path.open("a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(block)
            handle.flush()
    except OSError as exc:
        raise DeliveryFailed(clean(f"file {path}: {exc.strerror or exc}")) from None
    return 1
