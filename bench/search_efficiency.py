"""Search efficiency: how close to the optimum each strategy gets with 2%, 5% and 10% of the space.

    .venv/bin/python bench/search_efficiency.py [--seeds 20] [--noise 0.08] [--recorded PATH ...]
        [--surface NAME ...] [--hidden drawn|centre] [--strategy NAME ...] [--json PATH]

For every surface, strategy, seed and budget b, tuner's real `Study` runs with b trials and the
finalists rule of `servetune tune` (top 3 re-measured 3 times, best mean wins) against the
surface through fakes of the Deployer and LoadRunner seams (bench/surface_study.py): each
measurement is one noisy value (simulated: noiseless goodput x log-normal noise; recorded: one
of the recorded repeats at random), the same for every strategy. The score is the winner's
noiseless goodput / the noiseless optimum; printed are its median and p10 over the seeds
(numpy quantiles), and the same for the best single trial measurement ('measured').

Surfaces: the simulated presets of bench/presets.py (the 2-core one only on request) plus every
recorded surface under bench/surfaces/*.json and any --recorded PATH. A simulated surface draws
its hidden parameters (served overhead, oversubscription, served slowdown, the shape of a batch's
time) per seed from ranges wider than the guided strategy's prior grid, so guided is scored
out-of-sample (`--hidden centre` instead uses the values guided's prior is centred on:
in-sample). The guided strategy gets the surface's in-process profile (simulated: the in-process
batch times with 5% noise; recorded: the profile stored with the data).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.presets import SURFACES, Hidden, Preset, draw_hidden
from bench.surface import RecordedSurface, Surface
from bench.surface_study import SurfaceStudy, run_study
from tuner.space import Config, SearchSpace
from tuner.strategies import STRATEGIES
from tuner.strategies.base import SearchStrategy
from tuner.strategies.guided import GuidedSearch

BUDGETS = (0.02, 0.05, 0.10)
RECORDED_DIR = Path(__file__).resolve().parent / "surfaces"
DEFAULT_SURFACES = ("cpu-16core", "gpu-8core-4gpu")
PICKS = ("finalists", "measured")
HIDDEN = ("drawn", "centre")
Factory = Callable[[SearchSpace, int], SearchStrategy]


class Scored(NamedTuple):
    """The surface a seed is scored on, and its hidden parameters when simulated."""

    surface: Surface
    hidden: Hidden | None = None


SurfaceForSeed = Callable[[int], Scored]


def tune_defaults() -> tuple[str, int, int]:
    """(strategy, finalists, repeats) as `servetune tune` uses them when not told otherwise."""
    from tuner.tuning import TuneOptions

    options = TuneOptions(service="")
    return options.strategy, options.finalists, options.repeats


def factories(surface: Surface, seed: int) -> dict[str, Factory]:
    """Every registered strategy; guided built with the surface's profile."""
    found: dict[str, Factory] = dict(STRATEGIES)
    profile = surface.profile(seed)
    found["guided"] = lambda space, s: GuidedSearch(space, s, profile)
    return found


def quantile(values: Sequence[float], q: float) -> float:
    return float(np.quantile(np.asarray(values, dtype=float), q))


def ratio(surface: Surface, pick: Config | None, best_value: float) -> float:
    """Noiseless value of the picked config over the noiseless optimum (0 when nothing was picked)."""
    return 0.0 if pick is None else surface.truth(pick) / best_value


def best_measured(study: SurfaceStudy) -> Config | None:
    """The trial with the best single (noisy) measurement, the first on a tie."""
    scored = [r for r in study.result.trials if r.score is not None]
    return max(scored, key=lambda r: r.score or 0.0).cfg if scored else None


def simulated_source(preset: Preset, name: str, hidden: str, noise: float) -> SurfaceForSeed:
    """Per seed a surface with hidden parameters drawn for (name, seed), or one surface with the
    values the guided prior is centred on (its noiseless values computed once)."""
    centre: list[Scored] = []

    def for_seed(seed: int) -> Scored:
        if hidden == "drawn":
            values = draw_hidden(random.Random(f"{name}/hidden/{seed}"))
            return Scored(preset(hidden=values, noise=noise), values)
        if not centre:
            centre.append(Scored(preset(hidden=Hidden(), noise=noise), Hidden()))
        return centre[0]

    return for_seed


def recorded_source(surface: RecordedSurface) -> SurfaceForSeed:
    """The same recorded surface for every seed."""

    def for_seed(seed: int) -> Scored:
        return Scored(surface)

    return for_seed


def evaluate(
    name: str, source: SurfaceForSeed, seeds: int, names: Sequence[str] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows for one surface (strategy x budget x pick rule, median and p10 over seeds), and per
    seed the surface's optimum and hidden parameters."""
    default, finalists, repeats = tune_defaults()
    ratios: dict[tuple[str, float, str], list[float]] = {}
    per_seed: list[dict[str, Any]] = []
    budgets: dict[float, int] = {}
    n = 0
    for seed in range(seeds):
        surface, hidden = source(seed)
        n = len(surface.space)
        budgets = {fraction: max(1, round(fraction * n)) for fraction in BUDGETS}
        best, best_value = surface.optimum()
        per_seed.append({"seed": seed, "optimum": best.key, "optimum_rps": round(best_value, 2)})
        if hidden is not None:
            per_seed[-1]["hidden"] = hidden.to_dict()
        for strategy, factory in factories(surface, seed).items():
            if names and strategy not in names:
                continue
            for fraction, budget in budgets.items():
                study = run_study(surface, factory(surface.space, seed), seed, budget, finalists, repeats)
                picks = {"finalists": study.winner, "measured": best_measured(study)}
                for rule, pick in picks.items():
                    ratios.setdefault((strategy, fraction, rule), []).append(ratio(surface, pick, best_value))
    rows = [
        {
            "strategy": strategy,
            "surface": name,
            "n_configs": n,
            "budget_fraction": fraction,
            "budget_trials": budgets[fraction],
            "pick": rule,
            "median_ratio": round(statistics.median(values), 4),
            "p10_ratio": round(quantile(values, 0.10), 4),
            "seeds": len(values),
            "default": strategy == default,
        }
        for (strategy, fraction, rule), values in sorted(ratios.items())
    ]
    return rows, per_seed


class Source(NamedTuple):
    """A surface of the benchmark: its name, whether guided is scored in or out of sample (and
    why), and the surface each seed is scored on."""

    name: str
    sample: str
    why: str
    for_seed: SurfaceForSeed


DRAWN = "hidden parameters drawn per seed from ranges wider than guided's prior grid"
CENTRE = "the model family guided predicts with, at the parameters its prior is centred on"


def load_surfaces(
    names: Sequence[str], recorded: Sequence[Path], noise: float, hidden: str, recorded_dir: Path | None
) -> list[Source]:
    """Simulated presets, then the recorded surfaces (those in `recorded_dir`, then `recorded`).

    A recorded surface is in-sample for guided when its meta says what of guided was designed on it.
    """
    found: list[Source] = []
    for name in names:
        if name not in SURFACES:
            raise SystemExit(f"--surface: unknown {name!r}; choose from {sorted(SURFACES)}")
        source = simulated_source(SURFACES[name], name, hidden, noise)
        if hidden == "drawn":
            found.append(Source(name, "out-of-sample", DRAWN, source))
        else:
            found.append(Source(name, "in-sample", CENTRE, source))
    paths = sorted(recorded_dir.glob("*.json")) if recorded_dir is not None and recorded_dir.is_dir() else []
    for path in [*paths, *recorded]:
        try:
            surface = RecordedSurface.load(path)
        except ValueError as exc:
            raise SystemExit(f"--recorded: {exc}") from None
        designed = dict(surface.meta.get("in_sample_for") or {}).get("guided")
        sample, why = ("in-sample", str(designed)) if designed else ("out-of-sample", "recorded")
        found.append(Source(surface.name, sample, why, recorded_source(surface)))
    return found


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    print(f"\n{title}")
    budgets = sorted({(r["budget_fraction"], r["budget_trials"]) for r in rows})
    for rule in PICKS:
        print(f"  pick = {rule}")
        print("    strategy  " + "".join(f"| {b:>4.0%} = {n:>3} trials: median  p10 " for b, n in budgets))
        for strategy in sorted({r["strategy"] for r in rows}):
            cells = []
            for b, _ in budgets:
                row = next(
                    r
                    for r in rows
                    if r["strategy"] == strategy and r["budget_fraction"] == b and r["pick"] == rule
                )
                cells.append(f"|                   {row['median_ratio']:.3f} {row['p10_ratio']:.3f} ")
            print(f"    {strategy:<9} " + "".join(cells))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--noise", type=float, default=0.08, help="log-normal sigma of a simulated measurement"
    )
    parser.add_argument(
        "--surface", action="append", help=f"simulated surface (default: {', '.join(DEFAULT_SURFACES)})"
    )
    parser.add_argument(
        "--hidden", choices=HIDDEN, default="drawn", help="simulated surfaces: drawn per seed or the centre"
    )
    parser.add_argument("--recorded", action="append", type=Path, default=[], help="recorded surface JSON")
    parser.add_argument("--no-recorded", action="store_true", help="skip bench/surfaces/*.json")
    parser.add_argument("--strategy", action="append", help="only these strategies")
    parser.add_argument("--pick", choices=PICKS, default="finalists", help="pick rule of the JSON `rows`")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    recorded_dir = None if args.no_recorded else RECORDED_DIR
    surfaces = load_surfaces(
        args.surface or DEFAULT_SURFACES, args.recorded, args.noise, args.hidden, recorded_dir
    )
    default, finalists, repeats = tune_defaults()
    print(
        "ratio = noiseless goodput of the picked config / noiseless optimum; pick = the study's "
        f"finalists rule (top {finalists} re-measured {repeats}x, best mean) or the best single "
        f"measurement ('measured'); median and p10 over {args.seeds} seeds; simulated noise sigma "
        f"{args.noise}, hidden parameters {args.hidden}; default strategy: {default}"
    )
    all_rows: list[dict[str, Any]] = []
    surfaces_doc: dict[str, Any] = {}
    for source in surfaces:
        started = time.perf_counter()
        rows, per_seed = evaluate(source.name, source.for_seed, args.seeds, args.strategy)
        seconds = time.perf_counter() - started
        for row in rows:
            row["guided_sample"] = source.sample
        about = f"{rows[0]['n_configs']} configs, {seconds:.0f} s; guided {source.sample}: {source.why}"
        print_table(rows, f"{source.name}: {about}")
        all_rows.extend(rows)
        surfaces_doc[source.name] = {
            "guided_sample": source.sample, "why": source.why, "seconds": round(seconds, 1), "seeds": per_seed
        }  # fmt: skip
    if args.json:
        document = {
            "default_strategy": default,
            "noise": args.noise,
            "seeds": args.seeds,
            "hidden": args.hidden,
            "pick": args.pick,
            "rows": [r for r in all_rows if r["pick"] == args.pick],
            "rows_other_pick": [r for r in all_rows if r["pick"] != args.pick],
            "surfaces": surfaces_doc,
        }
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
