"""In-process profile of a model: seconds per batch for each batch size x torch threads (and variant).

The profile is what the simulator and the guided strategy know about the model without serving
it: `BatchTime` fits the measured points with a two-part thread-speedup (Amdahl) model,

    t(n, threads) = cpu0 * s(threads, p0) + cpu1 * n * s(threads, p1) + gpu0 + gpu1 * n,
    s(threads, p) = (1 - p) + p / threads,

where the cpu terms are the CPU work of a batch (a fixed part and a per-item part, each with its
own parallel fraction) and the gpu terms the device time that threads do not speed up (zero on a
CPU). `profile_service` measures it for MiniLM or digits in a few seconds.

On a machine with a GPU the profile also records, once, the GPU memory one serving worker takes
(`gpu_memory_per_worker_bytes`: its model, the activations of the largest batch and its own CUDA
context); the search space drops configs whose workers per GPU would not fit in a GPU's memory.
"""

from __future__ import annotations

import inspect
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from core.registry import resolve, service_spec
from services.devices import process_gpu_memory_bytes
from services.knobs import variant_runs_on
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
    gpu_memory_per_worker_bytes: int | None = None  # None: measured on a CPU (or not at all)

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
            "gpu_memory_per_worker_bytes": self.gpu_memory_per_worker_bytes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        try:
            points = {k: [Point(**p) for p in v] for k, v in data["points"].items()}
            gpu_memory = data.get("gpu_memory_per_worker_bytes")
            return cls(
                str(data["service"]), int(data["cores"]), points,
                float(data.get("request_overhead_s", 0.0)), str(data.get("note", "")),
                None if gpu_memory is None else int(gpu_memory),
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
    gpu_memory = (p.gpu_memory_per_worker_bytes for p in profiles)
    most = max((m for m in gpu_memory if m is not None), default=None)
    return Profile(profiles[0].service, profiles[0].cores, points, overhead, note, most)


def synthetic_profile(
    service: str,
    cores: int,
    batch_times: Mapping[tuple[str, Device], BatchTime],
    threads: Iterable[int],
    batch_sizes: Sequence[int] = BATCH_SIZES,
    noise: float = 0.0,
    request_overhead_s: float = 0.0,
    seed: int = 0,
    gpu_memory_per_worker_bytes: int | None = None,
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
    note = f"synthetic, noise {noise}"
    return Profile(service, cores, points, request_overhead_s, note, gpu_memory_per_worker_bytes)


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


# --- the GPU memory of one worker ---------------------------------------------------------------

# Used when NVML cannot tell this process's memory: a CUDA context with cuBLAS/cuDNN handles
# takes a few hundred MiB on current GPUs.
DEFAULT_CUDA_CONTEXT_BYTES = 512 * 1024 * 1024
RunnerFactory = Callable[..., BatchRunner]  # (variant, seed, device=...) -> run(n, repeat)
ProcessMemory = Callable[[], int | None]  # this process's GPU memory (NVML), None when unknown
"""(make_runner, variant, batch) -> GPU bytes one worker takes, None when not measurable."""
GpuMemoryProbe = Callable[[RunnerFactory, str, int], int | None]


def gpu_variant(variants: Sequence[str]) -> str | None:
    """The variant whose worker memory is measured: fp32 (the largest weights) when listed, else
    the first that runs on a GPU; None when none does."""
    on_gpu = [v for v in variants if variant_runs_on(v, "cuda")]
    return "fp32" if "fp32" in on_gpu else next(iter(on_gpu), None)


def worker_gpu_memory(
    make_runner: RunnerFactory,
    variant: str,
    batch: int,
    cuda: Any = None,
    process_memory: ProcessMemory = process_gpu_memory_bytes,
) -> int | None:
    """GPU bytes one serving worker takes: the allocator's peak while the model loads on cuda:0
    and runs one batch of `batch` items, plus its CUDA context (this process's NVML memory beyond
    what the allocator holds; DEFAULT_CUDA_CONTEXT_BYTES when NVML cannot tell).

    None without CUDA (at once: a CPU profile is not slowed) or when the runner takes no device.
    """
    if cuda is None:
        import torch

        cuda = torch.cuda
    if not cuda.is_available() or "device" not in inspect.signature(make_runner).parameters:
        return None
    device = "cuda:0"
    cuda.empty_cache()
    cuda.reset_peak_memory_stats(device)
    held_before = int(cuda.memory_reserved(device))
    run = make_runner(variant, 0, device=device)
    run(batch, 0)
    cuda.synchronize(device)
    peak = int(cuda.max_memory_reserved(device)) - held_before
    process = process_memory()
    held = int(cuda.memory_reserved(device))
    context = DEFAULT_CUDA_CONTEXT_BYTES if process is None else max(0, process - held)
    del run
    cuda.empty_cache()
    return peak + context


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False when torch or CUDA is broken)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def profile_service(
    service: str,
    variants: Sequence[str] = ("fp32",),
    threads: Sequence[int] | None = None,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    repeats: int = 3,
    budget_s: float = 20.0,
    cores: int | None = None,
    gpu_batch: int | None = None,
    gpu_memory: GpuMemoryProbe = worker_gpu_memory,
    on_gpu: bool | None = None,
) -> Profile:
    """Measure batch latency per batch size x threads for each variant, in this process (CPU),
    and, once, one worker's GPU memory running a batch of `gpu_batch` items (default the largest
    of `batch_sizes`; pass the space's largest max_batch_size) with `gpu_memory`. With CUDA
    (`on_gpu`, default: torch sees a GPU) the variants that run on GPUs are timed on cuda:0 too
    (one thread), so the guided search predicts GPU configs from measurements, not priors."""
    import os

    spec = service_spec(service)
    if spec.batch_runner is None:
        raise ValueError(f"service {service!r} has no in-process batch runner to profile")
    make_runner = resolve(spec.batch_runner)
    cores = cores or os.cpu_count() or 1
    thread_list = list(threads) if threads else sorted({1, cores})
    on_cpu = [v for v in variants if variant_runs_on(v, "cpu")]  # fp16/bf16 are served on GPUs only
    per_variant = budget_s / max(1, len(on_cpu))
    points = {
        profile_key(variant, "cpu"): time_batches(
            make_runner(variant, 0), batch_sizes, thread_list, repeats, per_variant
        )
        for variant in on_cpu
    }
    if on_gpu is None:
        on_gpu = cuda_available()
    if on_gpu:
        for variant in (v for v in variants if variant_runs_on(v, "cuda")):
            run = make_runner(variant, 0, device="cuda:0")
            points[profile_key(variant, "gpu")] = time_batches(run, batch_sizes, [1], repeats, per_variant)
    note = f"in-process, best of {repeats}, threads {thread_list}, batch sizes {list(batch_sizes)}"
    measured = gpu_variant(variants)
    memory = None
    if measured is not None:
        memory = gpu_memory(make_runner, measured, gpu_batch or max(batch_sizes))
    if memory is not None:
        note += f"; GPU memory per worker measured with {measured} at batch {gpu_batch or max(batch_sizes)}"
    return Profile(service, cores, points, measure_request_overhead(service), note, memory)
