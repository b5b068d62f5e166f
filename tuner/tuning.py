"""A tuning session as a plain function: options -> (resumable) study -> report and winner file.

`servetune tune` and `servetune demo` are thin Typer commands over `run_tune`; tests and bench
scripts call it directly with fakes of the Deployer and LoadRunner seams.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.deployer import Deployer, Deployment
from core.measurement import LoadRunner
from core.metrics import ReaderFactory
from core.registry import resolve, service_spec
from core.startwatch import READY_TIMEOUT_S
from tuner.capacity import CapacityRules, LoadMode
from tuner.objective import SLO, Objective, ObjectiveKind, Prices, Quantile
from tuner.space import Config, SearchSpace
from tuner.store import TrialRecord
from tuner.strategies import DEFAULT_STRATEGY
from tuner.strategies.base import SearchStrategy
from tuner.study import Study, StudyEvents, StudyResult
from tuner.trial import CapacityPlan, LoadPlan, Plan

if TYPE_CHECKING:
    from tuner.profile import Profile

NAIVE_LABEL = "naive"
DEFAULT_LABEL = "bentoml-default"
WRITTEN_LABEL = "as-written"
BENTOML_DEFAULT_BATCH, BENTOML_DEFAULT_LATENCY_MS = 100, 60000  # BentoML's own @api defaults
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class TuneOptions:
    """Everything `servetune tune` (and the demo) decides; also the study's stored settings."""

    service: str
    space: Path | None = None
    strategy: str = DEFAULT_STRATEGY
    trials: int = 12
    slo_ms: float = 200.0
    quantile: Quantile = "p95"
    max_failure_ratio: float = 0.01
    max_gpu_memory_share: float | None = 0.9  # GPU memory headroom (SLO.max_gpu_memory_share)
    objective: ObjectiveKind = "goodput"
    price_core_hour: float = 0.0
    price_gpu_hour: float = 0.0
    seed: int = 0
    out: Path = Path("reports/tune")
    resume: bool = False
    finalists: int = 3
    repeats: int = 3
    # Load: a capacity search per config (arrival rate, or closed-loop users with load="users"),
    # unless explicit steps are given (users or rates, each step_s long).
    load: LoadMode = "rate"
    resolution: float = 0.05
    max_step_s: float = 15.0
    users: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    step_s: float = 10.0
    warmup_s: float = 3.0  # unscored; with a capacity search it is the probe the search starts from
    naive_baseline: bool = False
    default_baseline: bool = False  # BentoML's own batching defaults, 1 worker
    written_baseline: bool = False  # the service as its code declares it (decorator values)
    locustfile: Path | None = None  # the user's own Locust users instead of servetune's
    naive_users: tuple[int, ...] = ()
    time_budget_s: float | None = None
    ready_timeout_s: float = READY_TIMEOUT_S
    max_extend: float = 1.0  # explicit steps may be stretched while unsteady; a search's are sized
    settle_s: float = 0.5
    # where server-side figures come from (not in settings(): both readers measure the same figures)
    metrics: str = "scrape"
    prometheus_url: str | None = None
    prometheus_targets: Path | None = None

    def settings(self, space: SearchSpace) -> dict[str, Any]:
        """What must match for `--resume` to continue a study."""
        return {
            "service": self.service, "strategy": self.strategy, "seed": self.seed,
            "slo_p95_ms": self.slo_ms, "quantile": self.quantile,
            "max_failure_ratio": self.max_failure_ratio, "objective": self.objective,
            "price_core_hour": self.price_core_hour, "price_gpu_hour": self.price_gpu_hour,
            "load": self.plan().describe(), "naive_users": list(self.naive_users),
            "step_s": self.step_s, "warmup_s": self.warmup_s, "max_extend": self.max_extend,
            "space": space.describe(),
        }  # fmt: skip

    def slo(self) -> SLO:
        return SLO(
            latency_ms=self.slo_ms,
            quantile=self.quantile,
            max_failure_ratio=self.max_failure_ratio,
            max_gpu_memory_share=self.max_gpu_memory_share,
        )

    def plan(self, users: tuple[int, ...] | None = None) -> Plan:
        """Explicit users or rates as given; otherwise a capacity search."""
        users = self.users if users is None else users
        if users:
            return LoadPlan.users(users, self.step_s, self.warmup_s)
        if self.rates:
            return LoadPlan.rates(self.rates, self.step_s, self.slo(), self.warmup_s)
        max_step_s = max(self.max_step_s, CapacityRules.min_step_s)
        rules = CapacityRules(mode=self.load, resolution=self.resolution, max_step_s=max_step_s)
        return CapacityPlan(rules, probe_s=self.warmup_s if self.warmup_s > 0 else 2.0)


@dataclass
class TuneOutcome:
    result: StudyResult
    baseline: TrialRecord | None  # the naive one
    out: Path
    report: Path
    winner_file: Path | None
    wall_seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    baselines: list[TrialRecord] = field(default_factory=list)


def naive_config(cores: int | None = None, gpus: int = 0) -> Config:
    """What a user writes without tuning: 1 worker, torch threads = all cores, no batching; on a
    machine with GPUs, that worker on one GPU (`gpus`: the machine's count)."""
    return Config(
        max_batch_size=2, max_latency_ms=1000, workers=1, threads=cores or os.cpu_count() or 1,
        gpus=min(1, gpus),
    )  # fmt: skip


def bentoml_default_config(cores: int | None = None, variant: str = "fp32", gpus: int = 0) -> Config:
    """The batchable endpoint as BentoML's defaults leave it: 1 worker, all cores, batch 100, 60 s
    (on one GPU where the machine has any)."""
    return Config(
        max_batch_size=BENTOML_DEFAULT_BATCH, max_latency_ms=BENTOML_DEFAULT_LATENCY_MS, workers=1,
        threads=cores or os.cpu_count() or 1, gpus=min(1, gpus), variant=variant,
    )  # fmt: skip


def written_config(service: str, cores: int | None = None) -> Config:
    """The service as written: its decorator's batching and workers, torch's default threads (all
    cores). A non-batchable endpoint keeps the placeholders nothing reads."""
    spec = service_spec(service)
    batch, latency = spec.written_batching or (Config().max_batch_size, Config().max_latency_ms)
    return Config(
        max_batch_size=batch, max_latency_ms=latency, workers=spec.written_workers,
        threads=cores or os.cpu_count() or 1,
    )  # fmt: skip


def first_contact(service: str) -> Callable[[Deployment], None] | None:
    """For a service loaded from a requests file: check on the first server that it accepts them
    (tuner/preflight.py); a user's service that never starts stops the study too."""
    spec = service_spec(service)
    if spec.requests_file is None:
        return None
    from loadtests.requests import read_requests_file
    from tuner.preflight import check_requests

    path = Path(spec.requests_file)
    pool = [(r.route, r.body) for r in read_requests_file(path, spec.route, spec.routes or None)]
    return lambda deployment: check_requests(
        deployment.url, pool, path.name, synthetic=spec.synthetic_load, server_log=deployment.log_tail
    )


def real_load_runner(
    max_extend: float = 2.0,
    settle_s: float = 1.0,
    metrics: ReaderFactory | None = None,
    locustfile: Path | None = None,
) -> LoadRunner:
    """The Locust-subprocess load runner from loadtests/ (imported lazily: Locust needs gevent).

    `max_extend` bounds how long an unsteady step may be stretched (1.0 = fixed windows);
    `metrics` builds the reader of each server's metrics (default: scrape its /metrics).
    """
    from loadtests.runner import LocustRunner

    extra: dict[str, Any] = {} if metrics is None else {"metrics": metrics}
    if locustfile is not None:
        extra["locustfile"] = locustfile
    return LocustRunner(max_extend=max_extend, settle_s=settle_s, **extra)


def run_tune(
    options: TuneOptions,
    load_runner: LoadRunner | None = None,
    space: SearchSpace | None = None,
    deployer: Deployer | None = None,
    events: StudyEvents | None = None,
    say: Say = _quiet,
) -> TuneOutcome:
    """Run (or resume) a study and write its outputs; raises ValueError-family errors on bad input.

    `events` receives the study's progress (the CLI's live view); `say` one-line notices. While
    a trial runs, its server and Locust pids are in `<out>/running.json`; a run that finds the
    file (its writer was killed) stops what is still running and says so, or raises
    core.leftovers.StillRunning when that writer is alive.
    """
    from core.deployer import LocalBentoDeployer
    from core.leftovers import RUNNING_FILE, stop_leftovers
    from core.processes import recording
    from core.readers import reader_factory
    from tuner.report import ReportInputs, write_report
    from tuner.space import default_space, load_space
    from tuner.store import StudyStore
    from tuner.trial import TrialRunner

    t0 = time.monotonic()
    if space is None:
        space = load_space(options.space) if options.space else default_space(options.service)
    if space.service != options.service:
        raise ValueError(f"--space is for service {space.service!r}, not {options.service!r}")
    from tuner.budget import TimeBudget

    budget = TimeBudget(options.time_budget_s)
    slo = options.slo()
    objective = Objective(
        slo,
        options.objective,
        Prices(options.price_core_hour, options.price_gpu_hour),
    )
    if options.objective == "cost" and options.price_core_hour <= 0 and options.price_gpu_hour <= 0:
        raise ValueError("--objective cost needs --price-core-hour and/or --price-gpu-hour > 0")
    readers = None
    if load_runner is None:
        readers = reader_factory(options.metrics, options.prometheus_url, options.prometheus_targets, say=say)
    settings = options.settings(space)
    store = StudyStore(options.out)
    records = store.open(settings, options.resume)
    stop_leftovers(options.out / RUNNING_FILE, say)  # what a killed run of this study left running
    profile = study_profile(options, space, say)
    space = gpu_fitted(options, space, profile, say)
    strategy = build_strategy(options, space, say, profile)
    plan = options.plan()
    if deployer is None:
        deployer = LocalBentoDeployer(options.service, options.out / "logs", options.ready_timeout_s)
    load_runner = load_runner or real_load_runner(
        options.max_extend, options.settle_s, readers, options.locustfile
    )
    runner = TrialRunner(deployer, load_runner, plan, slo, options.service, first_contact(options.service))
    study = Study(space, strategy, objective, runner, store, options.trials, options.finalists,
                  options.repeats, events, budget, space.machine.cores)  # fmt: skip
    study.resume(records)
    if records:
        say(f"resuming {options.out}: {len(records)} finished measurements are not repeated")
    baselines: list[TrialRecord] = []
    study.baselines_ahead = sum((options.naive_baseline, options.written_baseline, options.default_baseline))
    with recording(options.out / RUNNING_FILE):  # a pid file while a trial's processes run
        if options.naive_baseline:
            naive_endpoint = service_spec(options.service).naive_endpoint
            if naive_endpoint is None:
                raise ValueError(f"no naive baseline endpoint for service {options.service!r}")
            naive_plan = options.plan(options.naive_users or None)
            naive = naive_config(space.machine.cores, space.machine.gpus)
            baselines.append(study.baseline(naive, NAIVE_LABEL, endpoint=naive_endpoint, plan=naive_plan))
        if options.written_baseline:
            written = written_config(options.service, space.machine.cores)
            baselines.append(study.baseline(written, WRITTEN_LABEL, keepable=True))
        if options.default_baseline:
            default = bentoml_default_config(space.machine.cores, gpus=space.machine.gpus)
            baselines.append(study.baseline(default, DEFAULT_LABEL, keepable=True))
        result = study.run()
    baseline = next((b for b in baselines if b.label == NAIVE_LABEL), None)
    wall = time.monotonic() - t0
    inputs = ReportInputs(options.service, settings, space.describe(), baseline, wall, baselines)
    report = write_report(options.out, result, inputs)
    winner = options.out / "winner.yaml" if result.winner is not None else None
    return TuneOutcome(result, baseline, options.out, report, winner, wall, settings, baselines)


PROFILE_FILE = "profile.json"


def study_profile(options: TuneOptions, space: SearchSpace, say: Say = _quiet) -> Profile | None:
    """The guided search's in-process profile of the model (seconds; saved in the study folder so
    a resumed study predicts exactly as before; on a machine with GPUs it also holds one worker's
    GPU memory); None for other strategies or a service without an in-process runner."""
    from tuner.profile import Profile, profile_service

    if options.strategy != "guided" or service_spec(options.service).batch_runner is None:
        return None
    path = options.out / PROFILE_FILE
    if options.resume and path.exists():
        return Profile.load(path)
    gpu_note = " (and one worker's GPU memory)" if space.machine.gpus else ""
    say(f"profiling {options.service} in-process for the guided search{gpu_note} ...")
    profile = profile_service(
        options.service,
        variants=space.dim("variant").values,
        budget_s=15.0,
        gpu_batch=max(space.dim("max_batch_size").values),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    profile.save(path)
    return profile


def gpu_fitted(
    options: TuneOptions, space: SearchSpace, profile: Profile | None, say: Say = _quiet
) -> SearchSpace:
    """On a machine with GPUs, the space with one worker's GPU memory (the profile's, else
    measured once in-process), so its memory rule drops configs that would not fit; the space
    as it is without GPUs, or when the memory cannot be measured (said)."""
    if not space.machine.gpus:
        return space
    from tuner.profile import gpu_variant, worker_gpu_memory

    memory = profile.gpu_memory_per_worker_bytes if profile is not None else None
    spec = service_spec(options.service)
    variant = gpu_variant(space.dim("variant").values)
    if memory is None and spec.batch_runner is not None and variant is not None:
        memory = worker_gpu_memory(
            resolve(spec.batch_runner), variant, max(space.dim("max_batch_size").values)
        )
    if memory is None:
        say("one worker's GPU memory is unknown: configs are not filtered by GPU memory")
        return space
    say(f"one worker takes {memory / 2**30:.2f} GiB of GPU memory (model, largest batch, CUDA context)")
    return space.with_gpu_memory_per_worker(memory)


def build_strategy(
    options: TuneOptions, space: SearchSpace, say: Say = _quiet, profile: Profile | None = None
) -> SearchStrategy:
    """The named strategy; `guided` gets the in-process profile (`study_profile` when not given)."""
    from tuner.strategies import make_strategy

    if options.strategy == "guided" and service_spec(options.service).batch_runner is None:
        say(f"no in-process profile for {options.service}: the guided search needs one; using 'quick'")
        return make_strategy("quick", space, options.seed)
    if options.strategy != "guided":
        return make_strategy(options.strategy, space, options.seed)
    from tuner.strategies.guided import GuidedSearch

    profile = profile or study_profile(options, space, say)
    assert profile is not None
    return GuidedSearch(space, options.seed, profile, options.slo_ms, options.max_failure_ratio)
