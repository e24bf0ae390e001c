"""The one exception tree of jobctl, and the exit codes it maps to.

::

    JobctlError                      exit 1 unless a subclass says otherwise
    ├── UsageError                   exit 2  bad option value, unknown job, bad date
    │   └── ConfigError              exit 2  bad key/type/value in jobctl.toml or env
    ├── DatabaseError                exit 1  server unreachable, query failed
    │   └── DatabaseUnreachable      exit 2  cannot connect at all (documented)
    ├── RunCancelled                 exit 130/143 SIGINT / SIGTERM
    └── JobError                     exit 1  the job itself failed
        ├── TransientError           retried by the runner (network blip, 5xx …)
        ├── JobTimeout               the run exceeded --timeout
        ├── LockLost                 the run's lock went away (connection killed, server restarted)
        ├── SourceError              a feed could not be fetched (transient or not)
        └── DocumentError            a feed is malformed as a whole
            └── UndecodableFeed      its bytes are not text in the encoding read

Every error carries the data that explains it and the exit code it maps to;
:func:`exit_code_of` is the one function that reads it, for ``cli.main`` (an error
raised by a command) and the runner (an error that ended a run) alike.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    LOCKED = 75
    SIGINT = 130
    SIGTERM = 143


class JobctlError(Exception):
    """Base of every error jobctl raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(JobctlError):
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """A bad configuration value; names the key and the file (or env variable)."""

    def __init__(self, message: str, *, key: str | None = None, origin: str | None = None) -> None:
        where = ""
        if key and origin:
            where = f"{origin}: {key}: "
        elif key:
            where = f"{key}: "
        elif origin:
            where = f"{origin}: "
        super().__init__(where + message)
        self.key = key
        self.origin = origin


class DatabaseError(JobctlError):
    exit_code = ExitCode.FAILED


class DatabaseUnreachable(DatabaseError):
    """Cannot connect at all: a configuration problem for the operator, exit 2."""

    exit_code = ExitCode.USAGE


class RunCancelled(JobctlError):
    def __init__(self, signum_name: str, exit_code: ExitCode) -> None:
        super().__init__(f"interrupted by {signum_name}")
        self.signal_name = signum_name
        self.exit_code = exit_code


class JobError(JobctlError):
    """A job failed. ``transient`` errors are retried by the runner."""

    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class TransientError(JobError):
    transient = True


class JobTimeout(JobError):
    pass


class LockLost(JobError):
    """The run no longer holds its job's lock: it must stop and must not commit."""


class SourceError(JobError):
    """A feed could not be fetched. ``transient`` says whether a retry may help."""


class DocumentError(JobError):
    """A feed document is malformed as a whole (truncated JSON, bad encoding)."""


class UndecodableFeed(DocumentError):
    """A feed's bytes are not text in the encoding it is read in."""


def exit_code_of(exc: BaseException) -> ExitCode:
    """The exit code an error maps to: a jobctl error's own ``exit_code``.

    The only place that decides it: a :class:`DatabaseUnreachable` raised inside a
    job exits 2 just as one raised before the run does.
    """
    if isinstance(exc, JobctlError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.SIGINT
    return ExitCode.FAILED
