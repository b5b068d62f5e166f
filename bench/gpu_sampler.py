"""GPU figures sampled by the check itself: NVML readings of one device in a thread, matched to the
windows of the load steps (independent of the figures the services export themselves).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.measurement import StepMeasurement


@dataclass(frozen=True)
class GpuSample:
    at: float  # monotonic
    utilization: float | None  # 0..1
    process_memory: dict[int, int]  # pid -> bytes on the device


@dataclass
class GpuSampler:
    """Samples one device's utilisation and its processes' memory every `interval_s` in a thread.

    `nvml` is the pynvml module (a seam for tests); without NVML or a device it samples nothing
    and says why in `error`."""

    index: int = 0
    interval_s: float = 0.25
    nvml: ModuleType | None = None
    samples: list[GpuSample] = field(default_factory=list)
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _handle: Any = None

    def start(self) -> GpuSampler:
        try:
            if self.nvml is None:
                import pynvml

                self.nvml = pynvml
            self.nvml.nvmlInit()
            self._handle = self.nvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception as exc:
            self.error = f"no NVML sampling: {type(exc).__name__}: {exc}"
            return self
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def sample(self) -> GpuSample:
        """One reading now (utilisation None when NVML refuses it)."""
        assert self.nvml is not None
        utilization: float | None = None
        with contextlib.suppress(Exception):
            utilization = self.nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu / 100.0
        memory: dict[int, int] = {}
        with contextlib.suppress(Exception):
            for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                used = proc.usedGpuMemory
                if isinstance(used, int) and used >= 0:
                    memory[int(proc.pid)] = used
        return GpuSample(time.monotonic(), utilization, memory)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._handle is not None and self.nvml is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()
            self._handle = None

    def utilization(self, start: float, end: float) -> float | None:
        """Mean device utilisation over [start, end] (None without samples there)."""
        found = [s.utilization for s in self.samples if start <= s.at <= end and s.utilization is not None]
        return round(statistics.fmean(found), 4) if found else None

    def worker_memory(self, start: float, end: float, exclude: int | None = None) -> dict[int, int]:
        """Peak device memory per process over [start, end], without `exclude` (this process)."""
        peaks: dict[int, int] = {}
        for sample in self.samples:
            if start <= sample.at <= end:
                for pid, used in sample.process_memory.items():
                    if pid != exclude:
                        peaks[pid] = max(peaks.get(pid, 0), used)
        return peaks


@dataclass
class StepClock:
    """When each scored step ended (monotonic), per trial, from the on_step callbacks."""

    windows: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    current: int = 0

    def trial(self, number: int, *_: object) -> None:
        self.current = number
        self.windows.setdefault(number, [])

    def step(self, index: int, measured: StepMeasurement) -> None:
        end = time.monotonic()
        self.windows.setdefault(self.current, []).append((end - measured.duration_s, end))

    def window(self, trial: int, step: int | None) -> tuple[float, float] | None:
        found = self.windows.get(trial, [])
        return found[step] if step is not None and 0 <= step < len(found) else None


def gpu_figures(
    sampler: GpuSampler | None, window: tuple[float, float] | None, step: StepMeasurement | None
) -> dict[str, Any]:
    """GPU utilisation and per-worker memory at one step: the step's own figures (the services'
    gauges) and NVML's over the step's window."""
    nvml_util: float | None = None
    memory: dict[int, int] = {}
    if sampler is not None and window is not None:
        nvml_util = sampler.utilization(*window)
        memory = sampler.worker_memory(*window, exclude=os.getpid())
    return {
        "gpu_utilization": getattr(step, "gpu_utilization", None),
        "gpu_utilization_nvml": nvml_util,
        "gpu_memory_peak_bytes": getattr(step, "gpu_memory_peak_bytes", None),
        "gpu_memory_total_bytes": getattr(step, "gpu_memory_total_bytes", None),
        "gpu_memory_per_worker_nvml_bytes": max(memory.values()) if memory else None,
        "gpu_processes_nvml": len(memory),
    }
