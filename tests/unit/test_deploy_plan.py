"""Sizing a deployment from the winner's measurements: resources and HPA numbers."""

from __future__ import annotations

import math
from typing import Any

import pytest

from core.serveconfig import ServeConfig, WinnerFile
from deploy.plan import (
    DEFAULT_MAX_REPLICAS,
    MB_PER_WORKER,
    SUPERVISOR_MB,
    DeployOptions,
    SizingError,
    quantity,
    size,
)


def winner(**overrides: Any) -> WinnerFile:
    config = {"service": "embedding", "max_batch_size": 16, "max_latency_ms": 200, "workers": 2, "threads": 1}
    config.update(overrides.pop("config", {}))
    fields: dict[str, Any] = {"slo_p95_ms": 200.0, "goodput_rps": 113.0, "rss_mb": 700.0, "cores": 4}
    fields.update(overrides)
    return WinnerFile(config=ServeConfig(**config), **fields)


def test_cpu_is_workers_times_threads_and_limit_the_measured_machine() -> None:
    sizing = size(winner(config={"workers": 3, "threads": 2}, cores=8), DeployOptions())
    assert (sizing.cpu_request, sizing.cpu_limit) == (6, 8)
    auto = size(winner(config={"workers": 2, "threads": None}, cores=6), DeployOptions())
    assert auto.threads_per_worker == 3 and auto.cpu_request == 6, "threads default: cores // workers"
    unknown = size(winner(config={"workers": 2, "threads": None}, cores=None), DeployOptions())
    assert (unknown.cpu_request, unknown.cpu_limit) == (2, 2)


def test_memory_from_measured_rss_with_headroom() -> None:
    sizing = size(winner(rss_mb=700.0), DeployOptions(memory_headroom=1.3))
    assert sizing.memory_request_mi >= 700 * 1.3 and sizing.memory_request_mi % 16 == 0
    assert sizing.memory_request_mi - 700 * 1.3 < 16
    assert sizing.memory_limit_mi >= sizing.memory_request_mi * 1.5
    assert "measured rss 700" in sizing.memory_source


def test_memory_estimate_without_rss_counts_workers_and_model() -> None:
    small = size(winner(rss_mb=None, config={"workers": 1}), DeployOptions(), model_mb=90)
    large = size(winner(rss_mb=None, config={"workers": 3}), DeployOptions(), model_mb=90)
    expected = (SUPERVISOR_MB + 3 * (MB_PER_WORKER + 90)) * 1.3
    assert large.memory_request_mi >= expected and large.memory_request_mi - expected < 16
    assert large.memory_request_mi > small.memory_request_mi
    assert "estimate" in large.memory_source


def test_hpa_target_and_replicas_follow_goodput_and_peak() -> None:
    sizing = size(winner(goodput_rps=113.0), DeployOptions(peak_rps=1000, safety_factor=0.7))
    assert sizing.target_rps_per_pod == pytest.approx(79.1)
    assert sizing.min_replicas == math.ceil(1000 / 79.1) == 13
    assert sizing.max_replicas == math.ceil(2 * 1000 / 79.1)
    assert sizing.cpu_target_utilization == 70
    small_peak = size(winner(goodput_rps=113.0), DeployOptions(peak_rps=10))
    assert small_peak.min_replicas == 2, "never below the floor that survives one disruption"
    assert small_peak.max_replicas == 3
    no_peak = size(winner(), DeployOptions())
    assert (no_peak.min_replicas, no_peak.max_replicas) == (2, DEFAULT_MAX_REPLICAS)


def test_impossible_sizings_name_the_field() -> None:
    with pytest.raises(SizingError, match="goodput_rps"):
        size(winner(goodput_rps=0.0), DeployOptions())
    with pytest.raises(SizingError, match="max_replicas"):
        size(winner(goodput_rps=100.0), DeployOptions(peak_rps=1000, max_replicas=5))


def test_gpus_and_explanation() -> None:
    sizing = size(winner(config={"gpus": 2}), DeployOptions(peak_rps=300))
    assert sizing.gpus == 2
    text = "\n".join(sizing.explain())
    assert f"= {sizing.target_rps_per_pod:g}" in text and "goodput 113" in text
    assert f"ceil(peak 300 / {sizing.target_rps_per_pod:g})" in text
    assert f"= {sizing.min_replicas}; maxReplicas {sizing.max_replicas}" in text


def test_quantities() -> None:
    assert quantity(2) == "2"
    assert quantity(79.1) == "79100m"
    assert quantity(0.5) == "500m"
