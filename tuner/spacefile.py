"""The YAML schema of a search-space file (pydantic): what each dimension may hold, checked
before any config is built; `auto` entries are resolved against the machine by `tuner.space`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.registry import service_spec
from services.knobs import MaxLatencyMs, ServedVariant, WorkerCount

DEFAULT_GPU_MEMORY_HEADROOM = 0.9


def pow2(low: int, high: int) -> tuple[int, ...]:
    """Powers of two from `low` to `high` inclusive (both rounded to powers of two)."""
    values = []
    value = 1
    while value <= high:
        if value >= low:
            values.append(value)
        value *= 2
    return tuple(values)


class Pow2Range(BaseModel):
    """`{pow2: [low, high]}` in YAML: the powers of two in that range."""

    model_config = ConfigDict(extra="forbid")
    pow2: tuple[int, int]

    @model_validator(mode="after")
    def _ordered(self) -> Pow2Range:
        low, high = self.pow2
        if low < 2 or high < low:
            raise ValueError("pow2 needs [low, high] with 2 <= low <= high")
        return self


IntValues = list[int] | Pow2Range


class SpaceFile(BaseModel):
    """The YAML schema of a search space; `auto` entries are resolved against this machine."""

    model_config = ConfigDict(extra="forbid")

    service: str
    max_batch_size: IntValues = Field(default_factory=lambda: Pow2Range(pow2=(8, 64)))
    max_latency_ms: list[MaxLatencyMs] = Field(default_factory=lambda: [100, 200, 500], min_length=1)
    workers: list[WorkerCount] = Field(default_factory=lambda: [1, 2], min_length=1)
    threads: Literal["auto"] | list[int] = Field("auto", description="'auto' = cores // workers")
    gpus: Literal["auto"] | list[int] = Field("auto", description="'auto' = [0] without GPUs")
    variant: Literal["auto"] | list[ServedVariant] = Field(
        "auto",
        description="'auto' = fp32 + variants in the store that passed the accuracy guard; a user's "
        "service: its alternatives as name=value --arg pairs",
    )
    workers_per_gpu: Literal["auto"] | list[int] = Field(
        "auto",
        description="'auto' = any; a list keeps only GPU configs with ceil(workers / gpus) in it and "
        "adds the workers counts gpus x each value (up to max_workers, default cores)",
    )
    gpu_memory_headroom: float = Field(
        DEFAULT_GPU_MEMORY_HEADROOM, gt=0, le=1,
        description="share of the smallest used GPU's memory the workers on it may take",
    )  # fmt: skip
    max_total_threads: int | None = Field(None, ge=1, description="cap on workers x threads; default cores")
    max_workers: int | None = Field(None, ge=1, description="cap on workers; default cores")

    @field_validator("max_batch_size")
    @classmethod
    def _batch_sizes(cls, value: IntValues) -> IntValues:
        values = value.pow2 if isinstance(value, Pow2Range) else value
        if isinstance(value, list) and not value:
            raise ValueError("give at least one value")
        if any(v <= 1 for v in values):
            raise ValueError("every max_batch_size must be > 1 (BentoML needs a batch)")
        return value

    @field_validator("service")
    @classmethod
    def _registered(cls, value: str) -> str:
        service_spec(value)  # ValueError names the registered services
        return value

    @model_validator(mode="after")
    def _variants_fit_the_service(self) -> SpaceFile:
        if isinstance(self.variant, list) and not service_spec(self.service).external:
            labels = [v for v in self.variant if "=" in v]
            if labels:
                raise ValueError(f"variant: {labels[0]!r}: name=value variants are for your own services")
        return self

    @field_validator("workers_per_gpu")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        return _values_at_least(value, 1, " (workers sharing one GPU)")

    @field_validator("threads", "gpus")
    @classmethod
    def _non_negative(cls, value: Any) -> Any:
        return _values_at_least(value, 0)


def _values_at_least(value: Any, minimum: int, why: str = "") -> Any:
    """A list field's values: at least one, each >= `minimum` ('auto' passes through)."""
    if isinstance(value, list):
        if not value:
            raise ValueError("give at least one value or 'auto'")
        if any(v < minimum for v in value):
            raise ValueError(f"values must be >= {minimum}{why}")
    return value
