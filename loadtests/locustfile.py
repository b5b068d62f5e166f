"""Locust user for servetune's load: POSTs the runner's request pool, optionally paced.

Environment:
  SERVETUNE_REQUESTS  the pool file the runner wrote (loadtests/requests.py write_pool): JSON
                      lines {"route", "body"}; users cycle through it in order, each Locust
                      process from its own offset
  SERVETUNE_PROCESSES Locust processes sharing the pool (spreads their offsets) and the rate
  SERVETUNE_SERVICE   without SERVETUNE_REQUESTS (e.g. the rendered Kubernetes Locust): a
                      registered service whose rows make the bodies, SERVETUNE_ROWS rows each
                      (default 1) to SERVETUNE_ENDPOINT (default: its batchable endpoint)
  SERVETUNE_ACCEPT    an Accept header to send (e.g. application/octet-stream for the services'
                      binary array answers); none by default
  SERVETUNE_EVENTS, SERVETUNE_CONTROL: see loadtests/locust_hooks.py (event log, pacing)
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, task
from locust.env import Environment

from loadtests.locust_hooks import process_rate, user_count
from loadtests.requests import Request, read_pool
from loadtests.shapes import per_user_interval

ACCEPT = os.environ.get("SERVETUNE_ACCEPT", "").strip()
HEADERS = {"Content-Type": "application/json", **({"Accept": ACCEPT} if ACCEPT else {})}


class _Pool:
    """This process's requests and one cursor shared by its users (file order from an offset)."""

    def __init__(self, requests: list[Request], offset: int) -> None:
        self.requests = requests
        self.index = offset % len(requests)

    def next(self) -> Request:
        request = self.requests[self.index]
        self.index = (self.index + 1) % len(self.requests)
        return request


_POOL: list[_Pool] = []


def pool(environment: Environment) -> _Pool:
    """The process's pool, read once; with several Locust processes each starts elsewhere."""
    if not _POOL:
        requests = _load_requests()
        processes = max(1, int(os.environ.get("SERVETUNE_PROCESSES", "1") or 1))
        index = int(getattr(environment.runner, "worker_index", 0) or 0)
        _POOL.append(_Pool(requests, (index % processes) * len(requests) // processes))
    return _POOL[0]


def _load_requests() -> list[Request]:
    path = os.environ.get("SERVETUNE_REQUESTS")
    if path:
        return read_pool(Path(path))
    service = os.environ.get("SERVETUNE_SERVICE")
    if not service:
        raise RuntimeError("set SERVETUNE_REQUESTS (a request pool file) or SERVETUNE_SERVICE")
    from loadtests.requests import builtin_requests  # the registry, only on this path

    rows = int(os.environ.get("SERVETUNE_ROWS", "1"))
    route = os.environ.get("SERVETUNE_ENDPOINT") or None
    return builtin_requests(service, rows, seed=os.getpid(), route=route)


class ServiceUser(FastHttpUser):
    """POSTs the pool's bodies to their routes; closed loop unless a rate is set."""

    # Many short-lived users must not share one connection pool: one connection per user.
    concurrency = 1
    # Seconds; a request slower than this is a failure, not a hung user.
    network_timeout = 60.0
    connection_timeout = 10.0
    _servetune_paced = True  # it paces itself (wait_time below): locust_hooks.pace leaves it alone

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.pool = pool(environment)
        self._last_start = 0.0
        self._paced = False

    def wait_time(self) -> float:
        interval = per_user_interval(process_rate(self.environment), user_count(self.environment))
        if interval is None:
            return 0.0
        if not self._paced:  # a random phase, so paced users do not fire in lock-step
            self._paced = True
            return random.uniform(0.0, interval)
        return max(0.0, self._last_start + interval - time.monotonic())

    @task
    def post(self) -> None:
        self._last_start = time.monotonic()
        request = self.pool.next()
        body: Any = request.body  # bytes are sent as they are
        self.client.post(request.route, data=body, headers=HEADERS, name=request.route)
