"""COPY text format for the feed store: escaping, batching, spooling, thread switches.

The lines are PostgreSQL ``COPY … FROM STDIN`` text format: tab-separated fields,
backslash escapes. Keys are escaped here; canonical JSON has no raw control
characters, so only its backslashes need doubling.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import xxhash

BATCH_BYTES = 1 << 20
_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_key(key: tuple[str, ...]) -> str:
    return "\t".join([k.translate(_ESCAPE) for k in key])


class Batcher:
    """Joins lines into writes of ``limit`` bytes (1 MiB) to ``write`` (a COPY, a file)."""

    def __init__(self, write: Callable[[bytes], Any], limit: int = BATCH_BYTES) -> None:
        self._write = write
        self._limit = limit
        self.buffer: list[bytes] = []
        self.size = 0

    def add(self, line: bytes) -> None:
        self.buffer.append(line)
        self.size += len(line)
        if self.size >= self._limit:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self._write(b"".join(self.buffer))
            self.buffer.clear()
            self.size = 0


class Spool(Batcher):
    """COPY lines kept on disk for later: a first load's repeated keys, and the rows
    of the batches a re-sync defers (:mod:`jobctl.db.resync`; the batches it
    compares as they come are sent from memory and never spooled)."""

    def __init__(self, directory: Path | None) -> None:
        # Closed by close(); a context manager would not fit the spool's lifetime.
        self.file: IO[bytes] = tempfile.TemporaryFile(  # noqa: SIM115
            prefix="jobctl-spool-", dir=directory
        )
        super().__init__(self.file.write)

    def selected(self, wanted: bytearray | None = None) -> Iterator[bytes]:
        """The spooled lines whose ordinal's bit is set in ``wanted`` (all if None)."""
        self.flush()
        self.file.seek(0)
        for ordinal, line in enumerate(self.file):
            if wanted is None or wanted[ordinal >> 3] & (1 << (ordinal & 7)):
                yield line

    def close(self) -> None:
        self.file.close()


@contextmanager
def quick_thread_switches() -> Iterator[None]:
    """Let a thread that talks to the server take the GIL within 0.2 ms instead of 5 ms.

    The main thread parses and formats rows without pause; with CPython's default
    5 ms switch interval a thread that needs the GIL briefly for every buffer it
    hands to libpq (the re-sync's worker, :mod:`jobctl.db.resync`) waits most of
    that time and the server starves. Measured on the 237k-record feed when the
    first load still had a writer thread: 4.4 s → 3.2–3.6 s.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _copy_keys(key: tuple[str, ...]) -> str:
    """The key fields, tab-joined, escaped only if a part needs it.

    Each part is tested, not the joined text: that always holds a tab for a key of
    two or more fields, and would send every such key down the slow, escaping path.
    A printable part without a backslash has nothing to escape (tab, newline and
    carriage return are not printable); any other part (rare: a control or an
    unprintable character, a backslash) sends the key through :func:`copy_key`.
    """
    for part in key:
        if "\\" in part or not part.isprintable():
            return copy_key(key)
    return "\t".join(key)


def copy_head(prefix: str, key: tuple[str, ...], data: bytes) -> bytes:
    """The COPY text fields before ``data``: [partition,] keys, hash (no trailing tab).

    The hash is :func:`jobctl.sources.records.canonical_hash` of the record (XXH3-128).
    """
    if not key:  # the date alone is the key: no trailing separator after it
        prefix = prefix[:-1]
    return f"{prefix}{_copy_keys(key)}\t\\\\x{xxhash.xxh3_128_hexdigest(data)}".encode()


def copy_data(data: bytes) -> bytes:
    # Canonical JSON has no raw control characters; only backslashes need escaping.
    return data.replace(b"\\", b"\\\\") if b"\\" in data else data


def copy_line(prefix: str, key: tuple[str, ...], data: bytes) -> bytes:
    # One join: ``head + b"\t" + data + b"\n"`` would copy the ~1 kB of data twice.
    return b"".join((copy_head(prefix, key, data), b"\t", copy_data(data), b"\n"))
