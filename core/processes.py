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
  left (`stop_leftovers`), and refuses to start while the run that wrote it is alive.

`stop_signals` turns SIGTERM and SIGHUP into a KeyboardInterrupt (`StopSignal`) so the commands'
`with`/`finally` blocks stop the children on every kind of stop, not only on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

RUN_ENV = "SERVETUNE_RUN"
CHILD_ENV = "SERVETUNE_CHILD"
RUNNING_FILE = "running.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
Say = Callable[[str], None]


# -- signals -------------------------------------------------------------------------------------


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


# -- identity of processes -----------------------------------------------------------------------


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
                _write_running(path, self.tag, entries)


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


def _write_running(path: Path, tag: str, entries: list[dict[str, Any]]) -> None:
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


# -- the watchdog ---------------------------------------------------------------------------------


def watch(parent: int, tag: str, interval_s: float = 0.5, grace_s: float = 3.0) -> None:
    """Wait until `parent` is gone (this process is re-parented), then stop its tagged children."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while os.getppid() == parent:
        time.sleep(interval_s)
    reap(tag, grace_s)
