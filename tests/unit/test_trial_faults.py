"""A trial during which a server worker died is failed with the reason, never scored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.deployer import worker_faults
from tests.fakes import FakeDeployer, FakeDeployment, FakeLoadRunner
from tuner.objective import SLO, Objective
from tuner.space import Config, Machine, default_space
from tuner.store import StudyStore
from tuner.strategies import make_strategy
from tuner.study import Study
from tuner.trial import LoadPlan, TrialRunner

SPACE = default_space("embedding", Machine(cores=2, gpus=0))
PLAN = LoadPlan.users([2, 4, 8], step_s=5)
DEATH = "worker 2 (pid 4242) died during the trial; BentoML replaced it with pid 4343"


@dataclass
class WatchedDeployment(FakeDeployment):
    """A fake deployment that watches its workers, as core.deployer.LocalDeployment does."""

    faults: list[str] = field(default_factory=list)

    def worker_faults(self) -> list[str]:
        return list(self.faults)


@dataclass
class DyingWorkerDeployer(FakeDeployer):
    """Deploys watched fakes; in the configs of `dying` a worker dies during the load."""

    dying: set[str] = field(default_factory=set)

    @contextlib.contextmanager
    def deploy(self, config: Config) -> Iterator[WatchedDeployment]:
        with super().deploy(config) as plain:
            faults = [DEATH] if config.key in self.dying else []
            yield WatchedDeployment(plain.url, faults=faults)


def test_a_dead_worker_fails_the_trial_with_the_worker_named() -> None:
    config = SPACE.configs[0]
    deployer = DyingWorkerDeployer(dying={config.key})
    runner = TrialRunner(deployer, FakeLoadRunner(deployer), PLAN, SLO(latency_ms=200), "embedding")
    measured = runner.measure(config)
    assert measured.steps, "the load ran: the figures are kept for the record"
    assert not measured.ok
    assert measured.reason.splitlines()[0] == f"a worker died during the load, not scored: {DEATH}"


def test_healthy_workers_and_unwatched_deployments_are_scored() -> None:
    config = SPACE.configs[0]
    watched = DyingWorkerDeployer()
    runner = TrialRunner(watched, FakeLoadRunner(watched), PLAN, SLO(latency_ms=200), "embedding")
    assert runner.measure(config).ok
    plain = FakeDeployer()
    unwatched = TrialRunner(plain, FakeLoadRunner(plain), PLAN, SLO(latency_ms=200), "embedding")
    assert unwatched.measure(config).ok
    assert worker_faults(FakeDeployment("fake://x")) == []


def _grid_study(folder: Path, deployer: DyingWorkerDeployer, trials: int) -> Study:
    slo = SLO(latency_ms=200)
    runner = TrialRunner(deployer, FakeLoadRunner(deployer), PLAN, slo, "embedding")
    store = StudyStore(folder)
    store.open({"seed": 1}, resume=False)
    return Study(SPACE, make_strategy("grid", SPACE, 0), Objective(slo), runner, store, trials, 2, 1)


def test_the_study_records_the_trial_as_failed_and_picks_another_winner(tmp_path: Path) -> None:
    trials = 12
    healthy = _grid_study(tmp_path / "healthy", DyingWorkerDeployer(), trials).run()
    assert healthy.winner is not None
    best = healthy.winner.config
    result = _grid_study(tmp_path / "faulty", DyingWorkerDeployer(dying={best.key}), trials).run()
    by_key = {r.key: r for r in result.trials}
    assert by_key[best.key].status == "failed"
    assert by_key[best.key].score is None
    assert "worker 2 (pid 4242) died" in by_key[best.key].reason
    assert result.winner is not None and result.winner.config != best
