"""Performance-surface simulator of a BentoML batching server: goodput / p95 for any config.

Model (one run = one offered load, Poisson arrivals split evenly over the workers):

* each worker is an event loop (per-request HTTP/JSON overhead, 1 thread) in front of BentoML's
  CorkDispatcher: when the model is free it takes up to `max_batch_size` queued requests at once;
  while requests wait it sheds (HTTP 503) the oldest one whenever its predicted latency, its wait
  so far + a * queue_length + b, reaches `max_latency_ms` (a, b = the batch-time line, which
  BentoML learns online), and a lone request that already waited `max_latency_ms`;
* a batch of n items takes `BatchTime.seconds(n, threads)` (from an in-process profile, see
  tuner/profile.py), dilated by CPU contention: the runnable threads (own model threads, the
  other workers' model threads times their busy fraction, the event loops) over the cores,
  raised to `oversubscription` when there are more than cores (spinning torch threads make
  oversubscription worse than fair sharing); GPU time is dilated by workers sharing a GPU
  (worker i uses GPU i mod gpus);
* the event loop is an M/D/1 queue: its wait adds to each request's latency; at utilisation
  ~1 the worker cannot keep up and the load fails.

Goodput of a config = successful requests/s at the highest offered load whose p95 <= the SLO
and whose failure ratio (shed requests) <= the bound, found by bisection over the load. Every
config uses its own fixed random stream (common random numbers), so the noiseless surface is
deterministic; `SimulatedSurface.measure` adds multiplicative log-normal noise per measurement.

`analytic_goodput` is a closed-form estimate of the same model (no queue simulation); the
guided strategy predicts with it. `validate` compares a model with recorded measurements.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import statistics
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tuner.profile import BatchTime, Device, Profile, prior_batch_times, speedup_factor
from tuner.space import DIMENSIONS, Config, Dimension, Machine, SearchSpace, pow2

WARMUP_FRACTION = 0.1


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
        import dataclasses

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


@dataclass(frozen=True)
class Dilation:
    """How much slower than alone: the model's CPU part, its GPU part, the event loop."""

    cpu: float = 1.0
    gpu: float = 1.0
    loop: float = 1.0


def dilation(model: ServerModel, config: Config, busy: float, loop_util: float, cpu_share: float) -> Dilation:
    """Mean-field contention when every worker's model is busy `busy` of the time."""
    w, t, cores = config.workers, config.threads_per_worker(model.cores), model.cores
    others = (w - 1) * t * busy * cpu_share
    loops = w * min(1.0, loop_util)
    model_runnable = t + others + loops
    loop_runnable = 1 + w * t * busy * cpu_share + (w - 1) * min(1.0, loop_util)
    cpu = max(1.0, model_runnable / cores) ** model.oversubscription
    loop = max(1.0, loop_runnable / cores) ** model.oversubscription
    gpu = 1.0
    if config.gpus > 0:
        sharers = math.ceil(w / config.gpus)
        gpu = 1.0 + (sharers - 1) * busy * (1.0 - cpu_share)
    return Dilation(cpu, gpu, loop)


@dataclass(frozen=True)
class LoadResult:
    """One simulated load level."""

    rate: float  # offered requests/s (all workers)
    goodput_rps: float
    p95_s: float
    failure_ratio: float
    busy: float  # model busy fraction per worker
    mean_batch: float

    def meets(self, model: ServerModel) -> bool:
        return self.p95_s <= model.slo_p95_s and self.failure_ratio <= model.max_failure_ratio


@dataclass(frozen=True)
class ConfigResult:
    """The max sustainable goodput of a config and the load level it was reached at."""

    goodput_rps: float
    best: LoadResult | None


def _stream(config: Config, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([zlib.crc32(config.key.encode()), seed])
    return rng.exponential(1.0, n), rng.random(n)


def simulate_load(
    model: ServerModel,
    config: Config,
    rate: float,
    requests: int = 2000,
    seed: int = 0,
    busy_guess: float | None = None,
) -> LoadResult:
    """Offer `rate` requests/s (Poisson) to the config; queue simulation of one worker."""
    exps, uniforms = _stream(config, seed, requests)
    bt = model.batch_time(config)
    w, b_max = config.workers, config.max_batch_size
    per_worker = rate / w
    deadline = config.max_latency_ms / 1000.0
    arrivals = np.cumsum(exps) / per_worker
    arrival_list = arrivals.tolist()
    share = bt.cpu_share(b_max / 2, config.threads_per_worker(model.cores))
    loop_util = per_worker * model.request_overhead_s
    busy = (
        min(1.0, per_worker * bt.seconds(1, config.threads_per_worker(model.cores)))
        if busy_guess is None
        else busy_guess
    )
    result: LoadResult | None = None
    for _ in range(3):  # fixed point: busy fraction -> contention -> busy fraction
        dil = dilation(model, config, busy, loop_util, share)
        result = _run_worker(model, config, rate, arrivals, arrival_list, uniforms, dil, deadline, b_max)
        if abs(result.busy - busy) < 0.03:
            break
        busy = result.busy
    assert result is not None
    return result


def _run_worker(
    model: ServerModel,
    config: Config,
    rate: float,
    arrivals: np.ndarray,
    arrival_list: list[float],
    uniforms: np.ndarray,
    dil: Dilation,
    deadline: float,
    b_max: int,
) -> LoadResult:
    bt = model.batch_time(config)
    per_worker = rate / config.workers
    overhead = model.request_overhead_s * dil.loop
    loop_rho = per_worker * overhead
    if loop_rho >= 0.98:  # the event loop cannot keep up: latency grows without bound
        return LoadResult(rate, 0.0, math.inf, 1.0, 1.0, 0.0)
    seconds = [0.0] + [
        bt.seconds(k, config.threads_per_worker(model.cores), dil.cpu, dil.gpu) for k in range(1, b_max + 1)
    ]
    a = (seconds[b_max] - seconds[1]) / (b_max - 1) if b_max > 1 else seconds[1]
    b = seconds[1] - a
    n_total = len(arrival_list)
    done = np.full(n_total, np.nan)
    head, clock, busy_time, batches, served = 0, 0.0, 0.0, 0, 0
    while head < n_total:
        if arrival_list[head] > clock:
            clock = arrival_list[head]  # idle: the next arrival is dispatched at once
        tail = bisect.bisect_right(arrival_list, clock, head)
        n = tail - head
        while n > 1 and clock - arrival_list[head] + a * n + b >= deadline:
            head += 1  # shed: predicted to miss the deadline
            n -= 1
        if n == 1 and clock - arrival_list[head] >= deadline:
            head += 1  # a lone request that waited out the deadline while the model was busy
            continue
        k = min(n, b_max)
        took = seconds[k]
        done[head : head + k] = clock + took
        head += k
        clock += took
        busy_time += took
        batches += 1
        served += k
    start = int(n_total * WARMUP_FRACTION)
    window = done[start:]
    ok = ~np.isnan(window)
    count = len(window)
    failure_ratio = 1.0 - ok.sum() / count
    # event loop: its own work plus an M/D/1 wait (exponential tail with the M/D/1 mean)
    mean_wait = loop_rho * overhead / (2 * (1 - loop_rho))
    loop_delay = overhead - mean_wait * np.log(np.maximum(uniforms[start:], 1e-12))
    latency = (window - arrivals[start:] + loop_delay)[ok]
    p95 = float(np.percentile(latency, 95)) if latency.size else math.inf
    elapsed = max(clock, arrival_list[-1]) - arrival_list[0]
    return LoadResult(
        rate=rate,
        goodput_rps=rate * (1.0 - failure_ratio),
        p95_s=p95,
        failure_ratio=float(failure_ratio),
        busy=min(1.0, busy_time / max(elapsed, 1e-12)),
        mean_batch=served / max(1, batches),
    )


def capacity_bound(model: ServerModel, config: Config) -> float:
    """Requests/s no config can exceed: full batches with no contention, or the event loops."""
    bt = model.batch_time(config)
    b = config.max_batch_size
    per_worker = min(
        b / bt.seconds(b, config.threads_per_worker(model.cores)), 1.0 / max(model.request_overhead_s, 1e-9)
    )
    return config.workers * per_worker


def max_goodput(
    model: ServerModel, config: Config, requests: int = 2000, seed: int = 0, steps: int = 9
) -> ConfigResult:
    """The highest offered load that meets the SLO (bisection), as successful requests/s."""
    high = capacity_bound(model, config) * 1.05
    low_rate = high * 0.01
    low = simulate_load(model, config, low_rate, requests, seed)
    if not low.meets(model):
        return ConfigResult(0.0, None)
    best, lo, hi = low, low_rate, high
    for _ in range(steps):
        mid = (lo + hi) / 2
        result = simulate_load(model, config, mid, requests, seed, busy_guess=best.busy)
        if result.meets(model):
            best, lo = result, mid
        else:
            hi = mid
    return ConfigResult(best.goodput_rps, best)


def analytic_goodputs(model: ServerModel, configs: Sequence[Config], steps: int = 16) -> np.ndarray:
    """Closed-form estimate of `max_goodput` for many configs at once (numpy, no queue run).

    At a per-worker rate X the steady batch is n = X * fixed / (1 - X * per_item) (the batch
    that arrives while one is served), with contention from the busy fraction X * t(n) / n and
    the event loop's utilisation X * overhead. X is feasible when n <= max_batch_size, a request
    (it waits for the batch in flight, then for its own) meets the deadline, 2 t(n) <=
    max_latency_ms, and the p95 estimate 2 t(n) + the event loop's p95 (M/D/1, exponential
    tail) meets the SLO; when 2 t(n) misses the deadline only a light load (busy <= 5%) passes.
    The highest feasible X is found by bisection.
    """
    count = len(configs)
    times = [model.batch_time(c) for c in configs]
    w = np.array([c.workers for c in configs], dtype=float)
    t = np.array([c.threads_per_worker(model.cores) for c in configs], dtype=float)
    b_max = np.array([c.max_batch_size for c in configs], dtype=float)
    deadline = np.array([c.max_latency_ms / 1000.0 for c in configs])
    gpus = np.array([c.gpus for c in configs], dtype=float)
    cpu0 = np.array(
        [
            bt.cpu0 * speedup_factor(c.threads_per_worker(model.cores), bt.p0)
            for bt, c in zip(times, configs, strict=True)
        ]
    )
    cpu1 = np.array(
        [
            bt.cpu1 * speedup_factor(c.threads_per_worker(model.cores), bt.p1)
            for bt, c in zip(times, configs, strict=True)
        ]
    )
    gpu0 = np.array([bt.gpu0 for bt in times])
    gpu1 = np.array([bt.gpu1 for bt in times])
    h0, cores, gamma, slo = model.request_overhead_s, model.cores, model.oversubscription, model.slo_p95_s
    sharers = np.where(gpus > 0, np.ceil(w / np.maximum(gpus, 1)), 1.0)

    def feasible(rate: np.ndarray) -> np.ndarray:
        loop_util = np.minimum(1.0, rate * h0)
        busy = np.minimum(1.0, rate * (cpu0 + cpu1 + gpu0 + gpu1))
        n = np.ones(count)
        for _ in range(2):  # contention <-> busy fraction
            m = np.minimum(n, b_max)
            share = (cpu0 + cpu1 * m) / np.maximum(1e-12, cpu0 + cpu1 * m + gpu0 + gpu1 * m)
            model_runnable = t + (w - 1) * t * busy * share + w * loop_util
            loop_runnable = 1 + w * t * busy * share + (w - 1) * loop_util
            cpu_dil = np.maximum(1.0, model_runnable / cores) ** gamma
            loop_dil = np.maximum(1.0, loop_runnable / cores) ** gamma
            gpu_dil = 1.0 + (sharers - 1) * busy * (1 - share)
            fixed = cpu0 * cpu_dil + gpu0 * gpu_dil
            per_item = cpu1 * cpu_dil + gpu1 * gpu_dil
            room = 1.0 - rate * per_item
            n = np.where(room > 0, np.maximum(1.0, rate * fixed / np.maximum(room, 1e-12)), np.inf)
            batch = fixed + per_item * np.minimum(n, b_max)
            busy = np.minimum(1.0, rate * batch / np.minimum(n, b_max))
        overhead = h0 * loop_dil
        rho = rate * overhead
        loop_p95 = overhead + 3 * rho * overhead / (2 * np.maximum(1e-9, 1 - rho))
        batched = (n <= b_max) & (2 * batch <= deadline) & (2 * batch + loop_p95 <= slo)
        light = (busy <= 0.05) & (fixed + per_item <= np.minimum(deadline, slo))
        return (rho < 0.98) & (batched | light)

    high = np.minimum(b_max / (cpu0 + cpu1 * b_max + gpu0 + gpu1 * b_max), 1.0 / max(h0, 1e-9))
    low = np.zeros(count)
    for _ in range(steps):
        mid = (low + high) / 2
        ok = feasible(mid)
        low = np.where(ok, mid, low)
        high = np.where(ok, high, mid)
    return w * low


def analytic_goodput(model: ServerModel, config: Config) -> float:
    """`analytic_goodputs` for one config."""
    return float(analytic_goodputs(model, [config])[0])


# --- surfaces ---------------------------------------------------------------------------------


class Surface(Protocol):
    """A space with a score per config: `truth` noiseless, `measure` one noisy measurement."""

    name: str
    space: SearchSpace

    def truth(self, config: Config) -> float: ...

    def measure(self, config: Config, rng: random.Random) -> float | None: ...

    def profile(self, seed: int = 0) -> Profile | None: ...


def optimum(surface: Surface) -> tuple[Config, float]:
    """The best config by its noiseless value."""
    best = max(surface.space.configs, key=surface.truth)
    return best, surface.truth(best)


@dataclass
class SimulatedSurface:
    """Simulated goodput of every config of a space (computed once), plus measurement noise."""

    name: str
    space: SearchSpace
    model: ServerModel
    noise: float = 0.08
    requests: int = 2000
    profile_noise: float = 0.05
    _truth: dict[str, float] = field(default_factory=dict, repr=False)

    def truth(self, config: Config) -> float:
        if config.key not in self._truth:
            self._truth[config.key] = max_goodput(self.model, config, self.requests).goodput_rps
        return self._truth[config.key]

    def measure(self, config: Config, rng: random.Random) -> float | None:
        value = self.truth(config)
        if value <= 0:
            return None  # infeasible: no load level met the SLO
        return value * math.exp(rng.gauss(0.0, self.noise))

    def profile(self, seed: int = 0) -> Profile:
        """What an in-process profile of this model shows (batch times with noise; the
        in-process request overhead is a fraction of the served one, as on a real server)."""
        from tuner.profile import synthetic_profile

        threads = sorted(set(self.space.dim("threads").values))
        return synthetic_profile(
            self.space.service, self.model.cores, self.model.batch_times, threads,
            noise=self.profile_noise, request_overhead_s=self.model.request_overhead_s / 20, seed=seed,
        )  # fmt: skip


@dataclass
class RecordedSurface:
    """Measured goodput per config with repeats (see `load`); `measure` replays one repeat."""

    name: str
    space: SearchSpace
    repeats: dict[str, list[float]]
    recorded_profile: Profile | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def truth(self, config: Config) -> float:
        values = self.repeats[config.key]
        return statistics.fmean(values)

    def measure(self, config: Config, rng: random.Random) -> float | None:
        value = rng.choice(self.repeats[config.key])
        return value if value > 0 else None

    def profile(self, seed: int = 0) -> Profile | None:
        return self.recorded_profile

    @classmethod
    def load(cls, path: Path) -> RecordedSurface:
        """Read a recorded surface (JSON):

        {"name": str, "space": {"service": str, "cores": int, "gpus": int, "max_total_threads": int?,
          "dimensions": {"max_batch_size": [...], "max_latency_ms": [...], "workers": [...],
                         "threads": [...], "gpus": [...], "variant": [...]}},
         "points": [{"config": {...Config fields...}, "goodput_rps": [repeat, ...]}, ...],
         "profile": Profile.to_dict() (optional), "meta": {...how it was recorded...}}

        Every legal config of the space needs a point with at least one repeat.
        """
        try:
            data = json.loads(path.read_text())
            spec = data["space"]
            dims = [Dimension(name, tuple(spec["dimensions"][name])) for name in DIMENSIONS]
            space = SearchSpace(
                spec["service"], dims, Machine(int(spec["cores"]), int(spec.get("gpus", 0))),
                spec.get("max_total_threads"), spec.get("max_workers"),
            )  # fmt: skip
            repeats = {
                Config.from_dict(p["config"]).key: [float(v) for v in p["goodput_rps"]]
                for p in data["points"]
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a recorded surface: {exc}") from exc
        missing = [c.key for c in space.configs if not repeats.get(c.key)]
        if missing:
            raise ValueError(f"{path}: no measurement for {len(missing)} configs, e.g. {missing[:3]}")
        profile = Profile.from_dict(data["profile"]) if data.get("profile") else None
        return cls(str(data.get("name", path.stem)), space, repeats, profile, dict(data.get("meta", {})))


def write_recorded(
    path: Path,
    name: str,
    space: SearchSpace,
    goodput: Mapping[str, Sequence[float]],
    profile: Profile | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write a recorded surface in the format `RecordedSurface.load` reads (goodput by config key)."""
    by_key = {c.key: c for c in space.configs}
    unknown = sorted(set(goodput) - set(by_key))
    if unknown:
        raise ValueError(f"configs outside the space: {unknown[:3]}")
    document = {
        "name": name,
        "space": {
            "service": space.service, "cores": space.machine.cores, "gpus": space.machine.gpus,
            "max_total_threads": space.max_total_threads, "max_workers": space.max_workers,
            "dimensions": {d.name: list(d.values) for d in space.dimensions},
        },
        "points": [{"config": by_key[k].to_dict(), "goodput_rps": list(v)} for k, v in goodput.items()],
        "profile": profile.to_dict() if profile is not None else None,
        "meta": dict(meta or {}),
    }  # fmt: skip
    path.write_text(json.dumps(document, indent=1))


# --- validation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationRow:
    config: Config
    measured: float
    predicted: float


@dataclass(frozen=True)
class Validation:
    """How well a model predicts measured goodput."""

    rows: tuple[ValidationRow, ...]
    median_abs_error: float  # relative, over configs with measured goodput > 0
    mean_abs_error: float
    rank_correlation: float  # Spearman over all configs
    feasibility_agreement: float  # share of configs where both say zero or both say > 0

    def summary(self) -> str:
        return (
            f"{len(self.rows)} configs: median |error| {self.median_abs_error:.0%}, mean |error| "
            f"{self.mean_abs_error:.0%}, Spearman {self.rank_correlation:.2f}, "
            f"feasibility agreement {self.feasibility_agreement:.0%}"
        )


def validate(
    model: ServerModel,
    measured: Sequence[tuple[Config, float]],
    predict: Callable[[ServerModel, Config], float] | None = None,
) -> Validation:
    """Compare the simulator's goodput with measured goodput per config (errors relative)."""
    from scipy.stats import spearmanr

    if not measured:
        raise ValueError("validate needs at least one measured config")
    predictor = predict or (lambda m, c: max_goodput(m, c).goodput_rps)
    rows = tuple(ValidationRow(c, float(g), float(predictor(model, c))) for c, g in measured)
    errors = [abs(r.predicted / r.measured - 1) for r in rows if r.measured > 0]
    agree = statistics.fmean(float((r.measured > 0) == (r.predicted > 0)) for r in rows)
    if len(rows) > 2:
        rho = spearmanr([r.measured for r in rows], [r.predicted for r in rows]).statistic
        rank = float(rho) if rho == rho else 0.0
    else:
        rank = float("nan")
    return Validation(
        rows,
        statistics.median(errors) if errors else float("nan"),
        statistics.fmean(errors) if errors else float("nan"),
        rank,
        agree,
    )


# --- preset surfaces for the benchmark and the tests -----------------------------------------

MINILM_CPU = prior_batch_times("embedding")["cpu"]  # measured in-process (tuner/profile.py)
MINILM_GPU = prior_batch_times("embedding")["gpu"]  # GPU-like: not measured


def _space(service: str, machine: Machine, **dims: Sequence[Any]) -> SearchSpace:
    defaults: dict[str, Sequence[Any]] = {"gpus": (0,), "variant": ("fp32",)}
    values = {**defaults, **dims}
    return SearchSpace(service, [Dimension(n, tuple(values[n])) for n in DIMENSIONS], machine)


def cpu_surface(noise: float = 0.08, requests: int = 2000) -> SimulatedSurface:
    """16 cores, MiniLM fp32: 546 legal configs."""
    machine = Machine(cores=16, gpus=0)
    space = _space(
        "embedding", machine, max_batch_size=pow2(2, 128), max_latency_ms=(10, 25, 50, 100, 200, 500),
        workers=(1, 2, 4, 8), threads=(1, 2, 4, 8),
    )  # fmt: skip
    model = ServerModel({("fp32", "cpu"): MINILM_CPU}, cores=16, request_overhead_s=0.0025)
    return SimulatedSurface("cpu-16core", space, model, noise, requests)


def gpu_surface(noise: float = 0.08, requests: int = 2000) -> SimulatedSurface:
    """8 cores and 0..4 GPUs (1350 legal configs): on a GPU the per-request CPU overhead and
    GPU sharing between workers become the limits."""
    machine = Machine(cores=8, gpus=4)
    space = _space(
        "embedding", machine, max_batch_size=pow2(4, 128), max_latency_ms=(25, 50, 100, 200, 500),
        workers=(1, 2, 4, 8), threads=(1, 2, 4), gpus=(0, 1, 2, 3, 4),
    )  # fmt: skip
    model = ServerModel(
        {("fp32", "cpu"): MINILM_CPU, ("fp32", "gpu"): MINILM_GPU}, cores=8, gpus=4, request_overhead_s=0.0025
    )
    return SimulatedSurface("gpu-8core-4gpu", space, model, noise, requests)


def small_cpu_surface(noise: float = 0.08, requests: int = 800) -> SimulatedSurface:
    """A 2-core surface like this machine (48 configs): quick enough for unit tests."""
    machine = Machine(cores=2, gpus=0)
    space = _space(
        "embedding", machine, max_batch_size=pow2(4, 32), max_latency_ms=(25, 100, 200, 500),
        workers=(1, 2), threads=(1, 2),
    )  # fmt: skip
    model = ServerModel({("fp32", "cpu"): MINILM_CPU}, cores=2, request_overhead_s=0.0025)
    return SimulatedSurface("cpu-2core", space, model, noise, requests)


SURFACES: dict[str, Callable[[], SimulatedSurface]] = {
    "cpu-16core": cpu_surface,
    "gpu-8core-4gpu": gpu_surface,
    "cpu-2core": small_cpu_surface,
}
