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


def stop_embedded_server(data_dir: Path) -> None:
    """Stop the embedded server of ``data_dir`` (if this run started one) and wait for it."""
    import time

    from jobctl.db.embedded import stop_embedded

    if stop_embedded(data_dir):
        for _ in range(100):
            if not (data_dir / "pg" / "postmaster.pid").exists():
                return
            time.sleep(0.1)
