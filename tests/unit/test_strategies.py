"""One contract every search strategy must keep, driven through the real study loop with fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import FakeDeployer, FakeLoadRunner, Surface, smooth_surface
from tuner.history import TrialHistory
from tuner.objective import SLO, Objective
from tuner.space import Config, Machine, SearchSpace, default_space
from tuner.store import StudyStore, TrialRecord
from tuner.strategies import STRATEGIES, make_strategy
from tuner.study import Study
from tuner.trial import LoadPlan, TrialRunner

SPACE = default_space("embedding", Machine(cores=2, gpus=0))
PLAN = LoadPlan.users([2, 4, 8, 16, 32], step_s=5)


def run_study(
    name: str, tmp: Path, seed: int = 0, trials: int = 10, deployer: FakeDeployer | None = None,
    space: SearchSpace = SPACE, resume: bool = False, surface: Surface = smooth_surface,
) -> tuple[Study, FakeDeployer]:  # fmt: skip
    deployer = deployer or FakeDeployer()
    slo = SLO(latency_ms=200)
    runner = TrialRunner(deployer, FakeLoadRunner(deployer, surface), PLAN, slo, "embedding")
    store = StudyStore(tmp)
    records = store.open({"strategy": name, "seed": seed}, resume=resume)
    study = Study(space, make_strategy(name, space, seed), Objective(slo), runner, store, trials, 0, 0)
    study.resume(records)
    study.run()
    return study, deployer


def record(number: int, config: Config, score: float | None) -> TrialRecord:
    return TrialRecord(number=number, key=config.key, config=config.to_dict(), status="ok", score=score)


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

    def test_proposes_only_what_the_history_lacks(self, name: str) -> None:
        """The study's history is the only memory: what it holds (measured or refused) is not asked."""
        configs = SPACE.configs
        history = TrialHistory(record(i, c, float(i % 7)) for i, c in enumerate(configs[:-2]))
        history.refuse(configs[-2])
        strategy = make_strategy(name, SPACE, 0)
        assert strategy.ask(history.view()) == configs[-1]
        history.append(record(len(configs), configs[-1], 1.0))
        assert strategy.ask(history.view()) is None


def batch_hungry(config: Config, users: int) -> tuple[float, float, float]:
    """Goodput grows with max_batch_size only; latency always meets the SLO."""
    return min(users * 12.0, 20.0 * config.max_batch_size.bit_length()), 50.0, 0.0


def test_quick_search_climbs_from_the_middle_to_the_better_neighbour(tmp_path: Path) -> None:
    study, _ = run_study("quick", tmp_path, trials=6, surface=batch_hungry)
    measured = [r.cfg for r in study.records]
    assert (measured[0].max_batch_size, measured[0].max_latency_ms) == (32, 200)  # middle indices
    assert all(c in SPACE.neighbours(measured[0]) for c in measured[1:3])
    moved = next(i for i, c in enumerate(measured) if c.max_batch_size == 64)
    assert moved < 3
    # the better neighbour became the centre: the next trials are its neighbours
    assert all(c in SPACE.neighbours(measured[moved]) for c in measured[moved + 1 :])
    assert max(study.records, key=lambda r: r.score or 0.0).cfg.max_batch_size == 64


def test_unknown_strategy_names_the_choices() -> None:
    with pytest.raises(ValueError, match="grid"):
        make_strategy("annealing", SPACE)
