"""Signals as exceptions in the main thread, only while it is safe to raise them.

SIGTERM / SIGINT cancel a run (exit 143 / 130), SIGALRM enforces ``--timeout``,
and the heartbeat thread sends SIGUSR2 to the main thread to stop a run whose
lock is gone. Between *armed* phases (while the runner writes the ledger) a
signal is kept pending and raised at the next :meth:`Interrupts.arm`, so a run
row is never left half-written.

The exception raised is an :class:`Interruption`, a ``KeyboardInterrupt``
carrying the real cause (:class:`RunCancelled`, :class:`JobTimeout`,
:class:`LockLost`). It is a ``KeyboardInterrupt`` on purpose: when it arrives
while psycopg waits for a statement, psycopg cancels that statement on the
server and reads the cancellation back before letting it through, so the
server stops working at once and the connection can roll back cleanly; and a
job's own ``except Exception`` cannot swallow it.
"""

from __future__ import annotations

import signal
import threading
from datetime import timedelta
from types import FrameType
from typing import Any

from jobctl.durations import format_duration
from jobctl.errors import ExitCode, JobError, JobTimeout, LockLost, RunCancelled

#: What an interruption carries: why the run must stop.
Cause = RunCancelled | JobError


class Interruption(KeyboardInterrupt):
    """Raised in the main thread by a signal; ``cause`` says what to record."""

    def __init__(self, cause: Cause) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Interrupts:
    """Turns signals into exceptions in the main thread, only while it is safe."""

    def __init__(self) -> None:
        self.armed = False
        self.pending: Cause | None = None
        self._old: dict[int, Any] = {}
        self.installed = False
        self.timer_set = False
        self._lost: str | None = None
        self._main_ident: int | None = None

    def _raise(self, cause: Cause) -> None:
        if self.armed:
            self.armed = False
            raise Interruption(cause)
        self.pending = self.pending or cause

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTERM:
            self._raise(RunCancelled("SIGTERM", ExitCode.SIGTERM))
        elif signum == signal.SIGINT:
            self._raise(RunCancelled("SIGINT", ExitCode.SIGINT))
        elif signum == signal.SIGUSR2:
            if self._lost is not None:
                self._raise(LockLost(self._lost))
                return
            # A child run's handler: the parent's heartbeat saw the parent's lock go.
            outer = self._old.get(signal.SIGUSR2)
            if callable(outer):
                outer(signum, frame)

    def install(self) -> None:
        """Take over the signals (main thread only; elsewhere this is a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGUSR2):
            self._old[sig] = signal.getsignal(sig)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            signal.signal(sig, self.on_signal)
        self._main_ident = threading.main_thread().ident
        self.installed = True

    def restore(self) -> None:
        if self.installed and self.timer_set:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.timer_set = False
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()
        self.installed = False

    def arm(self) -> None:
        """From now on a signal raises at once (a pending one raises now)."""
        self.armed = True
        if self.pending is not None:
            cause, self.pending = self.pending, None
            self.armed = False
            raise Interruption(cause)

    def disarm(self) -> None:
        self.armed = False

    def set_timeout(self, timeout: timedelta | None) -> None:
        if timeout is None or not self.installed:
            return
        seconds = max(timeout.total_seconds(), 0.001)
        message = f"timed out after {format_duration(timeout)}"

        def on_alarm(signum: int, frame: FrameType | None) -> None:
            self._raise(JobTimeout(message))

        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        self.timer_set = True

    def clear_timeout(self) -> None:
        if self.timer_set:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.timer_set = False

    @property
    def lock_lost(self) -> str | None:
        """Why the lock was lost, once the heartbeat has seen it go."""
        return self._lost

    def on_lock_lost(self, message: str) -> None:
        """Called from the heartbeat thread: stop the main thread's run.

        ``pthread_kill`` delivers a real SIGUSR2 to the main thread, whose handler
        (installed there) raises; a blocking wait in the main thread (a sleep, a
        socket read inside psycopg) returns with EINTR and sees it at once.
        """
        self._lost = message
        if self.installed and self._main_ident is not None:
            signal.pthread_kill(self._main_ident, signal.SIGUSR2)
