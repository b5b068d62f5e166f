"""SLO constraints and objectives on synthetic load steps."""

from __future__ import annotations

from dataclasses import replace

from core.measurement import Invalidity, InvalidReason, LoadStep
from tests.fakes import make_step
from tuner.objective import SLO, Objective, Prices
from tuner.space import Config

CONFIG = Config(16, 200, 2, 1, 0, "fp32")


def step(users: int, rps: float, p95: float, failures: float = 0.0):  # type: ignore[no-untyped-def]
    return make_step(LoadStep(users=users, duration_s=10), rps, p95, failures)


def test_goodput_is_the_best_step_that_meets_the_slo() -> None:
    objective = Objective(SLO(latency_ms=200))
    outcome = objective.evaluate(CONFIG, [step(4, 50, 60), step(8, 100, 150), step(16, 120, 400)])
    assert outcome.feasible
    assert outcome.best_step == 1
    assert abs(outcome.goodput_rps - 100) < 1
    assert outcome.score == outcome.goodput_rps


def test_failures_503_included_break_the_slo() -> None:
    objective = Objective(SLO(latency_ms=200, max_failure_ratio=0.01))
    outcome = objective.evaluate(CONFIG, [step(4, 50, 60, failures=0.3)])
    assert not outcome.feasible
    assert outcome.score is None
    assert "failure ratio" in outcome.reason and "503" in outcome.reason


def test_p99_quantile_is_used_when_asked() -> None:
    steps = [step(4, 50, 180)]  # client p99 = 1.2 x p95 = 216 ms, server p99 unknown
    assert Objective(SLO(latency_ms=200, quantile="p95")).evaluate(CONFIG, steps).feasible
    assert not Objective(SLO(latency_ms=200, quantile="p99")).evaluate(CONFIG, steps).feasible


def test_cost_objective_prefers_cheaper_per_request() -> None:
    objective = Objective(SLO(latency_ms=200), kind="cost", prices=Prices(core_hour=0.05))
    small = objective.evaluate(Config(16, 200, 1, 1, 0), [step(8, 60, 100)])
    large = objective.evaluate(Config(16, 200, 2, 1, 0), [step(8, 100, 100)])
    assert small.cost_per_million is not None and large.cost_per_million is not None
    assert abs(small.cost_per_million - 0.05 / (60 * 3600) * 1e6) < 1e-6
    assert small.score is not None and large.score is not None
    assert small.score > large.score  # 60 RPS on 1 core is cheaper than 100 on 2


def test_cost_without_price_is_infeasible_with_reason() -> None:
    outcome = Objective(SLO(), kind="cost").evaluate(CONFIG, [step(8, 60, 100)])
    assert not outcome.feasible and "price" in outcome.reason


def test_clear_breach_stops_stepping() -> None:
    slo = SLO(latency_ms=200, max_failure_ratio=0.01)
    assert not slo.clearly_breached(step(4, 50, 210))
    assert slo.clearly_breached(step(4, 50, 300))
    assert slo.clearly_breached(step(4, 50, 50, failures=0.2))


def test_uneven_worker_split_counts_but_is_noted_unless_strict() -> None:
    from dataclasses import replace

    from loadtests.runner import uneven_workers

    flagged = uneven_workers({"1": 94.0, "2": 6.0}, workers=2)  # what the runner attaches
    uneven = replace(step(8, 100, 100), valid=False, invalid=tuple(flagged))
    lenient = Objective(SLO()).evaluate(CONFIG, [uneven])
    assert lenient.feasible and "uneven worker split: worker 2 served 6%" in lenient.reason
    strict = Objective(SLO(accept_uneven_workers=False)).evaluate(CONFIG, [uneven])
    assert not strict.feasible and "invalid measurement: worker 2 served 6%" in strict.reason


def test_only_the_reason_decides_not_the_words() -> None:
    from dataclasses import replace

    # a saturated generator is never tolerated, even if its text happened to mention a fair share
    saturated = replace(
        step(8, 100, 100),
        valid=False,
        invalid=(Invalidity(InvalidReason.GENERATOR_SATURATED, "0.95 cores (fair share 50%)"),),
    )
    outcome = Objective(SLO()).evaluate(CONFIG, [saturated])
    assert not outcome.feasible and "invalid measurement: 0.95 cores" in outcome.reason
    # an uneven split is tolerated by its reason, whatever its text says
    odd_words = replace(
        step(8, 100, 100), valid=False, invalid=(Invalidity(InvalidReason.UNEVEN_WORKERS, "one worker idle"),)
    )
    assert Objective(SLO()).evaluate(CONFIG, [odd_words]).feasible


def test_an_invalid_step_without_reasons_is_still_refused() -> None:
    from dataclasses import replace

    outcome = Objective(SLO()).evaluate(CONFIG, [replace(step(8, 100, 100), valid=False)])
    assert not outcome.feasible and "flagged by the load runner" in outcome.reason


def test_a_pass_overturned_by_its_recheck_is_named_as_such() -> None:
    """No step counts because the only pass did not hold on a re-measurement: the reason names
    that load and its latest violations, not an empty list."""
    step = LoadStep(users=10, duration_s=2.0, rate=50.0)
    steps = [make_step(step, 50.0, 80.0, 0.0), make_step(step, 50.0, 350.0, 0.0)]
    outcome = Objective(SLO(latency_ms=200.0)).evaluate(Config(8, 50, 1, 1), steps, [False, False])
    assert not outcome.feasible
    assert outcome.reason == "no load held the SLO: 50 RPS offered met it, then did not (p95 350 ms > 200 ms)"


def test_a_paced_step_counts_no_more_goodput_than_its_rate() -> None:
    """Answers above a paced step's rate drain a backlog from before its window (a server
    recovering from an overload): the step shows it sustains its rate, not more. A tuned
    service's as-written baseline once kept the win on 608.6 good RPS measured at 548/s."""
    paced = LoadStep(users=220, duration_s=2.0, rate=548.0)
    drained = make_step(paced, rps=608.6, p95=143.0, failure_ratio=0.0)
    assert drained.goodput_rps > 600 and drained.sustained_rps == 548.0
    held = make_step(replace(paced, rate=575.0), rps=570.2, p95=16.0, failure_ratio=0.0)
    assert held.sustained_rps == held.goodput_rps
    outcome = Objective(SLO(latency_ms=200.0)).evaluate(CONFIG, [drained, held])
    assert outcome.goodput_rps == held.goodput_rps and outcome.best_step == 1
    closed = make_step(LoadStep(users=8, duration_s=3.0), rps=90.0, p95=50.0, failure_ratio=0.0)
    assert closed.sustained_rps == closed.goodput_rps
