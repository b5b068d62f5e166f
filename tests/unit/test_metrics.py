"""Window figures from two /metrics scrapes: deltas, Prometheus-style histogram quantiles."""

from __future__ import annotations

import math

import pytest

from core.metrics import (
    BATCH_SIZE,
    DURATION,
    REQUEST_TOTAL,
    bucket_counts,
    histogram_quantile,
    parse_metrics,
    window_figures,
)

INF = math.inf
R, D, B = REQUEST_TOTAL, DURATION, BATCH_SIZE


def test_quantile_interpolates_inside_the_bucket() -> None:
    # 100 observations: 10 in (0, 1], 40 in (1, 2], 50 in (2, 4]
    buckets = {1.0: 10, 2.0: 50, 4.0: 100, INF: 100}
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.5)
    assert histogram_quantile(0.5, buckets) == pytest.approx(2.0)
    assert histogram_quantile(0.3, buckets) == pytest.approx(1.5)
    assert histogram_quantile(0.75, buckets) == pytest.approx(3.0)
    assert histogram_quantile(1.0, buckets) == pytest.approx(4.0)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, {0.1: 50, 0.2: 90, INF: 100}) == pytest.approx(0.2)


def test_quantile_of_nothing_is_none_and_q_is_checked() -> None:
    assert histogram_quantile(0.5, {1.0: 0, INF: 0}) is None
    assert histogram_quantile(0.5, {}) is None
    with pytest.raises(ValueError):
        histogram_quantile(1.5, {1.0: 1, INF: 1})


def test_quantile_skips_empty_leading_buckets() -> None:
    # all 10 observations in (0.005, 0.010]: p50 = 7.5 ms, not 0
    buckets = {0.001: 0, 0.005: 0, 0.010: 10, INF: 10}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.0075)


def exposition(ok: list[int], n503: int, rows: dict[str, tuple[int, int]], in_progress: float) -> str:
    """A BentoML-like page: `ok` = cumulative 2xx counts for le 0.005, 0.01, 0.02, +Inf."""
    les = ["0.005", "0.01", "0.02", "+Inf"]
    lines = [
        "# HELP bentoml_service_request_total x",
        "# TYPE bentoml_service_request_total counter",
        f'{R}{{endpoint="/echo",http_response_code="200",service_name="NoOp"}} {ok[-1]}',
        f'{R}{{endpoint="/echo",http_response_code="503",service_name="NoOp"}} {n503}',
        f'{R}{{endpoint="/readyz",http_response_code="200",service_name="NoOp"}} 7',
        "# HELP bentoml_service_request_duration_seconds x",
        "# TYPE bentoml_service_request_duration_seconds histogram",
    ]
    for le, n in zip(les, ok, strict=True):
        lines.append(f'{D}_bucket{{endpoint="/echo",'
                     f'http_response_code="200",le="{le}"}} {n}')  # fmt: skip
    for le in les:  # 503s are fast; they must not pull the success quantiles down
        lines.append(f'{D}_bucket{{endpoint="/echo",'
                     f'http_response_code="503",le="{le}"}} {n503}')  # fmt: skip
    lines += [
        f'{D}_count{{endpoint="/echo",http_response_code="200"}} {ok[-1]}',
        f'{D}_sum{{endpoint="/echo",http_response_code="200"}} 1.0',
        "# HELP bentoml_service_request_in_progress x",
        "# TYPE bentoml_service_request_in_progress gauge",
        f'bentoml_service_request_in_progress{{endpoint="/echo",service_name="NoOp"}} {in_progress}',
        "# HELP bentoml_service_adaptive_batch_size x",
        "# TYPE bentoml_service_adaptive_batch_size histogram",
    ]
    for worker, (batches, total_rows) in rows.items():
        for le, n in [("1.0", batches // 2), ("2.0", batches), ("4.0", batches), ("+Inf", batches)]:
            lines.append(f'{B}_bucket{{le="{le}",method_name="echo",'
                         f'worker_index="{worker}"}} {n}')  # fmt: skip
        lines.append(f'{B}_count{{method_name="echo",worker_index="{worker}"}} {batches}')
        lines.append(f'{B}_sum{{method_name="echo",worker_index="{worker}"}} {total_rows}')
    return "\n".join(lines) + "\n"


def test_window_figures_use_only_the_deltas() -> None:
    before = parse_metrics(
        exposition([100, 150, 200, 200], 5, {"1": (80, 120), "2": (60, 80)}, 0), taken_at=10.0
    )
    # in the window: 2xx +100 (40 <= 5 ms, 40 in 5-10 ms, 20 in 10-20 ms), 503 +25
    after = parse_metrics(
        exposition([140, 230, 300, 300], 30, {"1": (120, 180), "2": (100, 140)}, 2), taken_at=20.0
    )
    fig = window_figures(before, after, "echo")
    assert fig.seconds == pytest.approx(10.0)
    assert fig.by_status == {"200": 100, "503": 25}
    assert fig.failures_by_status == {"503": 25}
    assert fig.requests == 125 and fig.rps == pytest.approx(12.5)
    assert fig.failure_ratio == pytest.approx(0.2)
    assert fig.p50_ms == pytest.approx(5 + 5 * (50 - 40) / 40)
    assert fig.p95_ms == pytest.approx(10 + 10 * (95 - 80) / 20)
    assert fig.p99_ms == pytest.approx(10 + 10 * (99 - 80) / 20)
    assert fig.requests_per_worker == {"1": 60, "2": 60}
    assert fig.batches_per_worker == {"1": 40, "2": 40}
    assert fig.mean_batch_size == pytest.approx(1.5)
    assert fig.batch_size_hist == {"1": 40, "2": 40}
    assert fig.in_progress == pytest.approx(2)
    assert bucket_counts({1.0: 3, 2.0: 5, INF: 6}) == {"1": 3, "2": 2, "+Inf": 1}


def test_a_series_that_appears_during_the_window_counts_from_zero() -> None:
    before = parse_metrics(exposition([0, 0, 0, 0], 0, {"1": (10, 10)}, 0), taken_at=0.0)
    after = parse_metrics(exposition([10, 10, 10, 10], 0, {"1": (10, 10), "2": (5, 9)}, 0), taken_at=1.0)
    fig = window_figures(before, after, "/echo")
    assert fig.requests_per_worker == {"2": 9}
    assert fig.p99_ms is not None and fig.p99_ms <= 5.0
    assert fig.failure_ratio == 0.0
