"""One contract every search strategy must keep, driven through the real study loop with fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import FakeDeployer, FakeLoadRunner
from tuner.objective import SLO, Objective
from tuner.space import Machine, SearchSpace, default_space
from tuner.store import StudyStore
from tuner.strategies import STRATEGIES, make_strategy
from tuner.study import Study
from tuner.trial import LoadPlan, TrialRunner

SPACE = default_space("embedding", Machine(cores=2, gpus=0))
PLAN = LoadPlan.users([2, 4, 8, 16, 32], step_s=5)


def run_study(
    name: str, tmp: Path, seed: int = 0, trials: int = 10, deployer: FakeDeployer | None = None,
    space: SearchSpace = SPACE, resume: bool = False,
) -> tuple[Study, FakeDeployer]:  # fmt: skip
    deployer = deployer or FakeDeployer()
    slo = SLO(latency_ms=200)
    runner = TrialRunner(deployer, FakeLoadRunner(deployer), PLAN, slo, "embedding")
    store = StudyStore(tmp)
    records = store.open({"strategy": name, "seed": seed}, resume=resume)
    study = Study(space, make_strategy(name, space, seed), Objective(slo), runner, store, trials, 0, 0)
    study.resume(records)
    study.run()
    return study, deployer


@pytest.mark.parametrize("name", sorted(STRATEGIES))
class TestStrategyContract:
    def test_configs_stay_inside_the_space(self, name: str, tmp_path: Path) -> None:
        study, deployer = run_study(name, tmp_path)
        assert len(deployer.deployed) == 10
        for record in study.records:
            assert record.cfg in SPACE

    def test_same_seed_gives_the_same_sequence(self, name: str, tmp_path: Path) -> None:
        first, _ = run_study(name, tmp_path / "a", seed=7)
        second, _ = run_study(name, tmp_path / "b", seed=7)
        assert [r.key for r in first.records] == [r.key for r in second.records]

    def test_no_config_is_measured_twice(self, name: str, tmp_path: Path) -> None:
        _, deployer = run_study(name, tmp_path, trials=len(SPACE) + 5)
        assert len(deployer.deployed) == len(set(deployer.deployed)) == len(SPACE)

    def test_failed_trials_do_not_stop_the_study(self, name: str, tmp_path: Path) -> None:
        broken = {c.key for c in SPACE.configs[::2]}
        crashing = {c.key for c in SPACE.configs[1::4]}
        deployer = FakeDeployer(fail_keys=broken, crash_keys=crashing)
        study, _ = run_study(name, tmp_path, trials=12, deployer=deployer)
        assert len(study.records) == 12
        failed = [r for r in study.records if r.status == "failed"]
        assert failed, "the fake should have made some trials fail"
        for record in failed:
            assert record.score is None
            assert "did not start" in record.reason or "died" in record.reason

    def test_resume_skips_finished_trials(self, name: str, tmp_path: Path) -> None:
        first, deployer = run_study(name, tmp_path, trials=4)
        assert len(deployer.deployed) == 4
        _, deployer2 = run_study(name, tmp_path, trials=9, resume=True)
        assert len(deployer2.deployed) == 5
        assert not set(deployer2.deployed) & {r.key for r in first.records}
        assert len(StudyStore(tmp_path).records()) == 9


def test_quick_search_climbs_from_the_middle(tmp_path: Path) -> None:
    study, _ = run_study("quick", tmp_path, trials=8)
    first = study.records[0].cfg
    assert (first.max_batch_size, first.max_latency_ms) == (32, 200)  # middle indices, then legal
    best = max(study.records, key=lambda r: r.score or 0.0)
    # every later trial is a neighbour of a config measured before it (or a restart)
    for i, record in enumerate(study.records[1:4], start=1):
        earlier = [r.cfg for r in study.records[:i]]
        assert any(record.cfg in SPACE.neighbours(c) for c in earlier)
    assert best.score is not None and best.score >= (study.records[0].score or 0.0)


def test_unknown_strategy_names_the_choices() -> None:
    with pytest.raises(ValueError, match="grid"):
        make_strategy("annealing", SPACE)
