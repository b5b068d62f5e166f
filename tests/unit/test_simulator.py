"""The queueing simulator and the analytic predictor: monotonic properties, shedding, bounds."""

from __future__ import annotations

import dataclasses

import pytest

from bench.presets import MINILM_CPU, MINILM_GPU, Hidden, small_cpu_surface
from tuner.predict import analytic_goodput, analytic_goodputs
from tuner.profile import BatchTime
from tuner.servermodel import ServerModel
from tuner.simulator import goodput_ceiling, max_goodput, simulate_load
from tuner.space import Config

REQUESTS = 600


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


@pytest.mark.parametrize(
    "hidden", [Hidden(), Hidden(0.012, 2.8, 2.5, 0.5, -0.25), Hidden(0.0003, 0.8, 0.8, 2.0, 0.25)], ids=str
)
def test_max_goodput_never_exceeds_its_ceiling(hidden: Hidden) -> None:
    """The benchmark's optimum skips configs whose ceiling is below the best found: this must hold."""
    surface = small_cpu_surface(hidden, requests=REQUESTS)
    for config in surface.space.configs:
        assert surface.truth(config) <= goodput_ceiling(surface.model, config)
    assert max(surface.truth(c) for c in surface.space.configs) > 0


def test_analytic_goodputs_match_one_at_a_time() -> None:
    surface = small_cpu_surface(requests=REQUESTS)
    configs = surface.space.configs[:6]
    many = analytic_goodputs(surface.model, configs)
    assert list(many) == pytest.approx([analytic_goodput(surface.model, c) for c in configs])
    assert len({round(float(v), 3) for v in many}) > 1
