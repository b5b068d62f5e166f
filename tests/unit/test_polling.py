"""The deadline-polling helper, and the server readiness wait built on it (no BentoML started)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from core.deployer import WORKER_INIT_FAILED, FailFastServer
from core.polling import wait_until
from core.registry import service_spec
from core.server import BentoServer, ServerError, ServerSpec


class FakeClock:
    """A monotonic clock that only moves when the waiter sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_first_truthy_value_is_returned_without_waiting_further() -> None:
    clock = FakeClock()
    answers = iter([None, 0, "", "ready", "never asked"])
    value = wait_until(lambda: next(answers), 10.0, 0.5, clock=clock, sleep=clock.sleep)
    assert value == "ready"
    assert clock.sleeps == [0.5, 0.5, 0.5]
    assert next(answers) == "never asked"


def test_a_timeout_returns_none_and_the_last_pause_ends_at_the_deadline() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def never() -> bool:
        calls.append(clock.now)
        return False

    assert wait_until(never, 1.0, 0.4, clock=clock, sleep=clock.sleep) is None
    assert clock.sleeps == pytest.approx([0.4, 0.4, 0.2])
    assert calls == pytest.approx([100.0, 100.4, 100.8, 101.0])  # a last try at the deadline


def test_a_zero_timeout_still_asks_once() -> None:
    clock = FakeClock()
    assert wait_until(lambda: 7, 0.0, clock=clock, sleep=clock.sleep) == 7
    assert wait_until(lambda: None, 0.0, clock=clock, sleep=clock.sleep) is None
    assert clock.sleeps == []


def test_an_exception_from_the_probe_ends_the_wait() -> None:
    clock = FakeClock()

    def broken() -> bool:
        raise RuntimeError("will never succeed")

    with pytest.raises(RuntimeError, match="never succeed"):
        wait_until(broken, 60.0, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that listens on nothing: stands in for a server that never gets ready."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait(5)


def _server(kind: type[BentoServer], process: subprocess.Popen[bytes]) -> BentoServer:
    server = kind(ServerSpec(service=service_spec("digits")))
    server.process = process
    return server


def test_a_worker_that_fails_to_initialise_ends_the_wait_at_once(sleeper: subprocess.Popen[bytes]) -> None:
    server = _server(FailFastServer, sleeper)
    server.log.tail.extend(["starting\n", f"{WORKER_INIT_FAILED}\n", "NotFound: no model 'digits'\n"])
    try:
        with pytest.raises(ServerError, match="a worker failed to initialise: NotFound: no model"):
            server.wait_ready(600.0)  # would hang the test if the log were not read while waiting
    finally:
        server.process = None
        server.stop()


def test_a_plain_server_waits_out_its_timeout_and_names_it(sleeper: subprocess.Popen[bytes]) -> None:
    server = _server(BentoServer, sleeper)
    server.log.tail.append(f"{WORKER_INIT_FAILED}\n")  # only FailFastServer reads the log
    try:
        with pytest.raises(ServerError, match="not ready after 0s"):
            server.wait_ready(0.3)
    finally:
        server.process = None
        server.stop()


def test_a_server_that_exits_ends_the_wait_with_its_exit_code() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait(10)
    server = _server(FailFastServer, process)
    try:
        with pytest.raises(ServerError, match="exited with code 3"):
            server.wait_ready(600.0)
    finally:
        server.process = None
        server.stop()


class WorkersOnRecord(BentoServer):
    """A server whose worker processes are given: (worker index, pid) pairs."""

    def __init__(self, running: list[tuple[int, int]], workers: int) -> None:
        super().__init__(ServerSpec(service=service_spec("digits"), workers=workers))
        self.running = running

    def workers(self) -> list[tuple[int, Any]]:
        return [(index, SimpleNamespace(pid=pid)) for index, pid in self.running]

    def record(self, *lines: str) -> None:
        self.evidence_path.write_text("".join(lines))


def _line(index: int, pid: int) -> str:
    return json.dumps({"worker_index": index, "pid": pid}) + "\n"


def test_a_server_is_ready_only_once_every_worker_it_asked_for_has_recorded_itself() -> None:
    server = WorkersOnRecord(running=[(1, 11), (2, 12)], workers=2)
    try:
        server.record(_line(2, 12))
        assert not server.all_workers_ready(), "/readyz answers from worker 2 while worker 1 still loads"
        server.record(_line(2, 12), _line(1, 11))
        assert server.all_workers_ready()
        server.record(_line(2, 12), _line(1, 11), '{"worker_index": 3, "pi')  # a line being written
        assert server.ready_workers() == 2
    finally:
        server.stop()


def test_a_worker_that_died_after_recording_itself_is_not_ready() -> None:
    server = WorkersOnRecord(running=[(1, 21), (2, 12)], workers=2)
    try:
        server.record(_line(1, 11), _line(2, 12))  # worker 1 (pid 11) was replaced by pid 21
        assert server.ready_workers() == 1
        assert not server.all_workers_ready()
    finally:
        server.stop()


def test_without_any_record_readyz_is_all_there_is() -> None:
    """An adapter that could not write its evidence (a read-only home) must not hang the start."""
    server = WorkersOnRecord(running=[(1, 11), (2, 12)], workers=2)
    try:
        assert server.evidence() == []
        assert server.all_workers_ready()
    finally:
        server.stop()
