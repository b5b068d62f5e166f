"""Service-level BentoML configuration shared by every servetune service."""

from __future__ import annotations

import os
from typing import Any

from bentoml.validators import ContentType

# Finer than BentoML's default (5 ms .. 180 s) so server-side quantiles mean something
# below 50 ms: 1 ms steps up to 10 ms, then roughly x1.25 up to 60 s.
DURATION_BUCKETS: list[float] = [
    0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010, 0.0125, 0.015, 0.020, 0.025,
    0.030, 0.040, 0.050, 0.060, 0.075, 0.100, 0.125, 0.150, 0.175, 0.200, 0.250, 0.300,
    0.400, 0.500, 0.650, 0.800, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0,
    30.0, 60.0,
]  # fmt: skip


# Annotate every JSON return type with it: without a declared media type BentoML rebuilds the
# output model's JSON schema on every response to find one (14% of a busy worker's event loop).
JSON_RESPONSE = ContentType("application/json")


def env_flag(name: str, default: bool) -> bool:
    """An on/off environment switch: 1/true/yes/on or 0/false/no/off; anything else is `default`."""
    value = os.environ.get(name, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    return default


def access_log_enabled() -> bool:
    """BentoML's per-request access log, off unless SERVETUNE_ACCESS_LOG=1: its log lines cost
    ~20% of a busy worker's event loop; request counts and latencies are in /metrics."""
    return env_flag("SERVETUNE_ACCESS_LOG", default=False)


def service_config(timeout_s: int = 60) -> dict[str, Any]:
    """Keyword arguments for `@bentoml.service` common to all services."""
    return {
        "workers": 1,
        "traffic": {"timeout": timeout_s},
        "metrics": {"enabled": True, "duration": {"buckets": DURATION_BUCKETS}},
        "logging": {"access": {"enabled": access_log_enabled()}},
    }
