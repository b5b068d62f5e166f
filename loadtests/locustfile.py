"""Locust users for the servetune services: bodies from held-out data, optional pacing.

Environment:
  SERVETUNE_SERVICE   the registered service to load (core/registry.py); required
  SERVETUNE_ROWS      rows per request (default 1)
  SERVETUNE_ENDPOINT  path to POST to (default: the service's batchable endpoint)
  SERVETUNE_EVENTS    file prefix: every request is appended as "end_time latency_ms status"
                      to <prefix>.<pid> (the runner's exact per-window client figures)
  SERVETUNE_CONTROL   the runner's control file; its "rate" paces the users (open-loop-like)
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from typing import Any

import gevent
from locust import FastHttpUser, events, task
from locust.env import Environment

from core.registry import service_spec
from loadtests.payloads import bodies
from loadtests.shapes import per_user_interval

ROWS = int(os.environ.get("SERVETUNE_ROWS", "1"))
HEADERS = {"Content-Type": "application/json"}
_rate_cache: dict[str, float] = {"at": 0.0}
_rate_value: list[float | None] = [None]


def current_rate(environment: Environment) -> float | None:
    """Target requests/s from the shape (local run) or the control file (worker processes)."""
    shape = environment.shape_class
    if shape is not None and hasattr(shape, "current_rate"):
        rate: float | None = shape.current_rate()
        return rate
    control = os.environ.get("SERVETUNE_CONTROL")
    if not control:
        return None
    now = time.monotonic()
    if now - _rate_cache["at"] > 0.25:
        _rate_cache["at"] = now
        try:
            value = json.loads(open(control).read()).get("rate")  # noqa: SIM115
            _rate_value[0] = float(value) if value else None
        except (OSError, ValueError):
            pass
    return _rate_value[0]


class ServiceUser(FastHttpUser):
    """POSTs pre-encoded bodies to one endpoint of SERVETUNE_SERVICE; closed loop unless a rate is set."""

    # Many short-lived users must not share one connection pool: one connection per user.
    concurrency = 1
    # Seconds; a request slower than this is a failure, not a hung user.
    network_timeout = 60.0
    connection_timeout = 10.0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.service = os.environ.get("SERVETUNE_SERVICE", "")
        self.path = os.environ.get("SERVETUNE_ENDPOINT") or service_spec(self.service).route
        self.bodies = itertools.cycle(_bodies(self.service))
        self._last_start = 0.0
        self._paced = False

    def wait_time(self) -> float:
        interval = per_user_interval(current_rate(self.environment), self.environment.runner.user_count
                                     if self.environment.runner else 1)  # fmt: skip
        if interval is None:
            return 0.0
        if not self._paced:  # a random phase, so paced users do not fire in lock-step
            self._paced = True
            return random.uniform(0.0, interval)
        return max(0.0, self._last_start + interval - time.monotonic())

    @task
    def post(self) -> None:
        self._last_start = time.monotonic()
        body: Any = next(self.bodies)  # bytes are sent as they are
        self.client.post(self.path, data=body, headers=HEADERS, name=self.path)


_BODY_CACHE: dict[str, list[bytes]] = {}


def _bodies(service: str) -> list[bytes]:
    if service not in _BODY_CACHE:
        _BODY_CACHE[service] = bodies(service, ROWS, seed=os.getpid())
    return _BODY_CACHE[service]


class _EventLog:
    """Buffers one line per request and flushes it every 0.2 s."""

    def __init__(self, prefix: str) -> None:
        self.file = open(f"{prefix}.{os.getpid()}", "a", buffering=1 << 16)  # noqa: SIM115
        self.lines: list[str] = []
        gevent.spawn(self._flush_loop)

    def add(self, end: float, latency_ms: float, status: str) -> None:
        self.lines.append(f"{end:.4f} {latency_ms:.3f} {status}\n")

    def flush(self) -> None:
        if self.lines:
            lines, self.lines = self.lines, []
            self.file.writelines(lines)
        self.file.flush()

    def _flush_loop(self) -> None:
        while True:
            gevent.sleep(0.2)
            self.flush()


_LOG: list[_EventLog] = []


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    prefix = os.environ.get("SERVETUNE_EVENTS")
    if prefix and not _LOG and not isinstance(environment.runner, _master_runner_type()):
        _LOG.append(_EventLog(prefix))


def _master_runner_type() -> type:
    from locust.runners import MasterRunner

    return MasterRunner


@events.request.add_listener
def _on_request(
    response_time: float,
    response: Any = None,
    exception: Any = None,
    start_time: float | None = None,
    **_: Any,
) -> None:
    if not _LOG:
        return
    status = getattr(response, "status_code", 0) or 0
    start = start_time if start_time is not None else time.time() - response_time / 1000.0
    _LOG[0].add(start + response_time / 1000.0, response_time, str(status) if status else "0")


@events.quitting.add_listener
def _on_quit(**_: Any) -> None:
    for log in _LOG:
        log.flush()
