"""GPU figures of a study for people: each measurement's at its knee step, the winner's placement.

Steps measured without a GPU carry no figures (None), and then nothing here shows anything: a
CPU-only study's report and progress lines stay free of GPU words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from core.measurement import StepMeasurement
from core.serveconfig import Config
from tuner.objective import load_text
from tuner.store import TrialRecord

GPU_TABLE_HEADER = ("#", "kind", "config", "knee step", "GPU utilisation", "peak worker GPU memory",
                    "GPU memory total", "peak / total")  # fmt: skip


def bytes_text(value: int | None) -> str:
    """GPU memory for people: GiB from 1 GiB up, MiB below ("-" when unknown)."""
    if value is None:
        return "-"
    if value >= 2**30:
        return f"{value / 2**30:.2f} GiB"
    return f"{value / 2**20:.0f} MiB"


@dataclass(frozen=True)
class GpuFigures:
    """One step's GPU figures: mean utilisation over the GPUs (0..1), the largest worker's GPU
    memory and the device's total (each None when not measured)."""

    utilization: float | None = None
    memory_peak_bytes: int | None = None
    memory_total_bytes: int | None = None

    @classmethod
    def of(cls, step: StepMeasurement) -> GpuFigures:
        return cls(
            getattr(step, "gpu_utilization", None),
            getattr(step, "gpu_memory_peak_bytes", None),
            getattr(step, "gpu_memory_total_bytes", None),
        )

    @property
    def known(self) -> bool:
        return any(v is not None for v in (self.utilization, self.memory_peak_bytes, self.memory_total_bytes))

    def columns(self) -> dict[str, float | int | None]:
        """The figures under the step's field names (steps.csv)."""
        return {
            "gpu_utilization": self.utilization,
            "gpu_memory_peak_bytes": self.memory_peak_bytes,
            "gpu_memory_total_bytes": self.memory_total_bytes,
        }

    def utilization_text(self) -> str:
        return "-" if self.utilization is None else f"{self.utilization:.0%}"

    def share_text(self) -> str:
        """The peak worker memory as a share of the device's ("-" unless both are known)."""
        if self.memory_peak_bytes is None or not self.memory_total_bytes:
            return "-"
        return f"{self.memory_peak_bytes / self.memory_total_bytes:.0%}"


def knee_figures(record: TrialRecord) -> GpuFigures | None:
    """The GPU figures at the step the objective scored (the capacity search's knee), if any."""
    step = record.best_step_figures()
    if step is None:
        return None
    figures = GpuFigures.of(step)
    return figures if figures.known else None


def measured_on_gpu(records: Sequence[TrialRecord]) -> bool:
    """Whether any measured step of any record has a GPU figure."""
    return any(GpuFigures.of(step).known for record in records for step in record.steps)


def gpu_text(record: TrialRecord) -> str:
    """The words "gpu util NN%" at the knee step; "" when unknown (one-line progress output)."""
    figures = knee_figures(record)
    if figures is None or figures.utilization is None:
        return ""
    return f"gpu util {figures.utilization:.0%}"


def workers_per_gpu(config: Config) -> int | None:
    """Workers sharing one GPU (round-robin placement): ceil(workers / gpus); None on CPU."""
    derived: int | None = getattr(config, "workers_per_gpu", None)
    if derived is not None or config.gpus == 0:
        return derived
    return math.ceil(config.workers / config.gpus)


def gpu_rows(records: Sequence[TrialRecord]) -> list[tuple[str, ...]]:
    """Per measurement on a GPU config or with GPU figures: its knee step's utilisation and
    memory ("-" where the step carries none)."""
    rows: list[tuple[str, ...]] = []
    for record in records:
        figures = knee_figures(record)
        if figures is None and not record.config.get("gpus"):
            continue
        step = record.best_step_figures()
        shown = figures or GpuFigures()
        rows.append((
            str(record.number), record.label or record.kind, record.shown,
            "-" if step is None else load_text(step), shown.utilization_text(),
            bytes_text(shown.memory_peak_bytes), bytes_text(shown.memory_total_bytes), shown.share_text(),
        ))  # fmt: skip
    return rows


def winner_gpu_text(config: Config, record: TrialRecord | None) -> str:
    """The winner's placement for people: workers per GPU, variant, utilisation and memory at
    its best measurement's knee step."""
    per_gpu = workers_per_gpu(config)
    if per_gpu is None:
        return f"The winner runs on CPU (no GPU), variant {config.variant}."
    text = (
        f"The winner runs {config.workers} worker(s) on {config.gpus} GPU(s): {per_gpu} worker(s) per GPU, "
        f"variant {config.variant}"
    )
    figures = knee_figures(record) if record is not None else None
    if figures is None:
        return text + "; no GPU figures were measured at its knee step."
    text += f"; at its knee step GPU utilisation {figures.utilization_text()}"
    if figures.memory_peak_bytes is not None:
        text += f", peak worker GPU memory {bytes_text(figures.memory_peak_bytes)}"
        if figures.memory_total_bytes:
            text += f" of {bytes_text(figures.memory_total_bytes)} ({figures.share_text()})"
    return text + "."


@dataclass(frozen=True)
class GpuSection:
    """What the report's GPU section shows."""

    winner: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]


def gpu_section(
    records: Sequence[TrialRecord], winner: Config | None, winner_record: TrialRecord | None
) -> GpuSection | None:
    """The GPU section, or None when no step carries a GPU figure (CPU-only studies)."""
    if not measured_on_gpu(records):
        return None
    text = winner_gpu_text(winner, winner_record) if winner is not None else ""
    return GpuSection(text, GPU_TABLE_HEADER, gpu_rows(records))
