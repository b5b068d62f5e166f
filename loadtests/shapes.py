"""Load shapes with a pure tick(): StepLoad, ConstantRate and the runner's ControlledLoad.

These classes do not import Locust (importing it monkey-patches the process with gevent);
`loadtests/locust_shapes.py` mixes them into a `LoadTestShape` for a Locust run. tick() reads
the run time from `self.clock` when set (tests) or from Locust's `get_run_time()`.
tick() returns (users, spawn_rate) or None to stop, as Locust expects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Tick = tuple[int, float] | None


@dataclass(frozen=True)
class Step:
    """`users` concurrent users for `duration_s`; `rate` (requests/s, all users) paces them."""

    users: int
    duration_s: float
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"users must be >= 1, got {self.users}")
        if not self.duration_s > 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")


def spawn_rate_for(users: int) -> float:
    """Spawn all users of a step within a quarter of a second (a step is a few seconds long)."""
    return float(4 * max(users, 1))


class _Clocked:
    clock: Callable[[], float] | None = None

    def now(self) -> float:
        if self.clock is not None:
            return self.clock()
        get_run_time: Callable[[], float] = getattr(self, "get_run_time")  # noqa: B009 (Locust's)
        return get_run_time()


class StepLoad(_Clocked):
    """Steps of fixed duration, one after another; None after the last one."""

    def __init__(self, steps: Sequence[Step], clock: Callable[[], float] | None = None) -> None:
        if not steps:
            raise ValueError("StepLoad needs at least one step")
        self.steps = list(steps)
        self.clock = clock
        super().__init__()

    @classmethod
    def rising(
        cls, start: int, step: int, count: int, duration_s: float, clock: Callable[[], float] | None = None
    ) -> StepLoad:
        """`count` steps of `start`, `start+step`, ... users."""
        return cls([Step(start + i * step, duration_s) for i in range(count)], clock)

    def current(self) -> Step | None:
        elapsed = self.now()
        for step in self.steps:
            if elapsed < step.duration_s:
                return step
            elapsed -= step.duration_s
        return None

    def current_rate(self) -> float | None:
        step = self.current()
        return step.rate if step is not None else None

    def tick(self) -> Tick:
        step = self.current()
        return None if step is None else (step.users, spawn_rate_for(step.users))


class ConstantRate(_Clocked):
    """Open-loop-like pacing: enough users to sustain `rate` requests/s for `duration_s`.

    Each user waits so that it starts one request every users/rate seconds (Locust's
    constant_throughput per user); `users` is sized from the expected latency so the pacing,
    not the server's answer time, decides the arrival rate.
    """

    def __init__(
        self,
        rate: float,
        duration_s: float,
        expected_latency_s: float = 0.05,
        headroom: float = 2.0,
        max_users: int = 1000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not rate > 0 or not duration_s > 0:
            raise ValueError("rate and duration_s must be > 0")
        self.rate = rate
        self.duration_s = duration_s
        self.users = min(max_users, max(1, math.ceil(rate * expected_latency_s * headroom)))
        self.clock = clock
        super().__init__()

    def current_rate(self) -> float | None:
        return self.rate if self.now() < self.duration_s else None

    def tick(self) -> Tick:
        if self.now() >= self.duration_s:
            return None
        return self.users, spawn_rate_for(self.users)


def per_user_interval(rate: float | None, users: int) -> float | None:
    """Seconds between request starts of one user so `users` together send `rate`/s."""
    if rate is None or rate <= 0:
        return None
    return max(1, users) / rate


class ControlledLoad(_Clocked):
    """Follows a JSON control file the runner rewrites: {"seq", "users", "rate", "stop"}.

    Each new `seq` is acknowledged in `<control>.ack` ({"seq", "at": run time}) once applied.
    """

    def __init__(self, control: Path, clock: Callable[[], float] | None = None) -> None:
        self.control = Path(control)
        self.ack = self.control.with_name(self.control.name + ".ack")
        self.clock = clock
        self.applied_seq: int | None = None
        super().__init__()

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.control.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def current_rate(self) -> float | None:
        data = self.read()
        rate = data.get("rate") if data else None
        return float(rate) if isinstance(rate, int | float) else None

    def tick(self) -> Tick:
        data = self.read()
        if data is None:
            return (1, 1.0) if self.applied_seq is None else None
        if data.get("stop"):
            return None
        users = max(1, int(data.get("users", 1)))
        seq = int(data.get("seq", 0))
        if seq != self.applied_seq:
            self.applied_seq = seq
            tmp = self.ack.with_name(self.ack.name + ".tmp")
            tmp.write_text(json.dumps({"seq": seq, "at": self.now()}))
            tmp.replace(self.ack)
        return users, spawn_rate_for(users)


def write_control(path: Path, seq: int, users: int, rate: float | None = None, stop: bool = False) -> None:
    """Atomically replace the control file ControlledLoad reads."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"seq": seq, "users": users, "rate": rate, "stop": stop}))
    tmp.replace(path)
