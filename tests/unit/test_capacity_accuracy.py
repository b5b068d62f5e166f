"""bench/capacity_accuracy.py without a server: sweep rates, the reference-knee rule, errors, summary."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from bench.capacity_accuracy import (
    Knee,
    SweepPoint,
    cases,
    pass_knees,
    reference_knee,
    rel_error,
    step_seconds,
    summarize,
    sweep_point,
    sweep_rates,
    sweep_step,
    table,
    widen,
)
from core.measurement import Invalidity, InvalidReason, LoadStep
from tests.fakes import make_step
from tuner.objective import SLO


def point(rate: float, met: bool, pass_index: int = 0, goodput: float | None = None) -> SweepPoint:
    return SweepPoint(
        rate=rate, pass_index=pass_index, goodput_rps=rate if goodput is None else goodput,
        latency_ms=100.0 if met else 300.0, client_p95_ms=100.0, sent_rps=rate, failure_ratio=0.0,
        requests=400, met=met, generator_peak=False, generator_cpu=0.2,
    )  # fmt: skip


def both(rate: float, met0: bool, met1: bool) -> list[SweepPoint]:
    return [point(rate, met0, 0, rate - 1), point(rate, met1, 1, rate + 1)]


def test_sweep_rates_are_2_5_percent_apart_from_0_8_to_1_2() -> None:
    rates = sweep_rates(100.0)
    ratios = [b / a for a, b in itertools.pairwise(rates)]
    assert all(r == pytest.approx(1.025) for r in ratios)
    assert rates[0] == pytest.approx(100 * 1.025**-9) and 79 < rates[0] < 81
    assert rates[-1] == pytest.approx(100 * 1.025**7) and 118 < rates[-1] < 120
    assert any(r == pytest.approx(100.0) for r in rates)
    assert len(rates) == 17


def test_sweep_rates_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        sweep_rates(0.0)
    with pytest.raises(ValueError):
        sweep_rates(100.0, low=1.1)
    with pytest.raises(ValueError):
        sweep_rates(100.0, ratio=1.0)


def test_widen_continues_the_ratio_on_either_side_and_ignores_repeated_rates() -> None:
    rates = sweep_rates(100.0, 0.95, 1.05)
    doubled = rates + rates  # two passes report every rate twice
    below = widen(doubled, "below", 2)
    above = widen(doubled, "above", 2)
    assert below == pytest.approx([rates[0] / 1.025**2, rates[0] / 1.025])
    assert above == pytest.approx([rates[-1] * 1.025, rates[-1] * 1.025**2])


def test_step_long_enough_for_the_requests_and_sized_like_load_plan_rates() -> None:
    assert step_seconds(50.0, 400) == pytest.approx(8.8)
    assert step_seconds(1000.0, 400) == 2.0  # the floor
    slo = SLO(latency_ms=200.0)
    step = sweep_step(100.0, slo, 400)
    assert step.rate == 100.0 and step.duration_s == pytest.approx(4.4)
    assert step.users == round(100 * 2 * 0.2 + 0.5)  # as LoadPlan.rates sizes it
    assert step.abort_above_ms is None


def test_reference_knee_is_the_highest_rate_below_which_every_pass_met() -> None:
    points = both(80, True, True) + both(90, True, True) + both(100, True, True)
    points += both(110, True, False) + both(120, True, True) + both(130, False, False)
    knee = reference_knee(points, passes=2)
    assert knee == Knee(100, 100.0, None)  # 120 met in both passes, but 110 did not


def test_reference_knee_edges() -> None:
    all_met = both(80, True, True) + both(90, True, True)
    assert reference_knee(all_met, 2).edge == "above"
    lowest_failed = both(80, False, True) + both(90, True, True)
    assert reference_knee(lowest_failed, 2) == Knee(None, 0.0, "below")
    assert reference_knee([], 2).edge == "below"


def test_a_rate_short_of_its_passes_counts_as_failed() -> None:
    points = [*both(80, True, True), point(90, True)]
    assert reference_knee(points, passes=2).rate == 80


def test_pass_knees_judge_each_pass_alone() -> None:
    points = both(80, True, True) + both(90, True, False) + both(100, False, False)
    assert pass_knees(points) == [89.0, 81.0]


def test_sweep_point_uses_the_slo_and_notes_a_saturated_generator() -> None:
    slo = SLO(latency_ms=200.0)
    step = LoadStep(users=40, duration_s=4.0, rate=100.0)
    good = sweep_point(100.0, 1, make_step(step, 100.0, 150.0, 0.0), slo)
    assert good.met and good.why == "" and good.pass_index == 1 and good.requests == 400
    late = sweep_point(100.0, 0, make_step(step, 100.0, 250.0, 0.0), slo)
    assert not late.met and "p95" in late.why
    failing = sweep_point(100.0, 0, make_step(step, 100.0, 150.0, 0.05), slo)
    assert not failing.met and "failure ratio" in failing.why
    measured = make_step(step, 100.0, 150.0, 0.0)
    flagged = Invalidity(InvalidReason.GENERATOR_SATURATED, "load generator saturated (0.95 cores)")
    saturated = sweep_point(100.0, 0, replace(measured, valid=False, invalid=(flagged,)), slo)
    assert saturated.generator_peak and not saturated.met


def test_rel_error_and_summary() -> None:
    assert rel_error(105.0, 100.0) == pytest.approx(0.05)
    assert rel_error(90.0, 100.0) == pytest.approx(-0.10)
    assert rel_error(90.0, 0.0) is None
    rows: list[dict[str, Any]] = [
        {"rel_error": 0.02}, {"rel_error": -0.04}, {"rel_error": 0.08}, {"rel_error": 0.01},
    ]  # fmt: skip
    summary = summarize(rows)
    assert summary["median_rel_error"] == pytest.approx(0.03)
    assert summary["max_rel_error"] == pytest.approx(0.08)
    assert summary["mean_signed_rel_error"] == pytest.approx(0.0175)
    assert summary["met"] is True and summary["rows_without_reference"] == 0
    worse = summarize([*rows, {"rel_error": -0.12}])
    assert worse["max_rel_error"] == pytest.approx(0.12) and worse["met"] is False


def test_a_row_without_reference_fails_the_summary() -> None:
    summary = summarize([{"rel_error": 0.01}, {"rel_error": None}])
    assert summary["rows_without_reference"] == 1 and summary["met"] is False
    empty = summarize([])
    assert empty["median_rel_error"] is None and empty["met"] is False


def test_cases_and_table() -> None:
    found = cases(15.0)
    assert [c.service for c in found].count("embedding") >= 3 and found[-1].service == "noop"
    assert found[-1].slo_ms == 15.0 and all(c.slo_ms == 200.0 for c in found[:-1])
    assert [c.service for c in cases(15.0, "noop")] == ["noop"]
    row = {"config": "noop:x", "searched_rps": 101.0, "reference_rps": 100.0, "rel_error": 0.01,
           "search_s": 20.0, "reference_s": 90.0}  # fmt: skip
    text = table([row, {**row, "rel_error": None}])
    assert "+1.0%" in text and "noop:x" in text and text.count("\n") == 3


def test_the_lenient_diagnostic_needs_one_pass_per_rate() -> None:
    points = both(80, True, False) + both(90, False, True) + both(100, False, False)
    assert reference_knee(points, 2).rate is None
    lenient = reference_knee(points, 2, lenient=True)
    assert lenient.rate == 90 and lenient.goodput_rps == 91.0  # the pass that met it
