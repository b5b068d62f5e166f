"""A starting server's progress: CPU used by its process tree, judged over a window."""

from __future__ import annotations

import os
import subprocess
import sys

from core.startwatch import StartProgress, tree_cpu_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def progress(cpu: list[float | None], clock: Clock) -> StartProgress:
    readings = iter(cpu)
    return StartProgress(
        pid=1, window_s=60.0, min_cpu_s=0.5, clock=clock, cpu_seconds=lambda _pid: next(readings)
    )


def test_a_tree_that_uses_no_cpu_for_the_window_has_stalled() -> None:
    clock = Clock()
    watch = progress([2.48, 2.48, 2.49, 2.49], clock)
    assert not watch.stalled()
    clock.now = 30.0
    assert not watch.stalled()
    clock.now = 59.0
    assert not watch.stalled()
    clock.now = 60.0
    assert watch.stalled() and watch.idle_s() == 60.0


def test_cpu_in_the_window_restarts_it() -> None:
    clock = Clock()
    watch = progress([1.0, 1.2, 1.6, 1.7, 1.8], clock)
    assert not watch.stalled()
    clock.now = 50.0
    assert not watch.stalled()  # 0.2 s: not enough to count
    clock.now = 55.0
    assert not watch.stalled()  # 0.6 s since the mark: progress, the window restarts at 55
    clock.now = 110.0
    assert not watch.stalled()
    clock.now = 115.0
    assert watch.stalled()  # 0.2 s in the 60 s since 55


def test_a_child_that_exits_taking_its_cpu_along_is_no_stall_and_a_gone_tree_is_for_the_caller() -> None:
    clock = Clock()
    watch = progress([5.0, 3.0, None], clock)
    assert not watch.stalled()
    clock.now = 70.0
    assert not watch.stalled()  # the sum fell: the window starts again
    clock.now = 200.0
    assert not watch.stalled()  # the process is gone: its exit is reported elsewhere


def test_tree_cpu_counts_children_and_a_gone_process_is_none() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    burn += "print(1, flush=True)\ninput()"
    child = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"1"
        own = tree_cpu_seconds(os.getpid())
        alone = tree_cpu_seconds(child.pid)
        assert own is not None and alone is not None and alone >= 0.3 and own >= alone
    finally:
        child.kill()
        child.wait()
    assert tree_cpu_seconds(child.pid) is None
