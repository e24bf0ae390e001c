"""Helpers shared by the benchmark scripts (run as scripts: ``python bench/X.py``)."""

from __future__ import annotations

from pathlib import Path


def cpu_model() -> str:
    """The processor's name, for the figures' header."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"
