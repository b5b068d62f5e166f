"""The Locust-facing load shape, added with `-f loadtests/locustfile.py,loadtests/locust_shapes.py`.

Chosen by SERVETUNE_SHAPE: `control` (follow the runner's control file SERVETUNE_CONTROL),
`steps` (SERVETUNE_STEPS: JSON [[users, seconds, rate|null], ...]) or `rate`
(SERVETUNE_RATE requests/s for SERVETUNE_DURATION seconds). SERVETUNE_MAX_RUN_S bounds any of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from locust import LoadTestShape

from loadtests.shapes import ConstantRate, ControlledLoad, Step, StepLoad, Tick


def shape_from_env() -> ControlledLoad | StepLoad | ConstantRate:
    """The pure shape the environment asks for."""
    kind = os.environ.get("SERVETUNE_SHAPE", "control")
    if kind == "control":
        return ControlledLoad(Path(os.environ["SERVETUNE_CONTROL"]))
    if kind == "steps":
        raw = json.loads(os.environ["SERVETUNE_STEPS"])
        return StepLoad([Step(int(u), float(d), None if r is None else float(r)) for u, d, r in raw])
    if kind == "rate":
        return ConstantRate(float(os.environ["SERVETUNE_RATE"]), float(os.environ["SERVETUNE_DURATION"]))
    raise ValueError(f"SERVETUNE_SHAPE must be control, steps or rate, got {kind!r}")


class ServetuneShape(LoadTestShape):
    """Delegates tick() to the pure shape, reading the run time from Locust."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = shape_from_env()
        self.inner.clock = self.get_run_time
        self.max_run_s = float(os.environ.get("SERVETUNE_MAX_RUN_S", "0") or 0)

    def current_rate(self) -> float | None:
        return self.inner.current_rate()

    def tick(self) -> Tick:
        if self.max_run_s > 0 and self.get_run_time() > self.max_run_s:
            return None  # --run-time does not apply to shapes: this bounds the run
        return self.inner.tick()
