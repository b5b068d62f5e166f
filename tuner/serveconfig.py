"""A serving configuration as a file: what `servetune serve --config` and the tuner's winner use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.knobs import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_LATENCY_MS, Variant
from tuner.server import ServerSpec, service_target

ServiceName = Literal["digits", "embedding"]


class ConfigFileError(ValueError):
    """A configuration file that cannot be read or does not validate."""


class ServeConfig(BaseModel):
    """One serving configuration: batching knobs, processes, threads, GPUs and model variant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: ServiceName
    max_batch_size: int = Field(DEFAULT_MAX_BATCH_SIZE, gt=1, le=4096)
    max_latency_ms: int = Field(DEFAULT_MAX_LATENCY_MS, gt=0, le=600_000)
    workers: int = Field(1, ge=1, le=64)
    threads: int | None = Field(None, ge=1, le=256, description="per worker; None = cores // workers")
    gpus: int = Field(0, ge=0, le=64)
    variant: Variant = "fp32"

    def knob_args(self) -> dict[str, Any]:
        """The `--arg` values for `bentoml serve`."""
        return {
            "max_batch_size": self.max_batch_size,
            "max_latency_ms": self.max_latency_ms,
            "threads": self.threads,
            "variant": self.variant,
        }

    def server_spec(self, port: int = 0, host: str = "127.0.0.1") -> ServerSpec:
        return ServerSpec(
            service=service_target(self.service),
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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigFileError(f"{path}: {problems}") from exc


def dump_serve_config(config: ServeConfig, path: Path) -> None:
    path.write_text(json.dumps(config.model_dump(), indent=2) + "\n")


class WinnerFile(BaseModel):
    """What the tuner writes for its winner; `servetune serve --config` and `deploy` read it."""

    model_config = ConfigDict(extra="allow")

    config: ServeConfig
    slo_p95_ms: float = Field(gt=0)
    slo_quantile: Literal["p95", "p99"] = Field("p95", description="quantile slo_p95_ms bounds")
    max_failure_ratio: float = Field(0.01, ge=0, le=1)
    goodput_rps: float = Field(ge=0, description="max sustainable successful RPS of one replica")
    p95_ms: float | None = Field(None, ge=0, description="server p95 at that goodput")
    rss_mb: float | None = Field(None, gt=0, description="peak resident memory of server + workers")
    cores: int | None = Field(None, ge=1, description="cores of the machine it was measured on")


def load_winner(path: Path) -> WinnerFile:
    """Read a winner file written by the tuner, with a clear error naming the bad field."""
    try:
        document: Any = yaml.safe_load(path.read_text())
        return WinnerFile.model_validate(document)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"cannot read {path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigFileError(f"{path}: {problems}") from exc
