"""Simulated surfaces for the benchmark and the tests, and the hidden server parameters they use.

A preset is a search space plus MiniLM's in-process batch times (the registry's priors, measured
on this project's machine kind). What in-process profiling cannot see is a `Hidden` value: the
served per-request overhead, how much thread oversubscription hurts, and how much slower and how
differently shaped a served batch is. `Hidden()` is where the guided strategy's prior is centred
(in-sample for guided); `draw_hidden` draws from ranges wider than guided's candidate grid, so a
benchmark on such surfaces does not score guided on the model it assumes (out-of-sample).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from bench.surface import SimulatedSurface
from tuner.profile import BatchTime, Device, prior_batch_times
from tuner.servermodel import ServerModel
from tuner.space import DIMENSIONS, Dimension, Machine, SearchSpace
from tuner.spacefile import pow2

MINILM_CPU = prior_batch_times("embedding")["cpu"]  # measured in-process (tuner/profile.py)
MINILM_GPU = prior_batch_times("embedding")["gpu"]  # GPU-like: not measured

# Drawn ranges, each wider than guided's grid (tuner/strategies/guided.py: overhead 0.5-8 ms,
# oversubscription 1.0-2.0, served slowdown 1.0-1.7, a batch's shape as profiled).
OVERHEAD_RANGE_S = (0.0003, 0.012)  # log-uniform
OVERSUBSCRIPTION_RANGE = (0.8, 2.8)  # uniform
SLOWDOWN_RANGE = (0.8, 2.5)  # log-uniform
FIXED_FACTOR_RANGE = (0.5, 2.0)  # log-uniform
PARALLEL_SHIFT_RANGE = (-0.25, 0.25)  # uniform


@dataclass(frozen=True)
class Hidden:
    """The served truth that an in-process profile does not show."""

    request_overhead_s: float = 0.0025
    oversubscription: float = 1.5  # exponent of the slowdown when threads outnumber cores
    slowdown: float = 1.0  # a served batch vs in-process, all of it
    fixed_factor: float = 1.0  # the fixed part of a batch (cpu0, gpu0) on top of `slowdown`
    parallel_shift: float = 0.0  # added to both thread-parallel fractions (clipped to 0..1)

    def served(self, inprocess: BatchTime) -> BatchTime:
        """The batch time inside the server, given the in-process one."""
        s, f = self.slowdown, self.fixed_factor

        def shifted(p: float) -> float:
            return min(1.0, max(0.0, p + self.parallel_shift))

        return BatchTime(
            inprocess.cpu0 * s * f, inprocess.cpu1 * s, shifted(inprocess.p0), shifted(inprocess.p1),
            inprocess.gpu0 * s * f, inprocess.gpu1 * s,
        )  # fmt: skip

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 5) for k, v in asdict(self).items()}


def _log_uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    return math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1])))


def draw_hidden(rng: random.Random) -> Hidden:
    """Hidden parameters drawn from the ranges above (between and beyond guided's grid points)."""
    return Hidden(
        request_overhead_s=_log_uniform(rng, OVERHEAD_RANGE_S),
        oversubscription=rng.uniform(*OVERSUBSCRIPTION_RANGE),
        slowdown=_log_uniform(rng, SLOWDOWN_RANGE),
        fixed_factor=_log_uniform(rng, FIXED_FACTOR_RANGE),
        parallel_shift=rng.uniform(*PARALLEL_SHIFT_RANGE),
    )


class Preset(Protocol):
    """Builds a simulated surface for the given hidden parameters."""

    def __call__(self, hidden: Hidden = ..., noise: float = ..., requests: int = ...) -> SimulatedSurface: ...


def _space(service: str, machine: Machine, **dims: Sequence[Any]) -> SearchSpace:
    defaults: dict[str, Sequence[Any]] = {"gpus": (0,), "variant": ("fp32",)}
    values = {**defaults, **dims}
    return SearchSpace(service, [Dimension(n, tuple(values[n])) for n in DIMENSIONS], machine)


def simulated(
    name: str,
    space: SearchSpace,
    inprocess: dict[tuple[str, Device], BatchTime],
    hidden: Hidden,
    noise: float,
    requests: int,
) -> SimulatedSurface:
    """A surface whose server runs `inprocess` batch times changed by `hidden`."""
    machine = space.machine
    served = {key: hidden.served(bt) for key, bt in inprocess.items()}
    model = ServerModel(
        served, cores=machine.cores, gpus=machine.gpus, request_overhead_s=hidden.request_overhead_s,
        oversubscription=hidden.oversubscription,
    )  # fmt: skip
    return SimulatedSurface(name, space, model, noise, requests, inprocess=inprocess)


def cpu_surface(hidden: Hidden = Hidden(), noise: float = 0.08, requests: int = 2000) -> SimulatedSurface:
    """16 cores, MiniLM fp32: 546 legal configs."""
    space = _space(
        "embedding", Machine(cores=16, gpus=0), max_batch_size=pow2(2, 128),
        max_latency_ms=(10, 25, 50, 100, 200, 500), workers=(1, 2, 4, 8), threads=(1, 2, 4, 8),
    )  # fmt: skip
    return simulated("cpu-16core", space, {("fp32", "cpu"): MINILM_CPU}, hidden, noise, requests)


def gpu_surface(hidden: Hidden = Hidden(), noise: float = 0.08, requests: int = 2000) -> SimulatedSurface:
    """8 cores and 0..4 GPUs (1350 legal configs): on a GPU the per-request CPU overhead and
    GPU sharing between workers become the limits."""
    space = _space(
        "embedding", Machine(cores=8, gpus=4), max_batch_size=pow2(4, 128),
        max_latency_ms=(25, 50, 100, 200, 500), workers=(1, 2, 4, 8), threads=(1, 2, 4), gpus=(0, 1, 2, 3, 4),
    )  # fmt: skip
    times = {("fp32", "cpu"): MINILM_CPU, ("fp32", "gpu"): MINILM_GPU}
    return simulated("gpu-8core-4gpu", space, times, hidden, noise, requests)


def small_cpu_surface(
    hidden: Hidden = Hidden(), noise: float = 0.08, requests: int = 800
) -> SimulatedSurface:
    """A 2-core surface like this machine (48 configs): quick enough for unit tests."""
    space = _space(
        "embedding", Machine(cores=2, gpus=0), max_batch_size=pow2(4, 32),
        max_latency_ms=(25, 100, 200, 500), workers=(1, 2), threads=(1, 2),
    )  # fmt: skip
    return simulated("cpu-2core", space, {("fp32", "cpu"): MINILM_CPU}, hidden, noise, requests)


SURFACES: dict[str, Preset] = {
    "cpu-16core": cpu_surface,
    "gpu-8core-4gpu": gpu_surface,
    "cpu-2core": small_cpu_surface,
}
