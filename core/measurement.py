"""The seams between the tuner's parts: measurement records and the LoadRunner protocol.

`loadtests/runner.py` + `core/metrics.py` implement LoadRunner against a real server; the study
(`tuner/study.py`) only sees these types, so it can be tested with fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

# Cores of Locust above which a paced step's missing rate is the generator's fault, not the server's.
GENERATOR_BUSY_CORES = 0.5


@dataclass(frozen=True)
class LoadStep:
    """One step of a stepped load: `users` concurrent users (closed loop), paced to an arrival
    `rate`/s when one is set. A step whose sub-window p95 passes `abort_above_ms` (or whose
    sub-window fails half its requests) ends early: no need to overload a server for long to
    learn that it is overloaded."""

    users: int
    duration_s: float
    rate: float | None = None
    abort_above_ms: float | None = None


class InvalidReason(StrEnum):
    """Why the load runner does not trust a measured window (stored by value)."""

    GENERATOR_SATURATED = "generator_saturated"  # a Locust process used ~a whole core
    UNEVEN_WORKERS = "uneven_workers"  # a worker got well under its fair share of the requests
    OTHER = "other"  # a reason from an older record that names neither of the above


@dataclass(frozen=True)
class Invalidity:
    """One reason a window is invalid, with the figures behind it in words."""

    reason: InvalidReason
    detail: str


@dataclass(frozen=True)
class StepMeasurement:
    """Client and server figures of one accepted load window."""

    step: LoadStep
    duration_s: float
    requests: int
    successes: int
    failures_by_status: dict[str, int]
    rps: float
    goodput_rps: float
    failure_ratio: float
    client_p50_ms: float
    client_p95_ms: float
    client_p99_ms: float
    server_p50_ms: float | None = None
    server_p95_ms: float | None = None
    server_p99_ms: float | None = None
    in_progress: float | None = None
    batch_size_hist: dict[str, float] = field(default_factory=dict)
    requests_per_worker: dict[str, float] = field(default_factory=dict)
    generator_cpu: float = 0.0
    stable: bool = True
    valid: bool = True
    invalid: tuple[Invalidity, ...] = ()
    server_source: str | None = None  # the MetricsReader that produced the server figures
    aborted: bool = False  # the step ended early on its abort rule (LoadStep.abort_above_ms)
    # (failures, requests) of consecutive equal slices of the step's requests in completion order:
    # how the failures spread over the step (a burst of 503s sits in one slice).
    failure_slices: tuple[tuple[int, int], ...] = ()
    # GPU figures from the workers' gauges (services/gpumetrics.py); None when not measured.
    gpu_utilization: float | None = None  # mean over the step and its GPUs, 0..1
    gpu_memory_peak_bytes: int | None = None  # the most one worker held
    gpu_memory_device_peak_bytes: int | None = None  # the most the workers sharing a device held
    gpu_memory_total_bytes: int | None = None  # the smallest device's memory

    @property
    def offered_rps(self) -> float | None:
        """The arrival rate the step asked for (None for a closed-loop step)."""
        return self.step.rate

    @property
    def sustained_rps(self) -> float:
        """The goodput the step shows the server sustains: for a paced step at most its rate
        (answers above the rate drain a backlog from before the window, e.g. after an overload)."""
        if self.step.rate is None:
            return self.goodput_rps
        return min(self.goodput_rps, self.step.rate)

    @property
    def kept_rate(self) -> bool:
        """Whether the generator sent what the step asked for (within 10%; closed loop: always)."""
        return self.step.rate is None or self.rps >= 0.9 * self.step.rate

    @property
    def fell_behind(self) -> bool:
        """A paced step the server could not absorb: under 90% of its rate was sent while the
        generator was neither saturated nor busy (paced users wait for their answers, so the
        server held them back, even when its own histogram, which starts timing a request only
        once the worker reads it, still shows a p95 under the SLO)."""
        return (
            not self.kept_rate
            and self.generator_cpu < GENERATOR_BUSY_CORES
            and not self.flagged(InvalidReason.GENERATOR_SATURATED)
        )

    def flagged(self, reason: InvalidReason) -> tuple[Invalidity, ...]:
        """The invalidities of this window with `reason`."""
        return tuple(i for i in self.invalid if i.reason is reason)

    def invalid_text(self) -> str:
        """The invalidities' details joined for people ("" when there are none)."""
        return "; ".join(i.detail for i in self.invalid)


StopRule = Callable[[StepMeasurement], bool]


class LoadRunner(Protocol):
    """Drives a running service through load steps and measures each one."""

    def run_steps(
        self,
        url: str,
        service: str,
        steps: Iterable[LoadStep],
        stop_after: StopRule | None = None,
        endpoint: str | None = None,
        expected_workers: int | None = None,
    ) -> list[StepMeasurement]:
        """Run `steps` in order against `url` (the service's `endpoint`, default its batchable
        one); stop early once `stop_after(step)` is true. `steps` is consumed lazily, one step
        after the previous one was measured and passed to `stop_after`, so an adaptive search
        can choose each step from the last. `expected_workers` lets the runner flag
        a worker that got too little of the load."""
        ...
