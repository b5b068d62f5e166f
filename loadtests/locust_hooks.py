"""servetune's Locust hooks: the per-request event log and the control file's pacing.

Imported by `loadtests/locustfile.py`, or passed next to a user's own locustfile
(`-f loadtests/locust_shapes.py,loadtests/locust_hooks.py,user_locustfile.py`), so that the
runner's control file drives the user count (the shape) and its per-request log feeds the
measurements whichever user classes send the requests.

Environment:
  SERVETUNE_EVENTS    file prefix: every request is appended as "end_time latency_ms status"
                      to <prefix>.<pid> (the runner's exact per-window client figures)
  SERVETUNE_CONTROL   the runner's control file; its "rate" paces the users (open-loop-like)
  SERVETUNE_PROCESSES Locust worker processes sharing that rate (default 1)

Pacing a user's classes: while the control file asks a rate, the init listener's wrapper of each
user class's `wait_time` spaces one user's *task runs* users/rate seconds apart (a random first
phase, then start to start), so all users together start `rate` tasks per second; without a rate
the class's own `wait_time` runs. Supported: tasks that send one request each, `wait_time` on the
User class (a TaskSet without its own `wait_time` defers to it). Not supported: a TaskSet that
defines its own `wait_time` (not paced), tasks sending several requests (the rate counts tasks),
and a shape class in the user's file (servetune's shape is loaded first and is the one used).
Any request fired through Locust's request event (HttpUser, FastHttpUser, custom clients that
fire it) is logged.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
from locust import events
from locust.env import Environment

from loadtests.shapes import per_user_interval

_rate_cache: dict[str, float] = {"at": 0.0}
_rate_value: list[float | None] = [None]
PACED_MARK = "_servetune_paced"  # on a wait_time that paces (ours), or a User class that paces itself


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


def process_rate(environment: Environment) -> float | None:
    """This process's share of the rate: with `--processes N` each of the N workers sends 1/N."""
    rate = current_rate(environment)
    if rate is None or not isinstance(environment.runner, _worker_runner_type()):
        return rate
    return rate / max(1, int(os.environ.get("SERVETUNE_PROCESSES", "1") or 1))


def user_count(environment: Environment) -> int:
    """Users of this Locust process (1 before the runner exists)."""
    return environment.runner.user_count if environment.runner else 1


def pace(user_class: type[Any]) -> bool:
    """Wrap `user_class.wait_time` so the control file's rate paces it; False when it already
    paces itself (ServiceUser) or was wrapped before."""
    if getattr(user_class, PACED_MARK, False) or getattr(user_class.wait_time, PACED_MARK, False):
        return False
    original: Callable[[Any], float] = user_class.wait_time

    def wait_time(user: Any) -> float:
        interval = per_user_interval(process_rate(user.environment), user_count(user.environment))
        if interval is None:
            user._servetune_next_start = None
            return original(user)
        now = time.monotonic()
        last = getattr(user, "_servetune_next_start", None)
        # a random first phase so paced users do not fire in lock-step, then start to start
        wait = random.uniform(0.0, interval) if last is None else max(0.0, last + interval - now)
        user._servetune_next_start = now + wait
        return wait

    setattr(wait_time, PACED_MARK, True)  # a marker on the function
    user_class.wait_time = wait_time
    return True


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


def _on_init(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, _master_runner_type()):
        return
    prefix = os.environ.get("SERVETUNE_EVENTS")
    if prefix and not _LOG:
        _LOG.append(_EventLog(prefix))
    for user_class in environment.user_classes:
        pace(user_class)


def _master_runner_type() -> type:
    from locust.runners import MasterRunner

    return MasterRunner


def _worker_runner_type() -> type:
    from locust.runners import WorkerRunner

    return WorkerRunner


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


def _on_quit(**_: Any) -> None:
    for log in _LOG:
        log.flush()


# Once per process: Locust loads `-f locust_hooks.py` as the module "locust_hooks", a locustfile
# may import it as "loadtests.locust_hooks"; two sets of listeners would log every request twice.
if not getattr(events, "_servetune_hooks", False):
    events._servetune_hooks = True  # type: ignore[attr-defined]
    events.init.add_listener(_on_init)
    events.request.add_listener(_on_request)
    events.quitting.add_listener(_on_quit)
