"""In-process profile of a model: seconds per batch for each batch size x torch threads (and variant).

The profile is what the simulator and the guided strategy know about the model without serving
it: `BatchTime` fits the measured points with a two-part thread-speedup (Amdahl) model,

    t(n, threads) = cpu0 * s(threads, p0) + cpu1 * n * s(threads, p1) + gpu0 + gpu1 * n,
    s(threads, p) = (1 - p) + p / threads,

where the cpu terms are the CPU work of a batch (a fixed part and a per-item part, each with its
own parallel fraction) and the gpu terms the device time that threads do not speed up (zero on a
CPU). `profile_service` measures it for MiniLM or digits in a few seconds.
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from core.registry import resolve, service_spec
from services.models.inprocess import BatchRunner

Device = str  # "cpu" or "gpu"
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
PARALLEL_GRID = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 21))


def speedup_factor(threads: float, parallel: float) -> float:
    """Amdahl: the fraction of the 1-thread time a run with `threads` threads takes."""
    return (1.0 - parallel) + parallel / max(1.0, threads)


@dataclass(frozen=True)
class BatchTime:
    """Seconds per batch of n items on `threads` torch threads (see the module docstring)."""

    cpu0: float
    cpu1: float
    p0: float = 0.0
    p1: float = 0.0
    gpu0: float = 0.0
    gpu1: float = 0.0

    def cpu_seconds(self, n: float, threads: float) -> float:
        """The CPU part of a batch (speeds up with threads, slows down under CPU contention)."""
        return self.cpu0 * speedup_factor(threads, self.p0) + self.cpu1 * n * speedup_factor(threads, self.p1)

    def gpu_seconds(self, n: float) -> float:
        """The device part of a batch (slows down when workers share a GPU)."""
        return self.gpu0 + self.gpu1 * n

    def seconds(
        self, n: float, threads: float, cpu_dilation: float = 1.0, gpu_dilation: float = 1.0
    ) -> float:
        return self.cpu_seconds(n, threads) * cpu_dilation + self.gpu_seconds(n) * gpu_dilation

    def line(
        self, threads: float, cpu_dilation: float = 1.0, gpu_dilation: float = 1.0
    ) -> tuple[float, float]:
        """(fixed, per-item) seconds of a batch: t(n) = fixed + per_item * n."""
        fixed = self.cpu0 * speedup_factor(threads, self.p0) * cpu_dilation + self.gpu0 * gpu_dilation
        per_item = self.cpu1 * speedup_factor(threads, self.p1) * cpu_dilation + self.gpu1 * gpu_dilation
        return fixed, per_item

    def cpu_share(self, n: float, threads: float) -> float:
        """The fraction of a batch's time that runs on CPU threads."""
        cpu = self.cpu_seconds(n, threads)
        return cpu / max(1e-12, cpu + self.gpu_seconds(n))

    def scaled(self, factor: float) -> BatchTime:
        return BatchTime(
            self.cpu0 * factor, self.cpu1 * factor, self.p0, self.p1, self.gpu0 * factor, self.gpu1 * factor
        )


def prior_batch_times(service: str) -> dict[Device, BatchTime]:
    """The registry's batch-time priors of a service (used where a profile has no measurement);
    MiniLM's where the service has none."""
    try:
        priors = service_spec(service).priors
    except ValueError:
        priors = {}
    priors = priors or service_spec("embedding").priors
    return {device: BatchTime(**fields) for device, fields in priors.items()}


# Batch time of a variant relative to fp32 where it was not profiled (int8: ~2x faster measured
# for MiniLM on CPU; the others assumed equal).
VARIANT_SPEED: dict[str, float] = {"fp32": 1.0, "int8": 0.5, "pruned": 1.0, "bf16": 1.0, "fp16": 1.0}


@dataclass(frozen=True)
class Point:
    """One measured batch: `seconds` for a batch of `batch` items on `threads` threads."""

    batch: int
    threads: int
    seconds: float


def fit_batch_time(points: Sequence[Point], device: Device = "cpu") -> BatchTime:
    """Least-squares fit (relative error, non-negative coefficients) over a grid of parallel fractions."""
    if not points:
        raise ValueError("fit_batch_time needs at least one measured point")
    n = np.array([p.batch for p in points], dtype=float)
    t = np.array([p.threads for p in points], dtype=float)
    y = np.array([p.seconds for p in points], dtype=float)
    weight = 1.0 / y
    single_threads = len(set(t.tolist())) == 1
    best: tuple[float, BatchTime] | None = None
    grid = [(0.0, 0.0)] if single_threads else list(itertools.product(PARALLEL_GRID, PARALLEL_GRID))
    for p0, p1 in grid:
        s0 = (1 - p0) + p0 / t
        s1 = (1 - p1) + p1 / t
        columns = [s0, n * s1] + ([np.ones_like(n), n] if device == "gpu" else [])
        design = np.stack(columns, axis=1) * weight[:, None]
        coef, _ = nnls(design, y * weight)
        residual = float(np.sum((design @ coef - y * weight) ** 2))
        if best is None or residual < best[0] - 1e-15:
            gpu0, gpu1 = (float(coef[2]), float(coef[3])) if device == "gpu" else (0.0, 0.0)
            best = (residual, BatchTime(float(coef[0]), float(coef[1]), float(p0), float(p1), gpu0, gpu1))
    assert best is not None
    return best[1]


def fit_error(model: BatchTime, points: Sequence[Point]) -> float:
    """Mean absolute relative error of a fitted BatchTime on points."""
    return statistics.fmean(abs(model.seconds(p.batch, p.threads) / p.seconds - 1) for p in points)


def profile_key(variant: str, device: Device) -> str:
    return f"{variant}@{device}"


@dataclass
class Profile:
    """Measured batch times per (variant, device), plus the in-process per-request overhead."""

    service: str
    cores: int
    points: dict[str, list[Point]] = field(default_factory=dict)  # profile_key -> points
    request_overhead_s: float = 0.0
    note: str = ""

    def batch_times(self) -> dict[tuple[str, Device], BatchTime]:
        """A fitted BatchTime per (variant, device)."""
        fitted = {}
        for key, points in self.points.items():
            variant, device = key.split("@")
            fitted[(variant, device)] = fit_batch_time(points, device)
        return fitted

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "cores": self.cores,
            "request_overhead_s": self.request_overhead_s,
            "note": self.note,
            "points": {k: [asdict(p) for p in v] for k, v in self.points.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        try:
            points = {k: [Point(**p) for p in v] for k, v in data["points"].items()}
            return cls(
                str(data["service"]), int(data["cores"]), points,
                float(data.get("request_overhead_s", 0.0)), str(data.get("note", "")),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a profile: {exc}") from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Profile:
        return cls.from_dict(json.loads(path.read_text()))


def pooled_profile(profiles: Sequence[Profile]) -> Profile:
    """One profile holding every point of `profiles` (same service), so a fit averages their drift."""
    if not profiles:
        raise ValueError("pooled_profile needs at least one profile")
    points: dict[str, list[Point]] = {}
    for profile in profiles:
        for key, measured in profile.points.items():
            points.setdefault(key, []).extend(measured)
    overhead = statistics.median(p.request_overhead_s for p in profiles)
    note = f"{len(profiles)} profiles pooled; {profiles[0].note}"
    return Profile(profiles[0].service, profiles[0].cores, points, overhead, note)


def synthetic_profile(
    service: str,
    cores: int,
    batch_times: Mapping[tuple[str, Device], BatchTime],
    threads: Iterable[int],
    batch_sizes: Sequence[int] = BATCH_SIZES,
    noise: float = 0.0,
    request_overhead_s: float = 0.0,
    seed: int = 0,
) -> Profile:
    """The profile an in-process measurement of known batch times would give (with noise)."""
    rng = random.Random(seed)
    thread_list = list(threads)
    points = {
        profile_key(variant, device): [
            Point(n, t, model.seconds(n, t) * float(np.exp(rng.gauss(0.0, noise))))
            for t in thread_list
            for n in batch_sizes
        ]
        for (variant, device), model in batch_times.items()
    }
    return Profile(service, cores, points, request_overhead_s, note=f"synthetic, noise {noise}")


# --- measuring a real model in-process ---------------------------------------------------------

"""Runs one batch of n items (the int is a repeat number, to vary the inputs)."""


def time_batches(
    run: BatchRunner,
    batch_sizes: Sequence[int],
    threads: Sequence[int],
    repeats: int = 3,
    budget_s: float = 20.0,
) -> list[Point]:
    """The fastest of `repeats` timed runs per batch size x threads (after a warm-up run).

    The best run stands for the uncontended cost on a shared machine. Larger batches are skipped
    once `budget_s` is spent, so a slow model still profiles in seconds.
    """
    import torch

    before = torch.get_num_threads()
    points: list[Point] = []
    started = time.perf_counter()
    try:
        for t in threads:
            torch.set_num_threads(t)
            run(1, 0)  # warm-up with this thread count
            for n in batch_sizes:
                if points and time.perf_counter() - started > budget_s:
                    break
                best = float("inf")
                for repeat in range(repeats):
                    start = time.perf_counter()
                    run(n, repeat)
                    best = min(best, time.perf_counter() - start)
                points.append(Point(n, t, best))
    finally:
        torch.set_num_threads(before)
    return points


def measure_request_overhead(service: str, repeats: int = 200) -> float:
    """Seconds of in-process JSON work per single-row request: decode one load body, encode one
    answer row (a lower bound of the served per-request overhead: HTTP parsing, validation and
    the event loop come on top)."""
    spec = service_spec(service)
    body = json.dumps({spec.row_field: [spec.row_pool()[0]]})
    response = [spec.sample_response]
    start = time.perf_counter()
    for _ in range(repeats):
        json.loads(body)
        json.dumps(response)
    return (time.perf_counter() - start) / repeats


def profile_service(
    service: str,
    variants: Sequence[str] = ("fp32",),
    threads: Sequence[int] | None = None,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    repeats: int = 3,
    budget_s: float = 20.0,
    cores: int | None = None,
) -> Profile:
    """Measure batch latency per batch size x threads for each variant, in this process (CPU)."""
    import os

    spec = service_spec(service)
    if spec.batch_runner is None:
        raise ValueError(f"service {service!r} has no in-process batch runner to profile")
    make_runner = resolve(spec.batch_runner)
    cores = cores or os.cpu_count() or 1
    thread_list = list(threads) if threads else sorted({1, cores})
    per_variant = budget_s / max(1, len(variants))
    points = {
        profile_key(variant, "cpu"): time_batches(
            make_runner(variant, 0), batch_sizes, thread_list, repeats, per_variant
        )
        for variant in variants
    }
    note = f"in-process, best of {repeats}, threads {thread_list}, batch sizes {list(batch_sizes)}"
    return Profile(service, cores, points, measure_request_overhead(service), note)
