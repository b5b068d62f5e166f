"""The real study (tuner/study.py) run against a performance surface instead of servers.

`SurfaceDeployer` and `SurfaceLoadRunner` are fakes of the Deployer and LoadRunner seams: a
deployment is the config itself, and a load run answers with the surface's next measurement of
that config, as one load step (a surface knows only a config's max sustainable goodput). The
n-th measurement of a config is the same for every strategy (common random numbers): its noise
comes from (surface, seed, config, n). Everything else (asking, de-duplication, scoring,
finalists, the winner) is the study users run.
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from bench.surface import Surface
from core.measurement import LoadStep, StepMeasurement, StopRule
from tuner.history import TrialView
from tuner.objective import SLO, Objective
from tuner.space import Config
from tuner.store import TrialRecord
from tuner.strategies.base import SearchStrategy
from tuner.study import Study, StudyResult
from tuner.trial import LoadPlan, TrialRunner

PLAN = LoadPlan.users([1], step_s=1.0)  # one step: the surface's max sustainable load
SLO_MS = 200.0  # the simulated surfaces' SLO; a feasible step reports half of it


@dataclass(frozen=True)
class SurfaceDeployment:
    """A config "running" on the surface; its URL names the config."""

    url: str

    def alive(self) -> bool:
        return True

    def peak_rss_mb(self) -> float | None:
        return None

    def log_tail(self) -> str:
        return ""


@dataclass
class SurfaceDeployer:
    """Deploys nothing; remembers which config each URL stands for."""

    by_url: dict[str, Config] = field(default_factory=dict)
    deployed: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def deploy(self, config: Config) -> Iterator[SurfaceDeployment]:
        url = f"surface://{config.key}"
        self.by_url[url] = config
        self.deployed.append(config.key)
        yield SurfaceDeployment(url)


def surface_step(step: LoadStep, goodput: float | None) -> StepMeasurement:
    """One load window: `goodput` successful requests/s within the SLO, or none at all."""
    if goodput is None:
        return StepMeasurement(
            step=step, duration_s=step.duration_s, requests=1, successes=0, failures_by_status={"503": 1},
            rps=1.0 / step.duration_s, goodput_rps=0.0, failure_ratio=1.0,
            client_p50_ms=0.0, client_p95_ms=0.0, client_p99_ms=0.0,
        )  # fmt: skip
    requests = max(1, round(goodput * step.duration_s))
    latency = SLO_MS / 2
    return StepMeasurement(
        step=step, duration_s=step.duration_s, requests=requests, successes=requests,
        failures_by_status={}, rps=goodput, goodput_rps=goodput, failure_ratio=0.0,
        client_p50_ms=latency / 2, client_p95_ms=latency, client_p99_ms=latency,
    )  # fmt: skip


@dataclass
class SurfaceLoadRunner:
    """Answers every load run of a config with the surface's next measurement of it."""

    surface: Surface
    seed: int
    deployer: SurfaceDeployer
    runs: dict[str, int] = field(default_factory=dict)

    def measurement(self, config: Config, n: int) -> float | None:
        """Measurement number `n` of a config (0 = its search trial); the same for every strategy."""
        rng = random.Random(zlib.crc32(f"{self.surface.name}/{self.seed}/{config.key}/{n}".encode()))
        return self.surface.measure(config, rng)

    def run_steps(
        self,
        url: str,
        service: str,
        steps: Iterable[LoadStep],
        stop_after: StopRule | None = None,
        endpoint: str | None = None,
        expected_workers: int | None = None,
        **ignored: object,  # how a real runner drives the load does not matter to a surface
    ) -> list[StepMeasurement]:
        config = self.deployer.by_url[url]
        n = self.runs.get(config.key, 0)
        self.runs[config.key] = n + 1
        measured = surface_step(next(iter(steps)), self.measurement(config, n))
        if stop_after is not None:
            stop_after(measured)
        return [measured]


@dataclass
class SurfaceStudy:
    """One finished study on a surface: its result, its history and the deployments it made."""

    result: StudyResult
    history: TrialView
    deployed: list[str]

    @property
    def winner(self) -> Config | None:
        return self.result.winner.config if self.result.winner is not None else None


def run_study(
    surface: Surface,
    strategy: SearchStrategy,
    seed: int,
    trials: int,
    finalists: int = 3,
    repeats: int = 3,
) -> SurfaceStudy:
    """Run tuner's Study with `strategy` for `trials` trials and its finalist rule on `surface`."""
    deployer = SurfaceDeployer()
    runner = TrialRunner(deployer, SurfaceLoadRunner(surface, seed, deployer), PLAN, SLO(SLO_MS), "surface")
    store: list[TrialRecord] = []  # kept in memory: nothing to resume
    study = Study(surface.space, strategy, Objective(SLO(SLO_MS)), runner, store, trials, finalists, repeats)
    return SurfaceStudy(study.run(), study.history.view(), deployer.deployed)
