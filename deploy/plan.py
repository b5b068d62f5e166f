"""Sizing a Kubernetes deployment from what the tuner measured on one replica.

The tuner's winner file says how much one server (one replica) sustained under the SLO
(`goodput_rps`), with which processes and threads, and how much memory it used (`rss_mb`).
Everything here is a pure function of those numbers and the user's options, so every figure
in the rendered manifests can be traced back (`Sizing.explain()` and sizing.json).

HPA derivation
--------------
- target RPS per pod = goodput_rps x safety_factor (default 0.7). The measured goodput is the
  highest load step whose p95 met the SLO; running pods at 70% of it leaves room for the
  +-15-20% run-to-run noise we measured and for the time the HPA needs to add pods.
- minReplicas = max(min_replicas option (2), ceil(peak_rps / target RPS per pod)): the expected
  peak is carried without waiting for a scale-up, and two pods survive one disruption.
- maxReplicas = max_replicas option, or max(minReplicas + 1, ceil(burst_factor (2) x peak_rps /
  target RPS per pod)) with a peak, else max(10, minReplicas + 1).
- CPU fallback: averageUtilization = safety_factor x 100 %. The tuner pushes one replica to its
  knee, where its CPUs (workers x threads) are the bottleneck, so CPU utilisation grows roughly
  in proportion to RPS; the same fraction of it keeps the same headroom when the custom RPS
  metric (prometheus-adapter) is missing. HPA scales to the larger of the two proposals.

Resources
---------
- CPU request = workers x threads (threads: the winner's, else cores // workers, else 1);
  CPU limit = max(request, cores of the machine the winner was measured on): the replica may use
  what it had while being measured, and never less than it asked for.
- memory request = rss_mb x memory_headroom (1.3), limit = request x 1.5, in MiB rounded up to 16.
  Without a measured rss_mb: an estimate of MB_PER_WORKER (385, measured) plus the model size
  per worker, plus SUPERVISOR_MB (360, measured) for the `bentoml serve` parent process.
- `nvidia.com/gpu` = gpus (requests == limits, as Kubernetes requires for extended resources).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.serveconfig import WinnerFile

# Fallback memory estimate when the winner has no rss_mb. Measured on this machine kind
# (BentoML 1.4.40, torch 2.13 CPU, `bentoml serve <bento>`, RSS after 20 requests): the
# `bentoml serve` parent imports the service (torch included) and holds ~358 MB; each digits
# worker ~384 MB RSS (~265 MB of it unique to the worker); a MiniLM worker
# 490-570 MB, i.e. the worker figure plus the model and its libraries.
MB_PER_WORKER = 385.0
SUPERVISOR_MB = 360.0
MEMORY_ROUND_MI = 16
DEFAULT_MAX_REPLICAS = 10


class SizingError(ValueError):
    """The winner cannot be sized (e.g. it sustained no load at all)."""


class DeployOptions(BaseModel):
    """User choices for rendering; every field has a sensible default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field("servetune", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    name: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=50)
    image: str | None = Field(None, min_length=1, description="container image; default: the bento tag")
    peak_rps: float | None = Field(None, gt=0, description="expected peak RPS for the whole service")
    safety_factor: float = Field(0.7, gt=0, le=1)
    burst_factor: float = Field(2.0, ge=1)
    memory_headroom: float = Field(1.3, ge=1)
    min_replicas: int = Field(2, ge=1, le=1000)
    max_replicas: int | None = Field(None, ge=1, le=1000)
    locust_workers: int = Field(2, ge=1, le=100)
    locust_image: str = Field("servetune-locust:0.1.0", min_length=1)
    k8s_version: str = Field("1.30.0", pattern=r"^\d+\.\d+\.\d+$")
    auth: bool = Field(
        False,
        description="bearer-token auth on the inference endpoints: a Secret (placeholder to fill) "
        "mounted as a file, SERVETUNE_AUTH_TOKEN_FILE pointing at it",
    )
    monitoring_labels: dict[str, str] = Field(
        default_factory=dict,
        description="extra labels for ServiceMonitor/PrometheusRule/dashboard ConfigMap, e.g. the "
        "`release` label a kube-prometheus-stack Prometheus selects them by",
    )


@dataclass(frozen=True)
class Sizing:
    """Per-replica resources and autoscaling numbers, with the inputs they came from."""

    workers: int
    threads_per_worker: int
    gpus: int
    cpu_request: int
    cpu_limit: int
    memory_request_mi: int
    memory_limit_mi: int
    memory_source: str
    goodput_rps: float
    safety_factor: float
    target_rps_per_pod: float
    cpu_target_utilization: int
    min_replicas: int
    max_replicas: int
    peak_rps: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def explain(self) -> list[str]:
        """One line per derived number: how it was computed."""
        lines = [
            f"target RPS per pod = goodput {self.goodput_rps:g} x safety "
            f"{self.safety_factor:g} = {self.target_rps_per_pod:g}",
            f"CPU request = {self.workers} workers x {self.threads_per_worker} threads = "
            f"{self.cpu_request}; limit {self.cpu_limit}",
            f"memory request {self.memory_request_mi}Mi, limit {self.memory_limit_mi}Mi "
            f"({self.memory_source})",
            f"CPU fallback target utilisation {self.cpu_target_utilization}%",
        ]
        if self.peak_rps is not None:
            lines.append(
                f"minReplicas = ceil(peak {self.peak_rps:g} / {self.target_rps_per_pod:g}) "
                f"(at least the option's floor) = {self.min_replicas}; maxReplicas {self.max_replicas}"
            )
        else:
            lines.append(f"replicas {self.min_replicas}..{self.max_replicas} (no --peak-rps given)")
        return lines


def threads_per_worker(winner: WinnerFile) -> int:
    """The winner's threads, else cores // workers (what the service does), else 1."""
    config = winner.config
    if config.threads is not None:
        return config.threads
    if winner.cores is not None:
        return max(1, winner.cores // config.workers)
    return 1


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def memory_mi(winner: WinnerFile, headroom: float, model_mb: float = 0.0) -> tuple[int, int, str]:
    """(request MiB, limit MiB, where the base figure came from)."""
    if winner.rss_mb is not None:
        base, source = winner.rss_mb, f"measured rss {winner.rss_mb:g} MB x {headroom:g}"
    else:
        workers = winner.config.workers
        base = SUPERVISOR_MB + workers * (MB_PER_WORKER + model_mb)
        source = (
            f"estimate {SUPERVISOR_MB:g} + {workers} x ({MB_PER_WORKER:g} + model {model_mb:.0f}) MB "
            f"x {headroom:g} (no rss_mb in the winner)"
        )
    request = _round_up(base * headroom, MEMORY_ROUND_MI)
    return request, _round_up(request * 1.5, MEMORY_ROUND_MI), source


def size(winner: WinnerFile, options: DeployOptions, model_mb: float = 0.0) -> Sizing:
    """Derive resources and HPA numbers (see the module docstring for the reasoning)."""
    if winner.goodput_rps <= 0:
        raise SizingError(
            "goodput_rps: the winner sustained no load within the SLO (0 RPS); "
            "there is no capacity to size a deployment from"
        )
    config = winner.config
    threads = threads_per_worker(winner)
    cpu_request = config.workers * threads
    cpu_limit = max(cpu_request, winner.cores or 0)
    mem_request, mem_limit, source = memory_mi(winner, options.memory_headroom, model_mb)
    target = round(winner.goodput_rps * options.safety_factor, 3)
    if options.peak_rps is not None:
        min_replicas = max(options.min_replicas, math.ceil(options.peak_rps / target))
        default_max = max(min_replicas + 1, math.ceil(options.burst_factor * options.peak_rps / target))
    else:
        min_replicas = options.min_replicas
        default_max = max(DEFAULT_MAX_REPLICAS, min_replicas + 1)
    max_replicas = options.max_replicas if options.max_replicas is not None else default_max
    if max_replicas < min_replicas:
        raise SizingError(
            f"max_replicas: {max_replicas} is below the {min_replicas} replicas the peak needs "
            f"({options.peak_rps:g} RPS / {target:g} RPS per pod)"
        )
    return Sizing(
        workers=config.workers,
        threads_per_worker=threads,
        gpus=config.gpus,
        cpu_request=cpu_request,
        cpu_limit=cpu_limit,
        memory_request_mi=mem_request,
        memory_limit_mi=mem_limit,
        memory_source=source,
        goodput_rps=winner.goodput_rps,
        safety_factor=options.safety_factor,
        target_rps_per_pod=target,
        cpu_target_utilization=round(options.safety_factor * 100),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        peak_rps=options.peak_rps,
    )


def quantity(value: float) -> str:
    """A Kubernetes quantity: integers as-is, fractions in milli-units ("12500m")."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"
