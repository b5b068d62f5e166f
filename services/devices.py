"""The GPUs this process can use, and its GPU memory: NVML first, torch.cuda as a fallback.

Both functions never raise: a machine without a GPU, a driver or `pynvml` has no devices. The
`nvml` and `cuda` parameters are seams for tests (a fake module); by default they are `pynvml`
and `torch.cuda`, imported only when called.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["GpuDevice", "gpu_devices", "process_gpu_memory_bytes", "visible_indices"]


@dataclass(frozen=True)
class GpuDevice:
    """One GPU; `index` is the CUDA index this process sees (`cuda:<index>`)."""

    index: int
    name: str
    memory_total_bytes: int


def visible_indices(raw: str | None, count: int) -> list[int] | None:
    """The physical indices CUDA_VISIBLE_DEVICES selects, in CUDA order (all when unset).

    CUDA stops at the first entry that is not a valid index; None for UUID or MIG entries,
    which only CUDA itself (torch) can resolve.
    """
    if raw is None:
        return list(range(count))
    chosen: list[int] = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry.lstrip("-").isdigit():
            return None if entry else chosen
        index = int(entry)
        if index < 0 or index >= count or index in chosen:
            break
        chosen.append(index)
    return chosen


@contextlib.contextmanager
def _nvml_session(nvml: Any) -> Iterator[Any]:
    """pynvml (or the fake given) initialised, shut down after; raises when NVML cannot start."""
    if nvml is None:
        import pynvml

        nvml = pynvml
    nvml.nvmlInit()
    try:
        yield nvml
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _text(name: str | bytes) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _nvml_devices(nvml: Any) -> list[GpuDevice] | None:
    """The visible devices as NVML lists them; None when NVML does not answer."""
    try:
        with _nvml_session(nvml) as session:
            count = int(session.nvmlDeviceGetCount())
            physical = visible_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), count)
            if physical is None:
                return None
            devices = []
            for cuda_index, index in enumerate(physical):
                handle = session.nvmlDeviceGetHandleByIndex(index)
                total = int(session.nvmlDeviceGetMemoryInfo(handle).total)
                devices.append(GpuDevice(cuda_index, _text(session.nvmlDeviceGetName(handle)), total))
            return devices
    except Exception:  # no pynvml, no driver, no GPU
        return None


def _torch_devices(cuda: Any) -> list[GpuDevice]:
    try:
        if cuda is None:
            import torch

            cuda = torch.cuda
        if not cuda.is_available():
            return []
        devices = []
        for index in range(int(cuda.device_count())):
            props = cuda.get_device_properties(index)
            devices.append(GpuDevice(index, str(props.name), int(props.total_memory)))
        return devices
    except Exception:  # torch missing or a broken CUDA install
        return []


def gpu_devices(nvml: Any = None, cuda: Any = None) -> list[GpuDevice]:
    """The GPUs this process can use (NVML, else torch.cuda); [] when there are none."""
    return _nvml_devices(nvml) or _torch_devices(cuda)


def process_gpu_memory_bytes(pid: int | None = None, nvml: Any = None) -> int | None:
    """GPU memory NVML reports for process `pid` (default this one), summed over its devices;
    None when NVML does not answer or does not list the process (e.g. another PID namespace)."""
    pid = os.getpid() if pid is None else pid
    try:
        with _nvml_session(nvml) as session:
            count = int(session.nvmlDeviceGetCount())
            handles = [session.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            used = [
                int(process.usedGpuMemory)
                for handle in handles
                for process in session.nvmlDeviceGetComputeRunningProcesses(handle)
                if process.pid == pid and process.usedGpuMemory is not None
            ]
    except Exception:
        return None
    return sum(used) if used else None
