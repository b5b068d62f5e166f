"""`servetune demo`: the README's main job — tune the MiniLM embedding service against the naive one."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tuner.commands.console import console, fail
from tuner.strategies import DEFAULT_STRATEGY, STRATEGY_HELP

DEMO_OUT = Path("reports/demo")
DEMO_SLO_MS = 200.0
DEMO_TRIALS = 10
# Closed-loop user steps (one Locust process per trial, stepping stops at the first clear breach).
# Fixed-length windows after a 0.5 s settle keep 10 trials + naive + finalists inside 6 minutes
# (a 12-trial run with int8 workers, slower to start, took 400 s).
DEMO_USERS = (8, 18, 28)
NAIVE_USERS = (1, 2, 4)


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
    trials: Annotated[int, typer.Option(min=1, help="tuning trials (distinct configs)")] = DEMO_TRIALS,
    strategy: Annotated[str, typer.Option(help=STRATEGY_HELP)] = DEFAULT_STRATEGY,
    step_seconds: Annotated[float, typer.Option(min=1, help="seconds per load step")] = 3.0,
    finalists: Annotated[int, typer.Option(min=0, help="top-k re-measured")] = 2,
    repeats: Annotated[int, typer.Option(min=0, help="re-measurements per finalist")] = 1,
    out: Annotated[Path, typer.Option(help="study folder")] = DEMO_OUT,
    resume: Annotated[bool, typer.Option(help="continue an interrupted demo study")] = False,
) -> None:
    """Build models if missing, tune TextEmbedding (MiniLM) under p95 <= 200 ms, compare with naive."""
    from core.processes import RUNNING_FILE, StillRunning, exit_code, stop_leftovers, stop_reason
    from tuner.commands.tune import TuneOptions, print_outcome, run_tune_cli

    t0 = time.monotonic()
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
    options = TuneOptions(
        service="embedding", strategy=strategy, trials=trials, slo_ms=DEMO_SLO_MS, out=out,
        resume=resume, finalists=finalists, repeats=repeats, step_s=step_seconds, warmup_s=0.0,
        users=DEMO_USERS, naive_users=NAIVE_USERS, naive_baseline=True, max_extend=1.0, settle_s=0.5,
    )  # fmt: skip
    load_before = os.getloadavg()
    outcome = run_tune_cli(options, f"rerun `servetune demo --resume` to continue {out}")
    print_outcome(outcome)
    wall = time.monotonic() - t0
    summary = demo_summary(outcome, stats, wall, load_before)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_closing(summary, out)


def demo_summary(
    outcome: Any, stats: dict[str, Any], wall: float, load_before: tuple[float, ...]
) -> dict[str, Any]:
    """The figures the closing note quotes (also reports/demo/summary.json)."""
    result = outcome.result
    winner = result.winner
    naive = outcome.baseline
    naive_rps = naive.goodput_rps if naive is not None else 0.0
    winner_rps = winner.mean_goodput if winner is not None else 0.0
    return {
        "winner": winner.config.serve_config("embedding").model_dump() if winner else None,
        "winner_key": winner.config.key if winner else None,
        "winner_goodput_rps": round(winner_rps, 1),
        "winner_goodput_runs": [round(g, 1) for g in winner.goodputs] if winner else [],
        "winner_spread_rps": round(winner.spread, 1) if winner else None,
        "naive": naive.config if naive is not None else None,
        "naive_goodput_rps": round(naive_rps, 1),
        "naive_status": naive.status if naive is not None else None,
        "ratio": round(winner_rps / naive_rps, 2) if naive_rps > 0 else None,
        "slo_p95_ms": DEMO_SLO_MS,
        "max_failure_ratio": outcome.settings.get("max_failure_ratio"),
        "trials": len(result.trials),
        "finalist_runs": len([r for r in result.records if r.kind == "finalist"]),
        "failed_trials": len([r for r in result.trials if r.status == "failed"]),
        "infeasible_trials": len([r for r in result.trials if r.status == "infeasible"]),
        "wall_seconds": round(wall, 1),
        "cores": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "sentence_set": stats,
        "report": str(outcome.report),
        "winner_file": str(outcome.winner_file) if outcome.winner_file else None,
    }


def print_closing(summary: dict[str, Any], out: Path) -> None:
    ratio = summary["ratio"]
    console.rule("demo result")
    console.print(
        f"winner  {summary['winner_key']}: {summary['winner_goodput_rps']} good RPS "
        f"(runs {summary['winner_goodput_runs']}) at p95 <= {summary['slo_p95_ms']:.0f} ms"
    )
    console.print(
        f"naive   1 worker, non-batched /encode_unbatched, torch threads = {summary['cores']}: "
        f"{summary['naive_goodput_rps']} good RPS"
    )
    if ratio is not None:
        colour = "green" if ratio >= 2 else "yellow"
        console.print(f"[bold {colour}]tuned / naive = {ratio:.2f}x[/] (both measured in this run)")
    console.print(
        f"{summary['trials']} trials + {summary['finalist_runs']} finalist re-runs + naive in "
        f"{summary['wall_seconds']:.0f} s; load average before/after {summary['load_average_before'][0]}"
        f"/{summary['load_average_after'][0]} on {summary['cores']} cores"
    )
    console.print(f"report: {summary['report']}   summary: {out / 'summary.json'}")
