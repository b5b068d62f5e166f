"""Capacity search accuracy over several runs of `bench/capacity_accuracy.py`: is the search biased,
or is one run's error the machine's noise?

    .venv/bin/python -m bench.capacity_accuracy_runs RUN.json [RUN.json ...] [--json PATH]

One run compares each config's mean of 3 searches with a mean of 2-3 reference passes, each on a
fresh server; on these shared VMs one config's capacity moves 10-30% between fresh servers and
between minutes, so one run's error mixes the search's bias with that noise. Per config, over the
runs given: each run's signed error, their mean (the search's bias, were the runs alike) with a
95% Student-t interval, their standard deviation (how far one run lands from it), and the share
of runs within the 10% target. Over every row: |error| / the row's own noise floor (about 1 when
the spread of its repeated measurements alone explains its error; the floor does not see drift
between the measurements, so above 1 is expected), and how many runs met both targets.
Against that, what the repeated measurements alone allow (`bench/accuracy_noise.py`): per config
the spread of one search and of one pass, the row error they give an unbiased search, and the
share of runs an unbiased search would meet both targets in (as repeatable as the searches were
measured, and as repeatable as a reference pass).
Runs made at different commits of the search pool different rules: each run's commit is listed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.accuracy_noise import noise_summary
from bench.capacity_accuracy import MAX_TARGET, summarize
from bench.runfacts import write_json
from tuner.finalists import t_interval


@dataclass(frozen=True)
class RowError:
    """One config's figures in one run."""

    run: str
    commit: str
    rel_error: float
    noise_floor: float | None


def run_commit(run: Mapping[str, Any]) -> str:
    """The short commit a run started from ("" when it did not record one)."""
    return str(run.get("code", {}).get("commit", ""))[:7]


def row_errors(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, list[RowError]]:
    """Per config, its row in each run that has a reference (runs in the order given)."""
    found: dict[str, list[RowError]] = {}
    for name, run in runs.items():
        commit = run_commit(run)
        for row in run["rows"]:
            if row.get("rel_error") is None:
                continue
            error = RowError(name, commit, float(row["rel_error"]), row.get("noise_floor"))
            found.setdefault(row["config"], []).append(error)
    return found


def mean_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The 95% Student-t interval of the mean (None with fewer than two values)."""
    return t_interval(values) if len(values) >= 2 else None


def per_config(errors: Sequence[RowError]) -> dict[str, Any]:
    """One config over the runs: its errors, their mean and interval, spread, share within target."""
    values = [e.rel_error for e in errors]
    interval = mean_interval(values)
    return {
        "runs": len(values),
        "rel_errors": [round(v, 4) for v in values],
        "mean_rel_error": round(statistics.fmean(values), 4),
        "mean_interval_95": [round(v, 4) for v in interval] if interval else None,
        "sd_rel_error": round(statistics.stdev(values), 4) if len(values) > 1 else None,
        "rms_rel_error": round(statistics.fmean(v * v for v in values) ** 0.5, 4),
        "mean_abs_rel_error": round(statistics.fmean(abs(v) for v in values), 4),
        "within_max_target": sum(abs(v) <= MAX_TARGET for v in values),
    }


def run_met(run: Mapping[str, Any]) -> bool:
    """Both targets met by one run, every row scored (`summarize` on its recorded rows); a run
    stopped part-way has not met them."""
    return not run.get("partial", False) and bool(summarize(run["rows"])["met"])


def run_summary(name: str, run: Mapping[str, Any]) -> dict[str, Any]:
    """One run's commit, its own median and max error, and whether it met both targets."""
    return {
        "run": name,
        "commit": run_commit(run),
        "met": run_met(run),
        "median_rel_error": run.get("median_rel_error"),
        "max_rel_error": run.get("max_rel_error"),
    }


def pool(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The per-config figures and the summary over every row and run."""
    by_config = row_errors(runs)
    rows = [e for errors in by_config.values() for e in errors]
    ratios = [abs(e.rel_error) / e.noise_floor for e in rows if e.noise_floor]
    return {
        "runs": [run_summary(name, run) for name, run in runs.items()],
        "configs": {config: per_config(errors) for config, errors in by_config.items()},
        "rows": len(rows),
        "rows_within_max_target": sum(abs(e.rel_error) <= MAX_TARGET for e in rows),
        "median_abs_error_over_noise_floor": round(statistics.median(ratios), 3) if ratios else None,
        "mean_abs_error_over_noise_floor": round(statistics.fmean(ratios), 3) if ratios else None,
        "runs_met_both_targets": sum(run_met(run) for run in runs.values()),
        "noise": noise_summary(runs),
    }


def table(pooled: Mapping[str, Any]) -> str:
    """Per config for people: errors per run, mean [95% interval], sd, within 10%."""
    head = f"{'config':<36} {'runs':>4} {'mean':>7} {'95% interval':>17} {'sd':>6} {'<=10%':>6}  errors"
    lines = [head, "-" * len(head)]
    for config, c in pooled["configs"].items():
        low_high = c["mean_interval_95"]
        interval = f"{low_high[0]:+.1%}..{low_high[1]:+.1%}" if low_high else "-"
        sd = f"{c['sd_rel_error']:.1%}" if c["sd_rel_error"] is not None else "-"
        errors = ", ".join(f"{v:+.1%}" for v in c["rel_errors"])
        lines.append(
            f"{config:<36} {c['runs']:>4} {c['mean_rel_error']:>+7.1%} {interval:>17} {sd:>6} "
            f"{c['within_max_target']:>3}/{c['runs']:<2}  {errors}"
        )
    return "\n".join(lines)


def noise_table(pooled: Mapping[str, Any]) -> str:
    """Per config: one search's and one pass's spread, the row error they give an unbiased
    search, against the row errors the runs measured (root mean square)."""
    head = (
        f"{'config':<36} {'1 search sd':>11} {'1 pass sd':>9} {'error sd, noise alone':>21} "
        f"{'measured rms':>12}"
    )
    lines = [head, "-" * len(head)]
    for config, n in pooled["noise"]["configs"].items():
        cells = [n["single_search_sd"], n["single_pass_sd"], n["error_sd_from_noise"]]
        shown = [f"{v:.1%}" if v is not None else "-" for v in cells]
        rms = pooled["configs"][config]["rms_rel_error"]
        lines.append(f"{config:<36} {shown[0]:>11} {shown[1]:>9} {shown[2]:>21} {rms:>12.1%}")
    share = pooled["noise"]["unbiased_search_meets_both_targets"]
    lines.append(
        "an unbiased search would meet both targets in "
        f"{_percent(share['as_repeatable_as_measured'])} of runs (its searches as repeatable as measured), "
        f"{_percent(share['as_repeatable_as_a_reference_pass'])} (as repeatable as a reference pass)"
    )
    more = pooled["noise"]["unbiased_search_meets_both_targets_with_repeats"]
    lines.append(
        "with n searches and n passes per row: " + ", ".join(f"n={n}: {_percent(v)}" for n, v in more.items())
    )
    return "\n".join(lines)


def _percent(share: float | None) -> str:
    return f"{share:.0%}" if share is not None else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="JSON files written by bench.capacity_accuracy")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runs = {path.name: json.loads(path.read_text()) for path in args.runs}
    pooled = pool(runs)
    print(table(pooled))
    print(noise_table(pooled))
    print(
        f"{pooled['rows_within_max_target']} of {pooled['rows']} rows within 10%; runs that met both "
        f"targets: {pooled['runs_met_both_targets']} of {len(runs)}; |error| / noise floor: median "
        f"{pooled['median_abs_error_over_noise_floor']}, mean {pooled['mean_abs_error_over_noise_floor']}"
    )
    write_json(args.json, {"inputs": [str(p) for p in args.runs], **pooled})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
