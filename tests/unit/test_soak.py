"""bench/soak.py without a server: per-minute rows, totals, drift ratios, capacity, --config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bench.soak import (
    MinuteRow,
    breached,
    capacity_of,
    minute_row,
    parse_knobs,
    rss_window,
    summarize,
    users_for,
)
from core.measurement import LoadStep
from core.serveconfig import ConfigFileError
from loadtests.runner import ClientFigures, LoadReport
from tests.fakes import make_step


def row(minute: int, p95: float, rss: float, errors: dict[str, int] | None = None) -> MinuteRow:
    failed = sum((errors or {}).values())
    return MinuteRow(
        minute=minute, seconds=60.0, offered_rps=80.0, requests=4800, successes=4800 - failed,
        goodput_rps=80.0, errors_by_status=errors or {}, p50_ms=40.0, p95_ms=p95, p99_ms=p95 * 1.5,
        server_p95_ms=p95 - 5, server_p99_ms=None, rss_mb_per_worker={"1": rss / 2, "2": rss / 2},
        rss_mb_total=rss,
    )  # fmt: skip


def test_totals_split_shed_503s_from_the_other_errors() -> None:
    rows = [row(1, 100.0, 600.0, {"503": 3, "500": 1}), row(2, 110.0, 610.0, {"0": 2, "503": 1})]
    summary = summarize(rows)
    assert summary["minutes"] == 2 and summary["offered_rps"] == 80.0
    assert summary["shed_503"] == 4
    assert summary["errors_non_shed"] == 3, "a 500 and two connection errors (status 0)"
    assert summary["total"]["errors_by_status"] == {"0": 2, "500": 1, "503": 4}
    assert summary["total"]["requests"] == 9600 and summary["total"]["successes"] == 9600 - 7
    assert summary["total"]["goodput_rps"] == pytest.approx((9600 - 7) / 120, abs=0.01)
    assert summary["targets_met"]["errors_non_shed"] is False


def test_ratios_are_last_minute_over_first_and_judged_against_the_targets() -> None:
    rows = [row(1, 100.0, 600.0), row(2, 150.0, 700.0), row(3, 115.0, 650.0)]
    summary = summarize(rows)
    assert summary["rss_growth_ratio"] == pytest.approx(650 / 600, abs=1e-4)
    assert summary["p95_drift_ratio"] == pytest.approx(1.15)
    assert summary["max_p95_ratio"] == pytest.approx(1.5), "the worst minute is reported too"
    assert summary["targets_met"] == {
        "errors_non_shed": True,
        "rss_growth_ratio": True,
        "p95_drift_ratio": True,
    }
    grown = summarize([row(1, 100.0, 600.0), row(2, 125.0, 700.0)])
    assert grown["targets_met"] == {
        "errors_non_shed": True,
        "rss_growth_ratio": False,
        "p95_drift_ratio": False,
    }
    with pytest.raises(ValueError):
        summarize([])


def test_a_minute_with_no_success_has_no_ratio() -> None:
    rows = [row(1, 100.0, 600.0), replace(row(2, 100.0, 600.0), p95_ms=None)]
    summary = summarize(rows)
    assert summary["p95_drift_ratio"] is None and summary["targets_met"]["p95_drift_ratio"] is False


def test_a_minute_row_takes_its_figures_and_the_rss_samples_of_its_window() -> None:
    step = LoadStep(users=32, duration_s=60, rate=80.0)
    m = replace(make_step(step, 79.5, 120.0, 0.0), failures_by_status={"503": 2}, server_p95_ms=float("inf"))
    client = ClientFigures(4772, 4770, {"200": 4770, "503": 2}, 40.0, 118.0, 150.0, 300.0)
    report = LoadReport(m, client, None, (), window_start=1000.0, window_end=1060.0)
    samples = [
        (990.0, {"1": 900.0, "2": 900.0}, 1900.0),  # before the window: not counted
        (1010.0, {"1": 300.0, "2": 310.0}, 700.0),
        (1030.0, {"1": 302.0, "2": 320.0}, 710.0),
        (1050.0, {"1": 304.0}, 720.0),  # worker 2 restarting: no sample
    ]

    class Samples:
        def window(self, start: float, end: float) -> tuple[dict[str, float], float | None]:
            return rss_window(samples, start, end)

    r = minute_row(3, report, Samples(), 80.0)  # type: ignore[arg-type]
    assert (r.minute, r.requests, r.successes, r.p95_ms, r.p99_ms) == (3, 4772, 4770, 118.0, 150.0)
    assert r.errors_by_status == {"503": 2}
    assert r.server_p95_ms is None, "an infinite quantile is written as null"
    assert r.rss_mb_per_worker == {"1": 302.0, "2": 315.0}
    assert r.rss_mb_total == 710.0


def test_capacity_is_the_best_step_that_kept_up_within_the_slo() -> None:
    steps = [
        make_step(LoadStep(16, 8, rate=10.0), 10.0, 50.0, 0.0),
        make_step(LoadStep(16, 8, rate=13.0), 13.0, 60.0, 0.0),
        make_step(LoadStep(16, 8, rate=17.0), 15.0, 90.0, 0.0),  # fell behind the offered rate
    ]
    assert [breached(m, 200.0) for m in steps] == [False, False, True]
    assert capacity_of(steps, 200.0) == pytest.approx(13.0, rel=0.05)
    slow = make_step(LoadStep(16, 8, rate=10.0), 10.0, 250.0, 0.0)
    assert breached(slow, 200.0) and capacity_of([slow], 200.0) is None
    assert breached(make_step(LoadStep(16, 8, rate=10.0), 10.0, 50.0, 0.05), 200.0)


def test_paced_users_grow_with_the_rate() -> None:
    assert users_for(10.0) == 16 and users_for(100.0) == 40


def test_config_knobs_inline_or_from_a_file(tmp_path: Path) -> None:
    config = parse_knobs("max_batch_size=16,max_latency_ms=200,workers=2,threads=1")
    assert config.key == "b16-l200-w2-t1-g0-fp32" and config.service == "embedding"
    path = tmp_path / "winner.yaml"
    path.write_text("config: {service: embedding, max_batch_size: 8, max_latency_ms: 500, workers: 1}\n")
    assert parse_knobs(str(path)).max_batch_size == 8
    with pytest.raises(ConfigFileError, match="max_batch_size"):
        parse_knobs("max_batch_size=1")
    with pytest.raises(ConfigFileError, match="key=value"):
        parse_knobs("workers")
