"""SLO constraints and the objective: a trial's load steps -> score, or infeasible with a reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from core.measurement import InvalidReason, StepMeasurement
from tuner.space import Config

ObjectiveKind = Literal["goodput", "cost"]
Quantile = Literal["p95", "p99"]
GIB = 1024**3


@dataclass(frozen=True)
class SLO:
    """Latency bound (on the server-side quantile when measured, else the client's), failure
    bound, and GPU memory headroom (where the workers' GPU memory was measured)."""

    latency_ms: float = 200.0
    quantile: Quantile = "p95"
    max_failure_ratio: float = 0.01
    breach_factor: float = 1.15  # "clear breach": latency this much above the bound stops stepping
    # An uneven per-worker split is what BentoML did with these client connections (a burst of
    # keep-alive connections is often accepted by one worker): count the step, note it in the
    # reason. Set False to discard such steps instead.
    accept_uneven_workers: bool = True
    # The workers on one GPU may hold at most this share of its memory (None: no bound); a step
    # without GPU figures never breaks it.
    max_gpu_memory_share: float | None = 0.9

    def __post_init__(self) -> None:
        share = self.max_gpu_memory_share
        if share is not None and not 0.0 < share <= 1.0:
            raise ValueError(f"max_gpu_memory_share: must be in (0, 1], got {share}")

    def latency_of(self, step: StepMeasurement) -> float:
        if self.quantile == "p99":
            server, client = step.server_p99_ms, step.client_p99_ms
        else:
            server, client = step.server_p95_ms, step.client_p95_ms
        return float(server) if server is not None else float(client)

    def violations(self, step: StepMeasurement, workers_per_gpu: int = 1) -> list[str]:
        """Why a step does not meet the SLO (empty when it does). `workers_per_gpu` sizes the
        device's memory use when only one worker's was measured."""
        why = []
        latency = self.latency_of(step)
        if latency > self.latency_ms:
            why.append(f"{self.quantile} {latency:.0f} ms > {self.latency_ms:.0f} ms")
        if step.failure_ratio > self.max_failure_ratio:
            codes = ", ".join(f"{k}: {v}" for k, v in sorted(step.failures_by_status.items()))
            why.append(
                f"failure ratio {step.failure_ratio:.3f} > {self.max_failure_ratio:.3f}"
                + (f" ({codes})" if codes else "")
            )
        if step.fell_behind:
            offered = step.step.rate or 0.0
            why.append(f"the server fell behind the offered rate ({step.rps:.1f}/s sent of {offered:.1f}/s)")
        if step.successes <= 0:
            why.append("no successful request")
        why += self.gpu_memory_violations(step, workers_per_gpu)
        tolerated = {InvalidReason.UNEVEN_WORKERS} if self.accept_uneven_workers else set()
        reasons = [i.detail for i in step.invalid if i.reason not in tolerated]
        if not step.valid and (reasons or not step.invalid):
            why.append("invalid measurement: " + "; ".join(reasons or ["flagged by the load runner"]))
        return why

    def gpu_memory_violations(self, step: StepMeasurement, workers_per_gpu: int = 1) -> list[str]:
        """The headroom rule: the memory the workers sharing a GPU held together (measured, else
        the peak worker's times `workers_per_gpu`) above `max_gpu_memory_share` of the device."""
        share, total = self.max_gpu_memory_share, step.gpu_memory_total_bytes
        if share is None or not total:
            return []
        if step.gpu_memory_device_peak_bytes is not None:
            used, how = step.gpu_memory_device_peak_bytes, "the workers on one GPU"
        elif step.gpu_memory_peak_bytes is not None:
            used = step.gpu_memory_peak_bytes * workers_per_gpu
            how = f"{workers_per_gpu} worker(s) x {step.gpu_memory_peak_bytes / GIB:.2f} GiB"
        else:
            return []
        if used <= share * total:
            return []
        return [f"GPU memory {used / GIB:.2f} GiB ({how}) > {share:.0%} of the GPU's {total / GIB:.2f} GiB"]

    def clearly_breached(self, step: StepMeasurement) -> bool:
        """Stop stepping: latency well above the bound, or failures well above theirs."""
        return (
            self.latency_of(step) > self.latency_ms * self.breach_factor
            or step.failure_ratio > max(2 * self.max_failure_ratio, self.max_failure_ratio + 0.02)
            or step.successes <= 0
        )


def load_text(step: StepMeasurement) -> str:
    """How a step loaded the server, for people ("120 RPS offered" or "8 users")."""
    if step.step.rate is not None:
        return f"{step.step.rate:.4g} RPS offered"
    return f"{step.step.users} users"


@dataclass(frozen=True)
class Prices:
    """Prices per core-hour and per GPU-hour (for the cost objective)."""

    core_hour: float = 0.0
    gpu_hour: float = 0.0

    def per_hour(self, config: Config) -> float:
        return config.workers * config.threads_per_worker() * self.core_hour + config.gpus * self.gpu_hour


@dataclass(frozen=True)
class Outcome:
    """The verdict on one trial."""

    feasible: bool
    score: float | None
    goodput_rps: float
    latency_ms: float | None
    failure_ratio: float | None
    cost_per_million: float | None
    best_step: int | None
    reason: str


@dataclass(frozen=True)
class Objective:
    """Max sustainable goodput, or the lowest cost per 1M requests at that goodput."""

    slo: SLO
    kind: ObjectiveKind = "goodput"
    prices: Prices = Prices()

    def evaluate(
        self, config: Config, steps: Sequence[StepMeasurement], counted: Sequence[bool] | None = None
    ) -> Outcome:
        """Goodput = the best step that meets the SLO (a paced step's at most its rate:
        `StepMeasurement.sustained_rps`); infeasible (with why) when none does.
        `counted`: per step, whether it may count at all (a capacity search's passes at levels
        that later failed may not; CapacityFinding.counted)."""
        allowed = list(counted) if counted is not None else [True] * len(steps)
        per_gpu = config.workers_per_gpu or 1
        good = [(i, s) for i, s in enumerate(steps) if allowed[i] and not self.slo.violations(s, per_gpu)]
        if not good:
            return Outcome(False, None, 0.0, None, None, None, None, self._why_none(steps, per_gpu))
        index, best = max(good, key=lambda pair: pair[1].sustained_rps)
        goodput = best.sustained_rps
        cost = self.cost_per_million(config, goodput)
        if self.kind == "cost":
            if cost is None:
                why = "cost needs a price and goodput > 0"
                latency = self.slo.latency_of(best)
                return Outcome(False, None, goodput, latency, best.failure_ratio, None, index, why)
            score: float = -cost
        else:
            score = goodput
        why = f"{goodput:.1f} good RPS at {load_text(best)}"
        uneven = best.flagged(InvalidReason.UNEVEN_WORKERS)
        if uneven:
            why += " (uneven worker split: " + "; ".join(i.detail for i in uneven) + ")"
        return Outcome(
            True, score, goodput, self.slo.latency_of(best), best.failure_ratio, cost, index, why
        )  # fmt: skip

    def _why_none(self, steps: Sequence[StepMeasurement], per_gpu: int) -> str:
        """Why no step counts: the first step's violations, or, when it met the SLO at a load
        that later breached it, that load's latest violations."""
        if not steps:
            return "no load step was measured"
        first = steps[0]
        broken = self.slo.violations(first, per_gpu)
        if broken:
            return "no step met the SLO; lowest load: " + "; ".join(broken)
        same_load = [
            s for s in steps[1:] if (s.step.rate, s.step.users) == (first.step.rate, first.step.users)
        ]
        again = [s for s in same_load if self.slo.violations(s, per_gpu)]
        latest = "; ".join(self.slo.violations(again[-1], per_gpu)) if again else "not counted"
        return f"no load held the SLO: {load_text(first)} met it, then did not ({latest})"

    def cost_per_million(self, config: Config, goodput_rps: float) -> float | None:
        """Cost of one replica serving 1M requests at `goodput_rps`; None without a price."""
        per_hour = self.prices.per_hour(config)
        if per_hour <= 0 or goodput_rps <= 0:
            return None
        return per_hour / (goodput_rps * 3600.0) * 1e6
