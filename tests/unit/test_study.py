"""The study loop with fakes: finalists, interruption, store safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import FakeDeployer, FakeLoadRunner
from tuner.objective import SLO, Objective
from tuner.space import Config, Machine, default_space
from tuner.store import StoreError, StudyStore
from tuner.strategies import make_strategy
from tuner.study import Study
from tuner.trial import LoadPlan, TrialRunner

SPACE = default_space("embedding", Machine(cores=2, gpus=0))
PLAN = LoadPlan.users([2, 4, 8, 16, 32], step_s=5, warmup_s=2)


def make_study(tmp: Path, deployer: FakeDeployer, trials: int, k: int = 3, r: int = 2) -> Study:
    slo = SLO(latency_ms=200)
    store = StudyStore(tmp)
    records = store.open({"seed": 1}, resume=True)
    runner = TrialRunner(deployer, FakeLoadRunner(deployer), PLAN, slo, "embedding")
    study = Study(SPACE, make_strategy("random", SPACE, 1), Objective(slo), runner, store, trials, k, r)
    study.resume(records)
    return study


def test_finalists_are_remeasured_and_the_winner_is_the_best_mean(tmp_path: Path) -> None:
    deployer = FakeDeployer()
    result = make_study(tmp_path, deployer, trials=8, k=3, r=2).run()
    assert len(result.trials) == 8
    assert len(result.finalists) == 3
    assert len(deployer.deployed) == 8 + 3 * 2
    top = sorted((r for r in result.trials if r.score is not None), key=lambda r: -(r.score or 0))[:3]
    assert [f.config for f in result.finalists] == [r.cfg for r in top]
    assert result.winner is not None
    assert result.winner.mean_score == max(f.mean_score for f in result.finalists)
    assert all(len(f.repeats) == 2 for f in result.finalists)


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
