"""Child processes that never outlive servetune: own session, a run tag, a watchdog, a pid file.

Every server and Locust process servetune starts goes through `spawn`:
* it runs in a session of its own, so a terminal's Ctrl-C reaches servetune only, and servetune
  stops its children in order;
* its environment carries `SERVETUNE_RUN=<tag of this servetune process>` and
  `SERVETUNE_CHILD=<n>`. BentoML's workers and Locust's worker processes inherit them, so every
  process of a tree can be found even once it was re-parented (BentoML's workers run in sessions
  of their own: the process group of `bentoml serve` does not hold them);
* one watchdog process per servetune process (`python -m core.watchdog`, own session) polls its
  parent; when servetune is gone (SIGKILL, OOM kill, crash) it stops every process carrying the
  tag: SIGTERM, then SIGKILL after a grace period;
* inside `recording(path)` the live children are listed in a pid file (`running.json` in a study
  folder, removed at the end of the study) so a later run finds and stops what a killed run
  left (`core.leftovers.stop_leftovers`), and refuses to start while the run that wrote it is
  alive.

Finding processes by their tag is `core.runtags`; stop signals as exceptions, `core.signals`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from core.leftovers import write_running
from core.runtags import CHILD_ENV, RUN_ENV, ProcessInfo, reap, tagged, terminate

REPO_ROOT = Path(__file__).resolve().parent.parent


# -- the children of this process ----------------------------------------------------------------


@dataclass
class _Child:
    info: ProcessInfo
    number: str


class _Children:
    """What this servetune process has started and not yet stopped; feeds the pid files."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.live: dict[int, _Child] = {}
        self.pid_files: list[Path] = []
        self.counter = itertools.count(1)
        self.watchdog: subprocess.Popen[bytes] | None = None
        self._tag: tuple[int, str] | None = None

    @property
    def tag(self) -> str:
        """Unique to this process (a forked copy gets its own)."""
        if self._tag is None or self._tag[0] != os.getpid():
            self._tag = (os.getpid(), f"{os.getpid()}-{secrets.token_hex(6)}")
            self.watchdog = None
        return self._tag[1]

    def write_pid_files(self) -> None:
        with self.lock:
            entries = [c.info.to_dict() for c in self.live.values()]
            for path in self.pid_files:
                write_running(path, self.tag, entries)


_children = _Children()


def run_tag() -> str:
    """The tag every child of this process carries in SERVETUNE_RUN."""
    return _children.tag


def ensure_watchdog() -> None:
    """Start this process's watchdog once (it stops the tagged children when this process dies)."""
    with _children.lock:
        tag = _children.tag
        if _children.watchdog is not None and _children.watchdog.poll() is None:
            return
        env = {k: v for k, v in os.environ.items() if k not in (RUN_ENV, CHILD_ENV)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        _children.watchdog = subprocess.Popen(
            [sys.executable, "-m", "core.watchdog", str(os.getpid()), tag],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, cwd=REPO_ROOT,
        )  # fmt: skip


def spawn(
    cmd: Sequence[str], role: str, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """Popen `cmd` in a new session, tagged, watched, and listed in the active pid files."""
    ensure_watchdog()
    number = str(next(_children.counter))
    child_env = dict(os.environ if env is None else env)
    child_env.update({RUN_ENV: _children.tag, CHILD_ENV: number})
    process: subprocess.Popen[bytes] = subprocess.Popen(
        list(cmd), env=child_env, start_new_session=True, **popen
    )
    info = ProcessInfo.of(process.pid, role) or ProcessInfo(role, process.pid, 0.0, tuple(cmd))
    with _children.lock:
        _children.live[process.pid] = _Child(info, number)
        _children.write_pid_files()
    return process


def tree_cpu_times(root: psutil.Process) -> dict[int, float]:
    """User + system CPU seconds per live process of `root`'s tree (itself included); empty when
    `root` is gone."""
    processes = [root]
    try:
        processes += root.children(recursive=True)
    except psutil.Error:
        return {}
    times: dict[int, float] = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            cpu = process.cpu_times()
            times[process.pid] = cpu.user + cpu.system
    return times


def stop_tree(
    process: subprocess.Popen[bytes], grace_s: float = 10.0, term_group: bool = False
) -> int | None:
    """Stop a spawned child and everything it started; returns its exit code.

    SIGTERM (the child, or its whole process group with `term_group`), up to `grace_s` for it to
    exit, then SIGKILL its process group, its remaining descendants and any process still carrying
    its tag (re-parented BentoML workers in sessions of their own). A stop signal that arrives
    meanwhile does not cut the stop short: it is finished (quicker), then the signal is raised.
    """
    try:
        return _stop_tree(process, grace_s, term_group)
    except KeyboardInterrupt:  # stop_signals ignores repeats, so this second pass runs to the end
        _stop_tree(process, min(grace_s, 2.0), term_group)
        raise


def _stop_tree(process: subprocess.Popen[bytes], grace_s: float, term_group: bool) -> int | None:
    with _children.lock:
        child = _children.live.get(process.pid)
    members: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        members = psutil.Process(process.pid).children(recursive=True)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if term_group:
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5.0)

    def left() -> list[psutil.Process]:
        found = [m for m in members if m.is_running() and m.status() != psutil.STATUS_ZOMBIE]
        if child is not None:
            found += [p for p in tagged(_children.tag, child.number) if p not in found]
        return found

    with contextlib.suppress(psutil.Error):
        remaining = left()
        if remaining:
            terminate(remaining, 0.0, left)
    release(process)
    return process.returncode


def release(process: subprocess.Popen[bytes]) -> None:
    """Forget a stopped child (and update the pid files)."""
    with _children.lock:
        if _children.live.pop(process.pid, None) is not None:
            _children.write_pid_files()


# -- the pid file of a study ---------------------------------------------------------------------


@contextlib.contextmanager
def recording(path: Path) -> Iterator[None]:
    """List this process's live children in `path` while the block runs; remove it at the end."""
    with _children.lock:
        _children.pid_files.append(path)
        _children.write_pid_files()
    try:
        yield
    finally:
        with _children.lock:
            _children.pid_files.remove(path)
        path.unlink(missing_ok=True)


# -- the watchdog ---------------------------------------------------------------------------------


def watch(parent: int, tag: str, interval_s: float = 0.5, grace_s: float = 3.0) -> None:
    """Wait until `parent` is gone (this process is re-parented), then stop its tagged children."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while os.getppid() == parent:
        time.sleep(interval_s)
    reap(tag, grace_s)
