"""`servetune demo`: the README's main job — tune the MiniLM embedding service against the naive one."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tuner.commands.console import console, fail
from tuner.strategies import DEFAULT_STRATEGY, STRATEGY_HELP

if TYPE_CHECKING:
    from tuner.store import TrialRecord

DEMO_OUT = Path("reports/demo")
DEMO_SLO_MS = 200.0
DEMO_TRIALS = 10
DEMO_BUDGET_S = 360.0  # the whole demo, models and report included
REPORT_RESERVE_S = 10.0  # writing the report and summary after the study


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def ensure_models() -> None:
    """Train digits and import MiniLM into the store when they are missing."""
    from services.models.minilm import import_minilm
    from services.models.pipeline import train_and_store
    from services.models.store import DIGITS, MINILM, has_model
    from services.models.train import TrainConfig

    if not has_model(DIGITS):
        console.print("training digits (first run) ...")
        stored = train_and_store(TrainConfig())
        console.print(f"stored {stored.tag}: test accuracy {stored.test.accuracy:.4f}")
    if not has_model(MINILM):
        console.print(f"imported MiniLM as {import_minilm()}")


def sentence_stats() -> dict[str, Any]:
    """Word and MiniLM token length distributions of the shipped sentence set the load sends."""
    from services.models.sentences import load_sentences, token_length_stats, word_length_stats

    sentences = load_sentences()
    return {"words": word_length_stats(sentences), "tokens": token_length_stats(sentences)}


def demo(
    trials: Annotated[
        int, typer.Option(min=1, help="most tuning trials (the budget may run fewer)")
    ] = DEMO_TRIALS,
    strategy: Annotated[str, typer.Option(help=STRATEGY_HELP)] = DEFAULT_STRATEGY,
    time_budget: Annotated[
        float, typer.Option(min=60, help="seconds for the whole demo: fewer trials rather than an overrun")
    ] = DEMO_BUDGET_S,
    finalists: Annotated[int, typer.Option(min=0, help="top-k re-measured")] = 2,
    repeats: Annotated[int, typer.Option(min=0, help="re-measurements per finalist")] = 2,
    out: Annotated[Path, typer.Option(help="study folder")] = DEMO_OUT,
    resume: Annotated[bool, typer.Option(help="continue an interrupted demo study")] = False,
    started_at: Annotated[
        float | None,
        typer.Option(help="epoch seconds the budget counts from (`make demo` passes its own start)"),
    ] = None,
) -> None:
    """Build models if missing, tune TextEmbedding (MiniLM) under p95 <= 200 ms, compare with naive
    and with BentoML's default batching; every config's capacity is searched, not read off a ladder."""
    from core.leftovers import RUNNING_FILE, StillRunning, stop_leftovers
    from core.signals import exit_code, stop_reason
    from tuner.commands.tune import TuneOptions, print_outcome, run_tune_cli

    before = max(0.0, time.time() - started_at) if started_at is not None else 0.0
    if before > 3600:
        fail(f"--started-at: {before:.0f} s ago; pass the epoch seconds at which the demo started")
    t0 = time.monotonic() - before  # `make` creating .venv counts against the budget too
    if before >= 1:
        console.print(f"{before:.0f} s spent before the demo started (installing)", highlight=False)
    try:
        ensure_models()
    except KeyboardInterrupt as exc:
        console.print(f"[yellow]interrupted by {stop_reason(exc)}[/] while building the models")
        raise typer.Exit(exit_code(exc)) from None
    stats = sentence_stats()
    words, tokens = stats["words"], stats["tokens"]
    console.print(
        f"load: the shipped set of {words['count']} English sentences, one per request; words "
        f"min {words['min']} / median {words['median']:.0f} / mean {words['mean']} / max {words['max']}; "
        f"MiniLM tokens min {tokens['min']} / p10 {tokens['p10']} / median {tokens['median']:.0f} / "
        f"mean {tokens['mean']} / p90 {tokens['p90']} / max {tokens['max']}",
        highlight=False,
    )
    if out.exists() and not resume:
        try:  # a killed demo's server must not outlive its folder
            stop_leftovers(out / RUNNING_FILE, console.print)
        except StillRunning as exc:
            fail(str(exc))
        shutil.rmtree(out)
    study_budget = time_budget - (time.monotonic() - t0) - REPORT_RESERVE_S
    console.print(
        f"time budget: {time_budget:.0f} s for the demo, {study_budget:.0f} s of it for the study "
        "(profile, naive and BentoML-default baselines, trials, finalists)",
        highlight=False,
    )
    options = TuneOptions(
        service="embedding", strategy=strategy, trials=trials, slo_ms=DEMO_SLO_MS, out=out,
        resume=resume, finalists=finalists, repeats=repeats, warmup_s=2.0, naive_baseline=True,
        default_baseline=True, time_budget_s=max(30.0, study_budget),
    )  # fmt: skip
    load_before = os.getloadavg()
    outcome = run_tune_cli(options, f"rerun `servetune demo --resume` to continue {out}")
    print_outcome(outcome)
    wall = time.monotonic() - t0
    summary = demo_summary(outcome, stats, wall, load_before)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_closing(summary, out)


def profiled_batch16_s(out: Path) -> float | None:
    """In-process MiniLM fp32 batch-16 seconds at 1 thread from the study's profile (machine speed)."""
    from tuner.profile import Profile

    path = out / "profile.json"
    if not path.exists():
        return None
    points = Profile.load(path).points.get("fp32@cpu", [])
    times = [p.seconds for p in points if p.batch == 16 and p.threads == 1]
    return min(times) if times else None


def demo_summary(
    outcome: Any, stats: dict[str, Any], wall: float, load_before: tuple[float, ...]
) -> dict[str, Any]:
    """The figures the closing note quotes (also reports/demo/summary.json)."""
    from tuner.finalists import mean_goodput_of
    from tuner.tuning import DEFAULT_LABEL, NAIVE_LABEL

    result = outcome.result
    winner = result.winner
    by_label = {b.label: b for b in outcome.baselines}
    naive, default = by_label.get(NAIVE_LABEL), by_label.get(DEFAULT_LABEL)
    winner_rps = winner.mean_goodput if winner is not None else 0.0
    interval = winner.repeated_interval if winner is not None else None

    default_rps = round(mean_goodput_of(default, result.finalists), 1) if default is not None else None

    def ratio(baseline: TrialRecord | None) -> float | None:
        rps = mean_goodput_of(baseline, result.finalists)
        return round(winner_rps / rps, 2) if rps > 0 and winner is not None else None

    return {
        "winner": winner.config.serve_config("embedding").model_dump() if winner else None,
        "winner_key": winner.config.key if winner else None,
        "winner_goodput_rps": round(winner_rps, 1),
        "winner_goodput_runs": [round(g, 1) for g in winner.goodputs] if winner else [],
        "winner_interval_rps": [round(v, 1) for v in interval] if interval else None,
        "winner_stdev_rps": round(winner.stdev, 1) if winner else None,
        "winner_searches_cut_by_budget": sum(map(cut_by_budget, winner.measured)) if winner else 0,
        "choice": result.choice.explain() if result.choice else None,
        "statistically_tied": bool(result.choice and result.choice.is_tie),
        "winner_kept_baseline": (result.choice.kept_baseline or None) if result.choice else None,
        "naive": naive.config if naive is not None else None,
        "naive_goodput_rps": round(naive.goodput_rps, 1) if naive is not None else 0.0,
        "naive_status": naive.status if naive is not None else None,
        "naive_cut_by_budget": cut_by_budget(naive),
        "ratio": ratio(naive),
        "bentoml_default_goodput_rps": default_rps,
        "ratio_over_bentoml_default": ratio(default),
        "bentoml_default_cut_by_budget": cut_by_budget(default),
        "slo_p95_ms": DEMO_SLO_MS,
        "max_failure_ratio": outcome.settings.get("max_failure_ratio"),
        "trials": len(result.trials),
        "stopped_because": result.stopped_because,
        "finalist_runs": len([r for r in result.records if r.kind == "finalist"]),
        "failed_trials": len([r for r in result.trials if r.status == "failed"]),
        "infeasible_trials": len([r for r in result.trials if r.status == "infeasible"]),
        "unfinished_trials": len([r for r in result.trials if r.unfinished]),
        "wall_seconds": round(wall, 1),
        "inprocess_fp32_batch16_1thread_s": profiled_batch16_s(outcome.out),
        "cores": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "sentence_set": stats,
        "report": str(outcome.report),
        "winner_file": str(outcome.winner_file) if outcome.winner_file else None,
    }


CUT_NOTE = " (at least: its search was cut by the time budget)"


def cut_by_budget(record: TrialRecord | None) -> bool:
    """Its search ended at the time budget before its bracket converged: its figure is a lower
    bound (a converged bracket whose recheck or confirmation was cut is not)."""
    capacity = record.capacity if record is not None else None
    return capacity is not None and capacity.limited_by == "budget" and not capacity.converged


def print_closing(summary: dict[str, Any], out: Path) -> None:
    ratio = summary["ratio"]
    console.rule("demo result")
    interval = summary["winner_interval_rps"]
    interval_text = f", 95% interval {interval[0]}-{interval[1]}" if interval else ", no interval (1 run)"
    winner_cut = summary.get("winner_searches_cut_by_budget", 0)
    searches = summary["winner_goodput_runs"]
    winner_cut_text = (
        f" (at least: {winner_cut} of its {len(searches)} searches were cut by the time budget)"
        if winner_cut
        else ""
    )
    console.print(
        f"winner  {summary['winner_key']}: {summary['winner_goodput_rps']} good RPS{winner_cut_text}"
        f"{interval_text} (capacity searches {searches}) at p95 <= {summary['slo_p95_ms']:.0f} ms",
        highlight=False,
    )
    if summary["choice"]:
        console.print(f"        {summary['choice']}", highlight=False)
    naive_cut, default_cut = summary.get("naive_cut_by_budget"), summary.get("bentoml_default_cut_by_budget")
    console.print(
        f"naive   1 worker, non-batched /encode_unbatched, torch threads = {summary['cores']}: "
        f"{summary['naive_goodput_rps']} good RPS{CUT_NOTE if naive_cut else ''}",
        highlight=False,
    )
    if summary["bentoml_default_goodput_rps"] is not None:
        console.print(
            "BentoML default batching (100 / 60 s, 1 worker): "
            f"{summary['bentoml_default_goodput_rps']} good RPS{CUT_NOTE if default_cut else ''}",
            highlight=False,
        )
    if ratio is not None:
        colour = "green" if ratio >= 2 else "yellow"
        over_default = summary["ratio_over_bentoml_default"]
        extra = f"; tuned / BentoML default = {over_default:.2f}x" if over_default else ""
        console.print(f"[bold {colour}]tuned / naive = {ratio:.2f}x[/]{extra} (all measured in this run)")
        if naive_cut or (default_cut and over_default):
            console.print(
                "[yellow]a baseline's search was cut by the time budget: its figure is a lower bound, "
                "so the ratio over it may be too high (a longer --time-budget measures it whole)[/]"
            )
        if winner_cut:
            console.print(
                "[yellow]the winner's searches were cut by the time budget: its figure is a lower "
                "bound, so the ratios may be too low (a longer --time-budget measures it whole)[/]"
            )
    why = f" ({summary['stopped_because']})" if summary["stopped_because"] else ""
    cut = summary.get("unfinished_trials", 0)
    unfinished = f", {cut} of them unfinished (cut by the budget before any level met the SLO)" if cut else ""
    runs = f"{summary['finalist_runs']} finalist capacity searches + 2 baselines"
    console.print(
        f"{summary['trials']} trials{unfinished}{why} + {runs} in {summary['wall_seconds']:.0f} s; "
        "load average before/after "
        f"{summary['load_average_before'][0]}/{summary['load_average_after'][0]} on {summary['cores']} cores",
        highlight=False,
    )
    speed = summary["inprocess_fp32_batch16_1thread_s"]
    if speed is not None:
        console.print(
            f"machine speed: in-process MiniLM fp32 batch 16 on 1 thread took {speed:.3f} s "
            "(from the profile)",
            highlight=False,
        )
    console.print(f"report: {summary['report']}   summary: {out / 'summary.json'}")
