"""A server's start is waited for while it works and given up on once it does nothing.

Real `bentoml serve` processes of two tiny user services: one whose constructor computes for a
while before it serves (a model loading), one whose constructor waits forever (a hung start).
The stall window is shortened to keep the tests short; the rule is the one the tuner uses.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.polling import wait_until
from core.server import BentoServer, ServerError, ServerSpec, port_is_free
from core.target import resolve_target
from tests.integration.helpers import processes_mentioning

SLOW = """\
import time

import bentoml


@bentoml.service
class Slow:
    def __init__(self) -> None:
        until = time.monotonic() + {busy_s}
        while time.monotonic() < until:  # a model loading: CPU, no answer yet
            sum(range(10_000))

    @bentoml.api
    def ping(self, x: int) -> int:
        return x
"""

HUNG = """\
import threading

import bentoml


@bentoml.service
class Hung:
    def __init__(self) -> None:
        threading.Event().wait()  # waits on something that never comes

    @bentoml.api
    def ping(self, x: int) -> int:
        return x
"""


@pytest.fixture(autouse=True)
def _clean_registry(clean_registry: None) -> None:
    """Every test here starts and ends with the built-in services only (tests/conftest.py)."""


def server_of(tmp_path: Path, source: str, target: str) -> BentoServer:
    project = tmp_path / "project"
    project.mkdir()
    (project / "service.py").write_text(source)
    spec, _ = resolve_target(f"service.py:{target}", project)
    return BentoServer(ServerSpec(spec), log_dir=tmp_path / "logs")


@pytest.mark.timeout(180)
def test_a_start_that_keeps_working_is_waited_for_past_the_stall_window(tmp_path: Path) -> None:
    server = server_of(tmp_path, SLOW.format(busy_s=12), "Slow")
    try:
        started = time.monotonic()
        server.start(ready_timeout_s=120, stall_s=5)
        assert time.monotonic() - started > 10, "it answered before its constructor had finished"
    finally:
        server.stop()


@pytest.mark.timeout(180)
def test_a_start_that_does_nothing_is_given_up_on_and_cleaned_up(tmp_path: Path) -> None:
    server = server_of(tmp_path, HUNG, "Hung")
    started = time.monotonic()
    with pytest.raises(ServerError, match="made no progress") as caught:
        server.start(ready_timeout_s=120, stall_s=8)
    waited = time.monotonic() - started
    assert 8 <= waited < 60, f"gave up after {waited:.0f} s"
    assert "CPU seconds" in str(caught.value)
    gone = wait_until(lambda: not processes_mentioning(tmp_path) and port_is_free(server.port), 10.0)
    assert gone, processes_mentioning(tmp_path)
