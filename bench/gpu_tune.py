"""The GPU check's short tune: sized to the time left (`size_tune`), run as a phase, summarised
from its study folder when it is cut short (`partial_tune`).
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.gpu_phases import CheckState, run_phase
from bench.gpu_plan import MIN_TUNE_S, TUNE_SETUP_S, CheckPlan, Seams, tune_options, workers_per_gpu
from bench.gpu_sampler import GpuSampler, StepClock, gpu_figures

if TYPE_CHECKING:
    from tuner.space import Config
    from tuner.store import TrialRecord


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
