"""bench/dispatcher_history.py's load histories and figures, from fake step measurements."""

from __future__ import annotations

import pytest

from bench.dispatcher_history import HISTORIES, Phase, held_steps, history_steps, server_row, summarize
from core.measurement import LoadStep
from tests.fakes import make_step
from tuner.objective import SLO

SLO_200 = SLO(latency_ms=200.0)


def test_a_history_scales_rates_to_the_test_rate_and_users_to_the_workers() -> None:
    steps = history_steps(HISTORIES["long-overload"], test_rate=100.0, workers=2, slo=SLO_200)
    assert steps[0].rate is None and steps[0].users == 4  # 2 closed-loop users per worker
    assert [s.rate for s in steps[1:]] == [85.0, 200.0, 25.0]
    assert [s.duration_s for s in steps] == [3.0, 5.0, 7.0, 6.0]
    assert all(s.users >= s.rate * 0.4 for s in steps[1:] if s.rate)  # paced users for 2x the SLO


def test_a_phase_without_users_or_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="users or a rate"):
        history_steps([Phase(3.0)], 100.0, 1, SLO_200)


def test_the_test_rate_is_held_in_five_second_windows() -> None:
    steps = held_steps(120.0, 30.0, SLO_200)
    assert len(steps) == 6 and {(s.rate, s.duration_s) for s in steps} == {(120.0, 5.0)}
    assert len(held_steps(120.0, 1.0, SLO_200)) == 1


def test_a_server_row_pools_its_windows_failures() -> None:
    step = LoadStep(users=40, duration_s=5.0, rate=100.0)
    windows = [make_step(step, 95.0, 90.0, 0.05), make_step(step, 100.0, 60.0, 0.0)]
    row = server_row("busy-start", windows, SLO_200)
    failed = sum(m.requests - m.successes for m in windows)
    assert row["failure_ratio"] == round(failed / row["requests"], 4) and 0.02 < row["failure_ratio"] < 0.03
    assert row["window_failure_ratios"] == [0.05, 0.0]
    assert row["median_latency_ms"] == 75.0


def test_the_summary_compares_each_history_with_the_probe_start() -> None:
    rows = [
        {"history": "probe", "failure_ratio": 0.01},
        {"history": "probe", "failure_ratio": 0.03},
        {"history": "busy-start", "failure_ratio": 0.06},
        {"history": "busy-start", "failure_ratio": 0.1},
        {"history": "long-overload", "failure_ratio": None},
    ]
    summary = summarize(rows)
    assert set(summary) == {"probe", "busy-start"}
    assert summary["busy-start"]["mean_failure_ratio"] == 0.08 and summary["busy-start"]["vs_probe"] == 4.0
    assert (summary["probe"]["min_failure_ratio"], summary["probe"]["max_failure_ratio"]) == (0.01, 0.03)
    assert summarize([{"history": "probe", "failure_ratio": 0.0}])["probe"]["vs_probe"] is None
