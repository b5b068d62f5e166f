"""A re-measurement climbs to a known knee: no level below it is judged after an overload.

BentoML's batching dispatcher keeps its long waits after an overload, so a server that was
pushed past its knee sheds at loads it held before (issue 13's accuracy runs: MiniLM b8-l100's
searches fell 12-25% under a reference sweep that climbs from a light start). A re-measurement
knows roughly where the knee is, so it climbs in steps of the resolution and stops at the first
breach that repeats, as the reference does. The breaches a search shrinks through before its
first pass are measured again in a first (bracketing) search too, so its cold-server test
lives here, next to the climb's.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable

import pytest

from core.measurement import LoadStep, StepMeasurement
from tests.fakes import FakeDeployer, FakeLoadRunner, make_step
from tuner.capacity import CLIMB_SPAN, CapacityFinding, CapacityRules, CapacitySearch, start_level
from tuner.objective import SLO
from tuner.space import Config
from tuner.trial import REPEAT_GROWTH, CapacityPlan, TrialRunner

SLO_200 = SLO(latency_ms=200.0)
Respond = Callable[[LoadStep], StepMeasurement]


def latching_server(capacity: float, drop: float, sigma: float, rng: random.Random) -> Respond:
    """Meets the SLO up to its capacity (times a log-normal `sigma` per step) and sheds 5% above
    it; once overloaded, its capacity is `drop` lower for good (a latched dispatcher)."""
    overloaded = False

    def respond(step: LoadStep) -> StepMeasurement:
        nonlocal overloaded
        assert step.rate is not None
        cap = capacity * (1.0 - drop if overloaded else 1.0) * math.exp(rng.gauss(0.0, sigma))
        if step.rate <= cap:
            return make_step(step, step.rate, 80.0, 0.0)
        overloaded = True
        return make_step(step, 0.95 * step.rate, 150.0, 0.05)

    return respond


def shedding_server(capacity: float, levels: list[float]) -> Respond:
    """Meets the SLO up to `capacity` and sheds 5% above it; records each level it is asked."""

    def respond(step: LoadStep) -> StepMeasurement:
        assert step.rate is not None
        levels.append(step.rate)
        if step.rate <= capacity:
            return make_step(step, step.rate, 80.0, 0.0)
        return make_step(step, 0.95 * step.rate, 150.0, 0.05)

    return respond


def remeasure(respond: Respond, hint: float, climb: bool) -> CapacitySearch:
    """A finalist re-measurement as `CapacitySchedule` runs it, driven to its end."""
    start = start_level(None, "rate", hint)
    search = CapacitySearch(SLO_200, CapacityRules(), start, growth=REPEAT_GROWTH, climb=climb)
    while (step := search.next_step()) is not None:
        search.tell(respond(step))
    return search


def errors(climb: bool, drop: float, sigma: float, seeds: int = 200) -> tuple[list[float], list[int]]:
    """Re-measurements of a latching server (hint: its capacity x a log-normal 10% error): each
    one's goodput / capacity - 1, and its steps."""
    found, steps = [], []
    for seed in range(seeds):
        rng = random.Random(seed)
        hint = 100.0 * math.exp(rng.gauss(0.0, 0.1))
        finding = remeasure(latching_server(100.0, drop, sigma, rng), hint, climb).finding()
        found.append(finding.goodput_rps / 100.0 - 1.0)
        steps.append(finding.steps)
    return found, steps


def test_a_climb_reaches_the_knee_of_a_server_that_latches_after_an_overload() -> None:
    """A server that loses 20% of its capacity once overloaded: bracketing judges the levels
    under its first breach on the latched server and ends ~20% low; the climb ends within the
    resolution, in fewer steps."""
    bracketed, bracket_steps = errors(climb=False, drop=0.2, sigma=0.05)
    climbed, climb_steps = errors(climb=True, drop=0.2, sigma=0.05)
    assert statistics.median(bracketed) < -0.15  # the failure mode
    assert statistics.median(abs(e) for e in climbed) <= 0.05
    assert max(climbed) <= 0.10, "a lucky step, not a lucky bisection: at most one step of noise over"
    assert statistics.fmean(climb_steps) < statistics.fmean(bracket_steps)
    assert max(climb_steps) <= CapacityRules().max_steps


def test_without_latching_a_climb_is_as_accurate_as_bracketing() -> None:
    climbed, _ = errors(climb=True, drop=0.0, sigma=0.05)
    bracketed, _ = errors(climb=False, drop=0.0, sigma=0.05)
    assert statistics.median(abs(e) for e in climbed) <= 0.05
    assert sum(abs(e) > 0.10 for e in climbed) <= sum(abs(e) > 0.10 for e in bracketed) + 2


def test_a_climb_rises_one_resolution_step_at_a_time_and_stops_at_a_breach_that_repeats() -> None:
    hint, capacity = 100.0, 104.0
    levels: list[float] = []
    respond = shedding_server(capacity, levels)

    found = remeasure(respond, hint, climb=True).finding()
    ups = [b / a for a, b in itertools.pairwise(levels) if b > a]
    assert ups and all(r == pytest.approx(1.05) for r in ups)
    breach = found.breach
    assert breach is not None and found.knee is not None and found.knee <= capacity < breach
    assert levels.count(breach) == 2, "the breach is measured again"
    assert levels[-1] == breach and all(level <= breach for level in levels)
    assert found.converged and found.limited_by == "slo"
    assert levels.index(breach) == len(levels) - 2, "nothing under the breach is measured after it"


@pytest.mark.parametrize("capacity", [130.0, 160.0, 200.0])
def test_a_climb_far_under_the_knee_speeds_up_and_still_finds_it(capacity: float) -> None:
    """A hint from a slower server (MiniLM b32-l50's fresh servers settle 30-60% apart): the climb
    rises in resolution steps to `CLIMB_SPAN` over its start, then by the repeat growth, and
    bisects below its breach to the resolution, within the step cap, up to twice its hint (in
    resolution steps alone it ran out of steps at 1.7x)."""
    hint = 100.0
    levels: list[float] = []
    found = remeasure(shedding_server(capacity, levels), hint, climb=True).finding()
    assert found.limited_by == "slo" and found.converged
    assert found.knee is not None and found.breach is not None
    assert found.knee <= capacity < found.breach and found.breach / found.knee - 1 <= 0.05 + 1e-9
    assert found.steps <= CapacityRules().max_steps
    ups = [(a, b / a) for a, b in itertools.pairwise(levels) if b > a]
    near = [r for a, r in ups if a < 0.9 * hint * CLIMB_SPAN]
    assert near and all(r == pytest.approx(1.05) for r in near)
    assert max(r for _, r in ups) == pytest.approx(REPEAT_GROWTH), "never more than the repeat growth"


def test_a_breach_that_does_not_repeat_lets_the_climb_go_on() -> None:
    hiccup, capacity = 94.5, 110.0
    seen: list[float] = []

    def respond(step: LoadStep) -> StepMeasurement:
        assert step.rate is not None
        first_hiccup = step.rate == pytest.approx(hiccup) and step.rate not in seen
        seen.append(step.rate)
        if step.rate <= capacity and not first_hiccup:
            return make_step(step, step.rate, 80.0, 0.0)
        return make_step(step, 0.95 * step.rate, 300.0, 0.0)

    found = remeasure(respond, 100.0, climb=True).finding()
    assert found.knee is not None and found.knee > hiccup
    assert found.knee <= capacity < (found.breach or 0.0)
    assert sum(level == pytest.approx(hiccup) for level in seen) >= 2, "the breach was measured again"
    above = [level for level in seen if level > hiccup * 1.001]
    assert len(above) == len(set(above)), "a climb measures each level above it once (no confirmations)"


def test_a_climb_whose_first_level_breaches_shrinks_and_keeps_its_knee_unconfirmed() -> None:
    """A hint well above the capacity: the first level breaches, the search shrinks by the repeat
    growth and bisects; its breach is measured again, its knee is not (a latched server fails
    it after the breach)."""
    capacity = 60.0
    levels: list[float] = []
    respond = shedding_server(capacity, levels)

    found = remeasure(respond, 100.0, climb=True).finding()
    climb_levels = list(levels)
    bracketed = remeasure(respond, 100.0, climb=False).finding()
    assert levels[1] == pytest.approx(levels[0] / REPEAT_GROWTH)
    assert found.knee is not None and found.knee <= capacity <= (found.breach or 0.0)
    assert found.breach / found.knee - 1 <= 0.05 + 1e-9  # type: ignore[operator]
    # Both measure the breach just over their first pass again (it came before any pass); the
    # bracketing search then confirms its knee too, the climb does not.
    first_pass = next(i for i, level in enumerate(climb_levels) if level <= capacity)
    assert climb_levels[first_pass + 1] == climb_levels[first_pass - 1]
    bracket_levels = levels[len(climb_levels) :]
    assert bracket_levels[first_pass + 1] == bracket_levels[first_pass - 1]
    assert bracketed.knee == found.knee and bracketed.steps == found.steps + 1
    assert bracket_levels[-1] == found.knee and climb_levels[-1] != found.knee


def cold_server(capacity: float, cold_steps: int, levels: list[float]) -> Respond:
    """Misses the SLO on its first `cold_steps` steps at any load (a fresh server's first seconds
    of heavy load), then meets it up to `capacity`."""

    def respond(step: LoadStep) -> StepMeasurement:
        assert step.rate is not None
        levels.append(step.rate)
        if len(levels) > cold_steps and step.rate <= capacity:
            return make_step(step, step.rate, 80.0, 0.0)
        return make_step(step, 0.98 * step.rate, 300.0, 0.0)

    return respond


@pytest.mark.parametrize("cold_steps", [1, 2, 4])
def test_breaches_of_a_cold_server_before_its_first_pass_do_not_bound_the_knee(cold_steps: int) -> None:
    """The no-op service's re-measurement breached its first four levels (0.9x its hint down to
    0.6x), met the fifth, and stopped under the third, which it never measured again; a
    reference sweep met them all. Those breaches are measured again, so the knee is found within
    the resolution, and each is measured again at most once."""
    capacity = 100.0
    levels: list[float] = []
    found = remeasure(cold_server(capacity, cold_steps, levels), capacity, climb=True).finding()
    assert found.knee is not None and found.breach is not None
    assert found.knee <= capacity < found.breach and found.breach / found.knee - 1 <= 0.05 + 1e-9
    assert found.steps <= CapacityRules().max_steps
    for cold in levels[:cold_steps]:
        assert levels.count(cold) == 2, f"{cold:.1f} was measured again once"


def test_a_cold_breach_that_repeats_bounds_the_knee() -> None:
    """A breach before the first pass that repeats on its re-measurement stands: the climb
    bisects under it as usual."""
    capacity = 80.0
    levels: list[float] = []
    found = remeasure(cold_server(capacity, 1, levels), 100.0, climb=True).finding()
    assert found.knee is not None and found.breach is not None
    assert found.knee <= capacity < found.breach and found.breach / found.knee - 1 <= 0.05 + 1e-9
    assert levels.count(levels[0]) == 2 and max(levels) == levels[0], "measured again, once"


@pytest.mark.parametrize("cold_steps", [1, 2, 3])
def test_a_bracketing_search_measures_again_the_breaches_before_its_first_pass(cold_steps: int) -> None:
    """A first search (no hint: x2 bracketing from the probe's figure) on a server that misses
    its first steps at any load (cold, or a shared machine's hiccup): the breaches it halved
    through are measured again before they bound its knee, which is found within the resolution
    (standing, a breach at 80 capped the knee of a server that holds 100)."""
    capacity = 100.0
    levels: list[float] = []
    respond = cold_server(capacity, cold_steps, levels)
    search = CapacitySearch(SLO_200, CapacityRules(), start=80.0)
    while (step := search.next_step()) is not None:
        search.tell(respond(step))
    found = search.finding()
    assert levels[: cold_steps + 1] == [80.0 / 2**i for i in range(cold_steps + 1)]
    assert found.knee is not None and found.breach is not None
    assert found.knee <= capacity < found.breach and found.breach / found.knee - 1 <= 0.05 + 1e-9
    assert found.converged and found.steps <= CapacityRules().max_steps


def test_a_climb_in_users_rises_by_at_least_one_user() -> None:
    search = CapacitySearch(
        SLO_200, CapacityRules(mode="users"), start=3, per_user_rps=10.0, growth=REPEAT_GROWTH, climb=True
    )
    users: list[int] = []
    while (step := search.next_step()) is not None:
        users.append(step.users)
        search.tell(make_step(step, step.users * 10.0, 80.0 if step.users <= 6 else 400.0, 0.0))
    assert users[:5] == [3, 4, 5, 6, 7]
    assert search.finding().knee == 6 and search.finding().breach == 7


def test_a_trial_re_measurement_climbs_unless_the_rules_say_otherwise() -> None:
    """`CapacitySchedule` climbs on a hint (rules.climb_repeats) and brackets without one."""
    deployer = FakeDeployer()

    def measure(rules: CapacityRules, hint: float | None) -> tuple[CapacityFinding, list[float]]:
        plan = CapacityPlan(rules, probe_s=2.0)
        runner = TrialRunner(deployer, FakeLoadRunner(deployer), plan, SLO_200, "embedding")
        measured = runner.measure(Config(16, 200, 2, 1), hint=hint)
        assert measured.capacity is not None
        return measured.capacity, [float(m.step.rate or 0.0) for m in measured.steps]

    first, _ = measure(CapacityRules(), None)
    assert first.knee is not None
    climbed, climb_levels = measure(CapacityRules(), first.knee)
    bracketed, bracket_levels = measure(CapacityRules(climb_repeats=False), first.knee)
    assert climbed.converged and bracketed.converged
    for found in (climbed, bracketed):
        assert found.knee is not None and abs(found.knee / first.knee - 1) <= 0.1
    assert climb_levels[1] / climb_levels[0] == pytest.approx(1.05)
    assert bracket_levels[1] / bracket_levels[0] == pytest.approx(REPEAT_GROWTH)


def test_only_a_climb_adapts_before_its_first_level() -> None:
    """A climb jumps from the light probe to just under the knee: its first level runs unscored
    for `adapt_s` first, as every rise does; a bracketing search starts far below and does not."""
    rules = CapacityRules()
    for climb in (True, False):
        search = CapacitySearch(SLO_200, rules, start=90.0, growth=REPEAT_GROWTH, climb=climb)
        step = search.next_step()
        assert step is not None
        assert search.adapts_before(step) is climb
        assert search.unscored_s(step) == (rules.adapt_s if climb else 0.0)


def test_a_trial_re_measurement_warms_its_first_level_up() -> None:
    """In a trial: the probe, then (on a hint) an unscored step at the first scored level."""
    deployer = FakeDeployer()
    runner = TrialRunner(deployer, FakeLoadRunner(deployer), CapacityPlan(probe_s=2.0), SLO_200, "embedding")
    config = Config(16, 200, 2, 1)
    first = runner.measure(config).capacity
    assert first is not None and first.knee is not None
    plan = CapacityPlan(probe_s=2.0)
    schedule = plan.schedule(SLO_200, workers=2, hint=first.knee)
    steps = schedule.steps()
    probe = next(steps)
    assert probe.rate is None
    schedule.tell(make_step(probe, 40.0, 50.0, 0.0))
    warm = next(steps)
    assert warm.rate == pytest.approx(0.9 * first.knee) and warm.duration_s == plan.rules.adapt_s
    schedule.tell(make_step(warm, warm.rate, 50.0, 0.0))
    assert schedule.adapts and schedule.search is not None and not schedule.search.told  # unscored
    scored = next(steps)
    assert scored.rate == warm.rate
    schedule.tell(make_step(scored, scored.rate, 50.0, 0.0))
    assert [level for level, _ in schedule.search.told] == [warm.rate]
