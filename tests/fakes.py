"""Fakes for the tuner's seams: a deployer and a load runner over a synthetic performance surface."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from core.deployer import DeployError
from core.measurement import LoadStep, StepMeasurement, StopRule
from tuner.space import Config

Surface = Callable[[Config, float], tuple[float, float, float]]  # -> (rps, p95_ms, failure_ratio)
USER_RPS = 12.0  # what one closed-loop user offers on the fake surfaces: a paced rate r is r/12 users


def smooth_surface(config: Config, users: float) -> tuple[float, float, float]:
    """A plausible surface: batching and more cores raise capacity; overload raises latency."""
    capacity = 40.0 * (1 + config.max_batch_size.bit_length() / 4) * min(config.workers * config.threads, 2)
    if config.max_latency_ms <= 50:
        return 30.0 * users, 5.0, 0.7  # the deadline cliff: fast 503s
    offered = users * USER_RPS
    rps = min(offered, capacity)
    load = offered / capacity
    p95 = 40.0 + (300.0 * (load - 0.8) if load > 0.8 else 0.0)
    if load > 1.0:  # past capacity the queue grows: offered load the server cannot take waits
        p95 += 2000.0 * (load - 1.0)
    return rps, p95, 0.0


def make_step(step: LoadStep, rps: float, p95: float, failure_ratio: float) -> StepMeasurement:
    requests = max(1, round(rps * step.duration_s / max(1e-9, 1 - failure_ratio)))
    failures = round(requests * failure_ratio)
    successes = requests - failures
    return StepMeasurement(
        step=step, duration_s=step.duration_s, requests=requests, successes=successes,
        failures_by_status={"503": failures} if failures else {}, rps=requests / step.duration_s,
        goodput_rps=successes / step.duration_s, failure_ratio=failures / requests,
        client_p50_ms=p95 / 2, client_p95_ms=p95, client_p99_ms=p95 * 1.2, server_p95_ms=p95,
    )  # fmt: skip


@dataclass
class FakeDeployment:
    url: str
    crash: bool = False

    def alive(self) -> bool:
        return not self.crash

    def peak_rss_mb(self) -> float | None:
        return 300.0

    def log_tail(self) -> str:
        return "fake log"


@dataclass
class FakeDeployer:
    """Deploys nothing; `fail_keys` refuse to start, `crash_keys` die during the load."""

    fail_keys: set[str] = field(default_factory=set)
    crash_keys: set[str] = field(default_factory=set)
    deployed: list[str] = field(default_factory=list)
    running: int = 0
    on_deploy: Callable[[Config], None] | None = None
    on_teardown: Callable[[Config], None] | None = None
    by_url: dict[str, Config] = field(default_factory=dict)

    @contextlib.contextmanager
    def deploy(self, config: Config) -> Iterator[FakeDeployment]:
        self.deployed.append(config.key)
        if self.on_deploy is not None:
            self.on_deploy(config)
        if config.key in self.fail_keys:
            raise DeployError(f"fake start failure for {config.key}")
        self.running += 1
        self.by_url[f"fake://{config.key}"] = config
        try:
            yield FakeDeployment(url=f"fake://{config.key}", crash=config.key in self.crash_keys)
        finally:
            self.running -= 1
            if self.on_teardown is not None:
                self.on_teardown(config)


@dataclass
class FakeLoadRunner:
    """Answers every step from `surface(config, users)` (a paced step offers rate/USER_RPS
    users); the config travels in the fake URL."""

    deployer: FakeDeployer
    surface: Surface = smooth_surface
    calls: list[tuple[str, str, int]] = field(default_factory=list)

    def run_steps(
        self,
        url: str,
        service: str,
        steps: Iterable[LoadStep],
        stop_after: StopRule | None = None,
        endpoint: str | None = None,
        expected_workers: int | None = None,
    ) -> list[StepMeasurement]:
        config = self.deployer.by_url[url]
        measured = []
        for step in steps:
            load = step.users if step.rate is None else step.rate / USER_RPS
            measurement = make_step(step, *self.surface(config, load))
            measured.append(measurement)
            if stop_after is not None and stop_after(measurement):
                break
        self.calls.append((url, service, len(measured)))
        return measured


def fake_model_store(monkeypatch: Any, stored: dict[str, dict[str, Any]]) -> None:
    """`services.models.store.get_model` answers from `stored` (store name -> entry metadata)."""
    from types import SimpleNamespace

    from services.models import store

    def fake_get_model(base: str, variant: str = "fp32", tag: str | None = None) -> object:
        name = store.model_name(base, variant)
        if name not in stored:
            raise store.ModelNotFound(name)
        return SimpleNamespace(info=SimpleNamespace(metadata=stored[name]))

    monkeypatch.setattr(store, "get_model", fake_get_model)
