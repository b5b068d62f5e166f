"""Queueing simulator of a BentoML batching server: the benchmark's ground truth for any config.

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
and whose failure ratio (shed requests) <= the bound, found by bisection over the load, never
above `goodput_ceiling`. Every config uses its own fixed random stream (common random numbers),
so the result is deterministic.
"""

from __future__ import annotations

import bisect
import math
import zlib
from dataclasses import dataclass

import numpy as np

from tuner.servermodel import ServerModel
from tuner.space import Config

WARMUP_FRACTION = 0.1
CEILING_HEADROOM = 1.05  # max_goodput searches offered loads up to this x capacity_bound


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


def goodput_ceiling(model: ServerModel, config: Config) -> float:
    """The highest offered load `max_goodput` tries, so a bound on what it can return."""
    return capacity_bound(model, config) * CEILING_HEADROOM


def max_goodput(
    model: ServerModel, config: Config, requests: int = 2000, seed: int = 0, steps: int = 9
) -> ConfigResult:
    """The highest offered load that meets the SLO (bisection), as successful requests/s."""
    high = goodput_ceiling(model, config)
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
