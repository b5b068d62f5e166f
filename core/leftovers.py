"""The pid file of a study (`running.json`): what a run has started, written while it runs, and
read back by a later run to stop what a killed one left (`stop_leftovers`)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from core.runtags import ProcessInfo, tagged, terminate

RUNNING_FILE = "running.json"
Say = Callable[[str], None]


def write_running(path: Path, tag: str, entries: list[dict[str, Any]]) -> None:
    owner = ProcessInfo.of(os.getpid(), "servetune")
    payload = {
        "owner": owner.to_dict() if owner else None,
        "tag": tag,
        "processes": entries,
        "written_at": time.time(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


class StillRunning(RuntimeError):
    """The run that wrote a pid file is still alive: its processes are not leftovers."""


@dataclass(frozen=True)
class RunningFile:
    """A pid file as read back."""

    owner: ProcessInfo | None
    tag: str
    processes: tuple[ProcessInfo, ...]

    @classmethod
    def read(cls, path: Path) -> RunningFile | None:
        try:
            data = json.loads(path.read_text())
            owner = ProcessInfo.from_dict(data["owner"]) if data.get("owner") else None
            procs = tuple(ProcessInfo.from_dict(p) for p in data.get("processes", []))
            return cls(owner, str(data.get("tag", "")), procs)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def leftovers(self) -> list[psutil.Process]:
        """Live processes of that run: carrying its tag, or recorded and still the same process."""
        found = tagged(self.tag) if self.tag else []
        pids = {p.pid for p in found}
        for info in self.processes:
            proc = info.process()
            if proc is not None and proc.pid not in pids:
                found.append(proc)
                pids.add(proc.pid)
        return found


def stop_leftovers(path: Path, say: Say, grace_s: float = 5.0) -> list[ProcessInfo]:
    """Stop what a killed run left (per its pid file at `path`), say so, remove the file.

    Raises StillRunning when the run that wrote the file is alive (it is not a leftover).
    Returns what was stopped.
    """
    if not path.exists():
        return []
    running = RunningFile.read(path)
    if running is None:
        say(f"{path}: unreadable pid file of an interrupted run; removed")
        path.unlink(missing_ok=True)
        return []
    owner = running.owner.process() if running.owner is not None else None
    if owner is not None and owner.pid != os.getpid():
        raise StillRunning(f"servetune (pid {owner.pid}) is still running this study ({path}); stop it first")
    procs = running.leftovers()
    stopped = [ProcessInfo.of(p.pid, _role(p, running)) for p in procs]
    recorded = ", ".join(p.describe() for p in running.processes) or "no process"
    if procs:
        terminate(procs, grace_s, running.leftovers)
        names = ", ".join(s.describe() for s in stopped if s is not None)
        say(f"stopped {len(procs)} process(es) left by an interrupted run ({path}): {names}")
    elif running.processes:
        say(f"the processes of an interrupted run ({recorded}, from {path}) are already gone")
    else:
        say(f"{path}: an interrupted run left no process running")
    path.unlink(missing_ok=True)
    return [s for s in stopped if s is not None]


def _role(proc: psutil.Process, running: RunningFile) -> str:
    for info in running.processes:
        if info.pid == proc.pid:
            return info.role
    with contextlib.suppress(psutil.Error):
        cmd = " ".join(proc.cmdline())
        if "_bentoml_impl.worker" in cmd:
            return "server worker"
        if "locust" in cmd:
            return "locust"
    return "child"
