"""The tuner's GPU wiring without a GPU: the profile times GPU variants on cuda when told a GPU
is there, and the study's space is fitted with one worker's GPU memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.devices import GpuDevice
from tuner.profile import Profile, profile_key, profile_service
from tuner.space import Machine, SearchSpace
from tuner.spacefile import SpaceFile
from tuner.tuning import TuneOptions, gpu_fitted

GIB = 1 << 30


def test_gpu_variants_are_timed_on_cuda_and_cpu_ones_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, str]] = []

    def make_runner(variant: str, seed: int = 0, device: str = "cpu") -> Callable[[int, int], None]:
        made.append((variant, device))
        return lambda n, repeat: None

    monkeypatch.setattr("tuner.profile.resolve", lambda reference: make_runner)
    variants = ("fp32", "int8", "fp16")
    profile = profile_service(
        "digits",
        variants,
        threads=(1,),
        batch_sizes=(1, 4),
        repeats=1,
        gpu_memory=lambda *a: GIB,
        on_gpu=True,
    )
    expected = [("fp32", "cpu"), ("int8", "cpu"), ("fp32", "gpu"), ("fp16", "gpu")]
    assert set(profile.points) == {profile_key(variant, device) for variant, device in expected}
    assert ("fp16", "cpu") not in made and ("int8", "cuda:0") not in made
    cpu = profile_service("digits", variants, (1,), (1, 4), 1, gpu_memory=lambda *a: None, on_gpu=False)
    assert all(key.endswith("@cpu") for key in cpu.points)


def gpu_space(memory: tuple[int, ...]) -> SearchSpace:
    document: dict[str, Any] = {
        "service": "digits", "max_batch_size": [8], "max_latency_ms": [100], "workers": [1, 2, 4],
        "threads": [1], "gpus": [1], "variant": ["fp32"],
    }  # fmt: skip
    devices = [GpuDevice(i, "fake", total) for i, total in enumerate(memory)]
    return SearchSpace.from_file_model(SpaceFile.model_validate(document), Machine.with_devices(8, devices))


def test_the_study_space_drops_configs_whose_workers_do_not_fit_the_gpu(tmp_path: Path) -> None:
    said: list[str] = []
    options = TuneOptions(service="digits", out=tmp_path)
    space = gpu_space((10 * GIB,))
    assert [c.workers for c in space.configs] == [1, 2, 4]
    profile = Profile("digits", 8, {}, gpu_memory_per_worker_bytes=3 * GIB)
    fitted = gpu_fitted(options, space, profile, said.append)
    assert [c.workers for c in fitted.configs] == [1, 2], "3 workers x 3 GiB > 90% of 10 GiB"
    assert any("3.00 GiB" in line for line in said)


def test_without_a_measured_figure_the_space_is_kept_and_the_user_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    monkeypatch.setattr("tuner.profile.worker_gpu_memory", lambda *a, **k: None)
    space = gpu_space((10 * GIB,))
    kept = gpu_fitted(TuneOptions(service="digits", out=tmp_path), space, None, said.append)
    assert kept is space and any("unknown" in line for line in said)


def test_the_variants_table_says_gpu_only_where_there_is_no_cpu_throughput() -> None:
    from rich.console import Console

    from tuner.commands.variants import variants_table

    rows = [
        {"variant": "fp32", "quality": 1.0, "floor": 0.98, "throughput_bs1": 60.0, "throughput_bs32": 250.0,
         "eligible": True},
        {"variant": "fp16", "quality": 0.9999, "floor": 0.98, "throughput_bs1": None, "throughput_bs32": None,
         "eligible": True},
    ]  # fmt: skip
    console = Console(record=True, width=200)
    console.print(variants_table("minilm", rows))
    lines = console.export_text().splitlines()
    assert any("fp32" in line and "250.0" in line for line in lines)
    assert any("fp16" in line and line.count("GPU only") == 2 for line in lines)


def test_the_baselines_use_one_gpu_where_the_machine_has_any() -> None:
    from tuner.tuning import bentoml_default_config, naive_config

    assert naive_config(8).gpus == 0 and bentoml_default_config(8).gpus == 0
    assert naive_config(8, gpus=4).gpus == 1 and naive_config(8, gpus=4).workers == 1
    assert bentoml_default_config(8, gpus=2).gpus == 1
