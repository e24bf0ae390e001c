"""Signals as exceptions in the main thread, only while it is safe to raise them.

SIGTERM / SIGINT cancel a run (exit 143 / 130), SIGALRM enforces ``--timeout``,
and the heartbeat thread uses SIGUSR2 to stop a run whose lock connection died.
Between *armed* phases (while the runner writes the ledger) a signal is kept
pending and raised at the next :meth:`Interrupts.arm`, so a run row is never
left half-written.
"""

from __future__ import annotations

import _thread
import signal
import threading
from datetime import timedelta
from types import FrameType
from typing import Any

from jobctl.durations import format_duration
from jobctl.errors import ExitCode, JobError, JobTimeout, RunCancelled


class Interrupts:
    """Turns signals into exceptions in the main thread, only while it is safe."""

    def __init__(self) -> None:
        self.armed = False
        self.pending: RunCancelled | JobError | None = None
        self._old: dict[int, Any] = {}
        self.installed = False
        self.timer_set = False

    def _raise(self, exc: RunCancelled | JobError) -> None:
        if self.armed:
            self.armed = False
            raise exc
        self.pending = self.pending or exc

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTERM:
            self._raise(RunCancelled("SIGTERM", ExitCode.SIGTERM))
        elif signum == signal.SIGINT:
            self._raise(RunCancelled("SIGINT", ExitCode.SIGINT))

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGUSR2):
            self._old[sig] = signal.getsignal(sig)
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        self.installed = True

    def restore(self) -> None:
        if self.installed and self.timer_set:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()
        self.installed = False

    def arm(self) -> None:
        """From now on a signal raises at once (a pending one raises now)."""
        self.armed = True
        if self.pending is not None:
            exc, self.pending = self.pending, None
            self.armed = False
            raise exc

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

    def on_lock_lost(self, message: str) -> None:
        """Called from the heartbeat thread: stop the main thread's run."""
        if not self.installed:
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self._raise(JobError(message))

        signal.signal(signal.SIGUSR2, handler)
        _thread.interrupt_main(signal.SIGUSR2)
