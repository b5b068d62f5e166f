"""The search space: dimensions read from a YAML file, frozen configs with a stable key, legality."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.errors import format_validation_error
from core.registry import service_spec
from core.serveconfig import DIMENSIONS, Config
from services.devices import GpuDevice, gpu_devices
from services.knobs import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_LATENCY_MS,
    DeviceKind,
    Variant,
    variant_device_problem,
    variant_runs_on,
)  # fmt: skip
from tuner.spacefile import DEFAULT_GPU_MEMORY_HEADROOM, Pow2Range, SpaceFile, pow2

__all__ = ["DIMENSIONS", "Config", "Dimension", "Machine", "SearchSpace", "SpaceError"]

SPACES_DIR = Path(__file__).resolve().parent / "spaces"
ALL_VARIANTS: tuple[Variant, ...] = ("fp32", "int8", "pruned", "bf16", "fp16")
# Workers per GPU the shipped and derived spaces offer on a machine with GPUs.
DEFAULT_WORKERS_PER_GPU = (1, 2, 4)
MIB = 1024 * 1024


class SpaceError(ValueError):
    """A search-space file that cannot be read or does not validate."""


@dataclass(frozen=True)
class Dimension:
    """An ordered list of values; strategies move between neighbouring indices."""

    name: str
    values: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.values)

    def index(self, value: Any) -> int:
        return self.values.index(value)


def detected_gpus() -> int:
    """GPUs this process can use (0 on a machine without GPUs)."""
    return len(gpu_devices())


def eligible_variants(service: str, gpus: bool = False) -> list[str]:
    """fp32 plus every other variant in the store whose metadata says eligible=True and that can
    run on this machine: GPU-only variants (fp16, bf16) only when `gpus` (see VARIANT_DEVICES)."""
    from services.models.store import ModelNotFound, get_model

    found = ["fp32"]
    base = service_spec(service).model_base
    if base is None:
        return found
    devices: tuple[DeviceKind, ...] = ("cpu", "cuda") if gpus else ("cpu",)
    for variant in ALL_VARIANTS[1:]:
        if not any(variant_runs_on(variant, device) for device in devices):
            continue
        try:
            model = get_model(base, variant)
        except (ModelNotFound, Exception):
            continue
        metadata = model.info.metadata
        if metadata.get("eligible") is True and metadata.get("device", "cpu") in (*devices, None):
            found.append(variant)
    return found


@dataclass(frozen=True)
class Machine:
    """What the legality rules need to know about the machine trials run on: its cores, its
    GPU count and, when known, each GPU's memory (empty without GPUs or when not measured)."""

    cores: int
    gpus: int
    gpu_memory_bytes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.gpu_memory_bytes and len(self.gpu_memory_bytes) != self.gpus:
            raise ValueError(
                f"gpu_memory_bytes lists {len(self.gpu_memory_bytes)} devices for gpus={self.gpus}"
            )

    @classmethod
    def with_devices(cls, cores: int, devices: Sequence[GpuDevice]) -> Machine:
        return cls(cores, len(devices), tuple(d.memory_total_bytes for d in devices))

    @classmethod
    def detect(cls) -> Machine:
        return cls.with_devices(os.cpu_count() or 1, gpu_devices())


class SearchSpace:
    """Ordered dimensions, the legality rules, and the legal configs."""

    def __init__(
        self,
        service: str,
        dimensions: Sequence[Dimension],
        machine: Machine,
        max_total_threads: int | None = None,
        max_workers: int | None = None,
        auto_threads: bool = False,
        workers_per_gpu: Sequence[int] | None = None,
        gpu_memory_per_worker: int | None = None,
        gpu_memory_headroom: float = DEFAULT_GPU_MEMORY_HEADROOM,
    ) -> None:
        """`workers_per_gpu`: the ratios GPU configs may have (None: any); `gpu_memory_per_worker`:
        the GPU memory one worker takes (the profile's figure; None: not measured, no filter)."""
        self.service = service
        self.dimensions = tuple(dimensions)
        self.machine = machine
        self.max_total_threads = max_total_threads or machine.cores
        self.max_workers = max_workers or max(machine.cores, max(self.dim("workers").values))
        self.auto_threads = auto_threads
        self.workers_per_gpu = tuple(sorted(set(workers_per_gpu))) if workers_per_gpu else None
        self.gpu_memory_per_worker = gpu_memory_per_worker
        self.gpu_memory_headroom = gpu_memory_headroom
        self._settings = (max_total_threads, max_workers, auto_threads)
        names = tuple(d.name for d in self.dimensions)
        if names != DIMENSIONS:
            raise SpaceError(f"dimensions must be {DIMENSIONS}, got {names}")
        # with threads "auto", every listed threads value maps a product row to the same config
        self._legal = tuple(dict.fromkeys(c for c in self._product() if not self.why_illegal(c)))
        if not self._legal:
            memory = (
                ""
                if gpu_memory_per_worker is None
                else f", {gpu_memory_per_worker / MIB:.0f} MiB per GPU worker"
            )
            raise SpaceError(
                f"no legal config in the space (cap workers x threads <= {self.max_total_threads}, "
                f"gpus <= {machine.gpus}{memory})"
            )

    def dim(self, name: str) -> Dimension:
        return next(d for d in self.dimensions if d.name == name)

    def _product(self) -> Iterator[Config]:
        for values in itertools.product(*(d.values for d in self.dimensions)):
            config = Config(*values)
            if self.auto_threads:
                config = Config(
                    config.max_batch_size, config.max_latency_ms, config.workers,
                    max(1, self.machine.cores // config.workers), config.gpus, config.variant,
                )  # fmt: skip
            yield config

    def why_illegal(self, config: Config) -> str | None:
        """The reason a config is filtered out before measuring, or None when it is legal."""
        for dimension in self.dimensions:
            value = getattr(config, dimension.name)
            if value not in dimension.values:
                return f"{dimension.name}={value} is outside the space"
        if config.workers > self.max_workers:
            return f"workers={config.workers} > cap {self.max_workers}"
        total = config.workers * config.threads_per_worker(self.machine.cores)
        if total > self.max_total_threads:
            return f"workers x threads = {total} > cap {self.max_total_threads}"
        if config.gpus > self.machine.gpus:
            return f"gpus={config.gpus} > available {self.machine.gpus}"
        problem = variant_device_problem(config.variant, "cuda" if config.gpus else "cpu")
        if problem:
            return f"{problem} (gpus={config.gpus})"
        gpu_problem = self._gpu_sharing_problem(config)
        if gpu_problem:
            return gpu_problem
        if self.auto_threads and config.threads != max(1, self.machine.cores // config.workers):
            return "threads is 'auto' (cores // workers)"
        return None

    def _gpu_sharing_problem(self, config: Config) -> str | None:
        """Workers per GPU outside the listed ratios, or more worker memory than the GPU holds."""
        per_gpu = config.workers_per_gpu
        if per_gpu is None:
            return None
        if self.workers_per_gpu is not None and per_gpu not in self.workers_per_gpu:
            return (
                f"workers per GPU = {per_gpu} (workers={config.workers}, gpus={config.gpus}) is not in "
                f"workers_per_gpu {list(self.workers_per_gpu)}"
            )
        memory = self.machine.gpu_memory_bytes[: config.gpus]
        if self.gpu_memory_per_worker is None or not memory:
            return None
        need = per_gpu * self.gpu_memory_per_worker
        smallest = min(memory)
        if need > self.gpu_memory_headroom * smallest:
            return (
                f"{per_gpu} workers per GPU x {self.gpu_memory_per_worker / MIB:.0f} MiB = "
                f"{need / MIB:.0f} MiB > {self.gpu_memory_headroom:.0%} of {smallest / MIB:.0f} MiB "
                f"(the smallest of gpus={config.gpus})"
            )
        return None

    def with_gpu_memory_per_worker(self, gpu_memory_per_worker: int | None) -> SearchSpace:
        """This space with the profile's per-worker GPU memory, so configs that would not fit go."""
        return SearchSpace(
            self.service, self.dimensions, self.machine, *self._settings, self.workers_per_gpu,
            gpu_memory_per_worker, self.gpu_memory_headroom,
        )  # fmt: skip

    @property
    def configs(self) -> tuple[Config, ...]:
        """Every legal config, in a fixed (product) order."""
        return self._legal

    def __len__(self) -> int:
        return len(self._legal)

    def __contains__(self, config: object) -> bool:
        return isinstance(config, Config) and self.why_illegal(config) is None

    def indices(self, config: Config) -> tuple[int, ...]:
        return tuple(d.index(getattr(config, d.name)) for d in self.dimensions)

    def from_indices(self, indices: Sequence[int]) -> Config:
        values = [d.values[i] for d, i in zip(self.dimensions, indices, strict=True)]
        config = Config(*values)
        if self.auto_threads:
            config = Config(
                config.max_batch_size, config.max_latency_ms, config.workers,
                max(1, self.machine.cores // config.workers), config.gpus, config.variant,
            )  # fmt: skip
        return config

    @property
    def free_dimensions(self) -> tuple[Dimension, ...]:
        """Dimensions a strategy chooses (more than one value; not threads when 'auto')."""
        return tuple(
            d for d in self.dimensions if len(d) > 1 and not (self.auto_threads and d.name == "threads")
        )

    def neighbours(self, config: Config) -> list[Config]:
        """Legal configs one index step away in one dimension (the quick search's moves).

        A workers step that breaks the workers x threads cap keeps the most threads that fit,
        so 1 worker x 2 threads and 2 workers x 1 thread are neighbours.
        """
        base = list(self.indices(config))
        found: list[Config] = []
        for axis, dimension in enumerate(self.dimensions):
            for delta in (-1, 1):
                moved = base[axis] + delta
                if 0 <= moved < len(dimension):
                    candidate = self._repair(self.from_indices([*base[:axis], moved, *base[axis + 1 :]]))
                    if candidate is not None and candidate != config and candidate not in found:
                        found.append(candidate)
        return found

    def _repair(self, config: Config) -> Config | None:
        if config in self:
            return config
        fitting = [t for t in self.dim("threads").values if config.workers * t <= self.max_total_threads]
        if not fitting:
            return None
        repaired = config.model_copy(update={"threads": max(fitting)})
        return repaired if repaired in self else None

    def describe(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "dimensions": {d.name: list(d.values) for d in self.dimensions},
            "threads": "auto" if self.auto_threads else "listed",
            "max_total_threads": self.max_total_threads,
            "cores": self.machine.cores,
            "gpus_available": self.machine.gpus,
            "gpu_memory_bytes": list(self.machine.gpu_memory_bytes),
            "workers_per_gpu": list(self.workers_per_gpu) if self.workers_per_gpu else "auto",
            "gpu_memory_per_worker_bytes": self.gpu_memory_per_worker,
            "gpu_memory_headroom": self.gpu_memory_headroom,
            "legal_configs": len(self),
        }

    @classmethod
    def from_file_model(
        cls, spec: SpaceFile, machine: Machine | None = None, gpu_memory_per_worker: int | None = None
    ) -> SearchSpace:
        machine = machine or Machine.detect()
        batch = spec.max_batch_size
        batch_values = pow2(*batch.pow2) if isinstance(batch, Pow2Range) else tuple(batch)
        if spec.gpus == "auto":
            gpus: tuple[int, ...] = tuple(range(machine.gpus + 1))
        else:
            gpus = tuple(sorted(set(spec.gpus)))
        ratios = None if spec.workers_per_gpu == "auto" else tuple(spec.workers_per_gpu)
        workers = gpu_workers(spec.workers, gpus, ratios, spec.max_workers or machine.cores)
        auto_threads = spec.threads == "auto"
        if auto_threads:
            threads: tuple[int, ...] = tuple(sorted({max(1, machine.cores // w) for w in workers}))
        else:
            threads = tuple(sorted(set(spec.threads)))  # type: ignore[arg-type]
        if spec.variant == "auto":
            variants = eligible_variants(spec.service, gpus=max(gpus) > 0)
        else:
            variants = list(spec.variant)
        dims = [
            Dimension("max_batch_size", tuple(sorted(set(batch_values)))),
            Dimension("max_latency_ms", tuple(sorted(set(spec.max_latency_ms)))),
            Dimension("workers", workers),
            Dimension("threads", threads),
            Dimension("gpus", gpus),
            Dimension("variant", tuple(dict.fromkeys(variants))),
        ]
        return cls(
            spec.service, dims, machine, spec.max_total_threads, spec.max_workers, auto_threads,
            ratios, gpu_memory_per_worker, spec.gpu_memory_headroom,
        )  # fmt: skip


def gpu_workers(
    listed: Sequence[int], gpus: Sequence[int], ratios: Sequence[int] | None, cap: int
) -> tuple[int, ...]:
    """The listed workers counts plus, for each GPU count g > 0 and workers-per-GPU ratio k,
    g x k when it is at most `cap` (so every ratio is offered on every GPU count that allows it)."""
    added = {g * k for g in gpus if g > 0 for k in ratios or () if g * k <= cap}
    return tuple(sorted(set(listed) | added))


def parse_space(document: Any, origin: str = "<space>", machine: Machine | None = None) -> SearchSpace:
    """Validate a parsed YAML document into a SearchSpace; SpaceError names the bad field."""
    if not isinstance(document, dict):
        raise SpaceError(f"{origin}: expected a mapping with `service` and dimensions")
    try:
        spec = SpaceFile.model_validate(document)
    except ValidationError as exc:
        raise SpaceError(f"{origin}: {format_validation_error(exc)}") from exc
    return SearchSpace.from_file_model(spec, machine)


def load_space(path: Path, machine: Machine | None = None) -> SearchSpace:
    """Read a YAML search-space file."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpaceError(f"cannot read {path}: {exc}") from exc
    return parse_space(document, str(path), machine)


def default_space(service: str, machine: Machine | None = None) -> SearchSpace:
    """The shipped space for a service (tuner/spaces/<service>.yaml), else one derived from it.

    Both offer, on a machine with N GPUs, gpus 0..N and 1, 2 or 4 workers per GPU (the shipped
    files list `workers_per_gpu: [1, 2, 4]`; without GPUs that list changes nothing)."""
    path = SPACES_DIR / f"{service}.yaml"
    if not path.exists():
        return derived_space(service, machine)
    return load_space(path, machine)


def derived_space(service: str, machine: Machine | None = None) -> SearchSpace:
    """A space from what the service has: batching dimensions only for a batchable endpoint
    (otherwise its decorator's values, which nothing changes), workers in powers of two up to the
    cores, threads cores // workers, GPUs where there are any, variants from the store or the
    user's `--variant-arg` alternatives.

    On a machine with N GPUs, gpus is 0..N and workers also gets every count that puts 1, 2 or 4
    workers on each GPU (up to the cores); GPU configs keep only those workers-per-GPU ratios."""
    machine = machine or Machine.detect()
    spec = service_spec(service)
    document: dict[str, Any] = {"service": service, "workers": list(pow2(1, max(1, machine.cores)))}
    if machine.gpus:
        document["workers_per_gpu"] = list(DEFAULT_WORKERS_PER_GPU)
    if not spec.batchable:
        batch, latency = spec.written_batching or (DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_LATENCY_MS)
        document.update(max_batch_size=[batch], max_latency_ms=[latency])
    if spec.variant_args:
        document["variant"] = list(spec.variant_args)
    return parse_space(document, f"<derived space of {service}>", machine)
