"""How far one accuracy run's error can fall from zero for an unbiased search, from the repeated
measurements the runs recorded.

Each row of `bench/capacity_accuracy.py` compares the mean of a few searches with the mean of a
few reference passes, every one on a fresh server. Their spread within a row, relative to the
row's reference, is how well one fresh server's capacity repeats on the machine (`single_sd`,
pooled over the runs as the root of the mean within-row variance). From it:
- `error_sd_from_noise`: the row error's standard deviation were the search unbiased, given how
  many searches and passes a row averages;
- `simulate_runs`: the share of runs that would meet both targets (median |error| <= 5%, max
  <= 10% over the configs) for an unbiased search, drawn from those spreads: once with the
  searches as repeatable as measured, once as repeatable as a reference pass (a search as good
  as the fine sweep it is scored against), and with more searches and passes per row
  (`REPEATS`, as many of each, the searches as repeatable as measured).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.capacity_accuracy import MAX_TARGET, MEDIAN_TARGET

SIMULATED_RUNS = 20000
REPEATS = (3, 6, 12, 24)  # searches and passes per row, as many of each


@dataclass(frozen=True)
class Repeatability:
    """One config's spread of a single measurement, pooled over rows; the row's counts."""

    config: str
    rows: int
    search_sd: float | None  # of one search, relative to its row's reference
    pass_sd: float | None  # of one reference pass, relative to its row's reference
    searches: float  # mean searches per row
    passes: float  # mean passes per row

    def error_sd(self, search_sd: float | None = None, repeats: int | None = None) -> float | None:
        """Standard deviation of a row's error for an unbiased search (first order: the error
        of a ratio of means is about the difference of their relative errors), with the row's
        own counts or `repeats` searches and passes."""
        s = self.search_sd if search_sd is None else search_sd
        searches, passes = (repeats, repeats) if repeats else (self.searches, self.passes)
        if s is None or self.pass_sd is None or not searches or not passes:
            return None
        return math.sqrt(s**2 / searches + self.pass_sd**2 / passes)


def _relative(values: Sequence[Any] | None, reference: float) -> list[float]:
    return [float(v) / reference for v in values or [] if v is not None]


def _pooled_sd(groups: Sequence[Sequence[float]]) -> float | None:
    """Root of the mean within-group sample variance, over groups of two values or more."""
    variances = [statistics.variance(g) for g in groups if len(g) >= 2]
    return math.sqrt(statistics.fmean(variances)) if variances else None


def repeatability(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Repeatability]:
    """Per config, over every row with a reference: single-search and single-pass spreads."""
    searches: dict[str, list[list[float]]] = {}
    passes: dict[str, list[list[float]]] = {}
    for run in runs.values():
        for row in run["rows"]:
            reference = row.get("reference_rps")
            if row.get("rel_error") is None or not reference:
                continue
            searches.setdefault(row["config"], []).append(_relative(row.get("search_rps_each"), reference))
            passes.setdefault(row["config"], []).append(_relative(row.get("pass_knees_rps"), reference))
    found: dict[str, Repeatability] = {}
    for config, search_groups in searches.items():
        pass_groups = passes[config]
        found[config] = Repeatability(
            config=config,
            rows=len(search_groups),
            search_sd=_pooled_sd(search_groups),
            pass_sd=_pooled_sd(pass_groups),
            searches=statistics.fmean(len(g) for g in search_groups),
            passes=statistics.fmean(len(g) for g in pass_groups),
        )
    return found


def simulate_runs(error_sds: Sequence[float], runs: int = SIMULATED_RUNS, seed: int = 0) -> float:
    """Share of simulated runs, one unbiased normal error per config with these deviations, whose
    median |error| <= MEDIAN_TARGET and max |error| <= MAX_TARGET."""
    if not error_sds:
        raise ValueError("no configs to simulate")
    rng = np.random.default_rng(seed)
    errors = np.abs(rng.normal(0.0, np.asarray(error_sds, dtype=float), size=(runs, len(error_sds))))
    met = (np.median(errors, axis=1) <= MEDIAN_TARGET) & (errors.max(axis=1) <= MAX_TARGET)
    return float(met.mean())


def noise_summary(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per config its spreads and the error they alone give; the share of runs an unbiased search
    would meet both targets in (as repeatable as measured / as a reference pass)."""
    found = repeatability(runs)
    configs = {
        config: {
            "rows": r.rows,
            "single_search_sd": _round(r.search_sd),
            "single_pass_sd": _round(r.pass_sd),
            "searches_per_row": round(r.searches, 2),
            "passes_per_row": round(r.passes, 2),
            "error_sd_from_noise": _round(r.error_sd()),
            "error_sd_search_as_a_pass": _round(r.error_sd(r.pass_sd)),
        }
        for config, r in found.items()
    }
    measured = [r.error_sd() for r in found.values()]
    as_a_pass = [r.error_sd(r.pass_sd) for r in found.values()]
    return {
        "configs": configs,
        "unbiased_search_meets_both_targets": {
            "as_repeatable_as_measured": _share(measured),
            "as_repeatable_as_a_reference_pass": _share(as_a_pass),
            "simulated_runs": SIMULATED_RUNS,
        },
        "unbiased_search_meets_both_targets_with_repeats": {
            str(n): _share([r.error_sd(repeats=n) for r in found.values()]) for n in REPEATS
        },
    }


def _share(sds: Sequence[float | None]) -> float | None:
    if not sds or any(s is None for s in sds):
        return None
    return round(simulate_runs([s for s in sds if s is not None]), 3)


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None
