"""What a served model costs on a machine: batch times, per-request overhead, CPU contention, SLO.

Shared by the analytic predictor (`tuner/predict.py`, what `guided` ranks configs with) and the
queueing simulator (`tuner/simulator.py`, the benchmark's ground truth).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuner.profile import BatchTime, Device, Profile
from tuner.space import Config


@dataclass(frozen=True)
class ServerModel:
    """A machine + service: batch times per (variant, device), per-request overhead, contention."""

    batch_times: Mapping[tuple[str, Device], BatchTime]
    cores: int
    gpus: int = 0
    request_overhead_s: float = 0.0025
    oversubscription: float = 1.5
    slo_p95_s: float = 0.2
    max_failure_ratio: float = 0.01

    def batch_time(self, config: Config) -> BatchTime:
        device = "gpu" if config.gpus > 0 else "cpu"
        try:
            return self.batch_times[(config.variant, device)]
        except KeyError:
            raise ValueError(f"no batch time for variant {config.variant!r} on {device}") from None

    def replace(self, **changes: Any) -> ServerModel:
        return dataclasses.replace(self, **changes)


def model_from_profile(
    profile: Profile,
    cores: int | None = None,
    gpus: int = 0,
    request_overhead_s: float = 0.0025,
    oversubscription: float = 1.5,
    served_slowdown: float = 1.0,
    slo_p95_ms: float = 200.0,
    max_failure_ratio: float = 0.01,
) -> ServerModel:
    """A ServerModel from an in-process profile plus the parts profiling cannot see (defaults:
    2.5 ms served overhead per request, oversubscription exponent 1.5, batches as fast as
    in-process)."""
    return ServerModel(
        {key: bt.scaled(served_slowdown) for key, bt in profile.batch_times().items()},
        cores=cores or profile.cores, gpus=gpus, request_overhead_s=request_overhead_s,
        oversubscription=oversubscription, slo_p95_s=slo_p95_ms / 1000.0, max_failure_ratio=max_failure_ratio,
    )  # fmt: skip
