"""Whether a starting server is still getting somewhere: the CPU its processes use.

A server's start has no duration one could fix in advance (a big model on a slow VM loads for
minutes), but a start that does nothing at all is hung: a `bentoml serve` whose worker sleeps in
its constructor used 0.01 CPU seconds in 45 s, while loading MiniLM uses whole cores. So the wait
for /readyz goes on while the process tree keeps using CPU, up to a generous cap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from core.processes import tree_cpu_times

READY_TIMEOUT_S = 600.0  # the longest a start may take while it keeps working
STALL_S = 60.0  # a start whose processes used under STALL_CPU_S of CPU in this long is hung
STALL_CPU_S = 0.5


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` and its live descendants; None when it is gone."""
    try:
        times = tree_cpu_times(psutil.Process(pid))
    except psutil.Error:
        return None
    return sum(times.values()) if times else None


@dataclass
class StartProgress:
    """Tells a start that stopped using CPU (`stalled`) from one that keeps working."""

    pid: int
    window_s: float = STALL_S
    min_cpu_s: float = STALL_CPU_S
    clock: Callable[[], float] = time.monotonic
    cpu_seconds: Callable[[int], float | None] = tree_cpu_seconds
    _since: float | None = None  # when the CPU used last moved by min_cpu_s
    _base: float = 0.0  # the CPU seconds then

    def stalled(self) -> bool:
        """True once the tree has used under `min_cpu_s` in the last `window_s` seconds."""
        now, used = self.clock(), self.cpu_seconds(self.pid)
        if used is None:
            return False  # the process is gone: the caller's exit check says why
        if self._since is None or used < self._base or used - self._base >= self.min_cpu_s:
            self._since, self._base = now, used  # a child that exited takes its CPU with it
            return False
        return now - self._since >= self.window_s

    def idle_s(self) -> float:
        """Seconds since the tree last used `min_cpu_s` of CPU."""
        return 0.0 if self._since is None else self.clock() - self._since
