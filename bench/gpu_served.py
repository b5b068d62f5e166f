"""The GPU check's served phase: the tuner's capacity search on each planned config, as a trial
runs it, with the knee's figures against the in-process limit and NVML's view of the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.gpu_phases import Deadline
from bench.gpu_plan import SERVICE, CheckPlan, Seams, tune_options, workers_per_gpu
from bench.gpu_sampler import GpuSampler, StepClock, gpu_figures

if TYPE_CHECKING:
    from core.measurement import StepMeasurement
    from tuner.space import Config


def knee_index(
    steps: Sequence[StepMeasurement], goodput: float, met: Callable[[StepMeasurement], bool]
) -> int | None:
    """The scored step the search's goodput came from: the met step closest to it."""
    candidates = [i for i, s in enumerate(steps) if met(s)]
    return min(candidates, key=lambda i: abs(steps[i].goodput_rps - goodput)) if candidates else None


def served_row(
    config: Config,
    measured: Any,
    plan: CheckPlan,
    slo: Any,
    inprocess: dict[str, Any] | None,
    sampler: GpuSampler | None,
    clock: StepClock,
    trial: int,
    batch: int | None = None,
) -> dict[str, Any]:
    """One served config's figures (requests/s, and sentences/s = requests/s x sentences per
    request), against the in-process limit at `batch` (default: the config's max batch size)."""
    finding = measured.capacity
    steps = list(measured.steps)
    goodput = finding.goodput_rps if finding is not None else 0.0
    knee = knee_index(steps, goodput, lambda s: not slo.violations(s) and not s.aborted)
    step = steps[knee] if knee is not None else None
    sentences = goodput * plan.rows_per_request
    limit = None
    if inprocess is not None:
        per_batch = inprocess.get("sentences_per_s", {}).get(config.variant, {})
        limit = per_batch.get(str(batch or config.max_batch_size))
    return {
        "config": config.key, "workers": config.workers, "gpus": config.gpus,
        "workers_per_gpu": workers_per_gpu(config), "max_batch_size": config.max_batch_size,
        "max_latency_ms": config.max_latency_ms, "variant": config.variant, "ok": measured.ok,
        "reason": measured.reason[-1500:], "knee_goodput_rps": round(goodput, 2),
        "sentences_per_s": round(sentences, 1),
        "inprocess_sentences_per_s": limit,
        "served_over_inprocess": round(sentences / limit, 4) if limit else None,
        "knee_rate": finding.knee if finding else None, "breach_rate": finding.breach if finding else None,
        "limited_by": finding.limited_by if finding else None,
        "converged": finding.converged if finding else None, "steps": len(steps),
        "knee_client_p95_ms": round(step.client_p95_ms, 1) if step else None,
        "knee_server_p95_ms": step.server_p95_ms if step else None,
        "knee_failure_ratio": round(step.failure_ratio, 4) if step else None,
        "knee_generator_cpu": round(step.generator_cpu, 2) if step else None,
        **gpu_figures(sampler, clock.window(trial, knee), step),
        "rss_mb": measured.rss_mb, "wall_s": round(measured.wall_s, 1),
    }  # fmt: skip


def served_capacities(
    plan: CheckPlan,
    work: Path,
    slo_ms: float,
    end: float,
    inprocess: dict[str, Any] | None,
    sampler: GpuSampler | None,
    rows: list[dict[str, Any]],
    seams: Seams | None = None,
) -> list[dict[str, Any]]:
    """A capacity search per config, as a tune's trial runs it, each within its share of the
    time to `end` (monotonic), then (time allowing) the naive endpoint on the GPU; appends each
    row to `rows` as it ends."""
    from core.registry import service_spec
    from tuner.trial import TrialRunner

    options = tune_options(work / "served", slo_ms)
    slo = options.slo()
    seams = seams or Seams()
    deployer = seams.deployer(work / "logs", options)
    clock = StepClock()
    runner = TrialRunner(deployer, seams.load(plan, options), options.plan(), slo, SERVICE)
    naive = service_spec(SERVICE).naive_endpoint
    jobs = [(c, None) for c in plan.served] + ([(plan.naive_gpu, naive)] if plan.naive_gpu else [])
    for number, (config, endpoint) in enumerate(jobs):
        left = end - time.monotonic()
        if left < plan.min_config_s:
            rows.append(
                {
                    "config": config.key,
                    "endpoint": endpoint,
                    "ok": False,
                    "reason": f"skipped: {left:.0f} s left",
                }
            )
            continue
        until = time.monotonic() + max(left / (len(jobs) - number), plan.min_config_s)
        clock.trial(number)
        print(
            f"[gpu-check] serving {config.key} /{endpoint or 'encode'} ({until - time.monotonic():.0f} s)",
            flush=True,
        )
        measured = runner.measure(
            config, on_step=clock.step, endpoint=endpoint, time_left=Deadline(until).left
        )
        batch = plan.rows_per_request if endpoint else None  # unbatched: one request is one call
        row = served_row(config, measured, plan, slo, inprocess, sampler, clock, number, batch)
        rows.append({**row, "endpoint": endpoint})
        print(
            f"[gpu-check] {config.key}: {row['sentences_per_s']} sentences/s ({row['limited_by']})",
            flush=True,
        )
    return rows
