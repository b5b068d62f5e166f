"""This worker's GPU utilisation and memory as Prometheus gauges, sampled off the event loop.

`start_sampler()` (called by services/adapter.py in every worker placed on a GPU) initialises
NVML, finds the worker's device(s) from CUDA_VISIBLE_DEVICES and starts a daemon thread that
reads them every `interval_s` and sets three gauges, labelled `gpu` (the NVML index):

- `servetune_gpu_utilization_ratio`: the device's utilisation, 0..1 (multiprocess mode
  "livemax": one series per device however many workers share it);
- `servetune_gpu_memory_used_bytes`: this process's memory on the device (mode "liveall":
  BentoML's multiprocess /metrics adds a `pid` label, one series per worker);
- `servetune_gpu_memory_total_bytes`: the device's memory ("livemax").

Without NVML or without a device nothing starts and no gauge is registered. An NVML error
while sampling is logged once and ends the thread; nothing ever raises into the worker.

NVML numbers devices in PCI bus order; CUDA_VISIBLE_DEVICES may hold such indices (read as
NVML indices: CUDA's order is the same with CUDA_DEVICE_ORDER=PCI_BUS_ID or identical GPUs) or
`GPU-<uuid>` prefixes (matched against each device's UUID). MIG entries are not sampled.
A process's memory is read from nvmlDeviceGetComputeRunningProcesses by pid: in a container
whose pid namespace hides host pids the memory gauge stays unset.

This file only needs prometheus_client (and nvidia-ml-py, imported when a sampler starts): a
user's Bento carries it next to the adapter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

UTILIZATION = "servetune_gpu_utilization_ratio"
MEMORY_USED = "servetune_gpu_memory_used_bytes"
MEMORY_TOTAL = "servetune_gpu_memory_total_bytes"
GPU_LABEL = "gpu"
INTERVAL_S = 1.0

log = logging.getLogger("servetune.gpumetrics")


class Nvml(Protocol):
    """The few NVML calls the sampler makes (the `pynvml` module, or a fake in tests)."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> Sequence[Any]: ...


@dataclass(frozen=True)
class GpuGauges:
    utilization: Gauge
    memory_used: Gauge
    memory_total: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry) -> GpuGauges:
        labels = [GPU_LABEL]
        return cls(
            Gauge(UTILIZATION, "GPU utilisation of the device, 0..1", labels,
                  registry=registry, multiprocess_mode="livemax"),
            Gauge(MEMORY_USED, "GPU memory used by this worker process", labels,
                  registry=registry, multiprocess_mode="liveall"),
            Gauge(MEMORY_TOTAL, "GPU memory of the device", labels,
                  registry=registry, multiprocess_mode="livemax"),
        )  # fmt: skip


def visible_entries(raw: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of entries; None when unset (every device is visible)."""
    if raw is None:
        return None
    return [entry.strip() for entry in raw.split(",") if entry.strip()]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def nvml_indices(nvml: Nvml, visible: list[str] | None) -> list[int]:
    """The NVML indices of the visible devices (entries that name no device are left out)."""
    count = int(nvml.nvmlDeviceGetCount())
    if visible is None:
        return list(range(count))
    uuids: list[str] = []
    if any(not entry.isdigit() for entry in visible):
        uuids = [_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
    found: list[int] = []
    for entry in visible:
        index = _entry_index(entry, count, uuids)
        if index is None:
            log.info("GPU metrics: CUDA_VISIBLE_DEVICES entry %r names no NVML device; not sampled", entry)
        elif index not in found:
            found.append(index)
    return found


def _entry_index(entry: str, count: int, uuids: list[str]) -> int | None:
    """An index below `count`, or a `GPU-<uuid>` prefix of one of `uuids` (CUDA accepts prefixes)."""
    if entry.isdigit():
        return int(entry) if int(entry) < count else None
    if not entry.startswith("GPU-"):
        return None
    return next((i for i, uuid in enumerate(uuids) if uuid.startswith(entry)), None)


class GpuSampler:
    """A daemon thread that sets the gauges for `handles` (NVML index -> handle) every `interval_s`."""

    def __init__(
        self,
        nvml: Nvml,
        handles: dict[int, Any],
        gauges: GpuGauges,
        interval_s: float = INTERVAL_S,
        pid: int | None = None,
    ) -> None:
        self.nvml = nvml
        self.handles = handles
        self.gauges = gauges
        self.interval_s = interval_s
        self.pid = os.getpid() if pid is None else pid
        self.error: str | None = None  # why sampling stopped early
        self._stop = threading.Event()
        self._shut = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="servetune-gpu-metrics", daemon=True)

    def start(self) -> GpuSampler:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def sample(self) -> None:
        """Read every device once and set its gauges (NVML errors propagate)."""
        for index, handle in self.handles.items():
            label = str(index)
            rates = self.nvml.nvmlDeviceGetUtilizationRates(handle)
            self.gauges.utilization.labels(label).set(float(rates.gpu) / 100.0)
            self.gauges.memory_total.labels(label).set(float(self.nvml.nvmlDeviceGetMemoryInfo(handle).total))
            used = self._process_memory(handle)
            if used is not None:
                self.gauges.memory_used.labels(label).set(float(used))

    def _process_memory(self, handle: Any) -> int | None:
        """This process's memory on the device; None when NVML does not list it or cannot tell."""
        listed = self.nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        known = [int(p.usedGpuMemory) for p in listed if p.pid == self.pid and p.usedGpuMemory is not None]
        return sum(known) if known else None

    def _run(self) -> None:
        try:
            while True:
                self.sample()
                if self._stop.wait(self.interval_s):
                    break
        except Exception as exc:  # a metrics thread must never take the worker down
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("GPU metrics stopped: %s", self.error)
        finally:
            self._shutdown()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sampling and shut NVML down."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._shutdown()

    def _shutdown(self) -> None:
        with self._shut:
            if self._closed:
                return
            self._closed = True
        try:
            self.nvml.nvmlShutdown()
        except Exception:  # nothing left to do with a failing NVML
            return


def _import_nvml() -> Nvml | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def start_sampler(
    nvml: Nvml | None = None,
    registry: CollectorRegistry = REGISTRY,
    visible: str | None = None,
    interval_s: float = INTERVAL_S,
    pid: int | None = None,
) -> GpuSampler | None:
    """Start sampling this worker's devices (CUDA_VISIBLE_DEVICES unless `visible` is given);
    None, with no gauge registered, when NVML is missing or fails or there is no device."""
    nvml = nvml if nvml is not None else _import_nvml()
    if nvml is None:
        log.info("GPU metrics off: nvidia-ml-py is not installed")
        return None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # no driver, no library: no metrics
        log.info("GPU metrics off: NVML did not initialise (%s)", exc)
        return None
    try:
        raw = visible if visible is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = nvml_indices(nvml, visible_entries(raw))
        if not devices:
            raise LookupError(f"no NVML device for CUDA_VISIBLE_DEVICES={raw!r}")
        handles = {index: nvml.nvmlDeviceGetHandleByIndex(index) for index in devices}
        sampler = GpuSampler(nvml, handles, GpuGauges.register(registry), interval_s, pid)
    except Exception as exc:  # never raise into the worker
        log.info("GPU metrics off: %s", exc)
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
        return None
    return sampler.start()
