"""The analytic goodput predictor the guided strategy ranks configs with (numpy, no queue run).

A closed-form estimate of what `tuner.simulator.max_goodput` computes by simulation: the highest
per-worker arrival rate whose steady batch fits the caps and whose latency meets the deadline and
the SLO, for many configs at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tuner.profile import speedup_factor
from tuner.servermodel import ServerModel
from tuner.space import Config


def analytic_goodputs(model: ServerModel, configs: Sequence[Config], steps: int = 16) -> np.ndarray:
    """Estimated max sustainable goodput (requests/s) of every config, in `configs` order.

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
