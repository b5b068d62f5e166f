"""bench/transient.py's per-window rows and summary, from fake step measurements."""

from __future__ import annotations

from bench.transient import parse_config, summary, window_rows
from core.measurement import LoadStep
from tests.fakes import make_step
from tuner.objective import SLO


def test_the_first_window_is_told_apart_from_the_rest() -> None:
    slo = SLO(latency_ms=200.0)
    step = LoadStep(users=40, duration_s=3.0, rate=100.0)
    held = [make_step(step, 96.0, 240.0, 0.04)] + [make_step(step, 100.0, 120.0, 0.0)] * 3
    rows = window_rows(held, slo)
    assert [r["met"] for r in rows] == [False, True, True, True]
    assert rows[0]["failure_ratio"] > 0.01 and rows[0]["latency_ms"] == 240.0
    figures = summary(rows)
    assert figures["first_met"] is False
    assert figures["rest_met_fraction"] == 1.0 and figures["rest_max_failure_ratio"] == 0.0


def test_a_config_label_parses_to_its_knobs() -> None:
    config = parse_config("b16-l200-w2-t1")
    assert (config.max_batch_size, config.max_latency_ms, config.workers, config.threads) == (16, 200, 2, 1)
