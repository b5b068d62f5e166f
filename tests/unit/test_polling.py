"""The deadline-polling helper, and the server readiness wait built on it (no BentoML started)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.deployer import WORKER_INIT_FAILED, FailFastServer, wait_all_workers
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


@pytest.fixture
def two_workers() -> Iterator[str]:
    """An HTTP server whose /info answers alternate between worker 1 and worker 2."""
    turns = itertools.cycle([1, 1, 2])

    class Info(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = json.dumps({"worker_index": next(turns)}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Info)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_wait_all_workers_returns_every_index_seen(two_workers: str) -> None:
    assert wait_all_workers(two_workers, 2, timeout_s=30.0) == {1, 2}
    assert wait_all_workers(two_workers, 3, timeout_s=0.5) == {1, 2}, "a missing worker: what was seen"
