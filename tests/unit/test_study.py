"""The study loop with fakes: finalists, interruption, store safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import FakeDeployer, FakeLoadRunner, Surface, smooth_surface
from tuner.history import TrialView
from tuner.objective import SLO, Objective
from tuner.space import Config, Machine, default_space
from tuner.store import StoreError, StudyStore
from tuner.strategies import make_strategy
from tuner.strategies.base import SearchStrategy
from tuner.study import Study
from tuner.trial import LoadPlan, TrialRunner

SPACE = default_space("embedding", Machine(cores=2, gpus=0))
PLAN = LoadPlan.users([2, 4, 8, 16, 32], step_s=5, warmup_s=2)


def make_study(
    tmp: Path, deployer: FakeDeployer, trials: int, k: int = 3, r: int = 2,
    surface: Surface = smooth_surface, strategy: SearchStrategy | None = None,
) -> Study:  # fmt: skip
    slo = SLO(latency_ms=200)
    store = StudyStore(tmp)
    records = store.open({"seed": 1}, resume=True)
    runner = TrialRunner(deployer, FakeLoadRunner(deployer, surface), PLAN, slo, "embedding")
    strategy = strategy or make_strategy("random", SPACE, 1)
    study = Study(SPACE, strategy, Objective(slo), runner, store, trials, k, r)
    study.resume(records)
    return study


def test_finalists_are_remeasured_and_the_winner_is_the_best_mean(tmp_path: Path) -> None:
    """First measurements rank the configs one way, repeats the other way round: the winner is
    the finalist with the best mean of its repeats, not the best first measurement."""
    deployer = FakeDeployer()

    def reversed_on_repeat(config: Config, users: int) -> tuple[float, float, float]:
        first = 50.0 + 7.0 * SPACE.configs.index(config)
        repeat = deployer.deployed.count(config.key) > 1
        return min(users * 12.0, 350.0 - first if repeat else first), 50.0, 0.0

    result = make_study(tmp_path, deployer, trials=8, k=3, r=2, surface=reversed_on_repeat).run()
    assert len(result.trials) == 8
    assert len(deployer.deployed) == 8 + 3 * 2
    top = sorted(result.trials, key=lambda r: -(r.score or 0))[:3]
    assert [f.config for f in result.finalists] == [r.cfg for r in top]
    assert all(len(f.repeats) == 2 for f in result.finalists)
    assert result.winner is not None
    assert result.winner.config == top[2].cfg  # the worst first measurement, the best repeats
    assert result.winner.mean_goodput > result.finalists[0].mean_goodput


class Scripted:
    """Asks a fixed list of configs; notes how many trials the history held at each ask."""

    name = "scripted"

    def __init__(self, asks: list[Config]) -> None:
        self.asks = asks
        self.history_sizes: list[int] = []
        self.last: TrialView | None = None

    def ask(self, history: TrialView) -> Config | None:
        self.history_sizes.append(len(history))
        self.last = history
        return self.asks.pop(0) if self.asks else None


def test_known_and_illegal_asks_are_not_measured_and_the_strategy_reads_the_studys_history(
    tmp_path: Path,
) -> None:
    a, b = SPACE.configs[0], SPACE.configs[1]
    illegal = Config(128, 100, 1, 1)
    assert illegal not in SPACE
    strategy = Scripted([a, a, illegal, b])
    deployer = FakeDeployer()
    study = make_study(tmp_path, deployer, trials=3, k=0, r=0, strategy=strategy)
    result = study.run()
    assert deployer.deployed == [a.key, b.key]
    assert (result.asked_duplicates, result.illegal) == (1, 1)
    assert strategy.history_sizes == [0, 1, 1, 1, 2]
    assert strategy.last is not None
    assert [r.key for r in strategy.last.trials()] == [a.key, b.key] == [r.key for r in result.trials]
    assert strategy.last.seen(illegal.key) and not strategy.last.measured(illegal.key)
    assert strategy.last.score(b.key) == result.trials[1].score is not None


def test_finalist_repeats_are_the_studys_not_the_strategys(tmp_path: Path) -> None:
    strategy = Scripted(list(SPACE.configs[:3]))
    study = make_study(tmp_path, FakeDeployer(), trials=3, k=2, r=2, strategy=strategy)
    result = study.run()
    assert len(result.records) == 3 + 2 * 2
    assert strategy.last is not None and len(strategy.last) == 3 == len(strategy.last.trials())


def test_resume_is_refused_once_the_study_has_measured(tmp_path: Path) -> None:
    study = make_study(tmp_path, FakeDeployer(), trials=1, k=0, r=0)
    study.run()
    with pytest.raises(ValueError, match="before it measures"):
        study.resume([])


def test_warmup_step_is_not_scored(tmp_path: Path) -> None:
    deployer = FakeDeployer()
    result = make_study(tmp_path, deployer, trials=1, k=0, r=0).run()
    steps = result.trials[0].step_measurements()
    assert steps[0].step.users == 2 and steps[0].step.duration_s == 5


def test_ctrl_c_mid_trial_stops_the_server_and_stores_nothing_half_done(tmp_path: Path) -> None:
    def interrupt_third(config: Config) -> None:
        if len(deployer.deployed) == 3:
            raise KeyboardInterrupt

    deployer = FakeDeployer(on_deploy=interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        make_study(tmp_path, deployer, trials=6, k=0, r=0).run()
    assert deployer.running == 0
    assert len(StudyStore(tmp_path).records()) == 2
    again = FakeDeployer()
    result = make_study(tmp_path, again, trials=6, k=0, r=0).run()
    assert len(again.deployed) == 4
    assert len(result.trials) == 6


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    make_study(tmp_path, FakeDeployer(), trials=2, k=0, r=0).run()
    with (tmp_path / "trials.jsonl").open("a") as out:
        out.write('{"number": 9, "key": ')
    assert len(StudyStore(tmp_path).records()) == 2


def test_store_refuses_to_mix_studies(tmp_path: Path) -> None:
    store = StudyStore(tmp_path)
    store.open({"seed": 1, "strategy": "grid"}, resume=False)
    with pytest.raises(StoreError, match="--resume"):
        store.open({"seed": 1, "strategy": "grid"}, resume=False)
    with pytest.raises(StoreError, match="strategy"):
        store.open({"seed": 1, "strategy": "tpe"}, resume=True)
