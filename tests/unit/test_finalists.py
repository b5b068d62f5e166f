"""Finalists' 95% intervals, statistical ties and the resource tie-break; the study's time budget."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tests.fakes import FakeDeployer, FakeLoadRunner, smooth_surface
from tuner.budget import TimeBudget
from tuner.capacity import CapacityRules
from tuner.finalists import Finalist, choose, resources, t_interval
from tuner.objective import SLO, Objective
from tuner.report import ReportInputs, comparisons, render_html
from tuner.space import Config, Machine, default_space
from tuner.store import StudyStore, TrialRecord
from tuner.strategies import make_strategy
from tuner.study import Study
from tuner.trial import CapacityPlan, TrialRunner


def record(config: Config, goodput: float, number: int = 0) -> TrialRecord:
    return TrialRecord(number=number, key=config.key, config=config.to_dict(), status="ok",
                       score=goodput, goodput_rps=goodput)  # fmt: skip


def finalist(config: Config, *goodputs: float) -> Finalist:
    runs = [record(config, g, i) for i, g in enumerate(goodputs)]
    return Finalist(config, runs[0], runs)


def test_the_interval_is_students_t() -> None:
    low, high = t_interval([1.0, 2.0, 3.0])
    assert (low + high) / 2 == pytest.approx(2.0)
    assert (high - low) / 2 == pytest.approx(4.302653 / 3**0.5, rel=1e-5)  # t(0.975, 2) x s / sqrt(3)
    assert t_interval([5.0]) == (5.0, 5.0)


def test_clear_winner_has_no_tie() -> None:
    big, small = Config(16, 200, 2, 1), Config(16, 200, 1, 1)
    choice = choose([finalist(big, 200, 202, 198), finalist(small, 100, 101, 99)], cores=2)
    assert choice is not None and choice.winner.config == big and not choice.is_tie
    assert "no other finalist" in choice.explain()


def test_a_lone_finalist_is_called_the_only_one_not_unrivalled() -> None:
    only = finalist(Config(16, 200, 2, 1), 140.0, 114.0)
    choice = choose([only], cores=2)
    assert choice is not None and choice.winner is only and not choice.is_tie
    assert "(the only finalist)" in choice.explain() and "no other finalist" not in choice.explain()


def test_a_tie_goes_to_the_config_using_fewer_cores_and_is_named() -> None:
    two_workers, one_worker = Config(16, 200, 2, 1), Config(16, 200, 1, 1)
    assert resources(one_worker, 2) < resources(two_workers, 2)
    noisy_best = finalist(two_workers, 150, 190, 170)  # mean 170
    close = finalist(one_worker, 160, 168, 164)  # mean 164, inside the other's interval
    choice = choose([noisy_best, close], cores=2)
    assert choice is not None and choice.is_tie
    assert choice.best_mean is noisy_best and choice.winner is close
    assert "statistically tied" in choice.explain() and two_workers.key in choice.explain()


def test_a_tie_on_equal_resources_prefers_the_more_accurate_variant() -> None:
    fp32, int8 = Config(16, 200, 2, 1, 0, "fp32"), Config(16, 200, 2, 1, 0, "int8")
    choice = choose([finalist(int8, 180, 200, 190), finalist(fp32, 170, 195, 185)], cores=2)
    assert choice is not None and choice.winner.config == fp32 and choice.is_tie


def test_budget_counts_from_creation_with_a_fake_clock() -> None:
    now = [100.0]
    budget = TimeBudget(60.0, min_trials=1, clock=lambda: now[0])
    assert budget.affords_trial(0, [], reserve_s=1000)  # the first trial always runs
    now[0] += 30
    assert budget.affords_trial(1, [20.0], reserve_s=5)
    assert not budget.affords_trial(1, [20.0], reserve_s=15)
    assert budget.stopped_because == (
        "time budget: 30 s left, a trial takes ~20 s and the finalists' re-measurements need ~15 s"
    )
    now[0] += 49  # a first trial that took longer than the whole budget: no negative seconds left
    assert not budget.affords_trial(1, [79.0], reserve_s=0)
    assert budget.stopped_because == "time budget: spent (19 s over), a trial takes ~79 s"
    with pytest.raises(ValueError):
        TimeBudget(0)


def test_a_study_runs_fewer_trials_rather_than_overrun_its_budget(tmp_path: Path) -> None:
    """Every fake trial costs 10 s of a fake clock; 100 s cannot hold 12 trials and 3x3 repeats."""
    now = [0.0]
    deployer = FakeDeployer(on_deploy=lambda _: now.__setitem__(0, now[0] + 10.0))
    space = default_space("embedding", Machine(cores=2, gpus=0))
    slo = SLO(latency_ms=200)
    runner = TrialRunner(deployer, FakeLoadRunner(deployer), CapacityPlan(), slo, "embedding")
    store = StudyStore(tmp_path)
    store.open({}, resume=False)
    budget = TimeBudget(100.0, clock=lambda: now[0])
    runner_measure = runner.measure

    def timed(config: Config, **kw: object):  # type: ignore[no-untyped-def]
        start = now[0]
        measured = runner_measure(config, **kw)  # type: ignore[arg-type]
        measured.wall_s = now[0] - start
        return measured

    runner.measure = timed  # type: ignore[method-assign]
    study = Study(space, make_strategy("random", space, 0), Objective(slo), runner, store, 12, 3, 3,
                  budget=budget, cores=2)  # fmt: skip
    result = study.run()
    assert now[0] <= 100.0 + 10.0  # at most one measurement past the line
    assert 2 <= len(result.trials) < 12
    assert "time budget" in result.stopped_because
    runs = [len(f.repeats) for f in result.finalists]
    assert max(runs) - min(runs) <= 1  # repeats go round the finalists, not one at a time
    assert result.winner is not None
    assert statistics.fmean(result.winner.goodputs) == result.winner.mean_goodput


def test_a_single_run_claims_no_interval() -> None:
    config = Config(16, 200, 2, 1)
    alone = Finalist(config, record(config, 55.9), [])
    assert alone.interval_text.startswith("no interval: 1 run")
    assert "95% interval" not in alone.interval_text
    assert Finalist(config, record(config, 50.0), [record(config, 60.0, 1)]).interval_text.startswith(
        "95% interval 0.0-"
    )


def ticking_loads(deployer: FakeDeployer, now: list[float]) -> FakeLoadRunner:
    """A fake load runner that moves the fake clock `now` by each step's length as it runs it."""
    loads = FakeLoadRunner(deployer)
    original = loads.run_steps

    def timed(url, service, steps, **kw):  # type: ignore[no-untyped-def]
        def ticking():  # type: ignore[no-untyped-def]
            for step in steps:
                now[0] += step.duration_s
                yield step

        return original(url, service, ticking(), **kw)

    loads.run_steps = timed  # type: ignore[method-assign]
    return loads


def test_every_search_the_first_included_ends_when_the_budget_does(tmp_path: Path) -> None:
    """A fake clock that moves with each load step and a 1 s budget: the first search (a
    baseline) and the first trial (one the budget always runs) both stop at the budget once a
    level met the SLO, not at the end of their bracket."""
    now = [0.0]
    deployer = FakeDeployer()
    loads = ticking_loads(deployer, now)
    space = default_space("embedding", Machine(cores=2, gpus=0))
    slo = SLO(latency_ms=200)
    runner = TrialRunner(deployer, loads, CapacityPlan(), slo, "embedding")
    store = StudyStore(tmp_path)
    store.open({}, resume=False)
    study = Study(space, make_strategy("random", space, 0), Objective(slo), runner, store, 2, 0, 0,
                  budget=TimeBudget(1.0, clock=lambda: now[0]), cores=2)  # fmt: skip
    baseline = study.baseline(Config(16, 200, 2, 1), "naive")
    result = study.run()
    (trial,) = result.trials  # a second one would not fit: it is not run
    for found in (baseline.capacity, trial.capacity):
        assert found is not None and found.limited_by == "budget", found
        assert found.knee is not None and found.steps == 1


def demo_like_study(tmp_path: Path, budget_s: float | None, now: list[float]) -> tuple[Study, TimeBudget]:
    """Two baselines, then up to 5 trials and 2 finalists x 2 runs; server starts cost 10 s and
    teardowns 2 s of the fake clock `now`, load steps their length."""
    deployer = FakeDeployer(
        on_deploy=lambda _: now.__setitem__(0, now[0] + 10.0),
        on_teardown=lambda _: now.__setitem__(0, now[0] + 2.0),
    )
    space = default_space("embedding", Machine(cores=2, gpus=0))
    slo = SLO(latency_ms=200)
    runner = TrialRunner(deployer, ticking_loads(deployer, now), CapacityPlan(), slo, "embedding",
                         clock=lambda: now[0])  # fmt: skip
    store = StudyStore(tmp_path)
    store.open({}, resume=False)
    budget = TimeBudget(budget_s, clock=lambda: now[0])
    study = Study(space, make_strategy("random", space, 0), Objective(slo), runner, store, 5, 2, 2,
                  budget=budget, cores=2)  # fmt: skip
    study.baselines_ahead = 2
    study.baseline(Config(2, 1000, 1, 2), "naive")
    study.baseline(Config(100, 60000, 1, 2), "bentoml-default")
    return study, budget


def never_meets_study(
    folder: Path, now: list[float], budget_s: float | None, trials: int, finalists: int
) -> Study:
    """A study on the fake clock `now` whose every config misses the SLO at any load (p95
    900 ms), `finalists` finalists re-measured as often."""
    deployer = FakeDeployer()
    loads = ticking_loads(deployer, now)
    loads.surface = lambda config, users: (users * 12.0, 900.0, 0.0)
    space = default_space("embedding", Machine(cores=2, gpus=0))
    slo = SLO(latency_ms=200)
    runner = TrialRunner(deployer, loads, CapacityPlan(), slo, "embedding", clock=lambda: now[0])
    store = StudyStore(folder)
    store.open({}, resume=False)
    budget = TimeBudget(budget_s, clock=lambda: now[0])
    return Study(space, make_strategy("random", space, 0), Objective(slo), runner, store, trials,
                 finalists, finalists, budget=budget, cores=2)  # fmt: skip


def test_a_search_that_has_met_nothing_by_the_budget_ends_there_too(tmp_path: Path) -> None:
    """A config that meets the SLO at no load (every step too slow) shrank its rate through all
    its steps whatever the budget said; it now stops at the budget with no knee, and says so.
    Its record is "unfinished", not "infeasible": it says nothing of the config, so it is not the
    config's trial (a strategy would read it as a capacity of 0)."""
    now = [0.0]
    study = never_meets_study(tmp_path, now, 30.0, trials=1, finalists=0)
    result = study.run()
    (trial,) = result.trials
    found = trial.capacity
    assert found is not None and found.limited_by == "budget" and found.knee is None, found
    assert "no level met yet" in found.note
    assert trial.status == "unfinished" and trial.reason.startswith("unfinished: time budget")
    assert not study.history.view().measured(trial.key) and len(study.history) == 0
    assert now[0] <= 30.0 + 15.0  # at most one step past the line (a step is at most 15 s)
    html = render_html(result, ReportInputs("embedding", {"slo_p95_ms": 200.0}, {}))
    assert f"{trial.key} unfinished: 0.0 RPS — unfinished: time budget" in html  # its own colour


def test_a_resumed_study_measures_an_unfinished_trial_again(tmp_path: Path) -> None:
    """`--resume` with a longer budget: the config the budget cut before any verdict is measured
    again, to its end (here: infeasible, having shrunk to the floor), and kept as its trial."""
    now = [0.0]
    (cut,) = never_meets_study(tmp_path, now, 30.0, trials=1, finalists=0).run().trials
    assert cut.unfinished
    resumed = never_meets_study(tmp_path / "unused", now, None, trials=1, finalists=0)
    store = StudyStore(tmp_path)
    resumed.store = store
    resumed.resume(store.open({}, resume=True))
    result = resumed.run()
    again = [r for r in result.trials if r.key == cut.key]
    assert [r.status for r in again] == ["unfinished", "infeasible"]
    assert again[1].capacity is not None and again[1].capacity.limited_by != "budget"
    assert resumed.history.trial(cut.key) is again[1]


def test_with_no_feasible_trial_the_budget_keeps_no_room_for_re_measurements(tmp_path: Path) -> None:
    """While no trial met the SLO there is no finalist to re-measure: the time it would keep
    goes to another trial, which may find a feasible config."""
    now = [0.0]
    (alone,) = never_meets_study(tmp_path / "whole", now, None, trials=1, finalists=2).run().trials
    now[0] = 0.0
    study = never_meets_study(tmp_path / "budget", now, 2.5 * alone.wall_s, trials=5, finalists=2)
    result = study.run()
    assert len(result.trials) >= 2 and all(r.status == "infeasible" for r in result.trials)
    assert "re-measurement" not in result.stopped_because


def test_the_baselines_and_the_first_trial_leave_the_leaders_re_measurement(tmp_path: Path) -> None:
    """The demo's case: the two baselines and the first trial's whole searches fill the budget
    (stop 24's demo: 249 s of 278, then no interval). Each search now keeps a first verdict's time
    for every measurement the study must still run, so the first trial stops early and the
    leader is measured again: the winner has an interval, and the budget holds."""
    now = [0.0]
    unbounded, _ = demo_like_study(tmp_path / "whole", None, now)
    unbounded.n_trials = 1
    whole = unbounded.run()
    assert whole.trials[0].capacity is not None and whole.trials[0].capacity.limited_by != "budget"
    three_searches = sum(r.wall_s for r in whole.records if r.kind != "finalist")

    now[0] = 0.0
    study, budget = demo_like_study(tmp_path / "budget", three_searches, now)
    result = study.run()
    (trial,) = result.trials
    assert trial.capacity is not None and trial.capacity.limited_by == "budget"
    assert result.winner is not None and len(result.winner.repeats) == 1
    assert result.winner.repeated_interval is not None
    assert now[0] <= budget.started + three_searches + 1e-6  # not one step past the line


def test_a_baseline_keeps_room_for_the_measurements_still_to_come(tmp_path: Path) -> None:
    """With a budget of only a little more than a first verdict per mandatory measurement, the
    first baseline stops after its first level rather than run its whole search."""
    now = [0.0]
    probe, _ = demo_like_study(tmp_path / "whole", None, now)
    first = probe.records[0]
    assert first.first_verdict_s is not None and first.capacity is not None and first.capacity.steps > 1
    now[0] = 0.0
    tight = 4 * (first.first_verdict_s + 2.0) + 1.0  # naive, default, trial 1, the re-measurement
    study, _ = demo_like_study(tmp_path / "tight", tight, now)
    naive = study.records[0]
    assert naive.capacity is not None and naive.capacity.limited_by == "budget"
    assert naive.capacity.steps < first.capacity.steps


def test_each_measurement_the_budget_must_fit_gets_an_even_share(tmp_path: Path) -> None:
    """First come, first served, the s45 demo's two baselines took 199 of its 272 s and its one
    trial got a single step. A measurement now loads for no more than an even share of what is
    left with the ones the study must still run (naive, default, trial 1, the re-measurement):
    the naive baseline stops at a quarter of the budget, and the first trial searches further."""
    now = [0.0]
    whole, _ = demo_like_study(tmp_path / "whole", None, now)
    naive_whole = whole.records[0]
    budget_s = 2.5 * naive_whole.wall_s
    assert naive_whole.wall_s > budget_s / 4 + CapacityRules().max_step_s, "the precondition"
    now[0] = 0.0
    study, budget = demo_like_study(tmp_path / "shared", budget_s, now)
    naive = study.records[0]
    assert naive.capacity is not None and naive.capacity.limited_by == "budget"
    assert naive.wall_s <= budget_s / 4 + CapacityRules().max_step_s + 2.0
    result = study.run()
    trial = result.trials[0]
    assert trial.capacity is not None and trial.capacity.steps > 2
    assert result.winner is not None and len(result.winner.repeats) == 1
    assert now[0] <= budget.started + budget_s + CapacityRules().max_step_s


def test_a_mandatory_trial_must_leave_the_leaders_first_re_measurement() -> None:
    now = [0.0]
    budget = TimeBudget(60.0, clock=lambda: now[0])  # min_trials=2: the second may eat the reserve
    now[0] += 30
    assert budget.affords_trial(1, [20.0], reserve_s=1000, keep_s=5)
    assert not budget.affords_trial(1, [20.0], reserve_s=1000, keep_s=15)
    assert "leader's first re-measurement needs ~15 s" in budget.stopped_because
    assert not budget.affords_trial(2, [20.0], reserve_s=15, keep_s=0)  # past min_trials: the reserve


def test_a_tight_budget_re_measures_the_leader_rather_than_run_another_trial(tmp_path: Path) -> None:
    """A fake clock moved by server starts (10 s) and load steps. The first trial ends with just
    more than a re-measurement's start left: no second trial (the old rule ran one and left the
    winner a single run); the leader is measured again, bounded by the budget, so it has an interval."""
    now = [0.0]
    deployer = FakeDeployer(on_deploy=lambda _: now.__setitem__(0, now[0] + 10.0))
    loads = ticking_loads(deployer, now)
    space = default_space("embedding", Machine(cores=2, gpus=0))
    slo = SLO(latency_ms=200)
    plan = CapacityPlan()
    runner = TrialRunner(deployer, loads, plan, slo, "embedding", clock=lambda: now[0])
    store = StudyStore(tmp_path)
    store.open({}, resume=False)
    budget = TimeBudget(1000.0, clock=lambda: now[0])
    study = Study(space, make_strategy("random", space, 0), Objective(slo), runner, store, 5, 2, 2,
                  budget=budget, cores=2)  # fmt: skip

    def squeeze(record: TrialRecord) -> None:
        if record.kind == "trial":  # what is left: the first verdict's time and 1 s
            assert record.first_verdict_s is not None
            now[0] = budget.started + 1000.0 - record.first_verdict_s - 1.0

    study.events.trial_end = squeeze
    result = study.run()
    (trial,) = result.trials
    first_step = trial.steps[0].duration_s
    assert trial.first_verdict_s == pytest.approx(10.0 + plan.probe_s + first_step)
    assert "leader's first re-measurement" in result.stopped_because
    assert result.winner is not None and len(result.winner.repeats) == 1
    assert result.winner.repeated_interval is not None
    repeat = result.winner.repeats[0].capacity
    assert repeat is not None and repeat.limited_by == "budget"
    assert now[0] <= budget.started + 1000.0 + plan.rules.max_step_s  # at most one step past the line


def baseline_finalist(config: Config, goodput: float, label: str) -> Finalist:
    first = record(config, goodput).model_copy(update={"kind": "baseline", "label": label})
    return Finalist(config, first, [])


def test_a_kept_baseline_that_measured_better_wins_and_says_so() -> None:
    tuned = finalist(Config(32, 200, 2, 1), 183.0, 185.0)
    written = baseline_finalist(Config(16, 100, 1, 2), 961.0, "as-written")
    choice = choose([tuned], cores=2, kept=[written])
    assert choice is not None and choice.winner is written and choice.kept_baseline == "as-written"
    assert "the as-written baseline: no tuned config measured better" in choice.explain()
    assert "(no other finalist's or deployable baseline's interval overlaps it)" in choice.explain()
    plain = choose([tuned], cores=2)
    assert plain is not None and plain.winner is tuned and plain.kept_baseline == ""
    assert "(the only finalist)" in plain.explain()


def test_single_runs_claim_no_interval_that_does_not_overlap() -> None:
    """With one run of each contender there is no interval: the choice is the best mean, and
    says why no tie was judged, instead of "no other interval overlaps it"."""
    tuned = Finalist(Config(32, 200, 2, 1), record(Config(32, 200, 2, 1), 942.6), [])
    written = baseline_finalist(Config(16, 100, 1, 2), 677.8, "as-written")
    choice = choose([tuned], cores=2, kept=[written])
    assert choice is not None and choice.winner is tuned and choice.repeated == 0
    assert "no interval to judge a tie by" in choice.explain()
    assert "overlaps it" not in choice.explain()
    again = choose([finalist(Config(32, 200, 2, 1), 940.0, 945.0)], cores=2, kept=[written])
    assert again is not None and again.repeated == 1
    assert "(no other finalist's or deployable baseline's interval overlaps it)" in again.explain()


def test_a_tuned_config_tied_with_a_kept_baseline_wins_on_fewer_resources() -> None:
    tuned = finalist(Config(16, 200, 1, 1), 150.0, 190.0, 170.0)  # mean 170, one core
    default = baseline_finalist(Config(100, 60000, 1, 2), 175.0, "bentoml-default")  # two cores
    choice = choose([tuned], cores=2, kept=[default])
    assert choice is not None and choice.best_mean is default and choice.winner is tuned
    assert choice.kept_baseline == "" and "statistically tied" in choice.explain()


def test_an_unfinished_re_measurement_is_no_run_of_its_finalist(tmp_path: Path) -> None:
    """A re-measurement the budget cut before any level met the SLO measured nothing: before, it
    counted as a run of score -inf, and the finalist (the leader) fell out of the choice. Here
    the trial's server meets the SLO everywhere, every later one breaches at its first level, and
    the budget has nothing left once a re-measurement has its first verdict."""
    now = [0.0]
    study = never_meets_study(tmp_path, now, 1e9, trials=1, finalists=1)
    deployer, loads = study.runner.deployer, study.runner.load_runner
    assert isinstance(deployer, FakeDeployer) and isinstance(loads, FakeLoadRunner)
    loads.surface = lambda config, users: (users * 12.0, 50.0 if len(deployer.deployed) == 1 else 900.0, 0.0)
    deadline = study._deadline
    study._deadline = lambda kind: (lambda: 0.0) if kind == "finalist" else deadline(kind)  # type: ignore[method-assign]
    result = study.run()
    (trial,) = result.trials
    assert [r.status for r in result.records] == ["ok", "unfinished"]
    assert result.winner is not None and result.winner.repeats == []
    assert result.winner.mean_goodput == trial.goodput_rps > 0


def test_a_deployable_baseline_that_leads_is_re_measured_as_a_finalist(tmp_path: Path) -> None:
    """BentoML's default batching served twice what any trial did: it wins, and it is measured
    again as a finalist is (it used to win on one run, with no interval, against finalists
    measured three times), and the comparison with it counts the mean of its runs."""
    default = Config(100, 60000, 1, 2)

    def surface(config: Config, users: float) -> tuple[float, float, float]:
        if config.key != default.key:
            return smooth_surface(config, users)
        rps, p95, failures = smooth_surface(config, users / 2)
        return 2 * rps, p95, failures

    deployer = FakeDeployer()
    loads = FakeLoadRunner(deployer, surface=surface)
    space = default_space("embedding", Machine(cores=2, gpus=0))
    slo = SLO(latency_ms=200)
    runner = TrialRunner(deployer, loads, CapacityPlan(), slo, "embedding")
    store = StudyStore(tmp_path)
    store.open({}, resume=False)
    study = Study(space, make_strategy("random", space, 0), Objective(slo), runner, store, 3, 2, 2, cores=2)
    baseline = study.baseline(default, "bentoml-default", keepable=True)
    result = study.run()
    winner, choice = result.winner, result.choice
    assert winner is not None and choice is not None and choice.kept_baseline == "bentoml-default"
    assert winner.first is baseline and len(winner.repeats) == 2 and winner.repeated_interval is not None
    assert {r.kind for r in winner.repeats} == {"finalist"} and len(result.finalists) == 2
    assert choice.baselines == 1 and choice.contenders == 2  # counted once, among the finalists
    (row,) = comparisons(winner, [baseline], result.finalists)
    assert row.goodput_rps == winner.mean_goodput and row.ratio == 1.0
    assert row.capacity.startswith("mean of 3 capacity searches")


def test_a_config_every_run_of_which_fell_under_the_best_ones_lowest_is_not_tied() -> None:
    """The s46 demo: two runs of the best (113.1, 91.7) give a t interval of 0.0-238.7, which
    held BentoML's default (35.1, one run): "statistically tied" with a config a third as good,
    and a cheaper one would have won. Now a tie also needs a run that reached the best's lowest."""
    config = Config(64, 500, 2, 1)
    tuned = Finalist(config, record(config, 113.1, 1), [record(config, 91.7, 2)])
    cheaper = baseline_finalist(Config(100, 60000, 1, 1), 35.1, "bentoml-default")  # one core
    assert tuned.interval[0] <= 35.1 <= tuned.interval[1], "the 2-run interval alone would tie them"
    choice = choose([tuned], cores=2, kept=[cheaper])
    assert choice is not None and choice.winner is tuned and not choice.is_tie
    assert choice.apart == (cheaper,)
    assert "every run of" in choice.explain() and "no tie, though the intervals overlap" in choice.explain()
    close = baseline_finalist(Config(100, 60000, 1, 1), 95.0, "bentoml-default")  # over 91.7
    tie = choose([tuned], cores=2, kept=[close])
    assert tie is not None and tie.is_tie and tie.winner is close and tie.apart == ()
