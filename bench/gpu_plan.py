"""What the GPU check runs where: the configs, batches and budgets per device, and the tuner's
parts it drives (options, Locust runner, `bentoml serve` deployer) behind replaceable seams.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.deployer import Deployer
    from core.measurement import LoadRunner
    from tuner.space import Config, Machine

SERVICE = "embedding"
GPU_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CPU_BATCHES = (1, 8, 32)
TUNE_RESERVE_S = 20.0  # after the tune: its report, the JSON
MIN_TUNE_S = 60.0
TUNE_SETUP_S = 20.0  # a tune's start before its first measurement: the guided profile (15 s), the store
OFFLINE_ENV = {"BENTOML_DO_NOT_TRACK": "True", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass(frozen=True)
class CheckPlan:
    """The configs, batches and budgets of one check on one device."""

    device: str  # "cuda" or "cpu" (a dry run of everything but CUDA)
    served: tuple[Config, ...]
    tune_space: dict[str, Any]
    batches: tuple[int, ...]
    variants: tuple[str, ...]  # the in-process limit's variants
    rows_per_request: int  # sentences per request the load sends
    locust_processes: int
    tune_budget_s: float
    trials: int
    min_config_s: float  # a served config gets at least this (server start included), else skipped
    inprocess_min_s: float  # timing per batch size
    naive_gpu: Config | None = None  # the unbatched endpoint on the GPU, served last (time allowing)


def check_plan(device: str, quick: bool = False) -> CheckPlan:
    """On a GPU: 1 GPU, workers per GPU 1/2/4 at batch 256 in fp16, fp32 at 1 worker, 2 torch
    threads per worker, 16 sentences per request from 4 Locust processes (one Locust process
    sends ~1-2k requests/s, below what a GPU serves). On CPU: a small dry run."""
    from tuner.space import Config

    if device == "cuda":
        served = (
            Config(256, 100, 1, 2, 1, "fp16"),
            Config(256, 100, 2, 2, 1, "fp16"),
            Config(256, 100, 4, 2, 1, "fp16"),
            Config(256, 100, 1, 2, 1, "fp32"),
        )
        space: dict[str, Any] = {
            "service": SERVICE, "max_batch_size": [64, 256], "max_latency_ms": [100],
            "workers": [1, 2, 4], "threads": [2], "gpus": [1], "variant": ["fp32", "fp16"],
        }  # fmt: skip
        return CheckPlan(
            device, served[:2] if quick else served, space, GPU_BATCHES, ("fp32", "fp16"),
            rows_per_request=16, locust_processes=4, tune_budget_s=90.0 if quick else 180.0,
            trials=6, min_config_s=35.0, inprocess_min_s=0.3, naive_gpu=Config(2, 1000, 1, 2, 1, "fp32"),
        )  # fmt: skip
    space = {
        "service": SERVICE, "max_batch_size": [8, 16], "max_latency_ms": [200], "workers": [1],
        "threads": [1], "gpus": [0], "variant": ["fp32"],
    }  # fmt: skip
    return CheckPlan(
        device, (Config(16, 200, 1, 1, 0, "fp32"),), space, CPU_BATCHES, ("fp32",),
        rows_per_request=4, locust_processes=1, tune_budget_s=60.0 if quick else 120.0,
        trials=2, min_config_s=30.0, inprocess_min_s=0.2,
    )  # fmt: skip


def workers_per_gpu(config: Config) -> int | None:
    """Workers sharing one GPU (round-robin placement by worker index); None on CPU."""
    derived = getattr(config, "workers_per_gpu", None)
    if isinstance(derived, int):
        return derived
    return math.ceil(config.workers / config.gpus) if config.gpus > 0 else None


def tune_options(out: Path, slo_ms: float, **extra: Any) -> Any:
    """The tuner's options for this check: its capacity search at 10% resolution (fewer steps)."""
    from tuner.tuning import TuneOptions

    return TuneOptions(
        service=SERVICE, slo_ms=slo_ms, resolution=0.10, out=out, ready_timeout_s=90.0, **extra
    )


def locust_runner(plan: CheckPlan, options: Any) -> LoadRunner:
    """The tuner's Locust runner, sending `rows_per_request` sentences per request."""
    from loadtests.runner import LocustRunner

    return LocustRunner(
        rows_per_request=plan.rows_per_request, processes=plan.locust_processes,
        max_extend=options.max_extend, settle_s=options.settle_s,
    )  # fmt: skip


def bento_deployer(log_dir: Path, options: Any) -> Deployer:
    """`bentoml serve` on this machine, as `servetune tune` runs each trial."""
    from core.deployer import LocalBentoDeployer

    return LocalBentoDeployer(SERVICE, log_dir, options.ready_timeout_s)


@dataclass(frozen=True)
class Seams:
    """How servers start and load is sent (fakes in tests) and the machine the space is for."""

    deployer: Callable[[Path, Any], Deployer] = bento_deployer
    load: Callable[[CheckPlan, Any], LoadRunner] = locust_runner
    machine: Machine | None = None  # None: detected
