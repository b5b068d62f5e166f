"""PromQLReader: the same window figures as MetricsReader, asked of a real Prometheus server.

Counters are turned into window totals with `increase(...[W])` evaluated at the window's end
(Prometheus extrapolates to the window edges, so totals differ slightly from two exact
scrapes); quantiles use `histogram_quantile` over the 2xx buckets, as MetricsReader does.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from core.metrics import (
    BATCH_SIZE,
    DURATION,
    IN_PROGRESS,
    REQUEST_TOTAL,
    WindowFigures,
    bucket_counts,
    is_success,
)


class PromQLError(RuntimeError):
    """Prometheus answered with an error or something that is not a vector."""


def _range(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class PromQLReader:
    """Queries `prometheus_url`/api/v1/query; `selector` narrows the series (e.g. job="x")."""

    def __init__(self, prometheus_url: str, selector: str = "", timeout_s: float = 10.0) -> None:
        self.url = prometheus_url.rstrip("/")
        self.selector = selector
        self._client = httpx.Client(timeout=timeout_s)

    def query(self, promql: str, at: float) -> list[tuple[dict[str, str], float]]:
        """An instant query at unix time `at`: (labels, value) per series."""
        response = self._client.get(f"{self.url}/api/v1/query", params={"query": promql, "time": f"{at:.3f}"})
        body: dict[str, Any] = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PromQLError(f"{promql}: {body.get('error', response.text[:200])}")
        data = body["data"]
        if data["resultType"] != "vector":
            raise PromQLError(f"{promql}: expected a vector, got {data['resultType']}")
        return [(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]

    def _labels(self, regex: dict[str, str] | None = None, **equal: str) -> str:
        """A label selector: the reader's own selector, `equal` (=) and `regex` (=~) matchers."""
        parts = [self.selector] if self.selector else []
        parts += [f'{key}="{value}"' for key, value in equal.items()]
        parts += [f'{key}=~"{value}"' for key, value in (regex or {}).items()]
        return "{" + ",".join(parts) + "}"

    def window(self, endpoint: str, start: float, end: float) -> WindowFigures:
        """Figures for `endpoint` over [start, end] (unix seconds)."""
        path = endpoint if endpoint.startswith("/") else "/" + endpoint
        method = path.lstrip("/")
        seconds = max(1e-9, end - start)
        w = _range(seconds)
        by_status = {
            labels.get("http_response_code", ""): value
            for labels, value in self.query(
                f"sum by (http_response_code) (increase({REQUEST_TOTAL}{self._labels(endpoint=path)}[{w}]))",
                end,
            )
            if value > 0
        }
        total = sum(by_status.values())
        failures = {code: n for code, n in by_status.items() if not is_success(code)}
        ok = self._labels({"http_response_code": "2.."}, endpoint=path)

        def quantile_ms(q: float) -> float | None:
            promql = f"histogram_quantile({q}, sum by (le) (increase({DURATION}_bucket{ok}[{w}])))"
            found = self.query(promql, end)
            if not found or math.isnan(found[0][1]):
                return None
            return found[0][1] * 1000.0

        gauge = self.query(f"sum(avg_over_time({IN_PROGRESS}{self._labels(endpoint=path)}[{w}]))", end)
        batch = self._labels(method_name=method)
        hist_rows = self.query(f"sum by (le) (increase({BATCH_SIZE}_bucket{batch}[{w}]))", end)
        cumulative = {float(labels["le"]): value for labels, value in hist_rows}
        hist = {k: v for k, v in bucket_counts(cumulative).items() if v > 0}
        rows = self.query(f"sum by (worker_index) (increase({BATCH_SIZE}_sum{batch}[{w}]))", end)
        batches = self.query(f"sum by (worker_index) (increase({BATCH_SIZE}_count{batch}[{w}]))", end)
        return WindowFigures(
            seconds=seconds,
            requests=total,
            by_status=by_status,
            failures_by_status=failures,
            rps=total / seconds,
            failure_ratio=sum(failures.values()) / total if total else 0.0,
            p50_ms=quantile_ms(0.50),
            p95_ms=quantile_ms(0.95),
            p99_ms=quantile_ms(0.99),
            in_progress=gauge[0][1] if gauge else None,
            batch_size_hist=hist,
            requests_per_worker={
                lab.get("worker_index", ""): v for lab, v in sorted(rows, key=_wkey) if v > 0
            },
            batches_per_worker={
                lab.get("worker_index", ""): v for lab, v in sorted(batches, key=_wkey) if v > 0
            },
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PromQLReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wkey(item: tuple[dict[str, str], float]) -> str:
    return item[0].get("worker_index", "")
