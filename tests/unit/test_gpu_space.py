"""GPU allocation without a GPU: the device list (fake NVML / torch.cuda), workers per GPU,
variant-device legality, the GPU memory filter, placement, the spaces derived with and without
GPUs, and the profile's per-worker GPU memory (a fake allocator)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.devices import GpuDevice, gpu_devices, process_gpu_memory_bytes, visible_indices
from services.knobs import worker_device
from tests.fakes import fake_model_store
from tuner.profile import (
    DEFAULT_CUDA_CONTEXT_BYTES,
    Profile,
    pooled_profile,
    profile_service,
    worker_gpu_memory,
)
from tuner.space import (
    Config,
    Machine,
    SearchSpace,
    SpaceError,
    default_space,
    derived_space,
    parse_space,
)
from tuner.spacefile import SpaceFile, pow2

GIB = 1024**3
MIB = 1024**2


# --- fakes behind the seams --------------------------------------------------------------------


class FakeNvmlError(Exception):
    pass


@dataclass
class FakeNvml:
    """Stands in for `pynvml`: devices as (name, total bytes), processes per device as (pid, bytes)."""

    devices: list[tuple[str, int]] = field(default_factory=list)
    processes: dict[int, list[tuple[int, int | None]]] = field(default_factory=dict)
    fails: bool = False
    open_sessions: int = 0

    NVMLError = FakeNvmlError

    def nvmlInit(self) -> None:
        if self.fails:
            raise FakeNvmlError("NVML Shared Library Not Found")
        self.open_sessions += 1

    def nvmlShutdown(self) -> None:
        self.open_sessions -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.devices):
            raise FakeNvmlError("Invalid Argument")
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return self.devices[handle][0].encode()

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        total = self.devices[handle][1]
        return SimpleNamespace(total=total, used=0, free=total)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self.processes.get(handle, [])]


@dataclass
class FakeTorchCuda:
    """Stands in for `torch.cuda`'s device queries."""

    devices: list[tuple[str, int]] = field(default_factory=list)
    broken: bool = False

    def is_available(self) -> bool:
        if self.broken:
            raise RuntimeError("CUDA driver initialization failed")
        return bool(self.devices)

    def device_count(self) -> int:
        return len(self.devices)

    def get_device_properties(self, index: int) -> SimpleNamespace:
        name, total = self.devices[index]
        return SimpleNamespace(name=name, total_memory=total)


FOUR_GPUS = [("H200", 24 * GIB), ("H200", 16 * GIB), ("L4", 8 * GIB), ("H200", 16 * GIB)]


def machine(cores: int, devices: list[tuple[str, int]]) -> Machine:
    return Machine.with_devices(cores, gpu_devices(FakeNvml(devices)))


def space_of(document: dict[str, Any], on: Machine, gpu_memory_per_worker: int | None = None) -> SearchSpace:
    return SearchSpace.from_file_model(SpaceFile.model_validate(document), on, gpu_memory_per_worker)


@pytest.fixture
def no_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


# --- the device list ---------------------------------------------------------------------------


@pytest.mark.usefixtures("no_cuda_visible_devices")
def test_nvml_lists_every_device_with_its_memory_and_is_shut_down() -> None:
    nvml = FakeNvml(FOUR_GPUS)
    devices = gpu_devices(nvml, FakeTorchCuda([("ignored", 1)]))
    assert devices == [GpuDevice(i, name, total) for i, (name, total) in enumerate(FOUR_GPUS)]
    assert nvml.open_sessions == 0


def test_cuda_visible_devices_selects_and_renumbers_nvml_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    devices = gpu_devices(FakeNvml(FOUR_GPUS))
    assert [(d.index, d.name, d.memory_total_bytes) for d in devices] == [
        (0, "L4", 8 * GIB),
        (1, "H200", 24 * GIB),
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, [0, 1, 2, 3]), ("", []), ("3,1", [3, 1]), ("1,7,2", [1]), ("0,-1,2", [0]), ("GPU-5a1b", None)],
)
def test_visible_indices_follow_cuda_rules(raw: str | None, expected: list[int] | None) -> None:
    assert visible_indices(raw, 4) == expected


def test_uuid_entries_fall_back_to_torch_which_resolves_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5a1b")
    assert gpu_devices(FakeNvml(FOUR_GPUS), FakeTorchCuda([("A10", 22 * GIB)])) == [
        GpuDevice(0, "A10", 22 * GIB)
    ]


@pytest.mark.usefixtures("no_cuda_visible_devices")
def test_without_nvml_torch_answers_and_without_either_there_are_no_gpus() -> None:
    failing = FakeNvml(FOUR_GPUS, fails=True)
    assert gpu_devices(failing, FakeTorchCuda([("T4", 15 * GIB)])) == [GpuDevice(0, "T4", 15 * GIB)]
    assert gpu_devices(failing, FakeTorchCuda()) == []
    assert gpu_devices(failing, FakeTorchCuda(broken=True)) == []
    assert failing.open_sessions == 0


def test_process_gpu_memory_sums_this_process_over_devices() -> None:
    nvml = FakeNvml(FOUR_GPUS[:2], {0: [(41, 300 * MIB), (7, 5 * GIB)], 1: [(41, 200 * MIB)]})
    assert process_gpu_memory_bytes(41, nvml) == 500 * MIB
    assert process_gpu_memory_bytes(99, nvml) is None, "not listed (another PID namespace): unknown"
    assert process_gpu_memory_bytes(41, FakeNvml(fails=True)) is None
    assert nvml.open_sessions == 0


@pytest.mark.usefixtures("no_cuda_visible_devices")
def test_the_machine_is_detected_from_the_device_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tuner.space.gpu_devices", lambda: gpu_devices(FakeNvml(FOUR_GPUS)))
    detected = Machine.detect()
    assert detected.gpus == 4
    assert detected.gpu_memory_bytes == tuple(total for _, total in FOUR_GPUS)
    with pytest.raises(ValueError, match="gpu_memory_bytes lists 1 devices for gpus=2"):
        Machine(4, 2, (GIB,))


# --- workers per GPU and placement -------------------------------------------------------------


@pytest.mark.parametrize("gpus", [1, 2, 3, 4])
@pytest.mark.parametrize("workers", range(1, 9))
def test_round_robin_placement_gives_each_gpu_a_fair_share(workers: int, gpus: int) -> None:
    shares = Counter(worker_device(gpus, index, cuda_devices=gpus) for index in range(1, workers + 1))
    assert sum(shares.values()) == workers
    assert len(shares) == min(workers, gpus), "every GPU gets a worker before any gets two"
    assert set(shares.values()) <= {workers // gpus, math.ceil(workers / gpus)}
    assert max(shares.values()) == Config(workers=workers, gpus=gpus).workers_per_gpu


def test_workers_per_gpu_is_none_without_gpus() -> None:
    assert Config(workers=3, gpus=0).workers_per_gpu is None
    assert Config(workers=5, gpus=2).workers_per_gpu == 3


@pytest.mark.usefixtures("no_cuda_visible_devices")
def test_the_workers_per_gpu_list_filters_gpu_configs_and_adds_the_counts_that_give_it() -> None:
    space = space_of(
        {"service": "embedding", "max_batch_size": [8], "max_latency_ms": [100], "workers": [1, 2],
         "threads": [1], "variant": ["fp32"], "workers_per_gpu": [2]},
        machine(8, FOUR_GPUS[:2]),
    )  # fmt: skip
    assert space.dim("workers").values == (1, 2, 4), "2 GPUs x 2 workers each adds workers=4"
    gpu_configs = [c for c in space.configs if c.gpus]
    assert {(c.workers, c.gpus) for c in gpu_configs} == {(2, 1), (4, 2)}
    assert all(c.workers_per_gpu == 2 for c in gpu_configs)
    reason = space.why_illegal(Config(8, 100, 2, 1, 2, "fp32")) or ""
    assert "workers per GPU = 1 (workers=2, gpus=2) is not in workers_per_gpu [2]" in reason
    assert {c.workers for c in space.configs if not c.gpus} == {1, 2, 4}, "CPU configs are not filtered"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([0, 2], "workers_per_gpu: .*>= 1"),
        ([], "workers_per_gpu: .*at least one"),
        ("many", "workers_per_gpu"),
    ],
)
def test_bad_workers_per_gpu_names_the_field(value: object, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        parse_space({"service": "digits", "workers_per_gpu": value}, machine=Machine(2, 0))


def test_bad_headroom_names_the_field() -> None:
    with pytest.raises(SpaceError, match="gpu_memory_headroom"):
        parse_space({"service": "digits", "gpu_memory_headroom": 1.5}, machine=Machine(2, 0))


# --- variants and devices ----------------------------------------------------------------------


@pytest.mark.usefixtures("no_cuda_visible_devices")
def test_int8_on_a_gpu_and_half_precision_on_a_cpu_are_illegal_with_the_reason() -> None:
    space = space_of(
        {"service": "embedding", "max_batch_size": [8], "max_latency_ms": [100], "workers": [1],
         "threads": [1], "gpus": [0, 1], "variant": ["fp32", "int8", "fp16", "bf16"]},
        machine(2, FOUR_GPUS[:1]),
    )  # fmt: skip
    assert {(c.variant, c.gpus) for c in space.configs} == {
        ("fp32", 0), ("fp32", 1), ("int8", 0), ("fp16", 1), ("bf16", 1),
    }  # fmt: skip
    int8 = space.why_illegal(Config(8, 100, 1, 1, 1, "int8")) or ""
    assert "int8 (dynamic quantization) runs on CPU only" in int8 and "gpus=1" in int8
    assert "fp16 (half precision) needs a GPU" in (space.why_illegal(Config(8, 100, 1, 1, 0, "fp16")) or "")
    assert "bf16 (bfloat16) needs a GPU" in (space.why_illegal(Config(8, 100, 1, 1, 0, "bf16")) or "")


def test_a_half_precision_space_on_a_cpu_has_no_legal_config() -> None:
    with pytest.raises(SpaceError, match="no legal config"):
        parse_space({"service": "embedding", "variant": ["fp16"]}, machine=Machine(2, 0))


@pytest.fixture
def gpu_variants_in_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store with an eligible int8 (CPU), eligible fp16/bf16 (GPU) and an ineligible pruned entry."""

    stored = {
        "minilm-int8": {"eligible": True},
        "minilm-pruned": {"eligible": False},
        "minilm-fp16": {"eligible": True, "device": "cuda"},
        "minilm-bf16": {"eligible": True, "device": "cuda"},
    }

    fake_model_store(monkeypatch, stored)


@pytest.mark.usefixtures("gpu_variants_in_store", "no_cuda_visible_devices")
def test_variant_auto_offers_half_precision_only_where_a_gpu_is_used() -> None:
    cpu = parse_space({"service": "embedding", "variant": "auto"}, machine=Machine(2, 0))
    assert cpu.dim("variant").values == ("fp32", "int8")
    gpu = parse_space({"service": "embedding", "variant": "auto"}, machine=machine(2, FOUR_GPUS[:1]))
    assert gpu.dim("variant").values == ("fp32", "int8", "bf16", "fp16")
    assert {c.variant for c in gpu.configs if c.gpus} == {"fp32", "bf16", "fp16"}
    cpu_only = parse_space({"service": "embedding", "gpus": [0]}, machine=machine(2, FOUR_GPUS[:1]))
    assert cpu_only.dim("variant").values == ("fp32", "int8"), "no GPU in the space: no GPU variant"


# --- the GPU memory filter ---------------------------------------------------------------------

GPU_DOC = {"service": "embedding", "max_batch_size": [8], "max_latency_ms": [100], "threads": [1],
           "variant": ["fp32"]}  # fmt: skip


@pytest.mark.usefixtures("no_cuda_visible_devices")
def test_the_memory_filter_keeps_the_boundary_and_drops_one_byte_more() -> None:
    on = machine(16, [("A", 10 * GIB)])
    document = {**GPU_DOC, "workers": [1, 2, 3], "gpus": [1], "gpu_memory_headroom": 0.5}
    fits = space_of(document, on, gpu_memory_per_worker=5 * GIB // 2)  # 2 x 2.5 GiB = 50% of 10 GiB
    assert [c.workers for c in fits.configs] == [1, 2]
    over = space_of(document, on, gpu_memory_per_worker=5 * GIB // 2 + 1)
    assert [c.workers for c in over.configs] == [1]
    reason = over.why_illegal(Config(8, 100, 2, 1, 1, "fp32")) or ""
    assert "2 workers per GPU x 2560 MiB = 5120 MiB > 50% of 10240 MiB (the smallest of gpus=1)" in reason


@pytest.mark.usefixtures("no_cuda_visible_devices")
def test_the_smallest_of_the_used_gpus_bounds_the_workers_per_gpu() -> None:
    on = machine(16, FOUR_GPUS)  # 24, 16, 8, 16 GiB
    space = space_of({**GPU_DOC, "workers": list(range(1, 17)), "gpus": "auto"}, on, 3 * GIB)
    most = {g: max(c.workers_per_gpu or 0 for c in space.configs if c.gpus == g) for g in (1, 2, 3, 4)}
    assert most == {1: 7, 2: 4, 3: 2, 4: 2}, "0.9 x 24, 16, 8, 8 GiB over 3 GiB per worker"
    assert any(c.gpus == 0 and c.workers == 16 for c in space.configs), "no GPU memory on a CPU config"
    reason = space.why_illegal(Config(8, 100, 7, 1, 3, "fp32")) or ""
    assert "3 workers per GPU x 3072 MiB = 9216 MiB > 90% of 8192 MiB (the smallest of gpus=3)" in reason


@pytest.mark.usefixtures("no_cuda_visible_devices")
def test_the_profile_figure_is_applied_to_a_built_space_and_shown() -> None:
    space = space_of({**GPU_DOC, "workers": [1, 2, 4], "gpus": [1]}, machine(8, [("A", 8 * GIB)]))
    assert len(space) == 3 and space.describe()["gpu_memory_per_worker_bytes"] is None
    filtered = space.with_gpu_memory_per_worker(3 * GIB)
    assert [c.workers for c in filtered.configs] == [1, 2]
    assert filtered.describe()["gpu_memory_per_worker_bytes"] == 3 * GIB
    assert filtered.describe()["gpu_memory_bytes"] == [8 * GIB]
    with pytest.raises(SpaceError, match=r"no legal config.*9216 MiB per GPU worker"):
        space.with_gpu_memory_per_worker(9 * GIB)


def test_without_device_memory_nothing_is_filtered() -> None:
    space = space_of({**GPU_DOC, "workers": [1, 2, 4], "gpus": [1]}, Machine(8, 1), 100 * GIB)
    assert [c.workers for c in space.configs] == [1, 2, 4]


# --- spaces derived with and without GPUs ------------------------------------------------------


@pytest.fixture
def empty_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.models import store

    def not_found(base: str, variant: str = "fp32", tag: str | None = None) -> object:
        raise store.ModelNotFound(store.model_name(base, variant))

    monkeypatch.setattr(store, "get_model", not_found)


def ratios_by_gpus(space: SearchSpace) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for config in space.configs:
        if config.workers_per_gpu is not None:
            found.setdefault(config.gpus, set()).add(config.workers_per_gpu)
    return found


@pytest.mark.usefixtures("empty_store", "no_cuda_visible_devices")
@pytest.mark.parametrize("build", [derived_space, default_space])
def test_spaces_on_gpus_offer_one_two_or_four_workers_per_gpu(build: Callable[..., SearchSpace]) -> None:
    on = machine(8, FOUR_GPUS)
    space = build("digits", on)
    assert space.dim("gpus").values == (0, 1, 2, 3, 4)
    expected = {g: {k for k in (1, 2, 4) if g * k <= 8} for g in (1, 2, 3, 4)}
    assert ratios_by_gpus(space) == expected
    assert max(space.dim("workers").values) <= 8, "bounded by the cores"


@pytest.mark.usefixtures("empty_store")
@pytest.mark.parametrize("build", [derived_space, default_space])
def test_spaces_without_gpus_are_unchanged_by_the_gpu_rules(build: Callable[..., SearchSpace]) -> None:
    space = build("digits", Machine(8, 0))
    assert space.dim("gpus").values == (0,)
    listed = pow2(1, 8) if build is derived_space else (1, 2)
    assert space.dim("workers").values == listed
    assert ratios_by_gpus(space) == {}


# --- the profile's GPU memory per worker -------------------------------------------------------


@dataclass
class FakeAllocator:
    """Stands in for torch.cuda's caching allocator: a runner reserves weights when built and
    activations per item when run; the context is what NVML sees beyond the allocator."""

    available: bool = True
    reserved: int = 64 * MIB  # held by earlier work in this process
    peak: int = 0
    context: int = 400 * MIB
    calls: list[str] = field(default_factory=list)

    def is_available(self) -> bool:
        return self.available

    def empty_cache(self) -> None:
        self.calls.append("empty_cache")

    def reset_peak_memory_stats(self, device: str) -> None:
        self.peak = self.reserved

    def memory_reserved(self, device: str) -> int:
        return self.reserved

    def max_memory_reserved(self, device: str) -> int:
        return self.peak

    def synchronize(self, device: str) -> None:
        self.calls.append(f"synchronize {device}")

    def reserve(self, nbytes: int) -> None:
        self.reserved += nbytes
        self.peak = max(self.peak, self.reserved)

    def process_memory(self) -> int:
        return self.reserved + self.context


WEIGHTS, PER_ITEM = 90 * MIB, 2 * MIB


def fake_runner_factory(allocator: FakeAllocator, seen: list[tuple[str, str, int]]) -> Callable[..., Any]:
    def make_runner(variant: str, seed: int, device: str = "cpu") -> Callable[[int, int], None]:
        allocator.reserve(WEIGHTS)

        def run(n: int, repeat: int) -> None:
            seen.append((variant, device, n))
            allocator.reserve(PER_ITEM * n)
            allocator.reserved -= PER_ITEM * n  # freed, but the peak stays

        return run

    return make_runner


def test_worker_gpu_memory_is_the_allocator_peak_plus_the_cuda_context() -> None:
    allocator, seen = FakeAllocator(), []
    measured = worker_gpu_memory(
        fake_runner_factory(allocator, seen),
        "fp32",
        64,
        cuda=allocator,
        process_memory=allocator.process_memory,
    )
    assert measured == WEIGHTS + 64 * PER_ITEM + allocator.context
    assert seen == [("fp32", "cuda:0", 64)]
    assert "synchronize cuda:0" in allocator.calls


def test_without_nvml_a_default_context_allowance_is_added() -> None:
    allocator = FakeAllocator()
    measured = worker_gpu_memory(fake_runner_factory(allocator, []), "fp32", 8, allocator, lambda: None)
    assert measured == WEIGHTS + 8 * PER_ITEM + DEFAULT_CUDA_CONTEXT_BYTES


def test_no_cuda_or_no_device_parameter_measures_nothing() -> None:
    allocator, seen = FakeAllocator(available=False), []
    assert worker_gpu_memory(fake_runner_factory(allocator, seen), "fp32", 8, allocator) is None
    assert seen == [] and allocator.reserved == 64 * MIB, "no model was loaded"

    def cpu_only_runner(variant: str, seed: int) -> Callable[[int, int], None]:
        raise AssertionError("a runner without a device is not built for the GPU")

    assert worker_gpu_memory(cpu_only_runner, "fp32", 8, FakeAllocator()) is None


@pytest.fixture
def instant_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    def make_runner(variant: str, seed: int = 0, device: str = "cpu") -> Callable[[int, int], None]:
        return lambda n, repeat: None

    monkeypatch.setattr("tuner.profile.resolve", lambda reference: make_runner)


@pytest.mark.usefixtures("instant_runner")
def test_the_profile_measures_one_worker_once_with_the_largest_batch(tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []

    def probe(make_runner: Callable[..., Any], variant: str, batch: int) -> int:
        calls.append((variant, batch))
        return 1234 * MIB

    profile = profile_service(
        "digits", variants=("int8", "fp32", "fp16"), threads=(1,), batch_sizes=(1, 4), repeats=1,
        gpu_batch=128, gpu_memory=probe,
    )  # fmt: skip
    assert calls == [("fp32", 128)], "once, with the largest weights and the space's largest batch"
    assert profile.gpu_memory_per_worker_bytes == 1234 * MIB
    profile.save(tmp_path / "profile.json")
    assert Profile.load(tmp_path / "profile.json").gpu_memory_per_worker_bytes == 1234 * MIB
    cpu_only = profile_service("digits", ("int8",), (1,), (1, 4), 1, gpu_memory=probe)
    assert cpu_only.gpu_memory_per_worker_bytes is None and len(calls) == 1, "int8 never runs on a GPU"


@pytest.mark.usefixtures("instant_runner")
def test_a_cpu_profile_records_no_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    profile = profile_service("digits", threads=(1,), batch_sizes=(1, 4), repeats=1)
    assert profile.gpu_memory_per_worker_bytes is None


def test_old_profiles_load_and_pooled_profiles_keep_the_largest_worker() -> None:
    old = {"service": "digits", "cores": 2, "points": {}}
    assert Profile.from_dict(old).gpu_memory_per_worker_bytes is None
    small = Profile("digits", 2, {}, gpu_memory_per_worker_bytes=500 * MIB)
    large = Profile("digits", 2, {}, gpu_memory_per_worker_bytes=700 * MIB)
    assert pooled_profile([small, Profile("digits", 2, {}), large]).gpu_memory_per_worker_bytes == 700 * MIB
