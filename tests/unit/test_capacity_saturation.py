"""A server the probes found busy all the time is searched under what its probe served."""

from __future__ import annotations

import random
import statistics

import pytest

from core.measurement import LoadStep, StepMeasurement
from core.registry import service_spec
from tests.fakes import FakeDeployer, FakeLoadRunner, make_step
from tests.unit.test_capacity import sent_steps
from tests.unit.test_capacity_growth import queue_that_latches
from tuner.capacity import SATURATION_GAIN, CapacityRules, CapacitySearch, saturated_rps
from tuner.objective import SLO
from tuner.space import Config
from tuner.trial import CapacityPlan, CapacitySchedule, TrialRunner

SLO_200 = SLO(latency_ms=200.0)


def probe(users: int, served: float) -> StepMeasurement:
    return make_step(LoadStep(users=users, duration_s=2.0), served, 50.0, 0.0)


def test_the_probes_call_a_server_saturated_when_twice_the_users_barely_served_more() -> None:
    assert saturated_rps(probe(1, 45.0), probe(2, 50.0)) == pytest.approx(50.0)
    assert saturated_rps(probe(1, 30.0), probe(2, 55.0)) is None
    just_under = 0.99 * SATURATION_GAIN * 40.0
    assert saturated_rps(probe(1, 40.0), probe(2, just_under)) == pytest.approx(just_under, rel=0.01)
    assert saturated_rps(probe(1, 0.0), probe(2, 50.0)) is None
    assert saturated_rps(None, probe(2, 50.0)) is None


def first_search(saturation: float | None, seed: int) -> tuple[float, int, float]:
    """A first search of a queue that latches after an overload (capacity 100, knee 80), from
    0.9x its knee (the demo's naive: 40.5/s under a knee of 44-46/s): (knee found / the
    server's, steps, the highest level tried / the knee)."""
    rng = random.Random(seed)
    respond, knee = queue_that_latches(100.0, rng)
    search = CapacitySearch(SLO_200, CapacityRules(), start=72.0, saturation=saturation)
    while (step := search.next_step()) is not None:
        search.tell(respond(step))
    finding = search.finding()
    assert finding.knee is not None
    return finding.knee / knee, finding.steps, max(level for level, _ in search.told) / knee


def test_a_saturated_server_is_bracketed_under_its_probe_not_twice_over_it() -> None:
    """The s45 demo's naive baseline (one worker, no batching) met 40.5/s, was offered 81/s (x2:
    p95 90 of 200 ms left half the bound), and failed 57, 48 and 44/s after that overload before
    it met 42-46/s. On a fake that latches after an overload (200 seeds: median overshoot 1.41x
    the knee by the headroom rule alone), the cap at the probe's figure keeps it at 1.25x (the
    capacity), and the searches take 7.5 steps instead of 8.5, median |error| 2.3% instead of
    5.7%, mean -2.8% instead of -5.5%."""
    capped = [first_search(100.0, seed) for seed in range(200)]
    doubled = [first_search(None, seed) for seed in range(200)]
    assert max(top for _, _, top in capped) <= 100.0 / 80.0 * 1.001
    assert statistics.median(top for _, _, top in doubled) > 1.4, "the precondition: the growth overshoots"
    assert statistics.mean(n for _, n, _ in capped) <= statistics.mean(n for _, n, _ in doubled)
    assert statistics.median(abs(k - 1) for k, _, _ in capped) < 0.05
    assert statistics.mean(k for k, _, _ in capped) > statistics.mean(k for k, _, _ in doubled)


def test_a_probe_figure_under_the_knee_costs_a_step_and_the_search_grows_past_it() -> None:
    """A hiccup in the probe (a figure 30% under the knee): the level at it meets the SLO and the
    search grows on from there as without the cap."""
    respond, knee = queue_that_latches(100.0, random.Random(7))
    search = CapacitySearch(SLO_200, CapacityRules(), start=50.0, saturation=56.0)
    levels = []
    while (step := search.next_step()) is not None:
        levels.append(step.rate)
        search.tell(respond(step))
    assert levels[:2] == [pytest.approx(50.0), pytest.approx(56.0)]
    assert levels[2] > 56.0 * 1.5, "grown by the headroom rule, not held at the probe's figure"
    assert search.finding().knee == pytest.approx(knee, rel=0.1)


@pytest.mark.parametrize(("light", "saturation"), [(45.0, 50.0), (25.0, None)])
def test_a_first_search_probes_with_half_the_users_first(light: float, saturation: float | None) -> None:
    plan = CapacityPlan(CapacityRules(), probe_s=3.0)
    schedule = CapacitySchedule(plan, SLO_200, workers=2, batches=False)
    steps = schedule.steps()
    half = next(steps)
    assert (half.users, half.duration_s, half.rate) == (2, 1.5, None)
    schedule.tell(make_step(half, light, 40.0, 0.0))
    full = next(steps)
    assert (full.users, full.duration_s, full.rate) == (4, 3.0, None)
    schedule.tell(make_step(full, 50.0, 60.0, 0.0))
    first = next(steps)
    assert first.rate == pytest.approx(40.0) and schedule.search is not None
    assert schedule.search.saturation == saturation
    assert schedule.search.finding().saturation_rps == saturation, "kept with the finding"


@pytest.mark.parametrize("case", ["re-measurement", "users"])
def test_a_re_measurement_or_a_closed_loop_search_probes_once(case: str) -> None:
    """A re-measurement climbs from a known knee; a users-mode search has no rate to cap."""
    rules = CapacityRules(mode="users") if case == "users" else CapacityRules()
    schedule = CapacitySchedule(
        CapacityPlan(rules),
        SLO_200,
        workers=2,
        hint=60.0 if case == "re-measurement" else None,
        batches=False,
    )
    steps = schedule.steps()
    only = next(steps)
    assert only.users == 4
    schedule.tell(make_step(only, 45.0, 60.0, 0.0))
    next(steps)
    assert schedule.search is not None and schedule.search.saturation is None


@pytest.mark.parametrize(("naive", "probes"), [(False, 1), (True, 2)])
def test_the_runner_probes_saturation_only_where_the_endpoint_does_not_batch(
    naive: bool, probes: int
) -> None:
    """MiniLM's batchable endpoint: one probe (a closed loop of a few users says nothing of a
    batching server's capacity: the no-op b32-l100 served 620/s to 2 users and ~1400/s paced);
    its unbatched twin (the naive baseline's): the light probe first."""
    spec = service_spec("embedding")
    deployer = FakeDeployer()
    loads = FakeLoadRunner(deployer)
    runner = TrialRunner(deployer, loads, CapacityPlan(probe_s=2.0), SLO_200, "embedding")
    sent, _ = sent_steps(runner, loads, Config(16, 200, 1, 2), spec.naive_endpoint if naive else None)
    closed = [step for step in sent if step.rate is None]
    assert [step.users for step in closed] == ([1, 2] if naive else [2])
