"""Helpers shared by the benchmark scripts (run as scripts: ``python bench/X.py``)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

VENV_BIN = Path(sys.executable).parent


def cpu_model() -> str:
    """The processor's name, for the figures' header."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def uses_embedded() -> bool:
    """No ``DATABASE_URL``: the benchmark runs on the embedded server, as jobctl would."""
    return not os.environ.get("DATABASE_URL")


def jobctl_env(config: Path, data_dir: Path) -> dict[str, str]:
    """The environment jobctl runs in: none of the caller's ``JOBCTL_*``, this config
    and data directory, the venv's ``bin`` first on ``PATH``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCTL_")}
    env["JOBCTL_CONFIG"] = str(config)
    env["JOBCTL_DATA_DIR"] = str(data_dir)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def server_url(data_dir: Path) -> str:
    """The benchmark's database: ``DATABASE_URL`` (checked as jobctl checks it), else
    the embedded server in ``data_dir`` (started if it is not running)."""
    if uses_embedded():
        from jobctl.db.embedded import embedded_url

        url, _ = embedded_url(data_dir)
        return url
    from jobctl.db.engine import normalise_url

    return normalise_url(os.environ["DATABASE_URL"])


def stop_server(data_dir: Path) -> None:
    """Stop the embedded server in ``data_dir`` and wait (up to 10 s) until it is gone."""
    from jobctl.db.embedded import stop_embedded

    if stop_embedded(data_dir):
        for _ in range(100):
            if not (data_dir / "pg" / "postmaster.pid").exists():
                break
            time.sleep(0.1)


def server_settings(conn: psycopg.Connection[Any], names: tuple[str, ...]) -> dict[str, str]:
    """``pg_settings`` values of ``names``, for the figures' header."""
    rows = conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(names),)
    ).fetchall()
    return {str(name): str(setting) for name, setting in rows}
