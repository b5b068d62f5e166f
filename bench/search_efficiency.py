"""Search efficiency: how close to the optimum each strategy gets with 2%, 5% and 10% of the space.

    .venv/bin/python bench/search_efficiency.py [--seeds 20] [--noise 0.08] [--recorded PATH ...]
                                                [--surface NAME ...] [--json PATH]

For every surface, strategy and seed, the strategy runs the study loop's rules (ask; a config it
was told about is answered from memory, never measured twice) against the surface: each new
config gets one noisy measurement (simulated: noiseless goodput x log-normal noise; recorded:
one of the recorded repeats at random). After b measurements the strategy's pick is the config
with the best *noisy* measurement; its ratio is that config's *noiseless* goodput / the
noiseless optimum. Printed: median and p10 of the ratio over the seeds, per budget.

Surfaces: the simulated ones from tuner/simulate.py (`SURFACES`, the 2-core one only on request)
plus every recorded surface under bench/surfaces/*.json and any --recorded PATH.
The guided strategy gets the surface's in-process profile (simulated: the batch times with 5%
noise, not the served overhead or contention; recorded: the profile stored with the data).
Measurement noise is common across strategies: a (seed, config) pair always measures the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.simulate import SURFACES, RecordedSurface, Surface, optimum
from tuner.space import Config, SearchSpace
from tuner.strategies import STRATEGIES
from tuner.strategies.base import SearchStrategy
from tuner.strategies.guided import GuidedSearch

BUDGETS = (0.02, 0.05, 0.10)
RECORDED_DIR = Path(__file__).resolve().parent / "surfaces"
DEFAULT_SURFACES = ("cpu-16core", "gpu-8core-4gpu")
FINALISTS_K, FINALISTS_R = 3, 3  # as `servetune tune` (--finalists 3 --repeats 3)
PICKS = ("finalists", "measured")
Factory = Callable[[SearchSpace, int], SearchStrategy]


def default_strategy() -> str:
    """The strategy `servetune tune` uses when none is given."""
    from tuner.tuning import TuneOptions

    return str(next(f.default for f in dataclasses.fields(TuneOptions) if f.name == "strategy"))


def factories(surface: Surface, seed: int) -> dict[str, Factory]:
    """Every registered strategy; guided built with the surface's profile."""
    found: dict[str, Factory] = dict(STRATEGIES)
    profile = surface.profile(seed)
    found["guided"] = lambda space, s: GuidedSearch(space, s, profile)
    return found


def measured_noise(surface: Surface, seed: int) -> Callable[[Config, int], float | None]:
    """Noisy measurement number `repeat` of a config; the same (seed, config, repeat) always
    measures the same, whatever the strategy."""
    cache: dict[tuple[str, int], float | None] = {}

    def measure(config: Config, repeat: int = 0) -> float | None:
        key = (config.key, repeat)
        if key not in cache:
            rng = random.Random(zlib.crc32(f"{surface.name}/{seed}/{config.key}/{repeat}".encode()))
            cache[key] = surface.measure(config, rng)
        return cache[key]

    return measure


def run_search(
    strategy: SearchStrategy, space: SearchSpace, measure: Callable[[Config, int], float | None], budget: int
) -> list[tuple[Config, float | None]]:
    """The study loop's rules: ask, skip known (answered from memory) and illegal configs."""
    done: dict[str, tuple[Config, float | None]] = {}
    asks_left = 50 * budget + len(space)
    while len(done) < budget and asks_left > 0:
        asks_left -= 1
        config = strategy.ask()
        if config is None:
            break
        if config.key in done:
            strategy.tell(config, done[config.key][1])
            continue
        if config not in space:
            strategy.tell(config, None)
            continue
        score = measure(config, 0)
        done[config.key] = (config, score)
        strategy.tell(config, score)
    return list(done.values())


def pick_measured(trials: Sequence[tuple[Config, float | None]]) -> Config | None:
    """The config with the best single (noisy) measurement."""
    feasible = [(score, config) for config, score in trials if score is not None]
    return max(feasible, key=lambda item: item[0])[1] if feasible else None


def pick_finalists(
    trials: Sequence[tuple[Config, float | None]], measure: Callable[[Config, int], float | None]
) -> Config | None:
    """The study's rule: the top FINALISTS_K configs re-measured FINALISTS_R times each, the best
    mean of the repeats wins (a failed repeat counts as 0)."""
    feasible = sorted(
        ((score, config) for config, score in trials if score is not None), key=lambda item: -item[0]
    )[:FINALISTS_K]
    if not feasible:
        return None

    def mean_repeat(config: Config) -> float:
        return statistics.fmean(measure(config, r) or 0.0 for r in range(1, FINALISTS_R + 1))

    return max((config for _, config in feasible), key=mean_repeat)


def ratio(surface: Surface, pick: Config | None, best_value: float) -> float:
    """Noiseless value of the picked config over the noiseless optimum."""
    return 0.0 if pick is None else surface.truth(pick) / best_value


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def evaluate(surface: Surface, seeds: int, names: Sequence[str] | None) -> list[dict[str, Any]]:
    """Rows for one surface: every strategy x budget x pick rule, median and p10 over seeds."""
    n = len(surface.space)
    _, best_value = optimum(surface)
    budgets = {fraction: max(1, round(fraction * n)) for fraction in BUDGETS}
    largest = max(budgets.values())
    ratios: dict[tuple[str, float, str], list[float]] = {}
    timing: dict[str, float] = {}
    for seed in range(seeds):
        measure = measured_noise(surface, seed)
        for name, factory in factories(surface, seed).items():
            if names and name not in names:
                continue
            started = time.perf_counter()
            trials = run_search(factory(surface.space, seed), surface.space, measure, largest)
            timing[name] = timing.get(name, 0.0) + time.perf_counter() - started
            for fraction, budget in budgets.items():
                first = trials[:budget]
                picks = {"measured": pick_measured(first), "finalists": pick_finalists(first, measure)}
                for rule, pick in picks.items():
                    ratios.setdefault((name, fraction, rule), []).append(ratio(surface, pick, best_value))
    rows = []
    for (name, fraction, rule), values in sorted(ratios.items()):
        rows.append(
            {
                "strategy": name,
                "surface": surface.name,
                "n_configs": n,
                "budget_fraction": fraction,
                "budget_trials": budgets[fraction],
                "pick": rule,
                "median_ratio": round(statistics.median(values), 4),
                "p10_ratio": round(percentile(values, 0.10), 4),
                "seeds": len(values),
                "strategy_seconds_per_run": round(timing[name] / seeds, 3),
            }
        )
    return rows


def load_surfaces(names: Sequence[str], recorded: Sequence[Path], noise: float) -> list[Surface]:
    surfaces: list[Surface] = []
    for name in names:
        if name not in SURFACES:
            raise SystemExit(f"--surface: unknown {name!r}; choose from {sorted(SURFACES)}")
        simulated = SURFACES[name]()
        simulated.noise = noise
        surfaces.append(simulated)
    paths = sorted(RECORDED_DIR.glob("*.json")) if RECORDED_DIR.is_dir() else []
    for path in [*paths, *recorded]:
        try:
            surfaces.append(RecordedSurface.load(path))
        except ValueError as exc:
            raise SystemExit(f"--recorded: {exc}") from None
    return surfaces


def print_table(rows: list[dict[str, Any]], surface: Surface, seconds: float) -> None:
    best, value = optimum(surface)
    print(f"\n{surface.name}: {len(surface.space)} configs, optimum {value:.1f} RPS at {best.key} "
          f"(noiseless values computed in {seconds:.1f} s)")  # fmt: skip
    budgets = sorted({(r["budget_fraction"], r["budget_trials"]) for r in rows})
    for rule in PICKS:
        print(
            f"  pick = {rule}"
            + ("" if rule == "measured" else f" (+{FINALISTS_K * FINALISTS_R} re-measurements)")
        )
        print("    strategy  " + "".join(f"| {b:>4.0%} = {n:>3} trials: median  p10 " for b, n in budgets))
        for name in sorted({r["strategy"] for r in rows}):
            cells = []
            for b, _ in budgets:
                row = next(
                    r
                    for r in rows
                    if r["strategy"] == name and r["budget_fraction"] == b and r["pick"] == rule
                )
                cells.append(f"|                   {row['median_ratio']:.3f} {row['p10_ratio']:.3f} ")
            print(f"    {name:<9} " + "".join(cells))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--noise", type=float, default=0.08, help="log-normal sigma of a simulated measurement"
    )
    parser.add_argument(
        "--surface", action="append", help=f"simulated surface (default: {', '.join(DEFAULT_SURFACES)})"
    )
    parser.add_argument("--recorded", action="append", type=Path, default=[], help="recorded surface JSON")
    parser.add_argument("--strategy", action="append", help="only these strategies")
    parser.add_argument("--pick", choices=PICKS, default="finalists", help="pick rule of the JSON `rows`")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    surfaces = load_surfaces(args.surface or DEFAULT_SURFACES, args.recorded, args.noise)
    default = default_strategy()
    print(
        "ratio = noiseless goodput of the picked config / noiseless optimum; pick = best single noisy "
        f"measurement ('measured') or the study's finalists rule (top {FINALISTS_K} re-measured "
        f"{FINALISTS_R}x, best mean); median and p10 over {args.seeds} seeds; simulated noise sigma "
        f"{args.noise}; default strategy: {default}"
    )
    all_rows: list[dict[str, Any]] = []
    for surface in surfaces:
        started = time.perf_counter()
        optimum(surface)  # computes (and caches) every noiseless value
        seconds = time.perf_counter() - started
        rows = evaluate(surface, args.seeds, args.strategy)
        print_table(rows, surface, seconds)
        all_rows.extend(rows)
    if args.json:
        document = {
            "default_strategy": default,
            "noise": args.noise,
            "seeds": args.seeds,
            "pick": args.pick,
            "rows": [r for r in all_rows if r["pick"] == args.pick],
            "rows_other_pick": [r for r in all_rows if r["pick"] != args.pick],
        }
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
