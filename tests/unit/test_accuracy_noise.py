"""bench/accuracy_noise.py: what the recorded repeats allow an unbiased search to score."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.accuracy_noise import noise_summary, repeatability, simulate_runs


def row(config: str, searches: list[float], passes: list[float | None], reference: float) -> dict[str, Any]:
    return {
        "config": config,
        "rel_error": sum(searches) / len(searches) / reference - 1,
        "reference_rps": reference,
        "search_rps_each": searches,
        "pass_knees_rps": passes,
    }


RUNS = {
    "a.json": {"rows": [row("x", [90.0, 110.0, 100.0], [95.0, 105.0], 100.0)]},
    "b.json": {
        "rows": [
            row("x", [200.0, 200.0, 200.0], [180.0, 220.0, None], 200.0),
            {"config": "x", "rel_error": None, "reference_rps": None},  # no reference: left out
        ]
    },
}


def test_spreads_are_pooled_within_rows_relative_to_each_rows_reference() -> None:
    found = repeatability(RUNS)["x"]
    # searches: variances 0.01 (0.9, 1.1, 1.0) and 0 (1, 1, 1) -> sqrt(0.005)
    assert found.search_sd == pytest.approx(math.sqrt(0.005))
    # passes: (0.95, 1.05) variance 0.005, (0.9, 1.1) variance 0.02 -> sqrt(0.0125); None skipped
    assert found.pass_sd == pytest.approx(math.sqrt(0.0125))
    assert (found.rows, found.searches, found.passes) == (2, 3.0, 2.0)
    assert found.error_sd() == pytest.approx(math.sqrt(0.005 / 3 + 0.0125 / 2))
    assert found.error_sd(found.pass_sd) == pytest.approx(math.sqrt(0.0125 / 3 + 0.0125 / 2))


def test_a_single_config_meets_both_targets_as_often_as_a_normal_error_lies_within_5_percent() -> None:
    # One config: median = max = |e|; both targets hold when |e| <= 5%, P = 2 Phi(1) - 1 at sd 5%.
    assert simulate_runs([0.05]) == pytest.approx(0.6827, abs=0.01)


def test_noise_well_under_the_targets_meets_them_and_noise_well_over_does_not() -> None:
    assert simulate_runs([0.005] * 4) == 1.0
    assert simulate_runs([0.5] * 4) < 0.01
    with pytest.raises(ValueError):
        simulate_runs([])


def test_summary_names_each_configs_spreads_and_the_shares() -> None:
    summary = noise_summary(RUNS)
    x = summary["configs"]["x"]
    assert x["rows"] == 2
    assert x["single_pass_sd"] == pytest.approx(math.sqrt(0.0125), abs=1e-4)
    shares = summary["unbiased_search_meets_both_targets"]
    # Repeatable searches, the same passes: the searches' own spread can only lower the share.
    assert 0.0 < shares["as_repeatable_as_measured"] <= 1.0
    assert shares["as_repeatable_as_measured"] >= shares["as_repeatable_as_a_reference_pass"]
    more = summary["unbiased_search_meets_both_targets_with_repeats"]
    assert list(more) == ["3", "6", "12", "24"]
    assert more["3"] <= more["6"] <= more["12"] <= more["24"]


def test_more_repeats_divide_each_spread_by_their_count() -> None:
    found = repeatability(RUNS)["x"]
    assert found.error_sd(repeats=12) == pytest.approx(math.sqrt(0.005 / 12 + 0.0125 / 12))
