"""Serving knobs: read once from `bentoml serve --arg k=v`, plus thread and device placement."""

from __future__ import annotations

import json
import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_LATENCY_MS = 1000
Variant = Literal["fp32", "int8", "pruned", "bf16", "fp16"]
# A config's variant: a built-in model variant, or one of a user's alternatives given as the
# `bentoml serve --arg name=value` pair that selects it (`servetune tune ... --variant-arg`).
USER_VARIANT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}=[A-Za-z0-9_.,:+@%-]{0,200}$"  # no / in a key
ServedVariant = Annotated[
    str,
    Field(
        pattern=r"^(fp32|int8|pruned|bf16|fp16)$|" + USER_VARIANT_PATTERN,
        description="fp32, int8, pruned, bf16, fp16, or a user's variant name=value",
    ),
]
DeviceKind = Literal["cpu", "cuda"]
# Where each built-in variant can run: int8 is torch's dynamic quantization (CPU kernels only);
# fp16 and bf16 are half-precision weights for GPUs (CPU kernels for them are slow or missing).
VARIANT_DEVICES: dict[str, frozenset[DeviceKind]] = {
    "fp32": frozenset({"cpu", "cuda"}),
    "pruned": frozenset({"cpu", "cuda"}),
    "int8": frozenset({"cpu"}),
    "fp16": frozenset({"cuda"}),
    "bf16": frozenset({"cuda"}),
}


def variant_runs_on(variant: str, device: DeviceKind) -> bool:
    """Whether a config's variant can be served on `device` (a user's name=value variant: yes)."""
    return device in VARIANT_DEVICES.get(variant, frozenset({"cpu", "cuda"}))


VARIANT_KINDS = {"int8": "dynamic quantization", "fp16": "half precision", "bf16": "bfloat16"}


def variant_device_problem(variant: str, device: DeviceKind) -> str | None:
    """Why `variant` cannot be served on `device` ("int8 (dynamic quantization) runs on CPU
    only", "fp16 (half precision) needs a GPU"), or None when it can."""
    if variant_runs_on(variant, device):
        return None
    kind = VARIANT_KINDS.get(variant)
    named = f"{variant} ({kind})" if kind else variant
    return f"{named} runs on CPU only" if device == "cuda" else f"{named} needs a GPU"


# The bounds of every knob, declared once: the services' `--arg` parser below and the serving
# config the tuner, launcher and deploy use (core/serveconfig.py) are built from these.
MaxBatchSize = Annotated[int, Field(gt=1, le=4096, description="adaptive batching cap (BentoML needs > 1)")]
MaxLatencyMs = Annotated[int, Field(gt=0, le=600_000, description="adaptive batching deadline, ms")]
WorkerCount = Annotated[int, Field(ge=1, le=64, description="server worker processes")]
ThreadCount = Annotated[int, Field(ge=1, le=256, description="torch threads per worker")]
GpuCount = Annotated[int, Field(ge=0, le=64, description="GPUs handed to the service")]


class ServeKnobs(BaseModel):
    """Knobs a service reads at import time; every one is settable with `--arg name=value`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: MaxBatchSize = DEFAULT_MAX_BATCH_SIZE
    max_latency_ms: MaxLatencyMs = DEFAULT_MAX_LATENCY_MS
    threads: ThreadCount | None = None
    variant: Variant = "fp32"
    model_tag: str | None = Field(None, description="store tag; default: the variant's latest")

    @field_validator("threads", mode="before")
    @classmethod
    def _auto_threads(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"", "auto", "none"}:
            return None
        return value


def read_knobs() -> ServeKnobs:
    """Parse the knobs given with `--arg` (defaults outside `bentoml serve`)."""
    import bentoml

    return bentoml.use_arguments(ServeKnobs)


def configured_workers(service_name: str) -> int:
    """Worker count this service was started with (BENTOML_CONFIG_OVERRIDES or 1)."""
    raw = os.environ.get("BENTOML_CONFIG_OVERRIDES", "")
    try:
        overrides = json.loads(raw) if raw else {}
        workers = overrides.get("services", {}).get(service_name, {}).get("workers", 1)
    except (ValueError, AttributeError):
        return 1
    if workers == "cpu_count":
        return os.cpu_count() or 1
    return int(workers) if isinstance(workers, int) and workers > 0 else 1


def configured_gpus(service_name: str) -> int:
    """GPUs handed to the service through BENTOML_CONFIG_OVERRIDES (0 when none)."""
    raw = os.environ.get("BENTOML_CONFIG_OVERRIDES", "")
    try:
        overrides = json.loads(raw) if raw else {}
        gpus = overrides.get("services", {}).get(service_name, {}).get("resources", {}).get("gpu", 0)
    except (ValueError, AttributeError):
        return 0
    return int(gpus) if isinstance(gpus, int | float) and gpus > 0 else 0


def threads_per_worker(knobs: ServeKnobs, workers: int, cores: int | None = None) -> int:
    """Explicit threads, or cores // workers (at least 1): BentoML sets none itself."""
    if knobs.threads is not None:
        return knobs.threads
    total = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, total // max(1, workers))


def worker_device(gpus: int, worker_index: int, cuda_devices: int) -> str:
    """Device for one worker: round-robin over the visible GPUs by worker index, else CPU.

    BentoML hands every worker the same CUDA_VISIBLE_DEVICES list, so placement is ours.
    `worker_index` is BentoML's 1-based `server_context.worker_index`.
    """
    usable = min(gpus, cuda_devices)
    if usable <= 0:
        return "cpu"
    return f"cuda:{(max(worker_index, 1) - 1) % usable}"


def apply_placement(knobs: ServeKnobs, service_name: str) -> tuple[str, int]:
    """Set torch threads for this worker and pick its device; returns (device, threads)."""
    import bentoml
    import torch

    workers = configured_workers(service_name)
    threads = threads_per_worker(knobs, workers)
    torch.set_num_threads(threads)
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = bentoml.server_context.worker_index or 1
    return worker_device(configured_gpus(service_name), index, cuda), threads
