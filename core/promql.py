"""PromQLReader: the MetricsReader that asks a real Prometheus server instead of scraping.

Its marks are only times; `window(start, end, ...)` evaluates PromQL at the window's end:
counters become window totals with `increase(...[end - start])` (Prometheus extrapolates to the
window edges, so totals differ slightly from two exact scrapes) and quantiles come from
`histogram_quantile` over the 2xx buckets, as the scrape reader's do; the GPU gauges of
services/gpumetrics.py are averaged (utilisation) or maximised (memory) over the window.

The series of the server under test are picked by a selector on target labels (default: its
`instance`, i.e. host:port). `PrometheusReaders` is the ReaderFactory the CLI plugs in: for each
server it can also write that server into a file_sd targets file, so a Prometheus server whose
config reads the file starts scraping each new trial server (every local trial has a new port).
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

import httpx
import yaml

from core.metrics import (
    BATCH_SIZE,
    DURATION,
    IN_PROGRESS,
    REQUEST_TOTAL,
    MetricsError,
    WindowFigures,
    WindowMark,
    bucket_counts,
)
from core.polling import wait_until
from services.gpumetrics import GPU_LABEL, MEMORY_TOTAL, MEMORY_USED, UTILIZATION

GPU_FIELDS = (
    "gpu_utilization",
    "gpu_memory_peak_bytes",
    "gpu_memory_device_peak_bytes",
    "gpu_memory_total_bytes",
)


class PromQLError(MetricsError):
    """Prometheus answered with an error or something that is not the expected result type."""


def _range(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def instance_of(base_url: str) -> str:
    """The `instance` label Prometheus gives a target at `base_url` (its host:port)."""
    parsed = urlparse(base_url)
    if not parsed.hostname or parsed.port is None:
        raise ValueError(f"a server URL with host and port is needed, got {base_url!r}")
    return parsed.netloc


class TargetsFile:
    """A Prometheus file_sd file (JSON) that servetune owns: it names the servers to scrape.

    Written atomically (temp file + rename) so Prometheus never reads half a file.
    """

    LABELS: ClassVar[dict[str, str]] = {"servetune": "under_test"}

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self, instances: Sequence[str]) -> None:
        groups = [{"targets": list(instances), "labels": self.LABELS}] if instances else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".servetune-targets-", dir=self.path.parent)
        with os.fdopen(fd, "w") as out:
            json.dump(groups, out)
        os.replace(tmp, self.path)

    def instances(self) -> list[str]:
        """The targets named in the file now ([] when it is missing)."""
        if not self.path.exists():
            return []
        return [t for group in json.loads(self.path.read_text()) for t in group.get("targets", [])]


class PromQLReader:
    """MetricsReader over `prometheus_url`/api/v1; `selector` picks the server's target labels.

    A window shorter than `min_intervals` scrape intervals has too few samples to measure and
    gets None (the runner then judges stability from the client's own log). Before answering,
    the reader waits (bounded) until Prometheus has scraped past the window's end.
    """

    source = "prometheus"

    def __init__(
        self,
        prometheus_url: str,
        selector: str = "",
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
        min_intervals: float = 3.0,
        targets: TargetsFile | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = prometheus_url.rstrip("/")
        self.selector = selector
        self.min_intervals = min_intervals
        self.targets = targets
        self.clock = clock
        self._client = client or httpx.Client(timeout=timeout_s)
        self._interval: float | None = None

    # -- raw queries ---------------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        response = self._client.get(f"{self.url}{path}", params=params)
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            text = response.text[:200]
            raise PromQLError(f"{path}: HTTP {response.status_code}, not JSON: {text}") from None
        if response.status_code != 200 or body.get("status") != "success":
            raise PromQLError(f"{params or path}: {body.get('error', response.text[:200])}")
        data: dict[str, Any] = body["data"]
        return data

    def _query(self, promql: str, at: float, result_type: str) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        if data["resultType"] != result_type:
            raise PromQLError(f"{promql}: expected a {result_type}, got {data['resultType']}")
        result: list[dict[str, Any]] = data["result"]
        return result

    def query(self, promql: str, at: float) -> list[tuple[dict[str, str], float]]:
        """An instant query at unix time `at`: (labels, value) per series."""
        return [(dict(item["metric"]), float(item["value"][1])) for item in self._query(promql, at, "vector")]

    def _labels(self, regex: dict[str, str] | None = None, **equal: str) -> str:
        """A label selector: the reader's own selector, `equal` (=) and `regex` (=~) matchers."""
        parts = [self.selector] if self.selector else []
        parts += [f'{key}="{value}"' for key, value in equal.items()]
        parts += [f'{key}=~"{value}"' for key, value in (regex or {}).items()]
        return "{" + ",".join(parts) + "}"

    def up_samples(self, lookback_s: float = 60.0) -> list[tuple[float, float]]:
        """(time, value) of the recent `up` samples of the selected target (the longest series)."""
        series = self._query(f"up{self._labels()}[{_range(lookback_s)}]", self.clock(), "matrix")
        if not series:
            return []
        longest = max(series, key=lambda s: len(s["values"]))
        return [(float(t), float(v)) for t, v in longest["values"]]

    def scrape_interval(self) -> float | None:
        """Seconds between scrapes of the target, learnt from its `up` samples (None: too few yet)."""
        if self._interval is None:
            times = [t for t, _ in self.up_samples()][-10:]
            if len(times) >= 3:
                self._interval = statistics.median(b - a for a, b in itertools.pairwise(times))
        return self._interval

    # -- set-up ------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise MetricsError unless Prometheus answers a query with this reader's selector."""
        try:
            self.query(f"count(up{self._labels()})", self.clock())
        except httpx.HTTPError as exc:
            raise MetricsError(f"cannot reach Prometheus at {self.url}: {exc}") from exc

    def attach(self, instance: str, timeout_s: float = 30.0) -> None:
        """Name `instance` in the targets file and wait until Prometheus has scraped it."""
        if self.targets is None:
            raise MetricsError("attach needs a targets file")
        since = self.clock()
        self.targets.set([instance])

        def scraped() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return any(t >= since and v == 1 for t, v in self.up_samples(timeout_s + 5))
            return False

        if wait_until(scraped, timeout_s, interval_s=0.2):
            return
        raise MetricsError(
            f"Prometheus at {self.url} did not scrape {instance} within {timeout_s:.0f}s of it being "
            f"written to {self.targets.path}: does a file_sd_configs entry of its config read that file?"
        )

    # -- MetricsReader -----------------------------------------------------------------------
    def mark(self) -> WindowMark:
        return WindowMark(self.clock())

    def _await_scrape(self, at: float, timeout_s: float) -> bool:
        """Wait until Prometheus holds a sample taken at or after `at`; False when time ran out."""

        def past() -> bool:
            samples = self.up_samples(max(10.0, self.clock() - at + 10.0))
            return bool(samples) and samples[-1][0] >= at

        return bool(wait_until(past, timeout_s, interval_s=0.05))

    def window(
        self, start: WindowMark, end: WindowMark, endpoint: str, samples: Sequence[WindowMark] = ()
    ) -> WindowFigures | None:
        """Figures for `endpoint` over [start.at, end.at]; `samples` are not needed (the gauge is
        averaged over the window by PromQL)."""
        try:
            interval = self.scrape_interval()
            if interval is None or end.at - start.at < 0.95 * self.min_intervals * interval:
                return None
            self._await_scrape(end.at, max(0.0, end.at + 2 * interval + 1.0 - self.clock()))
            return self._figures(endpoint, start.at, end.at)
        except httpx.HTTPError:
            return None

    def _figures(self, endpoint: str, start: float, end: float) -> WindowFigures | None:
        path = endpoint if endpoint.startswith("/") else "/" + endpoint
        method = path.lstrip("/")
        seconds = max(1e-9, end - start)
        w = _range(seconds)
        rows = self.query(
            f"sum by (http_response_code) (increase({REQUEST_TOTAL}{self._labels(endpoint=path)}[{w}]))", end
        )
        if not rows:
            return None  # no series of this endpoint in the window: Prometheus cannot tell
        by_status = {labels.get("http_response_code", ""): value for labels, value in rows if value > 0}
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
        per_worker = self.query(f"sum by (worker_index) (increase({BATCH_SIZE}_sum{batch}[{w}]))", end)
        batches = self.query(f"sum by (worker_index) (increase({BATCH_SIZE}_count{batch}[{w}]))", end)
        return WindowFigures.from_counts(
            seconds,
            by_status,
            p50_ms=quantile_ms(0.50),
            p95_ms=quantile_ms(0.95),
            p99_ms=quantile_ms(0.99),
            in_progress=gauge[0][1] if gauge else None,
            batch_size_hist=hist,
            requests_per_worker=_per_worker(per_worker),
            batches_per_worker=_per_worker(batches),
            source=self.source,
            **self._gpu_figures(w, end),
        )

    def _gpu_figures(self, w: str, end: float) -> dict[str, Any]:
        """The WindowFigures GPU fields (all None when the server exports no GPU gauges). The
        per-device peak is the sum of its workers' peaks, an upper bound of the scrape reader's
        peak of sums (PyTorch's caching allocator rarely gives memory back, so they agree)."""
        selector = self._labels()

        def one(promql: str) -> float | None:
            found = self.query(promql, end)
            return found[0][1] if found and not math.isnan(found[0][1]) else None

        total = one(f"min(min_over_time({MEMORY_TOTAL}{selector}[{w}]))")
        if total is None:  # no GPU gauges (a CPU server): the other three would find none either
            return dict.fromkeys(GPU_FIELDS)
        util = one(f"avg(max by ({GPU_LABEL}) (avg_over_time({UTILIZATION}{selector}[{w}])))")
        worker = one(f"max(max_over_time({MEMORY_USED}{selector}[{w}]))")
        device = one(f"max(sum by ({GPU_LABEL}) (max_over_time({MEMORY_USED}{selector}[{w}])))")
        return {
            "gpu_utilization": util,
            "gpu_memory_peak_bytes": round(worker) if worker is not None else None,
            "gpu_memory_device_peak_bytes": round(device) if device is not None else None,
            "gpu_memory_total_bytes": round(total) if total is not None else None,
        }

    def close(self) -> None:
        """Stop naming the server in the targets file (if this reader wrote it); close the client."""
        try:
            if self.targets is not None:
                with contextlib.suppress(OSError):
                    self.targets.set([])
        finally:
            self._client.close()

    def __enter__(self) -> PromQLReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _per_worker(rows: list[tuple[dict[str, str], float]]) -> dict[str, float]:
    return {labels.get("worker_index", ""): v for labels, v in sorted(rows, key=_wkey) if v > 0}


def _wkey(item: tuple[dict[str, str], float]) -> str:
    return item[0].get("worker_index", "")


def reads_targets_file(prometheus_url: str, path: Path, timeout_s: float = 5.0) -> bool | None:
    """Whether the running Prometheus config has a file_sd_configs entry matching `path`
    (None when its config cannot be read)."""
    try:
        answer = httpx.get(f"{prometheus_url.rstrip('/')}/api/v1/status/config", timeout=timeout_s)
        config = yaml.safe_load(answer.json()["data"]["yaml"]) or {}
    except (httpx.HTTPError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None
    wanted = str(path.resolve())
    for job in config.get("scrape_configs") or []:
        for sd in job.get("file_sd_configs") or []:
            if any(fnmatch.fnmatch(wanted, pattern) for pattern in sd.get("files") or []):
                return True
    return False


@dataclass(frozen=True)
class PrometheusReaders:
    """ReaderFactory: a PromQLReader for each server under test, selecting `instance="host:port"`.

    With `targets`, each call first writes the server into that file_sd file and waits until
    Prometheus scrapes it; the reader's close() empties the file again.
    """

    prometheus_url: str
    targets: Path | None = None
    attach_timeout_s: float = 30.0

    def __call__(self, base_url: str) -> PromQLReader:
        instance = instance_of(base_url)
        targets = TargetsFile(self.targets) if self.targets is not None else None
        reader = PromQLReader(self.prometheus_url, selector=f'instance="{instance}"', targets=targets)
        if targets is not None:
            try:
                reader.attach(instance, self.attach_timeout_s)
            except BaseException:
                reader.close()
                raise
        return reader
