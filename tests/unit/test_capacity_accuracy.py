"""bench/capacity_accuracy.py without a server: sweep rates, the reference-knee rule, errors, summary."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from bench.capacity_accuracy import (
    MAX_WIDEN,
    Knee,
    MissRun,
    Searched,
    SweepPoint,
    cases,
    compare,
    every_search,
    fitted_knee,
    main,
    noise_floor,
    pass_knees,
    reference_knee,
    rel_error,
    rescore,
    search_steps,
    spread,
    step_seconds,
    strict_knee,
    summarize,
    sweep_point,
    sweep_rates,
    sweep_step,
    table,
    widen,
)
from core.measurement import Invalidity, InvalidReason, LoadStep
from tests.fakes import make_step
from tuner.capacity import CapacityFinding
from tuner.objective import SLO
from tuner.trial import Measurement


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
    knee = strict_knee(points, passes=2)
    assert knee == Knee(100, 100.0, None)  # 120 met in both passes, but 110 did not


def test_reference_knee_edges() -> None:
    all_met = both(80, True, True) + both(90, True, True)
    assert strict_knee(all_met, 2).edge == "above"
    lowest_failed = both(80, False, True) + both(90, True, True)
    assert strict_knee(lowest_failed, 2) == Knee(None, 0.0, "below")
    assert strict_knee([], 2).edge == "below"


def test_a_rate_short_of_its_passes_counts_as_failed() -> None:
    points = [*both(80, True, True), point(90, True)]
    assert strict_knee(points, passes=2).rate == 80


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


def test_the_noise_floor_grows_with_the_spread_of_repeated_measurements() -> None:
    # searches 90, 100, 110 (variance 100 / 3) and passes 95, 105 (variance 50 / 2): sqrt(2/pi) x
    # sqrt(33.3 + 25) / 100
    assert noise_floor([90.0, 100.0, 110.0], [95.0, 105.0], 100.0) == pytest.approx(0.0609, abs=1e-4)
    assert noise_floor([100.0, 100.0, 100.0], [100.0, 100.0], 100.0) == 0.0
    assert noise_floor([90.0, 110.0], [95.0, None], 100.0) is None
    assert noise_floor([90.0], [95.0, 105.0], 100.0) is None


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


def test_cases_can_be_named_by_the_start_of_their_name_and_an_unknown_one_is_refused() -> None:
    chosen = cases(15.0, names=["embedding:b16-l200", "noop"])
    assert [c.name.split("-g0")[0] for c in chosen] == ["embedding:b16-l200-w2-t1", "noop:b32-l100-w1-t1"]
    with pytest.raises(ValueError, match="no such case: embedding:b99"):
        cases(15.0, names=["embedding:b99"])
    with pytest.raises(SystemExit):  # the CLI names the bad option before anything runs
        main(["--case", "noop:b1"])
    row = {"config": "noop:x", "searched_rps": 101.0, "reference_rps": 100.0, "rel_error": 0.01,
           "search_s": 20.0, "reference_s": 90.0}  # fmt: skip
    text = table([row, {**row, "rel_error": None}])
    assert "+1.0%" in text and "noop:x" in text and text.count("\n") == 3


def test_the_lenient_diagnostic_needs_one_pass_per_rate() -> None:
    points = both(80, True, False) + both(90, False, True) + both(100, False, False)
    assert strict_knee(points, 2).rate is None
    lenient = strict_knee(points, 2, lenient=True)
    assert lenient.rate == 90 and lenient.goodput_rps == 91.0  # the pass that met it


def window(rate: float, failure: float, latency: float = 100.0, requests: int = 400, pass_index: int = 0,
           saturated: bool = False) -> SweepPoint:  # fmt: skip
    return SweepPoint(
        rate=rate, pass_index=pass_index, goodput_rps=rate * (1 - failure), latency_ms=latency,
        client_p95_ms=latency, sent_rps=rate, failure_ratio=failure, requests=requests,
        met=failure <= 0.01 and latency <= 200.0, generator_peak=saturated, generator_cpu=0.1,
    )  # fmt: skip


def test_fitted_knee_weighs_a_stray_miss_against_the_windows_above_it() -> None:
    slo = SLO(latency_ms=200.0, max_failure_ratio=0.01)
    points = [window(r, 0.0) for r in (90, 95, 100, 110, 115)] + [window(105, 0.015), window(120, 0.04)]
    points += [window(r, 0.0, pass_index=1) for r in (90, 95, 100, 105, 110, 115)]
    points.append(window(120, 0.03, pass_index=1))
    assert strict_knee(points, 2).rate == 100  # the strict rule stops at the stray miss
    knee = fitted_knee(points, slo)
    assert knee.rate == 115 and knee.edge is None
    assert knee.goodput_rps == pytest.approx(115.0)


def test_fitted_knee_ends_where_the_failure_or_latency_fit_crosses_the_slo() -> None:
    slo = SLO(latency_ms=200.0, max_failure_ratio=0.01)
    failing = [window(90, 0.0), window(100, 0.02), window(110, 0.03), window(100, 0.015, pass_index=1)]
    assert fitted_knee(failing, slo).rate == 90
    slow = [window(90, 0.0, 150), window(100, 0.0, 250), window(110, 0.0, 190), window(120, 0.0, 400)]
    assert fitted_knee(slow, slo).rate == 90  # 190 ms above a 250 ms window is pooled with it
    assert fitted_knee([window(90, 0.05)], slo) == Knee(None, 0.0, "below")


def test_fitted_knee_edges_and_generator_limited_windows() -> None:
    slo = SLO(latency_ms=200.0, max_failure_ratio=0.01)
    assert fitted_knee([window(r, 0.0) for r in (90, 100)], slo).edge == "above"
    assert fitted_knee([], slo) == Knee(None, 0.0, "below")
    saturated = [window(90, 0.0), window(100, 0.0), window(110, 0.5, 900, saturated=True)]
    knee = fitted_knee(saturated, slo)
    assert knee.rate == 100 and knee.edge == "above"  # the saturated window says nothing
    no_success = [window(90, 0.0), window(100, 1.0, float("inf"))]
    assert fitted_knee(no_success, slo).rate == 90


def test_a_sweep_pass_stops_after_misses_in_a_row_not_at_the_first() -> None:
    slo = SLO(latency_ms=200.0, max_failure_ratio=0.01)
    stop = MissRun(slo, limit=2)

    def step(latency: float, duration: float = 4.0) -> Any:
        return make_step(LoadStep(users=10, duration_s=duration, rate=50.0), 50.0, latency, 0.0)

    assert stop(step(900.0)) is False  # the unscored warm-up never counts
    assert [stop(step(x)) for x in (100.0, 300.0, 100.0, 300.0)] == [False, False, False, False]
    assert stop(step(300.0)) is True


def test_the_reference_averages_each_passs_fitted_knee() -> None:
    slo = SLO(latency_ms=200.0, max_failure_ratio=0.01)
    first = [window(r, 0.0) for r in (90, 95, 100, 110)] + [window(105, 0.015), window(115, 0.05)]
    second = [window(r, 0.0, pass_index=1) for r in (90, 95)] + [
        window(r, 0.03, pass_index=1) for r in (100, 105)
    ]  # fmt: skip
    knee = reference_knee(first + second, slo)
    assert knee.rate == pytest.approx((110 + 95) / 2) and knee.edge is None
    assert knee.goodput_rps == pytest.approx((110 + 95) / 2)
    assert pass_knees(first + second, slo) == [110, 95]
    assert pass_knees(first + second) == [100, 95]  # the strict rule, pass by pass
    assert spread(pass_knees(first + second, slo)) == pytest.approx(110 / 95 - 1)


def test_reference_edges_ask_for_a_wider_sweep() -> None:
    slo = SLO(latency_ms=200.0, max_failure_ratio=0.01)
    top = [window(r, 0.0) for r in (90, 100)] + [window(r, 0.0, pass_index=1) for r in (90,)]
    top.append(window(100, 0.05, pass_index=1))
    assert reference_knee(top, slo).edge == "above"  # the first pass met the highest rate
    none = [window(90, 0.0), window(90, 0.2, pass_index=1)]
    assert reference_knee(none, slo) == Knee(None, 0.0, "below")
    assert spread([None, 3.0]) is None


def test_the_knees_goodput_is_the_best_window_at_or_below_it() -> None:
    slo = SLO(latency_ms=200.0, max_failure_ratio=0.01)
    stalled = replace(window(110, 0.0), goodput_rps=80.0)  # its users fell behind for a moment
    knee = fitted_knee([window(90, 0.0), window(100, 0.0), stalled, window(120, 0.05)], slo)
    assert knee.rate == 110 and knee.goodput_rps == 100.0


def test_rescore_scores_a_recorded_run_again_from_its_windows() -> None:
    slo = {"latency_ms": 200.0, "quantile": "p95", "max_failure_ratio": 0.01}
    windows = [window(r, 0.0).to_dict() for r in (90, 100)] + [window(110, 0.02).to_dict()]
    windows += [window(r, 0.0, pass_index=1).to_dict() for r in (90, 100, 110)]
    finding = {"mode": "rate", "knee": 100.0, "breach": 105.0, "goodput_rps": 105.0, "converged": True,
               "limited_by": "slo", "steps": 8, "resolution": 0.05}  # fmt: skip
    row = {"config": "x", "slo": slo, "sweep": [[w] for w in windows], "findings": [finding, finding],
           "reference_rps": 1.0, "rel_error": 99.0, "search_s": 1.0, "reference_s": 1.0}  # fmt: skip
    result = rescore({"rows": [row], "median_rel_error": 99.0})
    again = result["rows"][0]
    assert again["reference_rps"] == pytest.approx((100 + 110) / 2)
    assert again["rel_error"] == pytest.approx(105 / 105 - 1)
    assert result["median_rel_error"] == pytest.approx(0.0)


def test_search_steps_carry_the_findings_counted_flags_and_failure_slices() -> None:
    slo = SLO(latency_ms=200.0)
    first = replace(make_step(LoadStep(users=10, duration_s=2.0, rate=100.0), 100.0, 50.0, 0.0),
                    failure_slices=((3, 100), (0, 100)))  # fmt: skip
    second = make_step(LoadStep(users=10, duration_s=2.0, rate=120.0), 120.0, 50.0, 0.0)
    rows = search_steps([first, second], slo, [True, False])
    assert [r["counted"] for r in rows] == [True, False]
    assert rows[0]["failure_slices"] == [[3, 100], [0, 100]] and rows[1]["failure_slices"] == []
    assert [r["counted"] for r in search_steps([first, second], slo)] == [None, None]  # older findings


class FakeComparison:
    """A server that meets the SLO up to `capacity`, whose searches find `searched_knee` (default:
    `capacity`); records the order of searches and passes."""

    def __init__(self, capacity: float, searched_knee: float | None = None) -> None:
        self.capacity = capacity
        self.searched_knee = searched_knee or capacity
        self.events: list[str] = []
        self.swept: list[list[float]] = []

    def search(self) -> Searched:
        self.events.append("search")
        found = CapacityFinding(
            mode="rate", knee=self.searched_knee, goodput_rps=len(self.events), converged=True,
            limited_by="slo", steps=8, resolution=0.05, breach=None,
        )  # fmt: skip
        return Searched(found, Measurement(ok=True, capacity=found))

    def one_pass(self, rates: Sequence[float], index: int) -> tuple[list[SweepPoint], float]:
        self.events.append("pass")
        self.swept.append(list(rates))
        return [point(r, r <= self.capacity, index) for r in sorted(rates)], 1.0


def test_a_knee_at_the_top_edge_runs_the_whole_interleaved_comparison_again_over_wider_rates() -> None:
    slo = SLO(latency_ms=200.0, max_failure_ratio=0.01)
    server = FakeComparison(capacity=130.0)
    first = server.search()
    rates = sweep_rates(100.0, 0.8, 1.2)
    done = compare(first, server.search, server.one_pass, rates, slo, passes=2, searches=3)
    assert [c.widened for c in done] == [None, "above"]
    assert server.events == ["search", "pass", "search", "pass", "search", "pass", "search", "pass", "search"]
    counted = done[-1]
    assert counted.searched[0] is done[0].searched[-1]  # it starts from the last search
    assert [f.goodput_rps for f in counted.searches] == [5, 7, 9]
    # the same rates, continued at their ratio on to 1.4x the searches' knee (130/s)
    swept, added = server.swept[2], len(server.swept[2]) - len(rates)
    assert swept[: len(rates)] == pytest.approx(rates)
    assert swept[len(rates) :] == pytest.approx(widen(rates, "above", added))
    assert swept[-1] >= 1.4 * 130.0 > swept[-2]
    assert reference_knee(counted.points, slo).edge is None
    assert counted.reference_s == 2.0


def test_a_knee_still_at_an_edge_stops_after_the_last_widening() -> None:
    slo = SLO(latency_ms=200.0, max_failure_ratio=0.01)
    server = FakeComparison(capacity=10.0, searched_knee=100.0)
    rates = sweep_rates(100.0)
    done = compare(server.search(), server.search, server.one_pass, rates, slo, passes=2, searches=2)
    assert [c.widened for c in done] == [None] + ["below"] * MAX_WIDEN
    assert server.events.count("pass") == 2 * (MAX_WIDEN + 1)
    assert all(len(c.searches) == 2 for c in done)


def test_widen_goes_on_to_the_rate_it_must_reach_and_never_adds_fewer_than_asked() -> None:
    rates = sweep_rates(100.0, 0.95, 1.05)
    down = widen(rates, "below", 4, reach=50.0)
    assert down[0] <= 50.0 < down[0] * 1.025 and len(down) > 4
    assert down[-1] == pytest.approx(rates[0] / 1.025)
    up = widen(rates, "above", 8, reach=200.0)
    assert up[-1] >= 200.0 > up[-1] / 1.025
    assert widen(rates, "below", 4, reach=99.0) == widen(rates, "below", 4)  # already reached


def test_a_capacity_that_fell_mid_row_is_followed_down_to_its_searches_knee() -> None:
    """A config's capacity halved within minutes (searches 111 -> 43-57/s) and two widenings of
    four rates never reached it: the next comparison's rates go on down to `low` x the lowest
    knee its searches found, so the row gets a reference."""
    slo = SLO(latency_ms=200.0, max_failure_ratio=0.01)
    server = FakeComparison(capacity=50.0)
    rates = sweep_rates(100.0, 0.8, 1.4)
    done = compare(server.search(), server.search, server.one_pass, rates, slo, passes=2, searches=3, low=0.8)
    assert [c.widened for c in done] == [None, "below"]
    assert min(server.swept[2]) <= 0.8 * 50.0
    knee = reference_knee(done[-1].points, slo)
    assert knee.edge is None and knee.rate is not None and 50.0 / 1.025 <= knee.rate <= 50.0


def test_every_search_counts_a_widened_rows_earlier_searches_once_against_its_reference() -> None:
    row = {
        "search_rps_each": [90.0, 100.0, 110.0],  # the counted comparison, from the last search on
        "reference_rps": 100.0,
        "earlier_comparisons": [{"search_rps_each": [40.0, 70.0, 90.0]}],
    }
    figures = every_search(row)
    assert figures["every_search_rps"] == [40.0, 70.0, 90.0, 100.0, 110.0]
    assert figures["every_search_rel_error"] == pytest.approx(82 / 100 - 1)
    unwidened = every_search({"search_rps_each": [95.0, 105.0], "reference_rps": 100.0})
    assert unwidened == {"every_search_rps": [95.0, 105.0], "every_search_rel_error": 0.0}
