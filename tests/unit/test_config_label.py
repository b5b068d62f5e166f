"""A config as people read it: without the knobs its service cannot take."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from core.registry import ServiceSpec, register, service_spec, unregister
from tests.fakes import FakeDeployer, FakeLoadRunner, smooth_surface
from tuner.commands.tune import PlainProgress
from tuner.objective import SLO, Objective
from tuner.space import Config, Machine, default_space
from tuner.store import StudyStore
from tuner.strategies import make_strategy
from tuner.study import Study
from tuner.trial import LoadPlan, TrialRunner

PLAIN = "plain-api"  # a user's service whose endpoint has no batching and no variants


@pytest.fixture
def plain_service() -> Iterator[ServiceSpec]:
    spec = replace(service_spec("noop"), key=PLAIN, batchable=False, written_batching=None)
    register(spec)
    try:
        yield spec
    finally:
        unregister(PLAIN)


def test_the_label_leaves_out_batching_a_non_batchable_endpoint_cannot_take(
    plain_service: ServiceSpec,
) -> None:
    config = Config(32, 100, 2, 1, 0)
    assert config.key == "b32-l100-w2-t1-g0-fp32"
    assert config.label(plain_service) == "w2-t1-g0"
    assert config.label(replace(plain_service, batchable=True)) == "b32-l100-w2-t1-g0"
    alternatives = replace(plain_service, variant_args=("size=small", "size=large"))
    assert config.label(alternatives) == "w2-t1-g0", "fp32 stands for no --arg: the service as written"
    assert config.model_copy(update={"variant": "size=large"}).label(alternatives) == "w2-t1-g0-size=large"
    assert config.label(service_spec("embedding")) == config.key  # batchable, with stored variants
    assert config.label() == config.key


def test_the_naive_endpoint_is_shown_without_batching() -> None:
    """A shipped service's naive baseline loads its unbatched twin of the tuned endpoint."""
    spec, config = service_spec("embedding"), Config(2, 1000, 1, 2, 0)
    assert spec.naive_endpoint is not None and spec.batches() and not spec.batches(spec.naive_endpoint)
    assert config.label(spec, spec.naive_endpoint) == "w1-t2-g0-fp32"
    assert config.label(spec, "/" + spec.naive_endpoint) == "w1-t2-g0-fp32"
    assert config.label(spec, spec.endpoint) == config.label(spec, "/some_other_api") == config.key


def test_a_studys_records_and_progress_lines_show_the_label_and_keep_the_key(
    tmp_path: Path, plain_service: ServiceSpec
) -> None:
    slo = SLO(latency_ms=200)
    deployer = FakeDeployer()
    plan = LoadPlan.users([2, 4, 8], step_s=5, warmup_s=2)
    runner = TrialRunner(deployer, FakeLoadRunner(deployer, smooth_surface), plan, slo, PLAIN)
    space = default_space("embedding", Machine(cores=2, gpus=0))
    store = StudyStore(tmp_path)
    store.open({"seed": 1}, resume=False)
    buffer = io.StringIO()
    progress = PlainProgress(3, slo, Console(file=buffer, force_terminal=False, width=200))
    study = Study(
        space, make_strategy("grid", space, 0), Objective(slo), runner, store, 1, 0, 0, progress.events()
    )
    config = Config(32, 100, 1, 2, 0)
    record = study.measure(config, "trial")
    assert record.key == config.key, "the key stays the record's identity"
    assert record.shown == "w1-t2-g0"
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "#0 trial 1/3 w1-t2-g0: started"
    assert lines[1].startswith("#0 trial w1-t2-g0: ")
    assert "b32" not in buffer.getvalue()
