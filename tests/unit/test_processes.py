"""core.processes without servers: pid file matching, leftovers, stop signals, the watchdog.

The processes here are `sleep`s and tiny Pythons; each test kills what it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from core.leftovers import RunningFile, StillRunning, stop_leftovers
from core.polling import wait_until
from core.processes import recording, run_tag, spawn, stop_tree
from core.runtags import CHILD_ENV, RUN_ENV, ProcessInfo
from core.server import REPO_ROOT
from core.signals import StopSignal, exit_code, stop_signals

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed (group included) afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def sleeper(started: list[subprocess.Popen[bytes]], env: dict[str, str] | None = None) -> psutil.Process:
    proc = subprocess.Popen(SLEEP, env=env, start_new_session=True)
    started.append(proc)
    return psutil.Process(proc.pid)


def gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def dead_owner() -> dict[str, object]:
    """The record of a servetune process that no longer exists."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    info = ProcessInfo.of(proc.pid, "servetune")
    proc.wait()
    assert info is not None
    return info.to_dict()


def write_running(path: Path, tag: str, processes: list[ProcessInfo], owner: dict[str, object]) -> None:
    payload = {"owner": owner, "tag": tag, "processes": [p.to_dict() for p in processes]}
    path.write_text(json.dumps(payload))


def test_a_recorded_process_that_is_still_the_same_is_stopped(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    server = sleeper(started)
    info = ProcessInfo.of(server.pid, "server")
    assert info is not None
    path = tmp_path / "running.json"
    write_running(path, "tag-of-a-killed-run", [info], dead_owner())
    said: list[str] = []
    stopped = stop_leftovers(path, said.append)
    assert [s.pid for s in stopped] == [server.pid]
    assert wait_until(lambda: gone(server), 5.0)
    assert "stopped 1 process(es) left by an interrupted run" in said[0] and f"pid {server.pid}" in said[0]
    assert not path.exists()


def test_a_recycled_pid_is_left_alone(tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    """Same pid, another start time (or command line): a new process that took the number."""
    other = sleeper(started)
    real = ProcessInfo.of(other.pid, "server")
    assert real is not None
    recycled = [
        ProcessInfo("server", real.pid, real.create_time - 30.0, real.cmdline),
        ProcessInfo("locust", real.pid, real.create_time, ("locust", "-f", "x.py")),
    ]
    path = tmp_path / "running.json"
    write_running(path, "tag-of-a-killed-run", recycled, dead_owner())
    said: list[str] = []
    assert stop_leftovers(path, said.append) == []
    time.sleep(0.3)
    assert other.is_running() and other.status() != psutil.STATUS_ZOMBIE
    assert "already gone" in said[0]
    assert not path.exists()


def test_a_tagged_process_in_its_own_session_is_found_without_a_record(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """BentoML's workers are not recorded and leave the server's group; the run tag finds them."""
    worker = sleeper(started, env=dict(os.environ, **{RUN_ENV: "tag-of-a-killed-run", CHILD_ENV: "1"}))
    bystander = sleeper(started, env=dict(os.environ, **{RUN_ENV: "another-run", CHILD_ENV: "1"}))
    path = tmp_path / "running.json"
    write_running(path, "tag-of-a-killed-run", [], dead_owner())
    stopped = stop_leftovers(path, lambda _: None)
    assert [s.pid for s in stopped] == [worker.pid]
    assert wait_until(lambda: gone(worker), 5.0)
    assert not gone(bystander)


def test_a_run_whose_writer_is_alive_is_not_touched(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    owner = sleeper(started)
    server = sleeper(started, env=dict(os.environ, **{RUN_ENV: "tag-of-a-live-run"}))
    owner_info = ProcessInfo.of(owner.pid, "servetune")
    server_info = ProcessInfo.of(server.pid, "server")
    assert owner_info is not None and server_info is not None
    path = tmp_path / "running.json"
    write_running(path, "tag-of-a-live-run", [server_info], owner_info.to_dict())
    with pytest.raises(StillRunning, match=f"pid {owner.pid}"):
        stop_leftovers(path, lambda _: None)
    assert not gone(server) and path.exists()


def test_the_pid_file_lists_live_children_while_recording(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    path = tmp_path / "running.json"
    with recording(path):
        child = spawn(SLEEP, "server", stdin=subprocess.DEVNULL)
        started.append(child)
        running = RunningFile.read(path)
        assert running is not None and running.tag == run_tag()
        assert [(p.role, p.pid) for p in running.processes] == [("server", child.pid)]
        assert running.owner is not None and running.owner.pid == os.getpid()
        # Until the child has exec'd (slow on a loaded machine) /proc shows the forked parent's environment.
        tagged = wait_until(
            lambda: psutil.Process(child.pid).environ().get(RUN_ENV) == run_tag() or None, 10.0
        )
        assert tagged, psutil.Process(child.pid).environ().get(RUN_ENV)
        stop_tree(child, grace_s=5)
        running = RunningFile.read(path)
        assert running is not None and running.processes == ()
    assert not path.exists()


def test_stop_tree_also_stops_a_grandchild_in_its_own_session(started: list[subprocess.Popen[bytes]]) -> None:
    """The `bentoml serve` layout: the worker runs in a session of its own, outside the group."""
    code = (
        "import subprocess, sys, time\n"
        f"w = subprocess.Popen({SLEEP!r}, start_new_session=True)\n"
        "print(w.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = spawn([sys.executable, "-c", code], "server", stdout=subprocess.PIPE)
    started.append(parent)
    assert parent.stdout is not None
    grandchild = psutil.Process(int(parent.stdout.readline()))
    assert os.getpgid(grandchild.pid) != os.getpgid(parent.pid)
    stop_tree(parent, grace_s=5)
    assert wait_until(lambda: gone(grandchild), 5.0)


def test_the_watchdog_stops_the_children_of_a_killed_parent(started: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL a Python that spawned a child (in its own session, like every servetune child):
    the child is gone within a few seconds."""
    code = (
        "import subprocess, sys, time\n"
        "from core.processes import spawn\n"
        f"child = spawn({SLEEP!r}, 'server', stdin=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, cwd=REPO_ROOT)
    started.append(parent)
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    watchdogs = [p for p in psutil.Process(parent.pid).children() if "core.watchdog" in " ".join(p.cmdline())]
    assert len(watchdogs) == 1
    assert os.getsid(child.pid) != os.getsid(parent.pid), "no signal to the parent's session reaches it"
    parent.kill()
    parent.wait(5)
    assert wait_until(lambda: gone(child) and gone(watchdogs[0]), 10.0)


def test_sigterm_raises_stop_signal_once_and_the_handlers_come_back() -> None:
    # A background job (CI's `.ci/run &`) inherits SIGINT ignored, and stop_signals rightly keeps
    # an ignored SIGINT ignored: give this test the terminal's default handler.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGTERM)
        with pytest.raises(StopSignal) as stopped, stop_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert exit_code(stopped.value) == 143
        assert exit_code(KeyboardInterrupt()) == 130
        assert signal.getsignal(signal.SIGTERM) == before
        with stop_signals():
            with pytest.raises(StopSignal):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            os.kill(os.getpid(), signal.SIGTERM)  # a repeat while cleaning up is ignored
            time.sleep(0.2)
        assert signal.getsignal(signal.SIGINT) == signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_an_ignored_sigint_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_signals():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_signal_during_a_stop_finishes_the_stop_before_it_is_raised(
    started: list[subprocess.Popen[bytes]],
) -> None:
    """A child that ignores SIGTERM holds stop_tree in its grace wait; a SIGTERM to us then must
    not leave the child running."""
    code = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print(1, flush=True)\ntime.sleep(120)"
    )
    child = spawn([sys.executable, "-c", code], "server", stdout=subprocess.PIPE)
    started.append(child)
    assert child.stdout is not None and child.stdout.readline()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    with pytest.raises(StopSignal), stop_signals():
        timer.start()
        stop_tree(child, grace_s=30)
    assert child.poll() == -signal.SIGKILL
