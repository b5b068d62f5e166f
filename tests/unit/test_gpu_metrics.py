"""GPU metrics: the NVML sampler against a fake NVML, the gauges read back by core/metrics.py,
the GPU memory headroom rule of the SLO, and the adapter starting the sampler on GPU workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from core.measurement import LoadStep
from core.metrics import WindowFigures, parse_metrics, window_figures
from loadtests.runner import ClientFigures, SubWindow, _measurement
from services import adapter, gpumetrics
from services.gpumetrics import MEMORY_TOTAL, MEMORY_USED, UTILIZATION, GpuGauges, GpuSampler, start_sampler
from tests.fakes import make_step
from tuner.objective import SLO, Objective
from tuner.space import Config

GIB = 1024**3
PID = 4242


class FakeNvmlError(Exception):
    """Stands in for pynvml.NVMLError (the sampler catches any exception)."""


@dataclass
class FakeGpu:
    uuid: str
    total: int
    utilization: int = 0  # percent, as NVML reports it
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, usedGpuMemory)


@dataclass
class FakeNvml:
    """The NVML calls the sampler makes, over a list of fake devices (handle = index)."""

    gpus: list[FakeGpu]
    init_error: Exception | None = None
    fail_reads_after: int | None = None  # utilisation reads that succeed before NVML fails
    reads: int = 0
    shutdowns: int = 0
    read_event: threading.Event = field(default_factory=threading.Event)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.gpus):
            raise FakeNvmlError("Invalid Argument")
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return self.gpus[handle].uuid.encode()

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        if self.fail_reads_after is not None and self.reads >= self.fail_reads_after:
            raise FakeNvmlError("GPU is lost")
        self.reads += 1
        self.read_event.set()
        return SimpleNamespace(gpu=self.gpus[handle].utilization, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(total=self.gpus[handle].total, used=0, free=self.gpus[handle].total)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.gpus[handle].processes]


def two_gpus() -> FakeNvml:
    return FakeNvml([
        FakeGpu("GPU-aaaa1111-0000", 16 * GIB, 40, [(PID, 3 * GIB), (777, 5 * GIB)]),
        FakeGpu("GPU-bbbb2222-0000", 24 * GIB, 10, [(777, GIB)]),  # our pid not on it
    ])  # fmt: skip


def value(registry: CollectorRegistry, name: str, gpu: str) -> float | None:
    return registry.get_sample_value(name, {"gpu": gpu})


def wait_until(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


@pytest.fixture
def samplers() -> Iterator[list[GpuSampler]]:
    started: list[GpuSampler] = []
    yield started
    for sampler in started:
        sampler.stop()


def started(samplers: list[GpuSampler], sampler: GpuSampler | None) -> GpuSampler:
    assert sampler is not None
    samplers.append(sampler)
    return sampler


# --- devices -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, [0, 1]),  # unset: every device
        ("1", [1]),
        ("1,0", [1, 0]),
        ("GPU-bbbb2222", [1]),  # a UUID prefix, as CUDA accepts it
        ("GPU-aaaa1111-0000,7,MIG-xyz", [0]),  # out of range and MIG entries are left out
        ("", []),
    ],
)
def test_visible_devices_map_to_nvml_indices(visible: str | None, expected: list[int]) -> None:
    nvml = two_gpus()
    assert gpumetrics.nvml_indices(nvml, gpumetrics.visible_entries(visible)) == expected


# --- the sampler ---------------------------------------------------------------------------


def test_one_sample_sets_utilisation_total_and_this_process_memory() -> None:
    registry = CollectorRegistry()
    nvml = two_gpus()
    sampler = GpuSampler(nvml, {0: 0, 1: 1}, GpuGauges.register(registry), pid=PID)
    sampler.sample()
    assert value(registry, UTILIZATION, "0") == pytest.approx(0.40)
    assert value(registry, UTILIZATION, "1") == pytest.approx(0.10)
    assert value(registry, MEMORY_TOTAL, "1") == 24 * GIB
    assert value(registry, MEMORY_USED, "0") == 3 * GIB  # our pid only, not pid 777's 5 GiB
    assert value(registry, MEMORY_USED, "1") is None  # our pid is not on GPU 1: no series


def test_memory_nvml_cannot_tell_leaves_the_gauge_unset() -> None:
    registry = CollectorRegistry()
    nvml = FakeNvml([FakeGpu("GPU-a", 8 * GIB, 50, [(PID, None)])])
    GpuSampler(nvml, {0: 0}, GpuGauges.register(registry), pid=PID).sample()
    assert value(registry, MEMORY_USED, "0") is None
    assert value(registry, UTILIZATION, "0") == pytest.approx(0.5)


def test_the_thread_follows_utilisation_and_stop_shuts_nvml_down(samplers: list[GpuSampler]) -> None:
    registry = CollectorRegistry()
    nvml = two_gpus()
    sampler = started(samplers, start_sampler(nvml, registry, visible="0", interval_s=0.01, pid=PID))
    assert sampler.handles == {0: 0}
    assert wait_until(lambda: value(registry, UTILIZATION, "0") == pytest.approx(0.40))
    nvml.gpus[0].utilization = 90
    assert wait_until(lambda: value(registry, UTILIZATION, "0") == pytest.approx(0.90))
    assert value(registry, UTILIZATION, "1") is None  # not this worker's device
    sampler.stop()
    assert not sampler.running
    assert nvml.shutdowns == 1
    sampler.stop()
    assert nvml.shutdowns == 1


def test_an_nvml_error_mid_run_stops_the_thread_quietly(samplers: list[GpuSampler]) -> None:
    registry = CollectorRegistry()
    nvml = two_gpus()
    nvml.fail_reads_after = 3
    errors: list[threading.ExceptHookArgs] = []
    hook, threading.excepthook = threading.excepthook, errors.append
    try:
        sampler = started(samplers, start_sampler(nvml, registry, visible="0", interval_s=0.01, pid=PID))
        assert wait_until(lambda: not sampler.running)
    finally:
        threading.excepthook = hook
    assert errors == []  # nothing escaped the thread
    assert sampler.error is not None and "GPU is lost" in sampler.error
    assert nvml.reads == 3
    assert nvml.shutdowns == 1
    assert value(registry, UTILIZATION, "0") == pytest.approx(0.40)  # the last good sample stays


@pytest.mark.parametrize(
    "nvml",
    [
        FakeNvml([], init_error=FakeNvmlError("Driver Not Loaded")),
        FakeNvml([]),  # NVML but no device
        FakeNvml([FakeGpu("GPU-a", GIB)]),  # a device, but not the visible one
    ],
)
def test_no_nvml_or_no_device_starts_nothing_and_registers_no_gauge(nvml: FakeNvml) -> None:
    registry = CollectorRegistry()
    visible = "3" if nvml.gpus else None
    assert start_sampler(nvml, registry, visible=visible, pid=PID) is None
    assert list(registry.collect()) == []
    assert nvml.shutdowns == (0 if nvml.init_error else 1)


def test_the_adapter_starts_gpu_metrics_only_on_gpu_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(gpumetrics, "start_sampler", lambda: calls.append("started") or "sampler")
    monkeypatch.delenv(adapter.ENV_GPU_METRICS, raising=False)
    assert adapter.start_gpu_metrics(0) is None
    assert calls == []
    assert adapter.start_gpu_metrics(1) == "sampler"
    assert calls == ["started"]
    monkeypatch.setenv(adapter.ENV_GPU_METRICS, "0")
    assert adapter.start_gpu_metrics(1) is None
    assert calls == ["started"]


# --- reading the gauges back ---------------------------------------------------------------


@pytest.fixture
def multiprocess_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Prometheus multiprocess mode as in a BentoML worker, in a temporary folder."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    return folder


def worker_sample(monkeypatch: pytest.MonkeyPatch, nvml: FakeNvml, devices: list[int], pid: int) -> None:
    """One sample by a worker process `pid` (its gauges written to the multiprocess folder)."""
    value_class = values.MultiProcessValue(process_identifier=lambda: pid)
    monkeypatch.setattr(values, "ValueClass", value_class)
    gauges = GpuGauges.register(CollectorRegistry())
    GpuSampler(nvml, {i: i for i in devices}, gauges, pid=pid).sample()
    value_class.close_all_files()


def scrape(folder: Path) -> str:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return generate_latest(registry).decode()


def shared_gpu() -> FakeNvml:
    """Two workers (pids 101, 102) on GPU 0, one (103) on GPU 1."""
    return FakeNvml([
        FakeGpu("GPU-a", 16 * GIB, 40, [(101, 3 * GIB), (102, 4 * GIB)]),
        FakeGpu("GPU-b", 8 * GIB, 20, [(103, 2 * GIB)]),
    ])  # fmt: skip


def test_multiprocess_exposition_keeps_one_memory_series_per_worker(
    multiprocess_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = shared_gpu()
    for pid, device in ((101, 0), (102, 0), (103, 1)):
        worker_sample(monkeypatch, nvml, [device], pid)
    text = scrape(multiprocess_dir)
    snap = parse_metrics(text, taken_at=0.0)
    assert snap.gpu_memory_used == {("0", "101"): 3 * GIB, ("0", "102"): 4 * GIB, ("1", "103"): 2 * GIB}
    assert snap.gpu_utilization == {"0": pytest.approx(0.4), "1": pytest.approx(0.2)}  # one per device
    assert snap.gpu_memory_total == {"0": 16 * GIB, "1": 8 * GIB}
    assert f'{UTILIZATION}{{gpu="0"}}' in text  # no pid label on the device gauges


def test_window_figures_average_utilisation_and_keep_memory_peaks(
    multiprocess_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = shared_gpu()
    snapshots = []
    for t, (util, used_102) in enumerate(((40, 4), (80, 6), (60, 5))):
        nvml.gpus[0].utilization, nvml.gpus[1].utilization = util, util
        nvml.gpus[0].processes[1] = (102, used_102 * GIB)
        for pid, device in ((101, 0), (102, 0), (103, 1)):
            worker_sample(monkeypatch, nvml, [device], pid)
        snapshots.append(parse_metrics(scrape(multiprocess_dir), taken_at=float(t)))
    figures = window_figures(snapshots[0], snapshots[2], "/encode", snapshots[1:2])
    assert figures.gpu_utilization == pytest.approx(0.70)  # the scrapes inside the window: 80%, 60%
    assert figures.gpu_memory_peak_bytes == 6 * GIB  # worker 102 at its peak
    assert figures.gpu_memory_device_peak_bytes == 9 * GIB  # 3 + 6 GiB on GPU 0
    assert figures.gpu_memory_total_bytes == 8 * GIB  # the smaller device


def test_a_window_without_gpu_gauges_has_no_gpu_figures() -> None:
    before, after = parse_metrics("", taken_at=0.0), parse_metrics("", taken_at=10.0)
    figures = window_figures(before, after, "/encode")
    assert (figures.gpu_utilization, figures.gpu_memory_peak_bytes) == (None, None)
    assert (figures.gpu_memory_device_peak_bytes, figures.gpu_memory_total_bytes) == (None, None)


def test_the_runner_carries_the_server_gpu_figures_into_the_step() -> None:
    step = LoadStep(users=4, duration_s=10.0)
    client = ClientFigures(100, 100, {"200": 100}, 10.0, 20.0, 30.0, 40.0)
    used = [SubWindow(0.0, 10.0, 10.0, 0.1, 0.1)]
    server = WindowFigures.from_counts(10.0, {"200": 100}, p50_ms=9.0, p95_ms=19.0, p99_ms=29.0,
        in_progress=None, batch_size_hist={}, requests_per_worker={}, batches_per_worker={},
        gpu_utilization=0.5, gpu_memory_peak_bytes=2 * GIB, gpu_memory_device_peak_bytes=4 * GIB,
        gpu_memory_total_bytes=16 * GIB)  # fmt: skip
    measured = _measurement(step, 10.0, client, server, used, True, [])
    assert measured.gpu_utilization == 0.5
    assert measured.gpu_memory_peak_bytes == 2 * GIB
    assert measured.gpu_memory_device_peak_bytes == 4 * GIB
    assert measured.gpu_memory_total_bytes == 16 * GIB
    without = _measurement(step, 10.0, client, None, used, True, [])
    assert without.gpu_utilization is None and without.gpu_memory_total_bytes is None


# --- the headroom rule ---------------------------------------------------------------------


def gpu_step(device: int | None = None, worker: int | None = None, total: int | None = 16 * GIB) -> Any:
    base = make_step(LoadStep(users=4, duration_s=10), 100.0, 50.0, 0.0)
    return replace(
        base, gpu_memory_device_peak_bytes=device, gpu_memory_peak_bytes=worker, gpu_memory_total_bytes=total
    )


def test_measured_device_memory_above_the_share_is_a_violation() -> None:
    slo = SLO(latency_ms=200)
    over = slo.violations(gpu_step(device=15 * GIB, worker=8 * GIB))
    assert len(over) == 1 and "GPU memory 15.00 GiB" in over[0] and "90%" in over[0]
    assert slo.violations(gpu_step(device=14 * GIB, worker=7 * GIB)) == []
    assert SLO(latency_ms=200, max_gpu_memory_share=0.5).violations(gpu_step(device=9 * GIB))


def test_without_the_device_sum_the_peak_worker_counts_once_per_worker_on_the_gpu() -> None:
    slo = SLO(latency_ms=200)
    step = gpu_step(worker=5 * GIB)
    assert slo.violations(step, workers_per_gpu=2) == []  # 10 of 16 GiB
    over = slo.violations(step, workers_per_gpu=3)  # 15 of 16 GiB
    assert over and "3 worker(s) x 5.00 GiB" in over[0]
    crowded = Objective(slo).evaluate(Config(16, 200, 3, 1, 1, "fp32"), [step])
    assert not crowded.feasible and "GPU memory" in crowded.reason
    assert Objective(slo).evaluate(Config(16, 200, 3, 1, 3, "fp32"), [step]).feasible  # one per GPU


def test_steps_without_gpu_figures_are_judged_as_before() -> None:
    slo, unbounded = SLO(latency_ms=200), SLO(latency_ms=200, max_gpu_memory_share=None)
    plain = make_step(LoadStep(users=4, duration_s=10), 100.0, 250.0, 0.0)
    assert plain.gpu_utilization is None and plain.gpu_memory_total_bytes is None
    assert slo.violations(plain, workers_per_gpu=8) == unbounded.violations(plain)
    assert slo.violations(gpu_step(worker=15 * GIB, total=None)) == []  # no total: nothing to compare
    assert unbounded.violations(gpu_step(device=16 * GIB)) == []  # the bound switched off


@pytest.mark.parametrize("share", [0.0, 1.5, -0.1])
def test_a_share_outside_0_1_names_the_field(share: float) -> None:
    with pytest.raises(ValueError, match="max_gpu_memory_share"):
        SLO(max_gpu_memory_share=share)
