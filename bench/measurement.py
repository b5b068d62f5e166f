"""Measurement quality: no-op tail at ~50% load, client/server p50 agreement, goodput repeatability.

    .venv/bin/python bench/measurement.py [--json PATH] [--quick]

1. NoOp (/echo, batchable, 1 worker): capacity = goodput of a closed-loop step; then a paced
   step at half of it; p99 client (Locust) and server (duration histogram).
2. TextEmbedding (/encode, batchable, 1 worker x 2 threads): capacity, then a paced step at half
   of it; client p50 / server p50.
3. The same embedding config, 5 separate closed-loop runs (one Locust process each): coefficient
   of variation of goodput.
Each figure comes from one run on this machine; `uptime` load is printed with them because the
machine is shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.measurement import LoadStep
from core.registry import service_spec
from core.server import BentoServer, ServerSpec, running_server
from loadtests.runner import LoadReport, LocustRunner


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def one(runner: LocustRunner, server: BentoServer, service: str, step: LoadStep) -> LoadReport:
    (report,) = runner.run(server.url, service, [step])
    return report


def line(name: str, report: LoadReport) -> str:
    m = report.measurement
    return (
        f"  {name}: {m.rps:.1f} RPS ({m.goodput_rps:.1f} good), client p50/p99 {m.client_p50_ms:.1f}/"
        f"{m.client_p99_ms:.1f} ms, server p50/p99 {m.server_p50_ms or math.nan:.1f}/"
        f"{m.server_p99_ms or math.nan:.1f} ms, stable={m.stable}, gen CPU {m.generator_cpu:.2f}"
    )


def noop_tail(runner: LocustRunner, seconds: float) -> dict[str, float]:
    spec = ServerSpec(service_spec("noop"), args={"max_batch_size": 8, "max_latency_ms": 1000})
    with running_server(spec) as server:
        one(runner, server, "noop", LoadStep(users=4, duration_s=3))  # warm-up
        capacity = one(runner, server, "noop", LoadStep(users=8, duration_s=seconds))
        half = capacity.measurement.goodput_rps / 2
        paced = one(runner, server, "noop", LoadStep(users=8, duration_s=2 * seconds, rate=half))
    print("no-op /echo (1 worker):")
    print(line("capacity, 8 closed-loop users", capacity))
    print(line(f"paced at {half:.0f}/s (~50%)", paced))
    m = paced.measurement
    return {"noop_capacity_rps": capacity.measurement.goodput_rps, "noop_rate": half,
            "noop_p99_ms_client": m.client_p99_ms, "noop_p99_ms_server": m.server_p99_ms or math.nan,
            "noop_p50_client_over_server": m.client_p50_ms / (m.server_p50_ms or math.nan)}  # fmt: skip


def embedding(runner: LocustRunner, seconds: float, repeats: int) -> dict[str, float]:
    args = {"max_batch_size": 16, "max_latency_ms": 1000, "threads": 2}
    spec = ServerSpec(service_spec("embedding"), args=args)
    with running_server(spec, ready_timeout_s=180) as server:
        one(runner, server, "embedding", LoadStep(users=4, duration_s=3))  # warm-up
        capacity = one(runner, server, "embedding", LoadStep(users=16, duration_s=seconds))
        half = capacity.measurement.goodput_rps / 2
        paced = one(runner, server, "embedding", LoadStep(users=8, duration_s=seconds, rate=half))
        runs = [
            one(runner, server, "embedding", LoadStep(users=8, duration_s=seconds)) for _ in range(repeats)
        ]
    print(f"embedding /encode (1 worker x 2 threads, {args}):")
    print(line("capacity, 16 closed-loop users", capacity))
    print(line(f"paced at {half:.1f}/s (~50%)", paced))
    goodputs = [r.measurement.goodput_rps for r in runs]
    for i, r in enumerate(runs, 1):
        print(line(f"repeat {i}, 8 users", r))
    cv = statistics.pstdev(goodputs) / statistics.fmean(goodputs)
    m = paced.measurement
    return {"embedding_capacity_rps": capacity.measurement.goodput_rps,
            "p50_client_over_server": m.client_p50_ms / (m.server_p50_ms or math.nan),
            "goodput_cv": cv, "goodputs": goodputs}  # type: ignore[dict-item]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="shorter steps (noisier)")
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    seconds = 4.0 if options.quick else 8.0
    runner = LocustRunner(settle_s=1.0)
    before = load_average()
    figures: dict[str, object] = {}
    figures |= noop_tail(runner, seconds)
    figures |= embedding(runner, seconds, options.repeats)
    figures["load_average_before"] = before
    figures["load_average_after"] = load_average()
    print()
    print(f"no-op p99 at ~50% load: client {figures['noop_p99_ms_client']:.1f} ms, "
          f"server {figures['noop_p99_ms_server']:.1f} ms   (target <= 15)")  # fmt: skip
    print(f"client p50 / server p50 (embedding, ~50% load): {figures['p50_client_over_server']:.3f}"
          f"   (no-op: {figures['noop_p50_client_over_server']:.3f})   (target within 10%)")  # fmt: skip
    print(f"goodput CV over {options.repeats} runs: {figures['goodput_cv']:.3f}   (target <= 0.05)")
    print(f"load average before / after: {before} / {figures['load_average_after']} (2 cores, shared)")
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in figures.items()
        }
        options.json.write_text(json.dumps(clean, indent=2))
        print(f"wrote {options.json}")


if __name__ == "__main__":
    main()
