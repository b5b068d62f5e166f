"""The capacity search against fake load responses: a latency curve with a knee, with noise."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from core.measurement import Invalidity, InvalidReason, LoadStep, StepMeasurement
from tests.fakes import FakeDeployer, FakeLoadRunner, make_step
from tuner.capacity import CapacityRules, CapacitySearch, start_level
from tuner.objective import SLO
from tuner.report import capacity_text
from tuner.space import Config
from tuner.trial import CapacityPlan, CapacitySchedule, TrialRunner

SLO_200 = SLO(latency_ms=200.0)
Respond = Callable[[LoadStep], StepMeasurement]


def knee_curve(capacity: float, noise: float = 0.0, seed: int = 0) -> tuple[Respond, float]:
    """p95 = 40 ms plus a queueing term that reaches 200 ms at the knee; served = min(rate, capacity).

    Returns the responder and the true knee (the rate at which p95 crosses 200 ms without noise).
    """
    rng = random.Random(seed)

    def p95(rate: float) -> float:
        load = rate / capacity
        return 40.0 + 16.0 * load / max(1e-6, 1.0 - load) if load < 1 else 5000.0

    knee = capacity * 160.0 / 176.0  # 40 + 16 x / (1 - x) = 200  ->  x = 10/11

    def respond(step: LoadStep) -> StepMeasurement:
        rate = step.rate if step.rate is not None else step.users * 10.0
        latency = p95(rate) * math.exp(rng.gauss(0.0, noise))
        return make_step(step, min(rate, capacity), latency, 0.0)

    return respond, knee


def drive(search: CapacitySearch, respond: Respond) -> list[tuple[LoadStep, bool]]:
    """Run the search to its end; (step, met the SLO) per step."""
    seen = []
    while (step := search.next_step()) is not None:
        measured = respond(step)
        search.tell(measured)
        seen.append((step, not search.slo.violations(measured)))
    return seen


@pytest.mark.parametrize("capacity", [12.0, 150.0, 4000.0])
@pytest.mark.parametrize("start_factor", [0.05, 0.6, 3.0])
def test_the_knee_is_found_within_the_resolution(capacity: float, start_factor: float) -> None:
    respond, knee = knee_curve(capacity)
    rules = CapacityRules(resolution=0.05)
    search = CapacitySearch(SLO_200, rules, start=knee * start_factor)
    drive(search, respond)
    found = search.finding()
    assert found.limited_by == "slo" and found.converged
    assert found.knee is not None and found.breach is not None
    assert found.knee <= knee <= found.breach
    assert found.breach / found.knee - 1 <= 0.05
    assert abs(found.goodput_rps - knee) / knee <= 0.05


def test_with_noise_the_knee_stays_close() -> None:
    errors = []
    for seed in range(20):
        respond, knee = knee_curve(300.0, noise=0.05, seed=seed)
        search = CapacitySearch(SLO_200, CapacityRules(), start=50.0)
        drive(search, respond)
        found = search.finding()
        assert found.knee is not None
        errors.append(abs(found.knee - knee) / knee)
    assert sorted(errors)[len(errors) // 2] <= 0.05
    assert max(errors) <= 0.15


def test_the_bracket_never_passes_the_abort_rule() -> None:
    """No level above growth x the best passing level; none above a standing breach, and a
    breach itself only measured again as one of the rules' rechecks."""
    rules = CapacityRules(growth=2.0, rechecks=2)
    for seed in range(10):
        respond, _ = knee_curve(200.0, noise=0.1, seed=seed)
        search = CapacitySearch(SLO_200, rules, start=7.0)
        highest_met, breaches, rechecks = 0.0, [math.inf], 0
        for step, met in drive(search, respond):
            assert step.rate is not None
            assert step.rate <= min(breaches)
            if step.rate == min(breaches):
                rechecks += 1
            if highest_met:
                assert step.rate <= rules.growth * highest_met * (1 + 1e-9)
            assert step.abort_above_ms == rules.abort_factor * SLO_200.latency_ms
            if met:
                highest_met = max(highest_met, step.rate)
                breaches = [b for b in breaches if b != step.rate]  # a level's latest verdict stands
            else:
                breaches.append(step.rate)
        assert rechecks <= rules.rechecks


def test_a_breach_that_does_not_repeat_is_dropped() -> None:
    """A hiccup fails the step at 105 once; the recheck passes and the search goes on above it."""
    respond, knee = knee_curve(150.0)
    hiccups = [105.0]

    def with_hiccup(step: LoadStep) -> StepMeasurement:
        if step.rate is not None and hiccups and abs(step.rate - hiccups[0]) < 1e-6:
            hiccups.pop()
            return make_step(step, step.rate, 450.0, 0.0)
        return respond(step)

    rules = CapacityRules(growth=1.05 * 1.05, resolution=0.05, rechecks=1)
    search = CapacitySearch(SLO_200, rules, start=105.0 / rules.growth)
    drive(search, with_hiccup)
    found = search.finding()
    assert "did not repeat" in found.note
    assert found.knee is not None and found.knee > 105.0
    without = CapacitySearch(
        SLO_200, CapacityRules(growth=rules.growth, rechecks=0), start=105.0 / rules.growth
    )
    hiccups.append(105.0)
    drive(without, with_hiccup)
    assert without.finding().knee is not None and without.finding().knee < 105.0 < knee


def test_steps_hold_enough_requests_for_the_quantile_within_the_caps() -> None:
    rules = CapacityRules(min_step_s=2.0, max_step_s=15.0)
    for slo, need in ((SLO(200.0, "p95"), 200), (SLO(200.0, "p99"), 1000)):
        search = CapacitySearch(slo, rules, start=1.0)
        assert rules.min_requests(slo.quantile) == need
        for rate in (1.0, 30.0, 90.0, 5000.0):
            step = search.step_for(rate)
            assert step.duration_s == min(15.0, max(2.0, need / rate))
            assert step.users >= rate * 2 * slo.latency_ms / 1000  # paced users never run out
            assert step.rate == rate


@pytest.mark.parametrize(("capacity", "rough"), [(5.0, True), (150.0, False)])
def test_a_knee_judged_on_capped_steps_is_called_rough(capacity: float, rough: bool) -> None:
    respond, _ = knee_curve(capacity)
    search = CapacitySearch(SLO_200, CapacityRules(max_step_s=15.0), start=capacity / 2)
    drive(search, respond)
    found = search.finding()
    assert found.requests_needed == 200 and found.knee_requests is not None
    assert found.rough is rough
    assert ("rough: its step held" in capacity_text(found)) is rough
    held = [m for (_, m), ok in zip(search.told, found.counted, strict=True) if ok]
    assert found.knee_requests == max(held, key=lambda m: m.goodput_rps).requests


def test_a_config_that_never_meets_the_slo_is_infeasible_in_few_steps() -> None:
    def always_slow(step: LoadStep) -> StepMeasurement:
        return make_step(step, step.rate or 1.0, 900.0, 0.0)

    search = CapacitySearch(SLO_200, CapacityRules(), start=100.0)
    seen = drive(search, always_slow)
    found = search.finding()
    assert found.limited_by == "infeasible" and found.knee is None and found.goodput_rps == 0
    assert len(seen) <= 12  # 100 / 2^k down to the minimum rate


def test_a_generator_that_cannot_keep_the_rate_ends_the_search_and_says_so() -> None:
    def short_of_rate(step: LoadStep) -> StepMeasurement:
        rate = step.rate or 1.0
        measured = make_step(step, min(rate, 400.0), 30.0, 0.0)  # the server is fast; the client lags
        return replace(measured, generator_cpu=0.9 if rate > 400 else 0.3)

    search = CapacitySearch(SLO_200, CapacityRules(), start=100.0)
    drive(search, short_of_rate)
    found = search.finding()
    assert found.limited_by == "generator"
    assert "load generator" in found.note
    assert found.knee == 400.0


def test_an_idle_generator_short_of_the_rate_is_the_servers_breach() -> None:
    """Paced users wait for their answers: a server that holds an idle generator back has not
    sustained that rate, even when its own histogram's p95 (timed only once a worker reads the
    request) is under the SLO; the generator is not blamed."""
    respond, knee = knee_curve(300.0)
    behind = 0.8 * knee

    def stalls(step: LoadStep) -> StepMeasurement:
        measured = respond(step)
        if (step.rate or 0.0) <= behind:
            return measured
        return replace(measured, rps=0.8 * measured.rps, generator_cpu=0.1, server_p95_ms=50.0)

    search = CapacitySearch(SLO_200, CapacityRules(), start=50.0)
    drive(search, stalls)
    found = search.finding()
    assert found.limited_by == "slo" and found.knee is not None and found.breach is not None
    assert found.knee <= behind < found.breach
    behind_steps = [m for level, m in search.told if level > behind]
    assert behind_steps
    assert all("the server fell behind" in " ".join(SLO_200.violations(m)) for m in behind_steps)


def test_a_saturated_generator_is_not_taken_for_a_breach() -> None:
    def saturated_above_300(step: LoadStep) -> StepMeasurement:
        measured = make_step(step, step.rate or 1.0, 30.0, 0.0)
        if (step.rate or 0) > 300:
            flag = Invalidity(InvalidReason.GENERATOR_SATURATED, "load generator saturated (0.95 cores)")
            measured = StepMeasurement(**{**measured.__dict__, "valid": False, "invalid": (flag,)})
        return measured

    search = CapacitySearch(SLO_200, CapacityRules(), start=100.0)
    drive(search, saturated_above_300)
    found = search.finding()
    assert found.limited_by == "generator" and found.knee == 200.0 and found.breach is None


def test_closed_loop_users_mode_converges_on_whole_users() -> None:
    respond, knee_rate = knee_curve(200.0)  # one user offers 10 RPS in knee_curve
    search = CapacitySearch(SLO_200, CapacityRules(mode="users"), start=2, per_user_rps=10.0)
    seen = drive(search, respond)
    assert all(step.rate is None and step.users == int(step.users) for step, _ in seen)
    found = search.finding()
    assert found.limited_by == "slo" and found.knee is not None and found.breach is not None
    assert found.knee * 10 <= knee_rate <= found.breach * 10
    assert found.breach - found.knee <= max(1, 0.05 * found.knee)


def test_the_step_cap_bounds_a_search() -> None:
    respond, _ = knee_curve(1e9)
    rules = CapacityRules(max_steps=5, max_users=10**9)
    search = CapacitySearch(SLO_200, rules, start=1.0)
    assert len(drive(search, respond)) == 5
    assert search.finding().limited_by == "step_cap"


def test_start_levels() -> None:
    probe = make_step(LoadStep(users=4, duration_s=2), 80.0, 50.0, 0.0)
    assert start_level(probe, "rate") == pytest.approx(64.0)
    assert start_level(probe, "users") == 4
    assert start_level(probe, "rate", hint=150.0) == pytest.approx(135.0)
    assert start_level(None, "rate") == 1.0


def test_a_trial_probes_then_searches_and_keeps_the_finding() -> None:
    deployer = FakeDeployer()
    runner = TrialRunner(deployer, FakeLoadRunner(deployer), CapacityPlan(probe_s=2.0), SLO_200, "embedding")
    config = Config(16, 200, 2, 1)
    seen: list[int] = []
    measured = runner.measure(config, on_step=lambda index, _: seen.append(index))
    assert measured.ok and measured.capacity is not None
    assert measured.capacity.limited_by == "slo" and measured.capacity.converged
    assert all(step.step.rate is not None for step in measured.steps)  # the closed-loop probe is not scored
    assert seen == list(range(len(measured.steps)))
    again = runner.measure(config, hint=measured.capacity.knee)
    assert again.capacity is not None and again.capacity.steps < measured.capacity.steps


def shedding_surface(config: Config, users: float) -> tuple[float, float, float]:
    """Past capacity the server sheds a fifth of the requests (503), as BentoML's dispatcher does."""
    offered, capacity = users * 12.0, 150.0
    if offered <= capacity:
        return offered, 60.0 + 100.0 * offered / capacity, 0.0
    return capacity, 180.0, 0.2


def sent_steps(
    runner: TrialRunner, loads: FakeLoadRunner, config: Config, endpoint: str | None = None
) -> tuple[list[LoadStep], list]:  # type: ignore[type-arg]
    """Measure `config` at `endpoint`; every step the load runner was given, and the scored ones."""
    sent: list[LoadStep] = []
    original = loads.run_steps

    def recording(url, service, steps, **kw):  # type: ignore[no-untyped-def]
        def tap():  # type: ignore[no-untyped-def]
            for step in steps:
                sent.append(step)
                yield step

        return original(url, service, tap(), **kw)

    loads.run_steps = recording  # type: ignore[method-assign]
    return sent, list(runner.measure(config, endpoint=endpoint).steps)


def test_a_level_is_judged_after_the_server_adapted_to_it() -> None:
    """BentoML's dispatcher sheds for seconds after the load rises, and keeps shedding after an
    overload: a scored step is preceded by an unscored `adapt_s` step at its own level (same
    users, rate and abort rule) exactly when its level is above the last one, or the last step
    shed requests (after a light-load recovery and an approach just under the level); the first
    scored step (at the probe's load) and falls without 503s are not."""
    plan = CapacityPlan(CapacityRules(adapt_s=4.0, recover_s=6.0, approach_s=7.0), probe_s=2.0)
    for surface, sheds in ((shedding_surface, True), (None, False)):
        deployer = FakeDeployer()
        loads = FakeLoadRunner(deployer, surface) if surface else FakeLoadRunner(deployer)
        sent, scored = sent_steps(
            TrialRunner(deployer, loads, plan, SLO_200, "embedding"), loads, Config(16, 200, 2, 1)
        )
        adapts = [step for step in sent[1:] if step.duration_s == 4.0]
        recoveries = [step for step in sent[1:] if step.duration_s == 6.0 and step.abort_above_ms is None]
        approaches = [step for step in sent[1:] if step.duration_s == 7.0 and step.abort_above_ms is None]
        assert len(approaches) == len(recoveries)
        assert len(sent) == 1 + len(scored) + len(adapts) + len(recoveries) + len(approaches)
        queue = iter(sent[1:])
        previous: StepMeasurement | None = None
        for measured in scored:
            first = next(queue)
            rose = previous is not None and (measured.step.rate or 0.0) > (previous.step.rate or 0.0)
            shed = (
                previous is not None
                and bool(SLO_200.violations(previous))
                and bool(previous.failures_by_status.get("503"))
            )
            if shed:
                assert first in recoveries, "a light load after a step that shed"
                first = next(queue)
                assert first in approaches, "then a load just under the level judged next"
                assert first.rate == pytest.approx(0.85 * (measured.step.rate or 0.0))
                first = next(queue)
            if rose or shed:
                assert first == replace(measured.step, duration_s=4.0), "adapt at the level judged next"
                first = next(queue)
            assert first == measured.step
            previous = measured
        assert any(SLO_200.violations(m) and m.failures_by_status.get("503") for m in scored[:-1]) == sheds


def test_an_adapt_step_cut_short_is_the_breach_of_its_level() -> None:
    """An adapt step the runner aborts as overloaded is that level's verdict: no scored step
    follows it at that level, and it stands as a breach."""
    respond, knee = knee_curve(100.0)
    schedule = CapacitySchedule(CapacityPlan(CapacityRules(adapt_s=4.0), probe_s=2.0), SLO_200, workers=1)
    steps = schedule.steps()
    schedule.tell(make_step(next(steps), 40.0, 60.0, 0.0))  # the probe: 40 RPS
    sent: list[LoadStep] = []
    aborted_levels: list[float] = []
    for step in steps:
        sent.append(step)
        measured = respond(step)
        if step.duration_s == 4.0 and step.rate is not None and step.rate > knee:
            measured = replace(measured, aborted=True)
            aborted_levels.append(step.rate)
        if schedule.tell(measured):
            break
    assert aborted_levels, "the search rose above the knee"
    for index, step in enumerate(sent[:-1]):
        if step.rate in aborted_levels and step.duration_s == 4.0:
            assert sent[index + 1].rate != step.rate, "no scored step after an aborted adapt step"
    search = schedule.search
    assert search is not None
    assert all(level in search.breaches or level >= (search.hi or 0) for level in aborted_levels)
    found = schedule.finding()
    assert found is not None and found.knee is not None and found.knee <= knee


def test_an_aborted_step_is_a_breach_even_when_its_short_window_met_the_slo() -> None:
    """The runner cut the step short as overloaded; its few requests must not count as a pass."""
    respond, knee = knee_curve(100.0)
    search = CapacitySearch(SLO_200, CapacityRules(resolution=0.05), start=knee * 0.5)
    step = search.next_step()
    assert step is not None and step.rate is not None
    measured = replace(respond(step), aborted=True)  # within the SLO on paper, but cut short
    assert not SLO_200.violations(measured)
    search.tell(measured)
    assert search.passed == [] and search.hi == step.rate


def test_a_search_ends_on_what_it_has_when_the_time_budget_runs_out() -> None:
    """Fewer steps rather than an overrun: once a level passed, a step the budget cannot fit ends
    the search (limited by "budget"), with the passing level as its finding."""
    respond, knee = knee_curve(100.0)
    seconds = [1000.0]
    schedule = CapacityPlan(CapacityRules(resolution=0.02), probe_s=2.0).schedule(
        SLO_200, workers=1, time_left=lambda: seconds[0]
    )
    told = 0
    for step in schedule.steps():
        measured = respond(step)
        schedule.tell(measured)
        told += 1
        if schedule.scored() and not SLO_200.violations(schedule.scored()[-1]):
            seconds[0] = 0.5  # the budget is spent right after the first level that passed
    finding = schedule.finding()
    assert finding is not None and finding.limited_by == "budget" and "time budget" in finding.note
    assert finding.knee is not None and finding.knee < knee and not finding.converged
    assert told <= 4  # probe, the levels up to the first pass, nothing after
    if finding.breach is None:
        assert finding.note.endswith(f"bracket at {finding.knee:.4g}, no breach yet"), finding.note


def latching_server(capacity: float, release: float = 1 / 3) -> tuple[Respond, float]:
    """A server that sheds past its knee and, once it has, sheds every request at any load above
    `release` x its capacity until a lighter load lets it refit (BentoML's dispatcher with a
    tight max_latency)."""
    respond, knee = knee_curve(capacity)
    stuck = False

    def latching(step: LoadStep) -> StepMeasurement:
        nonlocal stuck
        rate = step.rate or 0.0
        if rate > knee:
            stuck = True
        elif rate <= capacity * release:
            stuck = False
        if stuck:
            return make_step(step, rate, 0.0, 1.0)
        return respond(step)

    return latching, knee


def run_schedule(schedule: CapacitySchedule, respond: Respond, probe_rps: float) -> list[LoadStep]:
    """Drive a schedule to its end; every step sent after the probe."""
    steps = schedule.steps()
    schedule.tell(make_step(next(steps), probe_rps, 60.0, 0.0))
    sent = []
    for step in steps:
        sent.append(step)
        if schedule.tell(respond(step)):
            break
    return sent


@pytest.mark.parametrize("start_factor", [0.6, 0.9])
def test_a_light_load_after_an_overload_lets_a_latched_server_recover(start_factor: float) -> None:
    """After a step that shed requests, a light unscored load (`recover_fraction` of the next
    level, `recover_s` long, never cut short) comes first: a server that keeps shedding after an
    overload until the load falls is then found at its knee, where without it the search only
    keeps the levels it passed before its first overload."""
    capacity = 100.0
    rules = CapacityRules(adapt_s=4.0, recover_s=3.0, recover_fraction=0.25, approach_s=0.0)
    found = {}
    for recover_s in (3.0, 0.0):
        respond, knee = latching_server(capacity)
        plan = CapacityPlan(replace(rules, recover_s=recover_s), probe_s=2.0)
        schedule = CapacitySchedule(plan, SLO_200, workers=1)
        sent = run_schedule(schedule, respond, probe_rps=knee * start_factor / 0.8)
        search = schedule.search
        assert search is not None
        if recover_s:
            told = [m for _, m in search.told]
            for index, step in enumerate(sent):
                if step.duration_s != recover_s:
                    continue
                after = sent[index + 1]
                assert step.rate == pytest.approx(0.25 * (after.rate or 0.0))
                assert step.abort_above_ms is None and step not in [m.step for m in told]
            assert sum(step.duration_s == recover_s for step in sent) >= 1
        finding = schedule.finding()
        assert finding is not None
        found[recover_s] = finding.knee or 0.0
    assert knee / (1 + rules.resolution) ** 2 <= found[3.0] <= knee
    assert found[0.0] < found[3.0] / (1 + rules.resolution)


def history_server(capacity: float, refit_s: float = 5.0) -> tuple[Respond, float]:
    """A server that, after an overload, sheds a tenth of the requests at a level above half its
    knee until it has run for two refits (`refit_s` each) at 80% or more of that level since its
    last overload (BentoML's dispatcher fits its wait to the batches it has just dispatched)."""
    respond, knee = knee_curve(capacity)
    near: dict[str, float] = {"level": 0.0, "s": 0.0}
    overloaded = False

    def history(step: LoadStep) -> StepMeasurement:
        nonlocal overloaded
        rate = step.rate or 0.0
        if rate > knee:
            overloaded, near["level"], near["s"] = True, 0.0, 0.0
            return make_step(step, knee, 900.0, 0.3)
        refitted = near["s"] >= 2 * refit_s and near["level"] >= 0.8 * rate
        fitted = not overloaded or rate < 0.5 * knee or refitted
        if near["level"] and 0.8 * near["level"] <= rate <= near["level"] / 0.8:
            near["s"] += step.duration_s
        else:
            near["level"], near["s"] = rate, step.duration_s
        return respond(step) if fitted else make_step(step, rate, 120.0, 0.1)

    return history, knee


def test_a_load_just_under_the_next_level_lets_the_server_refit_near_it() -> None:
    """After an overload, a server whose batching model is fitted on the light load sheds at
    levels it holds: the approach (`approach_fraction` of the next level, `approach_s` long, never
    cut short) after the light load lets the search find its knee, where without it the search
    keeps only the levels it passed before its first overload."""
    rules = CapacityRules(adapt_s=5.0, recover_s=6.0, approach_s=10.0, approach_fraction=0.85)
    found = {}
    for approach_s in (10.0, 0.0):
        respond, knee = history_server(100.0)
        plan = CapacityPlan(replace(rules, approach_s=approach_s), probe_s=2.0)
        schedule = CapacitySchedule(plan, SLO_200, workers=1)
        sent = run_schedule(schedule, respond, probe_rps=knee * 0.6 / 0.8)
        for index, step in enumerate(sent):
            if step.abort_above_ms is None and step.duration_s == 6.0:  # a light load
                after = sent[index + 1 : index + 4]
                if approach_s:
                    assert after[0].abort_above_ms is None and after[0].duration_s == approach_s
                    assert after[0].rate == pytest.approx(0.85 * (after[1].rate or 0.0))
                    after = after[1:]
                assert after[0] == replace(after[1], duration_s=5.0), "then it adapts at the level"
        finding = schedule.finding()
        assert finding is not None
        found[approach_s] = finding.knee or 0.0
    assert knee / (1 + rules.resolution) ** 2 <= found[10.0] <= knee
    assert found[0.0] < found[10.0] / (1 + rules.resolution)


def test_the_time_budget_counts_the_approach() -> None:
    """A level that fits the budget with its light load and adapt step but not with its approach
    ends the search."""
    rules = CapacityRules(adapt_s=5.0, recover_s=6.0, approach_s=10.0)
    search = CapacitySearch(SLO_200, rules, start=100.0)
    first = search.next_step()
    assert first is not None
    search.tell(make_step(first, 100.0, 60.0, 0.0))
    second = search.next_step()
    assert second is not None
    search.tell(make_step(second, 150.0, 900.0, 0.2))  # shed: recovery, approach, adapt
    nxt = search.next_step()
    assert nxt is not None
    assert search.unscored_s(nxt) == 6.0 + 10.0 + 5.0
    seconds = nxt.duration_s + 6.0 + 5.0 + 1.0
    schedule = CapacitySchedule(CapacityPlan(rules), SLO_200, workers=1, time_left=lambda: seconds)
    schedule.search = search
    assert schedule._out_of_time(search, nxt) and search.limited_by == "budget"


def test_a_step_cut_short_without_shedding_gets_the_light_load_only() -> None:
    """A server that queued rather than shed (no 503) has no batching model to refit: after its
    overloaded step comes the light load, then the level, with no approach and no adapt step."""
    rules = CapacityRules(adapt_s=5.0, recover_s=6.0, approach_s=10.0)
    schedule = CapacitySchedule(CapacityPlan(rules, probe_s=2.0), SLO_200, workers=1)
    steps = schedule.steps()
    schedule.tell(make_step(next(steps), 80.0, 60.0, 0.0))  # the probe
    first = next(steps)  # the first level: met
    schedule.tell(make_step(first, first.rate or 0.0, 60.0, 0.0))
    adapt = next(steps)
    schedule.tell(make_step(adapt, adapt.rate or 0.0, 60.0, 0.0))
    higher = next(steps)
    assert higher.rate == pytest.approx(2 * (first.rate or 0.0))
    schedule.tell(replace(make_step(higher, 90.0, 900.0, 0.0), aborted=True))  # queued, no 503
    search = schedule.search
    assert search is not None and search.recovers_before() and not search.approaches_before()
    light = next(steps)
    assert light.abort_above_ms is None and light.duration_s == 6.0
    schedule.tell(make_step(light, light.rate or 0.0, 40.0, 0.0))
    judged = next(steps)
    assert judged.abort_above_ms is not None and judged.rate is not None
    assert first.rate is not None and first.rate < judged.rate < higher.rate
    assert search.unscored_s(judged) == 6.0


def test_a_recovery_that_still_fails_is_named_in_the_finding() -> None:
    """A server that fails even the light load after an overload: the finding says so."""
    search = CapacitySearch(SLO_200, CapacityRules(), start=50.0)
    step = search.next_step()
    assert step is not None
    search.tell(make_step(step, 50.0, 900.0, 0.6))
    assert search.recovers_before()
    nxt = search.next_step()
    assert nxt is not None and nxt.rate is not None
    light = search.recovery_step(nxt)
    assert light.rate == pytest.approx(0.25 * nxt.rate) and light.duration_s == CapacityRules().recover_s
    assert not search.tell_recovery(make_step(light, light.rate or 0.0, 900.0, 0.9))
    assert "still failed 90% of a light load" in search.finding().note


def test_a_light_load_the_server_still_fails_is_run_again_lighter() -> None:
    """A latched server that refits only under a tenth of its capacity: each light load it fails
    is followed by one half as heavy, until one is served; then the level is measured."""
    respond, knee = latching_server(100.0, release=0.1)
    rules = CapacityRules(
        adapt_s=4.0, recover_s=3.0, recover_fraction=0.25, recover_attempts=3, approach_s=0.0
    )
    schedule = CapacitySchedule(CapacityPlan(rules, probe_s=2.0), SLO_200, workers=1)
    sent = run_schedule(schedule, respond, probe_rps=knee * 0.9 / 0.8)
    runs: list[list[LoadStep]] = [[]]
    for step in sent:
        if step.abort_above_ms is None:
            runs[-1].append(step)
        elif runs[-1]:
            next_level = step.rate or 0.0
            fractions = [(light.rate or 0.0) / next_level for light in runs[-1]]
            assert fractions == pytest.approx([0.25, 0.125, 0.0625][: len(fractions)])
            assert (runs[-1][-1].rate or 0.0) <= 10.0 or len(fractions) == 3, "stops once served"
            runs.append([])
    assert any(len(run) >= 2 for run in runs), "a light load was run again"
    finding = schedule.finding()
    assert finding is not None and finding.knee is not None
    assert knee / (1 + rules.resolution) ** 2 <= finding.knee <= knee


def test_a_recovery_after_several_light_loads_is_named_in_the_finding() -> None:
    search = CapacitySearch(SLO_200, CapacityRules(), start=50.0)
    step = search.next_step()
    assert step is not None
    search.tell(make_step(step, 50.0, 900.0, 0.6))
    light = search.recovery_step(step, attempt=2)
    assert light.rate == pytest.approx(50.0 * 0.25 / 4)
    assert search.tell_recovery(make_step(light, light.rate or 0.0, 50.0, 0.0), attempt=2)
    assert search.finding().note == "after an overload the server served again only at 3.125 RPS offered"


def with_errors(measured: StepMeasurement, share: float) -> StepMeasurement:
    """`measured` with `share` of its requests failed with HTTP 500 (an exception in the service)."""
    errors = round(measured.requests * share)
    return replace(
        measured, successes=measured.requests - errors, failures_by_status={"500": errors},
        failure_ratio=errors / measured.requests, goodput_rps=measured.rps * (1 - errors / measured.requests),
    )  # fmt: skip


def test_server_errors_that_do_not_fall_with_the_load_end_the_search() -> None:
    respond, _ = knee_curve(300.0)
    search = CapacitySearch(SLO_200, CapacityRules(), start=100.0)
    steps = drive(search, lambda step: with_errors(respond(step), 0.05))
    found = search.finding()
    assert found.limited_by == "errors" and found.knee is None and found.goodput_rps == 0
    assert "HTTP 500" in found.note and "do not fall with the load" in found.note
    assert len(steps) == 2  # 100/s, then 50/s: not down to a level that passes by luck


def test_server_errors_that_come_with_the_load_only_bound_the_knee() -> None:
    """Errors above some load (a batch that runs out of memory) are a capacity limit like any other."""
    respond, knee = knee_curve(300.0)

    def errors_above(step: LoadStep) -> StepMeasurement:
        measured = respond(step)
        return with_errors(measured, 0.2) if (step.rate or 0.0) > 0.5 * knee else measured

    search = CapacitySearch(SLO_200, CapacityRules(), start=50.0)
    drive(search, errors_above)
    found = search.finding()
    assert found.limited_by == "slo" and found.knee is not None and found.breach is not None
    assert found.knee <= 0.5 * knee < found.breach


def test_the_finding_credits_a_paced_step_with_no_more_than_its_rate() -> None:
    """A pass whose answers outran its rate (a backlog draining) sets the knee's goodput at the
    rate it was offered."""
    search = CapacitySearch(SLO_200, CapacityRules(), 100.0)
    first = search.next_step()
    assert first is not None and first.rate is not None
    search.tell(make_step(first, rps=first.rate * 1.1, p95=60.0, failure_ratio=0.0))
    assert search.finding().goodput_rps == pytest.approx(first.rate)
