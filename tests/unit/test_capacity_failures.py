"""The capacity search's failure verdicts: an excess over the failure bound that chance could give
is measured again and judged on all the level's steps; a clear excess is a breach at once; a burst
of failures is weaker evidence than as many spread over the step."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from dataclasses import replace

import pytest

from core.measurement import LoadStep, StepMeasurement
from tests.fakes import make_step
from tuner.capacity import CapacityRules, CapacitySearch, failure_dispersion
from tuner.objective import SLO

SLO_200 = SLO(latency_ms=200.0)


def shed(measured: StepMeasurement, failures: int) -> StepMeasurement:
    """`measured` with `failures` of its requests shed (HTTP 503)."""
    requests = measured.requests
    return replace(
        measured, successes=requests - failures, failures_by_status={"503": failures} if failures else {},
        failure_ratio=failures / requests, goodput_rps=(requests - failures) / measured.duration_s,
    )  # fmt: skip


def step_with(step: LoadStep, failures: int, p95: float = 50.0) -> StepMeasurement:
    """200 requests at the step's rate (the step is sized for them), `failures` of them shed."""
    measured = make_step(step, step.rate or 0.0, p95, 0.0)
    return shed(replace(measured, requests=200, successes=200), failures)


def first_step(rules: CapacityRules | None = None) -> tuple[CapacitySearch, LoadStep]:
    search = CapacitySearch(SLO_200, rules or CapacityRules(), start=100.0)
    step = search.next_step()
    assert step is not None and step.rate == pytest.approx(100.0)
    return search, step


@pytest.mark.parametrize(("again", "met"), [(0, True), (1, True), (2, False)])
def test_an_excess_that_chance_could_give_is_measured_again_and_judged_on_both(again: int, met: bool) -> None:
    search, step = first_step(CapacityRules(failure_repeats=1))
    search.tell(step_with(step, 3))  # 1.5% of 200 at a 1% bound: p = 0.32
    assert search.verdicts == {} and not search.done
    assert not search.recovers_before() and not search.last_shed
    repeat = search.next_step()
    assert repeat is not None and repeat.rate == step.rate
    assert not search.adapts_before(repeat)  # the load stays where it was: no unscored step
    search.tell(step_with(repeat, again))
    assert search.verdicts == {100.0: [met]}
    assert f"measured again: {3 + again} in 400" in search.note
    following = search.next_step()
    assert following is not None and following.rate is not None
    assert (following.rate > 100.0) is met  # a pass grows, a breach shrinks


def test_a_level_stays_undecided_while_its_pooled_failures_could_be_chance() -> None:
    search, step = first_step()
    for failures in (3, 2):  # 5 in 400: over the bound, p = 0.37
        search.tell(step_with(step, failures))
        assert search.verdicts == {}
        repeat = search.next_step()
        assert repeat is not None and repeat.rate == step.rate
    search.tell(step_with(step, 0))  # 5 in 600: within
    assert search.verdicts == {100.0: [True]}
    assert "measured 2 more times: 5 in 600" in search.note


def test_an_undecided_level_is_judged_once_its_repeats_are_spent() -> None:
    search, step = first_step(CapacityRules(failure_repeats=3))
    for _ in range(3):
        search.tell(step_with(step, 3))
        assert search.verdicts == {}
        assert search.next_step() == step
    search.tell(step_with(step, 3))  # 12 in 800 (1.5%) could still be chance: the cap decides
    assert search.verdicts == {100.0: [False]}
    assert "measured 3 more times: 12 in 800 (1.5%, over the bound)" in search.note


def sliced(measured: StepMeasurement, per_slice: list[int]) -> StepMeasurement:
    """`measured` with its failures laid out over equal slices of its requests."""
    size = measured.requests // len(per_slice)
    return replace(shed(measured, sum(per_slice)), failure_slices=tuple((f, size) for f in per_slice))


def test_the_dispersion_of_failures_over_slices() -> None:
    assert failure_dispersion([(1, 25)] * 8) == 1.0  # as even as can be
    assert failure_dispersion([(0, 25)] * 8) == 1.0  # no failures: nothing to tell
    assert failure_dispersion([(8, 25)]) == 1.0  # one slice: nothing to tell
    assert failure_dispersion([(8, 25)] + [(0, 25)] * 7) > 5.0  # one burst


def test_a_burst_of_failures_is_measured_again_where_as_many_spread_out_breach_at_once() -> None:
    search, step = first_step()
    search.tell(sliced(step_with(step, 0), [1] * 8))  # 8 of 200 spread out: p = 0.001
    assert search.verdicts == {100.0: [False]}
    search, step = first_step()
    search.tell(sliced(step_with(step, 0), [8, 0, 0, 0, 0, 0, 0, 0]))  # one burst: about one event
    assert search.verdicts == {}
    repeat = search.next_step()
    assert repeat == step
    search.tell(sliced(step_with(repeat, 0), [0] * 8))  # 8 in 400: still over, could be chance
    assert search.verdicts == {}
    search.tell(sliced(step_with(repeat, 0), [0] * 8))  # 8 in 600 (1.3%)
    assert search.verdicts == {}
    search.tell(sliced(step_with(repeat, 0), [0] * 8))  # 8 in 800: within the bound
    assert search.verdicts == {100.0: [True]}


def test_a_step_that_met_the_slo_at_a_level_that_pooled_breached_does_not_count() -> None:
    search, step = first_step(CapacityRules(failure_repeats=1))
    search.tell(step_with(step, 4))  # 2% of 200: p = 0.14
    repeat = search.next_step()
    assert repeat == step
    search.tell(replace(step_with(repeat, 2), goodput_rps=999.0))  # 1%: meets the SLO alone
    assert search.verdicts == {100.0: [False]}  # 6 in 400
    lower = search.next_step()
    assert lower is not None and lower.rate is not None and lower.rate < 100.0
    search.tell(step_with(lower, 0))
    found = search.finding()
    assert found.counted == [False, False, True]
    assert found.goodput_rps == pytest.approx(search.told[2][1].goodput_rps)


def test_a_clear_excess_is_a_breach_at_once() -> None:
    search, step = first_step()
    search.tell(step_with(step, 8))  # 4% of 200: p = 0.001
    assert search.verdicts == {100.0: [False]}
    following = search.next_step()
    assert following is not None and following.rate is not None and following.rate < 100.0


def test_without_the_test_every_step_is_judged_alone() -> None:
    search, step = first_step(CapacityRules(failure_alpha=0.0))
    search.tell(step_with(step, 3))
    assert search.verdicts == {100.0: [False]}


def test_a_step_that_also_breaks_the_latency_bound_is_not_measured_again() -> None:
    search, step = first_step()
    search.tell(step_with(step, 3, p95=260.0))
    assert search.verdicts == {100.0: [False]}


def test_the_repeat_is_run_even_past_the_step_cap() -> None:
    search, step = first_step(CapacityRules(max_steps=1))
    search.tell(step_with(step, 3))
    repeat = search.next_step()
    assert repeat is not None and repeat.rate == step.rate
    search.tell(step_with(repeat, 0))
    assert search.next_step() is None and search.finding().limited_by == "step_cap"
    assert search.finding().knee == pytest.approx(100.0)


def sporadic_shedder(
    capacity: float, below: float, above: float, seed: int
) -> Callable[[LoadStep], StepMeasurement]:
    """A server that sheds each request with probability `below` up to `capacity` (a dispatcher
    that drops a few requests now and then at loads it holds) and `above` beyond it."""
    rng = random.Random(seed)

    def respond(step: LoadStep) -> StepMeasurement:
        rate = step.rate or 0.0
        measured = make_step(step, rate, 50.0, 0.0)
        share = below if rate <= capacity else above
        return shed(measured, sum(rng.random() < share for _ in range(measured.requests)))

    return respond


def knee_errors(rules: CapacityRules, seeds: range) -> list[float]:
    errors = []
    for seed in seeds:
        respond = sporadic_shedder(300.0, below=0.005, above=0.05, seed=seed)
        search = CapacitySearch(SLO_200, rules, start=80.0)
        while (step := search.next_step()) is not None:
            search.tell(respond(step))
        found = search.finding()
        errors.append(abs((found.knee or 0.0) - 300.0) / 300.0)
    return errors


def test_a_few_failures_at_loads_the_server_holds_no_longer_set_the_knee() -> None:
    """A server at half its failure bound below its capacity: judged step by step, ~1 step in 8
    of 200 requests shows 3+ failures and cuts the knee short; measured again, it stands."""
    seeds = range(40)
    judged_alone = knee_errors(CapacityRules(failure_alpha=0.0), seeds)
    measured_again = knee_errors(CapacityRules(), seeds)
    assert statistics.median(measured_again) <= 0.05
    assert statistics.fmean(measured_again) < statistics.fmean(judged_alone)
    assert sum(e > 0.1 for e in measured_again) < sum(e > 0.1 for e in judged_alone)


def bursty_shedder(capacity: float, seed: int) -> Callable[[LoadStep], StepMeasurement]:
    """A server that, up to `capacity`, sheds a burst of 6 requests in 2% of its slices of 25
    (0.5% in the long run: one batch ran long) and beyond it 5% of requests, spread out."""
    rng = random.Random(seed)

    def respond(step: LoadStep) -> StepMeasurement:
        rate = step.rate or 0.0
        measured = make_step(step, rate, 50.0, 0.0)
        slices = measured.requests // 25
        if rate <= capacity:
            per_slice = [6 if rng.random() < 0.02 else 0 for _ in range(slices)]
        else:
            per_slice = [sum(rng.random() < 0.05 for _ in range(25)) for _ in range(slices)]
        return sliced(replace(measured, requests=25 * slices, successes=25 * slices), per_slice)

    return respond


def bursty_knee_errors(rules: CapacityRules, seeds: range, see_slices: bool) -> list[float]:
    errors = []
    for seed in seeds:
        respond = bursty_shedder(300.0, seed)
        search = CapacitySearch(SLO_200, rules, start=80.0)
        while (step := search.next_step()) is not None:
            measured = respond(step)
            search.tell(measured if see_slices else replace(measured, failure_slices=()))
        errors.append(abs((search.finding().knee or 0.0) - 300.0) / 300.0)
    return errors


def test_bursts_of_failures_at_loads_the_server_holds_no_longer_set_the_knee() -> None:
    """Judged as independent failures, one burst of 6 in 200 requests is a clear breach (p = 0.02)
    and ~1 step in 7 below the capacity shows one; seen as a burst, the level is measured again."""
    seeds = range(80)
    as_independent = bursty_knee_errors(CapacityRules(), seeds, see_slices=False)
    as_bursts = bursty_knee_errors(CapacityRules(), seeds, see_slices=True)
    assert statistics.median(as_bursts) <= 0.05
    assert statistics.fmean(as_bursts) < statistics.fmean(as_independent)
    assert sum(e > 0.1 for e in as_bursts) < sum(e > 0.1 for e in as_independent)
