"""Simulator vs real measurements: predicted goodput of every config of a recorded surface.

    .venv/bin/python bench/simulator_validation.py PATH [--overhead-ms 2.5] [--json OUT]

PATH is a recorded surface (see `bench.surface.RecordedSurface.load`) that carries the in-process
profile measured with it. Two predictions are scored against the mean of the recorded repeats:
1. uncalibrated: the profile's batch times plus the default served overhead / oversubscription;
2. calibrated on half the configs (every other one, by key): the (overhead, oversubscription,
   served slowdown) candidate with the lowest log error on that half, scored on the other half.
Errors are relative (|predicted / measured - 1|, configs with measured goodput > 0), plus the
Spearman rank correlation and the share of configs where both agree on zero vs non-zero goodput.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.surface import RecordedSurface
from bench.validation import validate
from tuner.servermodel import ServerModel, model_from_profile
from tuner.simulator import max_goodput
from tuner.strategies.guided import OVERHEAD_S, OVERSUBSCRIPTION, SERVED_SLOWDOWN

Unknowns = tuple[float, float, float]  # (overhead s, oversubscription exponent, served slowdown)


def fitted_model(surface: RecordedSurface, unknowns: Unknowns) -> ServerModel:
    assert surface.recorded_profile is not None
    overhead, oversubscription, slowdown = unknowns
    machine = surface.space.machine
    return model_from_profile(
        surface.recorded_profile, machine.cores, machine.gpus, overhead, oversubscription, slowdown
    )


def log_error(unknowns: Unknowns, surface: RecordedSurface, keys: set[str]) -> float:
    model = fitted_model(surface, unknowns)
    total = 0.0
    for config in surface.space.configs:
        if config.key in keys:
            measured, predicted = surface.truth(config), max_goodput(model, config, requests=800).goodput_rps
            total += (math.log(measured + 1.0) - math.log(predicted + 1.0)) ** 2
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--overhead-ms", type=float, default=2.5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        surface = RecordedSurface.load(args.path)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if surface.recorded_profile is None:
        raise SystemExit(f"{args.path}: has no `profile`; record one with tuner.profile.profile_service")
    cores = surface.space.machine.cores
    measured = [(c, surface.truth(c)) for c in surface.space.configs]
    plain = model_from_profile(surface.recorded_profile, cores, request_overhead_s=args.overhead_ms / 1000)
    uncalibrated = validate(plain, measured)
    print(f"uncalibrated ({args.overhead_ms} ms overhead): {uncalibrated.summary()}")
    keys = sorted(c.key for c in surface.space.configs)
    train, test = set(keys[::2]), set(keys[1::2])
    candidates = list(itertools.product(OVERHEAD_S, OVERSUBSCRIPTION, SERVED_SLOWDOWN))
    best = min(candidates, key=lambda unknowns: log_error(unknowns, surface, train))
    fitted = fitted_model(surface, best)
    held_out = validate(fitted, [(c, g) for c, g in measured if c.key in test])
    print(
        f"calibrated on half (overhead {best[0] * 1000:.1f} ms, oversubscription {best[1]}, served "
        f"slowdown {best[2]}): held-out {held_out.summary()}"
    )
    for row in sorted(uncalibrated.rows, key=lambda r: -r.measured)[:10]:
        print(f"  {row.config.key}: measured {row.measured:.1f}, predicted {row.predicted:.1f}")
    if args.json:
        summary = {
            "uncalibrated": {
                k: getattr(uncalibrated, k)
                for k in ("median_abs_error", "mean_abs_error", "rank_correlation", "feasibility_agreement")
            },
            "calibrated": dict(zip(("overhead_s", "oversubscription", "served_slowdown"), best, strict=True)),
            "held_out": {
                k: getattr(held_out, k)
                for k in ("median_abs_error", "mean_abs_error", "rank_correlation", "feasibility_agreement")
            },
        }
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
