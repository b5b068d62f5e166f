"""One trial: deploy a config, warm it up, run a stepped load until a clear SLO breach, measure."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.deployer import Deployer, DeployError, worker_faults
from core.measurement import LoadRunner, LoadStep, StepMeasurement
from tuner.objective import SLO
from tuner.space import Config

StepCallback = Callable[[int, StepMeasurement], None]


@dataclass(frozen=True)
class LoadPlan:
    """Warm-up (not scored) then load steps of growing concurrency, all in one server lifetime."""

    steps: tuple[LoadStep, ...]
    warmup: LoadStep | None = None

    @classmethod
    def users(cls, users: Sequence[int], step_s: float, warmup_s: float = 0.0) -> LoadPlan:
        steps = tuple(LoadStep(users=u, duration_s=step_s) for u in users)
        warmup = LoadStep(users=users[0], duration_s=warmup_s) if warmup_s > 0 else None
        return cls(steps, warmup)


@dataclass
class Measurement:
    """What one trial produced: its accepted steps, or why it failed."""

    ok: bool
    steps: list[StepMeasurement] = field(default_factory=list)
    reason: str = ""
    rss_mb: float | None = None
    wall_s: float = 0.0
    started_at: float = 0.0


class TrialRunner:
    """Wires a Deployer and a LoadRunner; a failure to start, a crash or a worker that died
    during the load is a failed trial (with the reason), never a score."""

    def __init__(
        self,
        deployer: Deployer,
        load_runner: LoadRunner,
        plan: LoadPlan,
        slo: SLO,
        service: str,
    ) -> None:
        self.deployer = deployer
        self.load_runner = load_runner
        self.plan = plan
        self.slo = slo
        self.service = service

    def measure(
        self,
        config: Config,
        on_step: StepCallback | None = None,
        endpoint: str | None = None,
        deployer: Deployer | None = None,
        plan: LoadPlan | None = None,
    ) -> Measurement:
        """Deploy `config`, load `endpoint` (default: the service's batchable one), measure."""
        started_at, t0 = time.time(), time.monotonic()
        result = Measurement(ok=False, started_at=started_at)
        try:
            with (deployer or self.deployer).deploy(config) as deployment:
                try:
                    result.steps = self._load(
                        deployment.url, endpoint, config.workers, plan or self.plan, on_step
                    )
                    result.ok = deployment.alive()
                    if not result.ok:
                        result.reason = "server died during the load:\n" + deployment.log_tail()
                except (RuntimeError, OSError, ValueError) as exc:
                    state = "" if deployment.alive() else " (the server died)"
                    result.reason = f"load run failed{state}: {exc}\n{deployment.log_tail()}"
                faults = worker_faults(deployment)
                if faults:  # its failed requests and restart gap would be scored as the config's
                    result.ok = False
                    result.reason = (
                        "a worker died during the load, not scored: "
                        + "; ".join(faults)
                        + ("\n" + result.reason if result.reason else "")
                    )
                result.rss_mb = deployment.peak_rss_mb()
        except DeployError as exc:
            result.reason = f"server did not start: {exc}"
        result.wall_s = time.monotonic() - t0
        return result

    def _load(
        self, url: str, endpoint: str | None, workers: int, plan: LoadPlan, on_step: StepCallback | None
    ) -> list[StepMeasurement]:
        warm = plan.warmup is not None
        steps = list(plan.steps)
        if plan.warmup is not None:
            steps.insert(0, plan.warmup)
        seen = 0

        def stop_after(step: StepMeasurement) -> bool:
            nonlocal seen
            index = seen
            seen += 1
            if warm and index == 0:
                return False
            if on_step is not None:
                on_step(index - warm, step)
            return self.slo.clearly_breached(step)

        measured = self.load_runner.run_steps(
            url, self.service, steps, stop_after=stop_after, endpoint=endpoint, expected_workers=workers
        )
        return list(measured[1:] if warm else measured)
