"""The performance-surface simulator: monotonic properties, shedding, surfaces, validation."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from tuner.profile import BatchTime
from tuner.simulate import (
    MINILM_CPU,
    MINILM_GPU,
    RecordedSurface,
    ServerModel,
    analytic_goodput,
    max_goodput,
    optimum,
    simulate_load,
    small_cpu_surface,
    validate,
)
from tuner.space import Config

REQUESTS = 600
BENCH_SURFACES = sorted((Path(__file__).resolve().parents[2] / "bench" / "surfaces").glob("*.json"))


def cpu_model(cores: int, **changes: object) -> ServerModel:
    model = ServerModel({("fp32", "cpu"): MINILM_CPU}, cores=cores, request_overhead_s=0.0025)
    return dataclasses.replace(model, **changes)  # type: ignore[arg-type]


def goodput(model: ServerModel, config: Config) -> float:
    return max_goodput(model, config, requests=REQUESTS).goodput_rps


FITTING = [  # workers x threads <= 2: never oversubscribed on 2 or more cores
    Config(batch, latency, workers, threads)
    for batch in (4, 16, 64)
    for latency in (50, 200, 500)
    for workers, threads in ((1, 1), (1, 2), (2, 1))
]


@pytest.mark.parametrize("config", FITTING, ids=lambda c: c.key)
def test_more_cores_are_never_slower_without_oversubscription(config: Config) -> None:
    values = [goodput(cpu_model(cores), config) for cores in (2, 3, 4, 8)]
    assert values == sorted(values), values


def test_oversubscribed_threads_are_slower_than_fitting_ones() -> None:
    model = cpu_model(2)
    fitting = goodput(model, Config(16, 200, 2, 1))
    oversubscribed = goodput(model, Config(16, 200, 2, 2))
    assert oversubscribed < 0.8 * fitting


def test_oversubscription_penalty_grows_with_its_exponent() -> None:
    config = Config(16, 200, 2, 2)
    mild = goodput(cpu_model(2, oversubscription=1.0), config)
    harsh = goodput(cpu_model(2, oversubscription=2.0), config)
    assert harsh < mild


def test_shedding_grows_as_the_deadline_drops_below_the_service_time() -> None:
    model = cpu_model(2)
    config = Config(32, 500, 1, 2)
    batch_ms = MINILM_CPU.seconds(8, 2) * 1000  # the batch this load forms, roughly
    rate = 0.8 * goodput(model, config)
    shed = []
    for latency in (500, 200, 100, 50, 25, 10):
        result = simulate_load(model, config.model_copy(update={"max_latency_ms": latency}), rate, REQUESTS)
        shed.append(result.failure_ratio)
    assert shed == sorted(shed), shed
    assert shed[0] <= model.max_failure_ratio
    assert batch_ms > 10 and shed[-1] > 0.3  # 10 ms is below one batch: many requests are shed


def test_a_deadline_below_one_batch_has_no_goodput_at_high_batch_load() -> None:
    model = cpu_model(2)
    assert goodput(model, Config(32, 10, 1, 2)) < 0.3 * goodput(model, Config(32, 200, 1, 2))


def test_batching_raises_goodput_when_the_deadline_allows_it() -> None:
    model = cpu_model(2)
    assert goodput(model, Config(16, 500, 1, 2)) > 1.2 * goodput(model, Config(2, 500, 1, 2))


def test_per_request_overhead_caps_goodput() -> None:
    cheap = BatchTime(cpu0=0.0001, cpu1=0.00001)
    model = ServerModel({("fp32", "cpu"): cheap}, cores=8, request_overhead_s=0.004)
    value = goodput(model, Config(32, 200, 1, 1))
    assert 0.5 * 250 < value <= 250  # one event loop: at most 1 / 4 ms


def test_more_gpus_are_never_slower_for_the_same_workers() -> None:
    model = ServerModel(
        {("fp32", "cpu"): MINILM_CPU, ("fp32", "gpu"): MINILM_GPU}, cores=8, gpus=4, request_overhead_s=0.0025
    )
    values = [goodput(model, Config(32, 200, 4, 1, gpus)) for gpus in (1, 2, 4)]
    assert values == sorted(values) and values[-1] > values[0]
    assert values[0] > goodput(model, Config(32, 200, 4, 1, 0))  # any GPU beats the CPU here


def test_the_noiseless_surface_is_deterministic_and_measurements_are_noisy() -> None:
    first, second = small_cpu_surface(requests=REQUESTS), small_cpu_surface(requests=REQUESTS)
    config = first.space.configs[7]
    assert first.truth(config) == second.truth(config) > 0
    measured = [first.measure(config, random.Random(seed)) for seed in range(20)]
    assert len({round(m or 0.0, 6) for m in measured}) > 15
    again = [first.measure(config, random.Random(seed)) for seed in range(20)]
    assert measured == again


def test_an_unknown_variant_names_itself() -> None:
    with pytest.raises(ValueError, match="int8"):
        cpu_model(2).batch_time(Config(8, 100, 1, 1, 0, "int8"))


def test_analytic_estimate_ranks_like_the_queue_simulation() -> None:
    from scipy.stats import spearmanr

    surface = small_cpu_surface(requests=REQUESTS)
    configs = surface.space.configs
    rho = spearmanr(
        [surface.truth(c) for c in configs], [analytic_goodput(surface.model, c) for c in configs]
    )
    assert rho.statistic > 0.8


def test_validate_reports_zero_error_for_the_model_itself_and_the_scale_of_a_wrong_one() -> None:
    model = cpu_model(2)
    configs = [Config(8, 200, 1, 2), Config(16, 500, 2, 1), Config(32, 100, 1, 1)]
    truth = [(c, goodput(model, c)) for c in configs]
    exact = validate(model, truth, predict=lambda m, c: goodput(m, c))
    assert exact.median_abs_error == 0 and exact.rank_correlation == pytest.approx(1.0)
    slower = dataclasses.replace(model, batch_times={k: v.scaled(2.0) for k, v in model.batch_times.items()})
    wrong = validate(slower, truth, predict=lambda m, c: goodput(m, c))
    assert 0.2 < wrong.median_abs_error < 0.8
    assert "median |error|" in wrong.summary()


def recorded_document(surface_repeats: int = 3) -> dict[str, object]:
    surface = small_cpu_surface(requests=REQUESTS)
    rng = random.Random(1)
    points = [
        {
            "config": c.to_dict(),
            "goodput_rps": [surface.measure(c, rng) or 0.0 for _ in range(surface_repeats)],
        }
        for c in surface.space.configs
    ]
    dims = {d.name: list(d.values) for d in surface.space.dimensions}
    space = {"service": "embedding", "cores": 2, "gpus": 0, "dimensions": dims}
    return {"name": "tiny", "space": space, "points": points, "meta": {"how": "simulated for a test"}}


def test_a_recorded_surface_loads_and_replays_its_repeats(tmp_path: Path) -> None:
    document = recorded_document()
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(document))
    surface = RecordedSurface.load(path)
    assert len(surface.space) == len(document["points"]) == 48  # type: ignore[arg-type]
    config = surface.space.configs[0]
    repeats = surface.repeats[config.key]
    assert surface.truth(config) == pytest.approx(sum(repeats) / len(repeats))
    assert surface.measure(config, random.Random(0)) in repeats
    best, value = optimum(surface)
    assert value == max(surface.truth(c) for c in surface.space.configs) == surface.truth(best)
    assert surface.meta == {"how": "simulated for a test"} and surface.profile() is None


def test_a_recorded_surface_with_a_missing_config_is_refused(tmp_path: Path) -> None:
    document = recorded_document()
    document["points"] = document["points"][1:]  # type: ignore[index]
    path = tmp_path / "gap.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="no measurement for 1 configs"):
        RecordedSurface.load(path)


def test_a_file_that_is_not_a_surface_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"points": []}))
    with pytest.raises(ValueError, match="not a recorded surface"):
        RecordedSurface.load(path)


@pytest.mark.parametrize("path", BENCH_SURFACES, ids=lambda p: p.name)
def test_the_shipped_recorded_surfaces_load(path: Path) -> None:
    surface = RecordedSurface.load(path)
    assert len(surface.space) >= 48
    assert optimum(surface)[1] > 0
