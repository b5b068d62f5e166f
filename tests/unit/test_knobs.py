import json

import pytest
from pydantic import ValidationError

from services.knobs import (
    ServeKnobs,
    configured_gpus,
    configured_workers,
    threads_per_worker,
    worker_device,
)


def test_knobs_parse_cli_strings_like_bentoml_arg() -> None:
    knobs = ServeKnobs(max_batch_size="16", max_latency_ms="250", threads="2", variant="fp32")  # type: ignore[arg-type]
    assert (knobs.max_batch_size, knobs.max_latency_ms, knobs.threads) == (16, 250, 2)


@pytest.mark.parametrize("threads", ["auto", "", "none"])
def test_threads_auto_means_unset(threads: str) -> None:
    assert ServeKnobs(threads=threads).threads is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"max_batch_size": 1},
        {"max_batch_size": "many"},
        {"max_latency_ms": 0},
        {"threads": 0},
        {"variant": "int4"},
        {"unknown_knob": 3},
    ],
)
def test_bad_knobs_are_rejected_with_the_field_named(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as info:
        ServeKnobs(**bad)  # type: ignore[arg-type]
    assert next(iter(bad)) in str(info.value)


def test_threads_default_to_cores_divided_by_workers() -> None:
    knobs = ServeKnobs()
    assert threads_per_worker(knobs, workers=1, cores=2) == 2
    assert threads_per_worker(knobs, workers=2, cores=2) == 1
    assert threads_per_worker(knobs, workers=4, cores=2) == 1
    assert threads_per_worker(ServeKnobs(threads=3), workers=2, cores=2) == 3


def test_worker_device_round_robins_over_gpus_and_falls_back_to_cpu() -> None:
    assert worker_device(gpus=0, worker_index=1, cuda_devices=4) == "cpu"
    assert worker_device(gpus=2, worker_index=1, cuda_devices=0) == "cpu"
    assert [worker_device(2, i, 4) for i in (1, 2, 3, 4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]


def test_workers_and_gpus_read_from_config_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {"services": {"TextEmbedding": {"workers": 3, "resources": {"gpu": 2}}}}
    monkeypatch.setenv("BENTOML_CONFIG_OVERRIDES", json.dumps(overrides))
    assert configured_workers("TextEmbedding") == 3
    assert configured_gpus("TextEmbedding") == 2
    assert configured_workers("DigitsClassifier") == 1
    monkeypatch.setenv("BENTOML_CONFIG_OVERRIDES", "not json")
    assert configured_workers("TextEmbedding") == 1
    assert configured_gpus("TextEmbedding") == 0
