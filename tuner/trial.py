"""One trial: deploy a config, warm it up, load it (a capacity search by default), measure."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.deployer import Deployer, DeployError, Deployment, worker_faults
from core.measurement import LoadRunner, LoadStep, StepMeasurement
from core.registry import registered
from tuner.capacity import CapacityFinding, CapacityRules, CapacitySearch, saturated_rps, start_level
from tuner.objective import SLO
from tuner.space import Config

StepCallback = Callable[[int, StepMeasurement], None]
REPEAT_GROWTH = 1.15  # a re-measurement brackets a known knee more narrowly


TimeLeft = Callable[[], float]


class LoadSchedule(Protocol):
    """The steps of one trial, chosen as it goes: the runner consumes `steps()` lazily and
    calls `tell()` after each one (True: stop)."""

    def steps(self) -> Iterator[LoadStep]: ...

    def tell(self, measured: StepMeasurement) -> bool: ...

    def scored(self) -> list[StepMeasurement]: ...

    def finding(self) -> CapacityFinding | None: ...


@dataclass(frozen=True)
class LoadPlan:
    """Fixed steps as given (closed-loop users, or arrival rates), after an unscored warm-up;
    stepping stops at the first clear breach."""

    steps: tuple[LoadStep, ...]
    warmup: LoadStep | None = None

    @classmethod
    def users(cls, users: Sequence[int], step_s: float, warmup_s: float = 0.0) -> LoadPlan:
        steps = tuple(LoadStep(users=u, duration_s=step_s) for u in users)
        warmup = LoadStep(users=users[0], duration_s=warmup_s) if warmup_s > 0 else None
        return cls(steps, warmup)

    @classmethod
    def rates(cls, rates: Sequence[float], step_s: float, slo: SLO, warmup_s: float = 0.0) -> LoadPlan:
        """Paced steps at `rates` requests/s, with users enough for 2x the SLO latency each."""
        rules = CapacityRules()
        horizon = rules.horizon_factor * slo.latency_ms / 1000.0
        steps = tuple(
            LoadStep(users=max(1, min(rules.max_users, round(r * horizon + 0.5))), duration_s=step_s, rate=r)
            for r in rates
        )
        warmup = LoadStep(users=steps[0].users, duration_s=warmup_s, rate=rates[0]) if warmup_s > 0 else None
        return cls(steps, warmup)

    def describe(self) -> dict[str, object]:
        return {"kind": "fixed", "steps": [[s.users, s.duration_s, s.rate] for s in self.steps],
                "warmup_s": self.warmup.duration_s if self.warmup else 0.0}  # fmt: skip

    def schedule(
        self,
        slo: SLO,
        workers: int,
        hint: float | None = None,
        time_left: TimeLeft | None = None,
        batches: bool = True,
    ) -> LoadSchedule:
        return FixedSchedule(self, slo)


@dataclass
class FixedSchedule:
    plan: LoadPlan
    slo: SLO
    measured: list[StepMeasurement] = field(default_factory=list)
    warm_seen: bool = False

    def steps(self) -> Iterator[LoadStep]:
        if self.plan.warmup is not None:
            yield self.plan.warmup
        yield from self.plan.steps

    def tell(self, measured: StepMeasurement) -> bool:
        if self.plan.warmup is not None and not self.warm_seen:
            self.warm_seen = True
            return False
        self.measured.append(measured)
        return self.slo.clearly_breached(measured)

    def scored(self) -> list[StepMeasurement]:
        return list(self.measured)

    def finding(self) -> CapacityFinding | None:
        return None


@dataclass(frozen=True)
class CapacityPlan:
    """A probe (closed loop, 2 users per worker: it also warms the model up; for a first search
    in rate mode of an endpoint that does not batch, half as long with 1 user per worker first:
    `saturated_rps`), then a capacity search from what the probe served; a level the load rises
    to, or the one after a breach that shed requests (503), runs unscored for `rules.adapt_s`
    before it is measured, and after a breach that shed or was cut short, a light load runs
    unscored for `rules.recover_s` first (after one that shed, then `rules.approach_fraction` of
    the level for `rules.approach_s`, off by default)."""

    rules: CapacityRules = field(default_factory=CapacityRules)
    probe_s: float = 3.0

    def describe(self) -> dict[str, object]:
        r = self.rules
        return {"kind": "capacity", "mode": r.mode, "resolution": r.resolution, "growth": r.growth,
                "growth_headroom": r.growth_headroom, "min_step_s": r.min_step_s,
                "max_step_s": r.max_step_s, "max_steps": r.max_steps, "probe_s": self.probe_s}  # fmt: skip

    def schedule(
        self,
        slo: SLO,
        workers: int,
        hint: float | None = None,
        time_left: TimeLeft | None = None,
        batches: bool = True,
    ) -> LoadSchedule:
        return CapacitySchedule(self, slo, workers, hint, time_left, batches=batches)


@dataclass
class CapacitySchedule:
    plan: CapacityPlan
    slo: SLO
    workers: int
    hint: float | None = None
    time_left: TimeLeft | None = None  # seconds the study's time budget has left
    # The endpoint batches requests (or may: the default), and a closed loop of a few users says
    # nothing of its capacity (the no-op b32-l100 served 500/s to 1 user, 620/s to 2, and held
    # ~1400/s paced): no light probe.
    batches: bool = True
    probe: StepMeasurement | None = None
    light_probe: StepMeasurement | None = None  # half the probe's users, before it
    search: CapacitySearch | None = None
    adapts: list[StepMeasurement] = field(default_factory=list)  # unscored: the load adapting
    _unscored: bool = True  # the probe comes first
    _adapt_breached: bool = False  # the last adapt step was cut short: its level breached
    _recovering: bool = False  # the step out is a light load after an overload
    _approaching: bool = False  # the step out leads from the light load up to the next level
    _recovered: bool = False  # the last light load was served within the failure bound
    _attempt: int = 0  # of the light load out

    def steps(self) -> Iterator[LoadStep]:
        rules = self.plan.rules
        if self._probes_saturation:
            yield LoadStep(users=max(1, self.workers), duration_s=self.plan.probe_s / 2)
            self._unscored = True
        yield LoadStep(users=max(2, 2 * self.workers), duration_s=self.plan.probe_s)
        per_user = None
        if self.probe is not None and self.probe.goodput_rps > 0:
            per_user = self.probe.goodput_rps / self.probe.step.users
        self.search = search = CapacitySearch(
            self.slo,
            rules,
            start_level(self.probe, rules.mode, self.hint),
            per_user_rps=per_user,
            growth=REPEAT_GROWTH if self.hint else None,
            climb=bool(self.hint) and rules.climb_repeats,
            saturation=saturated_rps(self.light_probe, self.probe) if self._probes_saturation else None,
        )
        while (step := search.next_step()) is not None:
            if self._out_of_time(search, step):
                break
            if search.recovers_before():
                approaches = search.approaches_before()
                yield from self._recover(search, step)
                if approaches:
                    self._unscored, self._approaching = True, True
                    yield search.approach_step(step)
            if search.adapts_before(step):
                self._unscored = True
                yield search.adapt_step(step)
                if self._adapt_breached:
                    self._adapt_breached = False
                    continue
            yield step

    @property
    def _probes_saturation(self) -> bool:
        """A first search in rate mode of an endpoint that does not batch probes with half the
        users first (`saturated_rps`)."""
        return self.plan.rules.mode == "rate" and not self.hint and not self.batches

    def _recover(self, search: CapacitySearch, before: LoadStep) -> Iterator[LoadStep]:
        """Light loads before `before` until one is served (at most `recover_attempts`)."""
        self._recovered = False
        for attempt in range(self.plan.rules.recover_attempts):
            self._unscored, self._recovering, self._attempt = True, True, attempt
            yield search.recovery_step(before, attempt)
            if self._recovered:
                return

    def _out_of_time(self, search: CapacitySearch, step: LoadStep) -> bool:
        """The budget cannot fit `step`: end the search on what it has (with no level met yet,
        the config has no capacity to report, and the budget still holds)."""
        if self.time_left is None or not search.told:
            return False
        if self.time_left() >= step.duration_s + search.unscored_s(step):
            return False
        if search.lo is None:
            lowest = min(level for level, _ in search.told)
            search.stop("budget", f"time budget: stopped with no level met yet (lowest tried: {lowest:.4g})")
            return True
        bracket = (
            f"{search.lo:.4g}-{search.hi:.4g}" if search.hi is not None else f"{search.lo:.4g}, no breach yet"
        )
        search.stop("budget", f"time budget: stopped with the bracket at {bracket}")
        return True

    def tell(self, measured: StepMeasurement) -> bool:
        if self._unscored:
            self._unscored = False
            if self.search is None:
                if self._probes_saturation and self.light_probe is None:
                    self.light_probe = measured
                else:
                    self.probe = measured
                return False
            self.adapts.append(measured)
            if self._recovering:
                self._recovering = False
                self._recovered = self.search.tell_recovery(measured, self._attempt)
                return False
            if self._approaching:
                self._approaching = False
                return False
            if self.search.tell_adapt(measured):
                self._adapt_breached = True
                return self.search.done
            return False
        assert self.search is not None
        self.search.tell(measured)
        return self.search.done

    def scored(self) -> list[StepMeasurement]:
        return [m for _, m in self.search.told] if self.search is not None else []

    def finding(self) -> CapacityFinding | None:
        return self.search.finding() if self.search is not None else None


Plan = LoadPlan | CapacityPlan


@dataclass
class Measurement:
    """What one trial produced: its accepted steps, or why it failed."""

    ok: bool
    steps: list[StepMeasurement] = field(default_factory=list)
    reason: str = ""
    rss_mb: float | None = None
    wall_s: float = 0.0
    started_at: float = 0.0
    capacity: CapacityFinding | None = None
    # Seconds from the start to the first scored step's end (server start, probe, first level):
    # what a re-measurement that the budget stops early costs at least.
    first_verdict_s: float | None = None
    # Seconds from the start to the last scored step's end: `wall_s` minus this is the teardown.
    last_verdict_s: float | None = None


class TargetStartError(RuntimeError):
    """The service under tuning never started: nothing can be measured."""


class TrialRunner:
    """Wires a Deployer and a LoadRunner; a failure to start, a crash or a worker that died
    during the load is a failed trial (with the reason), never a score."""

    def __init__(
        self,
        deployer: Deployer,
        load_runner: LoadRunner,
        plan: Plan,
        slo: SLO,
        service: str,
        first_contact: Callable[[Deployment], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deployer = deployer
        self.clock = clock
        self.load_runner = load_runner
        self.plan = plan
        self.slo = slo
        self.service = service
        # Checks the first server that starts (e.g. that it accepts the request bodies) and
        # raises to stop the study; until one has started, a start failure stops it too.
        self.first_contact = first_contact
        self.contacted = False

    def measure(
        self,
        config: Config,
        on_step: StepCallback | None = None,
        endpoint: str | None = None,
        deployer: Deployer | None = None,
        plan: Plan | None = None,
        hint: float | None = None,
        time_left: TimeLeft | None = None,
    ) -> Measurement:
        """Deploy `config`, load `endpoint` (default: the service's batchable one), measure.

        `hint` is a knee found before for this config: a capacity search re-brackets it narrowly.
        """
        started_at, t0 = time.time(), self.clock()
        result = Measurement(ok=False, started_at=started_at)

        def verdict(_number: int, _step: StepMeasurement) -> None:
            result.last_verdict_s = self.clock() - t0
            if result.first_verdict_s is None:
                result.first_verdict_s = result.last_verdict_s

        try:
            with (deployer or self.deployer).deploy(config) as deployment:
                if self.first_contact is not None and not self.contacted:
                    self.first_contact(deployment)  # raises: not a trial failure, a stop
                    self.contacted = True
                try:
                    spec = registered(self.service)  # none (a bench's surface): as if it batched
                    batches = spec is None or (spec.batches(endpoint) and config.max_batch_size > 1)
                    schedule = (plan or self.plan).schedule(
                        self.slo, config.workers, hint, time_left, batches=batches
                    )
                    result.steps = self._load(
                        deployment.url, endpoint, config.workers, schedule, _both(verdict, on_step)
                    )
                    result.capacity = schedule.finding()
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
            if self.first_contact is not None and not self.contacted:
                raise TargetStartError(f"the service did not start ({config.key}): {exc}") from None
            result.reason = f"server did not start: {exc}"
        result.wall_s = self.clock() - t0
        return result

    def _load(
        self,
        url: str,
        endpoint: str | None,
        workers: int,
        schedule: LoadSchedule,
        on_step: StepCallback | None,
    ) -> list[StepMeasurement]:
        scored = 0

        def stop_after(step: StepMeasurement) -> bool:
            nonlocal scored
            before = len(schedule.scored())
            stop = schedule.tell(step)
            if on_step is not None and len(schedule.scored()) > before:
                on_step(scored, step)
                scored += 1
            return stop

        self.load_runner.run_steps(
            url, self.service, schedule.steps(), stop_after=stop_after, endpoint=endpoint,
            expected_workers=workers,
        )  # fmt: skip
        return schedule.scored()


def _both(first: StepCallback, second: StepCallback | None) -> StepCallback:
    def call(number: int, step: StepMeasurement) -> None:
        first(number, step)
        if second is not None:
            second(number, step)

    return call
