"""bench/serving_efficiency.py: the parts that need no server (winner file, batch figures)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from bench.serving_efficiency import mean_batch, winner_config, winner_step_figures
from core.measurement import LoadStep, StepMeasurement
from tests.fakes import make_step
from tuner.store import TrialRecord

WINNER = """\
config: {service: embedding, max_batch_size: 16, max_latency_ms: 200, workers: 2, variant: int8}
slo_p95_ms: 200
goodput_rps: 233.6
"""


def test_winner_config_fills_threads_from_the_cores(tmp_path: Path) -> None:
    path = tmp_path / "winner.yaml"
    path.write_text(WINNER)
    config = winner_config(path, cores=4)
    assert config.key == "b16-l200-w2-t2-g0-int8"


def test_a_digits_winner_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "winner.yaml"
    path.write_text(WINNER.replace("embedding", "digits").replace("int8", "fp32"))
    with pytest.raises(SystemExit, match="digits"):
        winner_config(path, cores=2)


def record(steps: list[StepMeasurement], best: int | None) -> TrialRecord:
    return TrialRecord(number=0, key="k", config={}, status="ok", best_step=best, steps=steps)


def test_mean_batch_is_requests_over_batches_at_the_best_step() -> None:
    base = make_step(LoadStep(users=4, duration_s=5), 20.0, 80.0, 0.0)
    steps = [
        replace(base, batch_size_hist={"1": 10.0}, requests_per_worker={"1": 10.0}),
        replace(base, batch_size_hist={"4": 20.0, "8": 5.0}, requests_per_worker={"1": 60.0, "2": 65.0},
                generator_cpu=0.12, client_p50_ms=50.0, server_p50_ms=40.0),
    ]  # fmt: skip
    assert mean_batch(record(steps, 1)) == pytest.approx(125 / 25)
    assert mean_batch(record(steps, 0)) == pytest.approx(1.0)
    assert mean_batch(record(steps, None)) is None
    assert winner_step_figures(record(steps, 1))["generator_cpu"] == 0.12


def test_each_ablation_variant_sets_only_its_switches_and_restores_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench.serving_efficiency import PATH_VARIANTS, SWITCHES, environment

    monkeypatch.setenv("SERVETUNE_FAST_JSON", "keep-me")
    monkeypatch.delenv("SERVETUNE_UVLOOP", raising=False)
    for overrides in PATH_VARIANTS.values():
        with environment(overrides):
            assert {n: os.environ[n] for n in SWITCHES if n in os.environ} == overrides
        assert os.environ["SERVETUNE_FAST_JSON"] == "keep-me"
        assert "SERVETUNE_UVLOOP" not in os.environ
    assert PATH_VARIANTS["all on (default)"] == {}
    off = PATH_VARIANTS["all off (before)"]
    for name, overrides in PATH_VARIANTS.items():  # each single change differs from off in one switch
        if name.startswith(("uvloop", "orjson", "no OpenTelemetry")):
            assert len({k for k in off if overrides.get(k) != off[k]}) == 1
