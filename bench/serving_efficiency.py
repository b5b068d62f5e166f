"""Serving efficiency of the tuned MiniLM config, in one run on the shipped sentence set.

    .venv/bin/python bench/serving_efficiency.py [--winner reports/demo/winner.yaml] [--repeats 2]
                                                 [--json PATH] [--ablation]

Measured with real `bentoml serve` + Locust, the configs interleaved (tuned, BentoML default,
naive, then again) so a slow minute of the machine hits all of them:
* tuned: the winner file's config;
* BentoML default: batchable /encode with BentoML's defaults (max_batch_size 100,
  max_latency_ms 60000), 1 worker, torch threads = cores;
* naive: 1 worker, torch threads = cores, the non-batchable /encode_unbatched endpoint;
and goodput = each config's capacity as the tuner searches it (tuner/capacity.py): the best
offered-rate step's successful RPS with p95 <= the SLO and <= 1% failures.
The physical limit: the same variant in-process, `workers` processes at once with the same torch
threads each, encoding batches of the mean batch size the server formed at its best step
(shipped sentences, no HTTP, no JSON), measured right after each tuned run: this VM's speed
drifts by up to 1.7x within an hour, so each served figure is divided by the limit measured
next to it. Ratios: tuned / naive, tuned / BentoML default,
served at the winner / in-process.

`--ablation` measures instead the tuned config under each serving-path change alone (interleaved,
`--repeats` times): everything off (BentoML's encoder, asyncio + h11, OpenTelemetry on), each
change on its own, all on (the default), and all on with clients asking for binary answers;
each row's goodput over the all-off row's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.deployer import LocalBentoDeployer
from core.registry import service_spec
from core.serveconfig import load_winner
from tuner.commands.demo import DEMO_SLO_MS, ensure_models
from tuner.objective import SLO, Objective
from tuner.space import Config, default_space
from tuner.store import StudyStore, TrialRecord
from tuner.strategies.grid import GridSearch
from tuner.study import Study
from tuner.trial import CapacityPlan, TrialRunner
from tuner.tuning import bentoml_default_config, naive_config, real_load_runner

SERVICE = "embedding"
ALL_OFF = {"SERVETUNE_UVLOOP": "0", "SERVETUNE_FAST_JSON": "0", "SERVETUNE_TRACING": "1"}
PATH_VARIANTS: dict[str, dict[str, str]] = {
    "all off (before)": ALL_OFF,
    "uvloop + httptools": {**ALL_OFF, "SERVETUNE_UVLOOP": "1"},
    "orjson answers": {**ALL_OFF, "SERVETUNE_FAST_JSON": "1"},
    "no OpenTelemetry middleware": {**ALL_OFF, "SERVETUNE_TRACING": "0"},
    "all on (default)": {},
    "all on, binary answers": {"SERVETUNE_ACCEPT": "application/octet-stream"},
}
SWITCHES = (*ALL_OFF, "SERVETUNE_ACCEPT")


@contextlib.contextmanager
def environment(overrides: dict[str, str]) -> Iterator[None]:
    """The serving-path switches set as given (the others unset) while a server and its load run."""
    saved = {name: os.environ.get(name) for name in SWITCHES}
    for name in SWITCHES:
        os.environ.pop(name, None)
    os.environ.update(overrides)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Limit(NamedTuple):
    """The in-process limit measured right after one tuned run."""

    batch: int  # the mean batch the server formed, rounded
    rps: float  # items/s at that batch
    rps_at_max_batch: float  # items/s at the config's max_batch_size


def winner_config(path: Path, cores: int) -> Config:
    """The tuned config from a winner file."""
    c = load_winner(path).config
    if c.service != SERVICE:
        raise SystemExit(f"{path}: a winner for {c.service!r}; this bench measures {SERVICE!r}")
    threads = c.threads or max(1, cores // c.workers)
    return Config(c.max_batch_size, c.max_latency_ms, c.workers, threads, c.gpus, c.variant)


def _encode_rate(variant: str, batch: int, threads: int, seconds: float) -> float:
    """Items/s of one process encoding shipped-sentence batches back to back (after a warm-up)."""
    import torch

    from services.models.inprocess import embedding_batch_runner

    torch.set_num_threads(threads)
    run = embedding_batch_runner(variant)
    run(batch, 0)
    items, repeat, start = 0, 1, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(batch, repeat)
        items, repeat = items + batch, repeat + 1
    return items / (time.perf_counter() - start)


def in_process_rps(variant: str, batch: int, threads: int, workers: int, seconds: float = 8.0) -> float:
    """Items/s of `workers` processes encoding at once (spawned, like BentoML's workers)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        rates = pool.map(_encode_rate, *zip(*[(variant, batch, threads, seconds)] * workers, strict=True))
        return sum(rates)


def mean_batch(record: TrialRecord) -> float | None:
    """Requests per batch at the record's best step, from the server's metrics."""
    requests, batches = record.best_step_batches()
    return requests / batches if batches else None


def winner_step_figures(record: TrialRecord) -> dict[str, Any]:
    """Where the served time goes at the best step: the load generator's CPU (same machine),
    client vs server p50 (time outside BentoML's handler), requests per worker."""
    step = record.best_step_figures()
    if step is None:
        return {}
    return {
        "generator_cpu": step.generator_cpu, "client_p50_ms": step.client_p50_ms,
        "server_p50_ms": step.server_p50_ms, "in_progress": step.in_progress,
        "requests_per_worker": step.requests_per_worker,
    }  # fmt: skip


def measuring_study(work: Path, slo: SLO) -> Study:
    """A study that only measures given configs (capacity search on real servers)."""
    store = StudyStore(work)
    store.open({}, resume=False)
    deployer = LocalBentoDeployer(SERVICE, work / "logs")
    runner = TrialRunner(deployer, real_load_runner(1.0, 0.5), CapacityPlan(), slo, SERVICE)
    space = default_space(SERVICE)
    return Study(space, GridSearch(space), Objective(slo), runner, store, n_trials=0)


def ablation(tuned: Config, repeats: int, slo: SLO, json_path: Path | None) -> int:
    """The tuned config's goodput under each serving-path variant, interleaved."""
    load_before, t0 = os.getloadavg(), time.monotonic()
    runs: dict[str, list[float]] = {name: [] for name in PATH_VARIANTS}
    batches: dict[str, list[float]] = {name: [] for name in PATH_VARIANTS}
    with tempfile.TemporaryDirectory(prefix="servetune-ablation-") as work:
        study = measuring_study(Path(work), slo)
        for repeat in range(repeats):
            for index, (name, overrides) in enumerate(PATH_VARIANTS.items()):
                with environment(overrides):
                    record = study.measure(tuned, "baseline", f"path{index}-{repeat}")
                runs[name].append(record.goodput_rps)
                batches[name].append(mean_batch(record) or 0.0)
                print(f"{name} run {repeat + 1}: {record.status} {record.goodput_rps:.1f} RPS", flush=True)
    base = statistics.fmean(runs["all off (before)"])
    rows = [
        {
            "variant": name,
            "environment": PATH_VARIANTS[name],
            "goodput_rps": round(statistics.fmean(values), 1),
            "runs": [round(v, 1) for v in values],
            "mean_batch": round(statistics.fmean(batches[name]), 2),
            "over_all_off": round(statistics.fmean(values) / base, 3) if base > 0 else None,
        }
        for name, values in runs.items()
    ]
    for row in rows:
        print(f"{row['variant']:<30} {row['goodput_rps']:>7} RPS  x{row['over_all_off']}  runs {row['runs']}")
    result = {
        "tuned_config": tuned.key,
        "rows": rows,
        "slo_p95_ms": slo.latency_ms,
        "wall_seconds": round(time.monotonic() - t0),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--winner", type=Path, default=Path("reports/demo/winner.yaml"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--ablation", action="store_true", help="each serving-path change alone")
    args = parser.parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    cores = os.cpu_count() or 1
    tuned = winner_config(args.winner, cores)
    ensure_models()
    configs = {
        "tuned": (tuned, None),
        "bentoml-default": (bentoml_default_config(cores, tuned.variant), None),
        "naive": (naive_config(cores), service_spec(SERVICE).naive_endpoint),
    }
    load_before, t0 = os.getloadavg(), time.monotonic()
    slo = SLO(latency_ms=DEMO_SLO_MS)
    if args.ablation:
        return ablation(tuned, args.repeats, slo, args.json)
    with tempfile.TemporaryDirectory(prefix="servetune-efficiency-") as work:
        study = measuring_study(Path(work), slo)
        records: dict[str, list[TrialRecord]] = {name: [] for name in configs}
        limits: list[Limit] = []  # one per tuned run
        for repeat in range(args.repeats):
            for name, (config, endpoint) in configs.items():
                record = study.measure(config, "baseline", f"{name}-{repeat}", endpoint=endpoint)
                records[name].append(record)
                print(f"{name} run {repeat + 1}: {config.key} {record.status} {record.goodput_rps:.1f} RPS")
                if name == "tuned":  # the physical limit right after, before the machine's speed drifts
                    batch_n = max(1, round(mean_batch(record) or 1.0))
                    limits.append(
                        Limit(
                            batch_n,
                            in_process_rps(
                                tuned.variant, batch_n, tuned.threads_per_worker(cores), tuned.workers
                            ),
                            in_process_rps(
                                tuned.variant,
                                tuned.max_batch_size,
                                tuned.threads_per_worker(cores),
                                tuned.workers,
                            ),
                        )
                    )
    goodput = {name: statistics.fmean(r.goodput_rps for r in rs) for name, rs in records.items()}
    best_run = max(range(len(records["tuned"])), key=lambda i: records["tuned"][i].goodput_rps)
    best_tuned = records["tuned"][best_run]
    batch = mean_batch(best_tuned) or 1.0
    batch_n, limit, limit_at_max = limits[best_run]
    served = best_tuned.goodput_rps

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if b > 0 else None

    result: dict[str, Any] = {
        "tuned_config": tuned.key,
        "goodput_rps": {name: round(v, 1) for name, v in goodput.items()},
        "goodput_runs": {name: [round(r.goodput_rps, 1) for r in rs] for name, rs in records.items()},
        "tuned_over_naive": ratio(goodput["tuned"], goodput["naive"]),
        "tuned_over_bentoml_default": ratio(goodput["tuned"], goodput["bentoml-default"]),
        "served_rps_at_winner": round(served, 1),
        "served_mean_batch": round(batch, 2),
        "inprocess_rps": round(limit, 1),
        "inprocess_batch": batch_n,
        "inprocess_rps_at_max_batch": round(limit_at_max, 1),
        "served_over_inprocess": ratio(served, limit),
        "served_over_inprocess_at_max_batch": ratio(served, limit_at_max),
        "served_over_inprocess_runs": [
            ratio(r.goodput_rps, lim.rps) for r, lim in zip(records["tuned"], limits, strict=True)
        ],
        "inprocess_rps_runs": [round(lim.rps, 1) for lim in limits],
        "at_winner_step": winner_step_figures(best_tuned),
        "slo_p95_ms": DEMO_SLO_MS,
        "wall_seconds": round(time.monotonic() - t0),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    print(
        f"tuned {tuned.key}: {goodput['tuned']:.1f} good RPS; "
        f"BentoML default {goodput['bentoml-default']:.1f}; naive {goodput['naive']:.1f}\n"
        f"tuned / naive = {result['tuned_over_naive']}; tuned / BentoML default = "
        f"{result['tuned_over_bentoml_default']}\n"
        f"served {served:.1f} RPS at mean batch {batch:.1f} / in-process {limit:.1f} items/s "
        f"({tuned.workers} x {tuned.threads} threads, batch {batch_n}) = {result['served_over_inprocess']}"
        f" (at batch {tuned.max_batch_size}: {limit_at_max:.1f} items/s, "
        f"{result['served_over_inprocess_at_max_batch']})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
