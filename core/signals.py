"""Stop signals as exceptions: SIGTERM, SIGHUP and SIGINT raise `StopSignal` (a KeyboardInterrupt).

`stop_signals` installs the handlers, so the commands' `with`/`finally` blocks stop their children
on every kind of stop, not only on Ctrl-C; `exit_code` and `stop_reason` turn one into the
process's exit status and a word for people.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any


class StopSignal(KeyboardInterrupt):
    """SIGTERM/SIGHUP/SIGINT delivered to servetune, raised where Ctrl-C would be."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(exc: BaseException) -> int:
    """128 + the signal number (143 for SIGTERM); 130 for a plain Ctrl-C."""
    return 128 + exc.signum if isinstance(exc, StopSignal) else 128 + signal.SIGINT


def stop_reason(exc: BaseException) -> str:
    """`SIGTERM`, `SIGINT`, ... for people."""
    return signal.Signals(exc.signum).name if isinstance(exc, StopSignal) else "SIGINT"


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals(signals: Sequence[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """Raise StopSignal on the first of `signals`; ignore repeats while the cleanup runs.

    A signal that is ignored on entry (a background job's SIGINT) stays ignored; outside the main
    thread nothing is installed (Python delivers signals to the main thread only).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            with contextlib.suppress(OSError):
                os.write(2, b"servetune: already stopping; the server and Locust are being stopped\n")
            return
        stopping = True
        raise StopSignal(signum)

    previous: dict[signal.Signals, Any] = {}
    for signum in signals:
        current = signal.getsignal(signum)
        if current == signal.SIG_IGN:
            continue
        previous[signum] = current
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
