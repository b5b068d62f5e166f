"""The one serving-configuration model: knobs (`Config`), a service's config (`ServeConfig`) and
the winner file. The space, the server launcher, `servetune serve --config` and deploy all use it;
each knob's bounds are declared once, in `services.knobs` (which the services parse `--arg` with).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import format_validation_error
from core.registry import ServiceSpec, service_spec
from core.server import ServerSpec
from services.knobs import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_LATENCY_MS,
    GpuCount,
    MaxBatchSize,
    MaxLatencyMs,
    ServedVariant,
    ThreadCount,
    WorkerCount,
)

DIMENSIONS = ("max_batch_size", "max_latency_ms", "workers", "threads", "gpus", "variant")


class ConfigFileError(ValueError):
    """A configuration file that cannot be read or does not validate."""


class Config(BaseModel):
    """One serving configuration: batching knobs, processes, threads, GPUs and model variant.

    Frozen and hashable, with a stable human-readable `key`; a point of the search space.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: MaxBatchSize = DEFAULT_MAX_BATCH_SIZE
    max_latency_ms: MaxLatencyMs = DEFAULT_MAX_LATENCY_MS
    workers: WorkerCount = 1
    threads: ThreadCount | None = Field(None, description="per worker; None = cores // workers")
    gpus: GpuCount = 0
    variant: ServedVariant = "fp32"

    def __init__(self, *values: Any, **fields: Any) -> None:
        """Knobs by name, or positionally in DIMENSIONS order (`Config(16, 200, 2, 1)`)."""
        if len(values) > len(DIMENSIONS):
            raise TypeError(f"Config takes at most {len(DIMENSIONS)} positional knobs")
        super().__init__(**dict(zip(DIMENSIONS, values, strict=False)), **fields)

    @property
    def key(self) -> str:
        return self._joined(batching=True, variant=True)

    def label(self, spec: ServiceSpec | None = None, endpoint: str | None = None) -> str:
        """The key without the knobs `spec`'s service cannot take at `endpoint` (default: the
        tuned one): batching on a non-batchable endpoint, a variant where it has none, and for a
        service with `--variant-arg` alternatives the placeholder `fp32` of none of them (the
        service as written); for people to read. The key without a spec."""
        if spec is None:
            return self.key
        alternative = not spec.variant_args or "=" in self.variant
        return self._joined(batching=spec.batches(endpoint), variant=spec.takes_variants and alternative)

    def _joined(self, batching: bool, variant: bool) -> str:
        threads = "auto" if self.threads is None else self.threads
        parts = [f"b{self.max_batch_size}", f"l{self.max_latency_ms}"] if batching else []
        parts += [f"w{self.workers}", f"t{threads}", f"g{self.gpus}"]
        return "-".join(parts + ([self.variant] if variant else []))

    @property
    def workers_per_gpu(self) -> int | None:
        """Workers sharing the busiest GPU: ceil(workers / gpus), as workers are placed
        round-robin by index (each with its own CUDA context); None without GPUs."""
        if self.gpus == 0:
            return None
        return -(-self.workers // self.gpus)

    def threads_per_worker(self, cores: int | None = None) -> int:
        """`threads`, or cores // workers (at least 1) when None, as the services decide it."""
        if self.threads is not None:
            return self.threads
        return max(1, (cores or os.cpu_count() or 1) // self.workers)

    def knobs(self) -> Config:
        """The knobs alone (a ServeConfig without its service)."""
        return Config.model_validate({name: getattr(self, name) for name in DIMENSIONS})

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in DIMENSIONS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls.model_validate({name: data[name] for name in DIMENSIONS if name in data})

    def knob_args(self) -> dict[str, Any]:
        """The `--arg` values for `bentoml serve`."""
        return {
            "max_batch_size": self.max_batch_size,
            "max_latency_ms": self.max_latency_ms,
            "threads": self.threads,
            "variant": self.variant,
        }

    def serve_config(self, service: str) -> ServeConfig:
        """This config for one service (what `bentoml serve` is started with)."""
        return ServeConfig.model_validate({"service": service, **self.to_dict()})


class ServeConfig(Config):
    """A Config bound to a registered service."""

    service: str

    @field_validator("service")
    @classmethod
    def _registered(cls, value: str) -> str:
        service_spec(value)  # ValueError names the registered services
        return value

    def server_spec(self, port: int = 0, host: str = "127.0.0.1") -> ServerSpec:
        return ServerSpec(
            service=service_spec(self.service),
            args=self.knob_args(),
            workers=self.workers,
            gpus=self.gpus,
            port=port,
            host=host,
        )


def load_serve_config(path: Path) -> ServeConfig:
    """Read a YAML/JSON config file: a bare ServeConfig or a document with a `config` key."""
    try:
        document: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"cannot read {path}: {exc}") from exc
    if isinstance(document, dict) and isinstance(document.get("config"), dict):
        document = document["config"]
    if not isinstance(document, dict):
        raise ConfigFileError(f"{path}: expected a mapping of serving knobs")
    try:
        return ServeConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigFileError(f"{path}: {format_validation_error(exc)}") from exc


def dump_serve_config(config: ServeConfig, path: Path) -> None:
    path.write_text(json.dumps(config.model_dump(), indent=2) + "\n")


class FinalistSummary(BaseModel):
    """One re-measured finalist as the winner file lists it."""

    model_config = ConfigDict(extra="allow")

    key: str
    mean_rps: float
    stdev_rps: float = 0.0
    interval_rps: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[low, high] 95% of the mean (None: 1 run)"
    )
    runs: int = Field(0, ge=0)


class WinnerFile(BaseModel):
    """What the tuner writes for its winner; `servetune serve --config` and `deploy` read it.

    The fields after `cores` were added later and are optional: older winner files still load.
    """

    model_config = ConfigDict(extra="allow")

    config: ServeConfig
    slo_p95_ms: float = Field(gt=0)
    slo_quantile: Literal["p95", "p99"] = Field("p95", description="quantile slo_p95_ms bounds")
    max_failure_ratio: float = Field(0.01, ge=0, le=1)
    goodput_rps: float = Field(ge=0, description="max sustainable successful RPS of one replica")
    p95_ms: float | None = Field(None, ge=0, description="server p95 at that goodput")
    rss_mb: float | None = Field(None, gt=0, description="peak resident memory of server + workers")
    cores: int | None = Field(None, ge=1, description="cores of the machine it was measured on")
    key: str | None = None
    goodput_spread_rps: float | None = None
    goodput_measurements: list[float] = Field(default_factory=list)
    goodput_stdev_rps: float | None = None
    goodput_interval_rps: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[low, high] 95% interval of the mean"
    )
    statistically_tied_with: list[str] = Field(default_factory=list, description="finalists' keys")
    choice: str = Field("", description="why this finalist won, in one sentence")
    finalists: list[FinalistSummary] = Field(default_factory=list)
    # A user's own service (absent for the built-ins): what rebuilds its registry entry.
    target: str | None = Field(None, description="import path, a file relative to working_dir")
    working_dir: str | None = Field(None, description="folder the service was imported from")
    endpoint: str | None = Field(None, description="the tuned API")
    service_args: dict[str, str] = Field(default_factory=dict, description="bentoml --arg pairs")

    def target_ref(self) -> TargetRef | None:
        """Where the user's service lives, or None for a built-in one."""
        if self.target is None or self.working_dir is None:
            return None
        return TargetRef(
            target=self.target, working_dir=self.working_dir, endpoint=self.endpoint,
            service_args=self.service_args,
        )  # fmt: skip


class TargetRef(BaseModel):
    """A user's service as a winner file names it: enough to describe and register it again."""

    model_config = ConfigDict(frozen=True)

    target: str = Field(min_length=1)
    working_dir: str = Field(min_length=1)
    endpoint: str | None = None
    service_args: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, spec: ServiceSpec) -> TargetRef | None:
        """The reference of a registered user service (None for a built-in one)."""
        if spec.working_dir is None:
            return None
        return cls(
            target=relative_target(spec.import_path, Path(spec.working_dir)),
            working_dir=str(Path(spec.working_dir).resolve()),
            endpoint=spec.endpoint,
            service_args=dict(spec.service_args),
        )

    def import_path(self, working_dir: Path | None = None) -> str:
        """The target with a file path made absolute under `working_dir` (default its own)."""
        folder = (working_dir or Path(self.working_dir)).resolve()
        module, sep, attribute = self.target.partition(":")
        if module.endswith(".py"):
            return str(folder / module) + sep + attribute
        return self.target

    def arg_pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(self.service_args.items())


class TargetOutsideError(ValueError):
    """A service file that does not lie under the folder it is imported from."""


def relative_target(import_path: str, working_dir: Path) -> str:
    """`path/x.py:Cls` relative to `working_dir` (POSIX); a module path as it is."""
    module, sep, attribute = import_path.partition(":")
    if not module.endswith(".py"):
        return import_path
    path = Path(module)
    if not path.is_absolute():
        return Path(module).as_posix() + sep + attribute
    try:
        relative = path.resolve().relative_to(working_dir.resolve())
    except ValueError:
        raise TargetOutsideError(f"{module} is not under the working dir {working_dir}") from None
    return relative.as_posix() + sep + attribute


def peek_target(path: Path) -> TargetRef | None:
    """The user's service a winner file names, read before the file is validated (its
    `config.service` validates only once that service is registered)."""
    try:
        document: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"cannot read {path}: {exc}") from exc
    if not isinstance(document, dict) or document.get("target") is None:
        return None
    fields = {k: document.get(k) for k in ("target", "working_dir", "endpoint")}
    fields["service_args"] = document.get("service_args") or {}
    try:
        return TargetRef.model_validate(fields)
    except ValidationError as exc:
        raise ConfigFileError(f"{path}: {format_validation_error(exc)}") from exc


def load_winner(path: Path) -> WinnerFile:
    """Read a winner file written by the tuner, with a clear error naming the bad field."""
    try:
        document: Any = yaml.safe_load(path.read_text())
        return WinnerFile.model_validate(document)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"cannot read {path}: {exc}") from exc
    except ValidationError as exc:
        raise ConfigFileError(f"{path}: {format_validation_error(exc)}") from exc
