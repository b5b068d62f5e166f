"""Processes of one servetune run: found by the run tag in their environment, told apart from a
later process with a recycled pid, and stopped (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import psutil

RUN_ENV = "SERVETUNE_RUN"
CHILD_ENV = "SERVETUNE_CHILD"


@dataclass(frozen=True)
class ProcessInfo:
    """A process as recorded: pid plus what tells it apart from a later process with that pid."""

    role: str
    pid: int
    create_time: float
    cmdline: tuple[str, ...]

    @classmethod
    def of(cls, pid: int, role: str) -> ProcessInfo | None:
        try:
            proc = psutil.Process(pid)
            return cls(role, pid, proc.create_time(), tuple(proc.cmdline()))
        except psutil.Error:
            return None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessInfo:
        return cls(str(data["role"]), int(data["pid"]), float(data["create_time"]), tuple(data["cmdline"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"cmdline": list(self.cmdline)}

    def process(self) -> psutil.Process | None:
        """The live process if it is still this one (same start time and command line)."""
        try:
            proc = psutil.Process(self.pid)
            same = abs(proc.create_time() - self.create_time) < 0.01 and tuple(proc.cmdline()) == self.cmdline
        except psutil.Error:
            return None
        return proc if same and proc.status() != psutil.STATUS_ZOMBIE else None

    def describe(self) -> str:
        return f"{self.role} (pid {self.pid})"


def _environ(proc: psutil.Process) -> dict[str, str]:
    with contextlib.suppress(psutil.Error, OSError):
        return proc.environ()
    return {}


def tagged(tag: str, child: str | None = None) -> list[psutil.Process]:
    """Live processes (other than this one) whose environment carries `tag` (and child `child`)."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        env = _environ(proc)
        if env.get(RUN_ENV) == tag and (child is None or env.get(CHILD_ENV) == child):
            with contextlib.suppress(psutil.Error):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
    return found


def terminate(
    procs: Iterable[psutil.Process], grace_s: float, rescan: Callable[[], list[psutil.Process]]
) -> None:
    """SIGTERM `procs`, SIGKILL what is left after `grace_s`, then whatever `rescan` still finds
    (a BentoML arbiter may start a worker while it is told to stop)."""
    procs = list(procs)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for _ in range(3):
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=3.0)
        alive = rescan()
        if not alive:
            return


def reap(tag: str, grace_s: float = 3.0) -> list[psutil.Process]:
    """Stop every process carrying `tag` (what the watchdog does once servetune is gone)."""
    found = tagged(tag)
    if found:
        terminate(found, grace_s, lambda: tagged(tag))
    return found
