"""Server-side window figures from BentoML's metrics, and the MetricsReader seam.

`MetricsReader` is the protocol the load runner measures through: `mark()` records a point in
time, `window(start, end, endpoint, samples)` turns two marks into `WindowFigures`. Two readers
implement it: `ScrapeReader` here (scrapes /metrics at every mark; exact counter deltas) and
`core.promql.PromQLReader` (asks a Prometheus server that scrapes the service; its marks are
only times). A runner takes a `ReaderFactory` (base URL -> reader) so either one plugs in.

BentoML counters and histograms grow from server start and are summed over workers, so every
figure here is a difference between two scrapes. The GPU gauges of services/gpumetrics.py
(present only on GPU workers) are read per scrape instead: utilisation is averaged over the
window's scrapes, memory is its peak. Parsing uses `prometheus_client.parser`.
Quantiles follow Prometheus' `histogram_quantile` (linear interpolation inside a bucket).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.gpumetrics import GPU_LABEL, MEMORY_TOTAL, MEMORY_USED, UTILIZATION

REQUEST_TOTAL = "bentoml_service_request_total"
DURATION = "bentoml_service_request_duration_seconds"
IN_PROGRESS = "bentoml_service_request_in_progress"
BATCH_SIZE = "bentoml_service_adaptive_batch_size"

Buckets = dict[float, float]  # upper bound -> cumulative count


@dataclass
class Snapshot:
    """The counters of one scrape that the window figures need."""

    taken_at: float
    requests: dict[tuple[str, str], float] = field(default_factory=dict)  # (endpoint, code) -> n
    duration: dict[tuple[str, str], Buckets] = field(default_factory=dict)  # (endpoint, code) -> le
    in_progress: dict[str, float] = field(default_factory=dict)  # endpoint -> gauge
    batch: dict[tuple[str, str], Buckets] = field(default_factory=dict)  # (method, worker) -> le
    batch_sum: dict[tuple[str, str], float] = field(default_factory=dict)  # requests per worker
    batch_count: dict[tuple[str, str], float] = field(default_factory=dict)  # batches per worker
    gpu_utilization: dict[str, float] = field(default_factory=dict)  # gpu -> 0..1
    gpu_memory_used: dict[tuple[str, str], float] = field(default_factory=dict)  # (gpu, pid) -> bytes
    gpu_memory_total: dict[str, float] = field(default_factory=dict)  # gpu -> bytes


def parse_metrics(text: str, taken_at: float | None = None) -> Snapshot:
    """A Snapshot of the BentoML families in a Prometheus text exposition."""
    snap = Snapshot(taken_at=time.time() if taken_at is None else taken_at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            value = float(sample.value)
            if sample.name == REQUEST_TOTAL:
                key = (labels.get("endpoint", ""), labels.get("http_response_code", ""))
                snap.requests[key] = snap.requests.get(key, 0.0) + value
            elif sample.name == DURATION + "_bucket":
                key = (labels.get("endpoint", ""), labels.get("http_response_code", ""))
                _add_bucket(snap.duration.setdefault(key, {}), labels["le"], value)
            elif sample.name == IN_PROGRESS:
                endpoint = labels.get("endpoint", "")
                snap.in_progress[endpoint] = snap.in_progress.get(endpoint, 0.0) + value
            elif sample.name.startswith(BATCH_SIZE):
                key = (labels.get("method_name", ""), labels.get("worker_index", ""))
                if sample.name == BATCH_SIZE + "_bucket":
                    _add_bucket(snap.batch.setdefault(key, {}), labels["le"], value)
                elif sample.name == BATCH_SIZE + "_sum":
                    snap.batch_sum[key] = snap.batch_sum.get(key, 0.0) + value
                elif sample.name == BATCH_SIZE + "_count":
                    snap.batch_count[key] = snap.batch_count.get(key, 0.0) + value
            elif sample.name in GPU_GAUGES:
                _add_gpu_sample(snap, sample.name, labels, value)
    return snap


GPU_GAUGES = frozenset({UTILIZATION, MEMORY_USED, MEMORY_TOTAL})


def _add_gpu_sample(snap: Snapshot, name: str, labels: Mapping[str, str], value: float) -> None:
    """One GPU gauge sample; a device gauge repeated per worker (pid label) keeps its maximum."""
    gpu = labels.get(GPU_LABEL, "")
    if name == MEMORY_USED:
        key = (gpu, labels.get("pid", ""))
        snap.gpu_memory_used[key] = snap.gpu_memory_used.get(key, 0.0) + value
        return
    per_device = snap.gpu_utilization if name == UTILIZATION else snap.gpu_memory_total
    per_device[gpu] = max(value, per_device.get(gpu, value))


def _add_bucket(buckets: Buckets, le: str, value: float) -> None:
    bound = float(le)
    buckets[bound] = buckets.get(bound, 0.0) + value


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative `buckets` (le -> count); None when empty.

    The rank q*total is located in its bucket and interpolated linearly between the bucket's
    bounds (lower bound 0 for the first bucket); a rank in the +Inf bucket returns the highest
    finite bound.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def bucket_delta(after: Mapping[float, float], before: Mapping[float, float] | None) -> Buckets:
    """after - before per bound (a series missing before counts as 0)."""
    before = before or {}
    return {le: max(0.0, n - before.get(le, 0.0)) for le, n in after.items()}


def merge_buckets(parts: Iterable[Mapping[float, float]]) -> Buckets:
    """Sum cumulative histograms with the same bounds."""
    merged: Buckets = defaultdict(float)
    for part in parts:
        for le, n in part.items():
            merged[le] += n
    return dict(merged)


def bucket_counts(cumulative: Mapping[float, float]) -> dict[str, float]:
    """Cumulative buckets -> count per bucket, keyed by its upper bound ("1", "2", ..., "+Inf")."""
    out: dict[str, float] = {}
    below = 0.0
    for le in sorted(cumulative):
        n = cumulative[le]
        key = "+Inf" if math.isinf(le) else f"{le:g}"
        out[key] = max(0.0, n - below)
        below = n
    return out


def is_success(code: str) -> bool:
    return code.startswith("2")


@dataclass(frozen=True)
class WindowFigures:
    """Server-side figures of one window on one endpoint (quantiles over 2xx responses, ms)."""

    seconds: float
    requests: float
    by_status: dict[str, float]
    failures_by_status: dict[str, float]
    rps: float
    failure_ratio: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    in_progress: float | None
    batch_size_hist: dict[str, float]
    requests_per_worker: dict[str, float]
    batches_per_worker: dict[str, float]
    source: str = "scrape"  # which MetricsReader measured it
    gpu_utilization: float | None = None  # mean over the window's scrapes of the mean over GPUs
    gpu_memory_peak_bytes: int | None = None  # the most one worker process held
    gpu_memory_device_peak_bytes: int | None = None  # the most the workers on one device held together
    gpu_memory_total_bytes: int | None = None  # the smallest device's memory

    @classmethod
    def from_counts(cls, seconds: float, by_status: dict[str, float], **figures: Any) -> WindowFigures:
        """Figures whose totals, failures and rates follow from the responses counted by status."""
        total = sum(by_status.values())
        failures = {code: n for code, n in by_status.items() if not is_success(code)}
        return cls(
            seconds=seconds,
            requests=total,
            by_status=by_status,
            failures_by_status=failures,
            rps=total / seconds,
            failure_ratio=sum(failures.values()) / total if total else 0.0,
            **figures,
        )

    @property
    def goodput_rps(self) -> float:
        """2xx responses per second."""
        return sum(n for code, n in self.by_status.items() if is_success(code)) / self.seconds

    @property
    def mean_batch_size(self) -> float | None:
        batches = sum(self.batches_per_worker.values())
        return sum(self.requests_per_worker.values()) / batches if batches else None


def window_figures(
    before: Snapshot,
    after: Snapshot,
    endpoint: str,
    in_progress_samples: Iterable[Snapshot] = (),
) -> WindowFigures:
    """Figures for `endpoint` (e.g. "/echo") between two scrapes of the same server."""
    path = endpoint if endpoint.startswith("/") else "/" + endpoint
    method = path.lstrip("/")
    seconds = max(1e-9, after.taken_at - before.taken_at)
    by_status: dict[str, float] = {}
    for (ep, code), n in after.requests.items():
        if ep == path:
            delta = n - before.requests.get((ep, code), 0.0)
            if delta > 0:
                by_status[code] = by_status.get(code, 0.0) + delta
    ok_buckets = merge_buckets(
        bucket_delta(b, before.duration.get(key))
        for key, b in after.duration.items()
        if key[0] == path and is_success(key[1])
    )

    def q_ms(q: float) -> float | None:
        value = histogram_quantile(q, ok_buckets)
        return None if value is None else value * 1000.0

    later = [*in_progress_samples, after]
    gauges = [s.in_progress.get(path) for s in later]
    seen = [g for g in gauges if g is not None]
    batch_keys = [key for key in after.batch if key[0] == method]
    hist = merge_buckets(bucket_delta(after.batch[k], before.batch.get(k)) for k in batch_keys)
    per_worker = {k[1]: after.batch_sum.get(k, 0.0) - before.batch_sum.get(k, 0.0) for k in batch_keys}
    batches = {k[1]: after.batch_count.get(k, 0.0) - before.batch_count.get(k, 0.0) for k in batch_keys}
    return WindowFigures.from_counts(
        seconds,
        by_status,
        p50_ms=q_ms(0.50),
        p95_ms=q_ms(0.95),
        p99_ms=q_ms(0.99),
        in_progress=sum(seen) / len(seen) if seen else None,
        batch_size_hist={k: v for k, v in bucket_counts(hist).items() if v > 0},
        requests_per_worker={w: v for w, v in sorted(per_worker.items()) if v > 0},
        batches_per_worker={w: v for w, v in sorted(batches.items()) if v > 0},
        **gpu_figures(later),
    )


def gpu_figures(snapshots: Sequence[Snapshot]) -> dict[str, Any]:
    """The WindowFigures GPU fields from the scrapes inside a window (all None without GPU gauges)."""
    means = [sum(s.gpu_utilization.values()) / len(s.gpu_utilization) for s in snapshots if s.gpu_utilization]
    workers = [v for s in snapshots for v in s.gpu_memory_used.values()]
    devices = [_per_device_sum(s.gpu_memory_used) for s in snapshots]
    totals = [v for s in snapshots for v in s.gpu_memory_total.values()]
    device_peaks = [max(d.values()) for d in devices if d]
    return {
        "gpu_utilization": sum(means) / len(means) if means else None,
        "gpu_memory_peak_bytes": round(max(workers)) if workers else None,
        "gpu_memory_device_peak_bytes": round(max(device_peaks)) if device_peaks else None,
        "gpu_memory_total_bytes": round(min(totals)) if totals else None,
    }


def _per_device_sum(used: Mapping[tuple[str, str], float]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for (gpu, _), value in used.items():
        total[gpu] += value
    return dict(total)


def workers_seen(snapshot: Snapshot) -> set[str]:
    """worker_index values that have batched anything since the server started."""
    return {worker for (_, worker), n in snapshot.batch_count.items() if n > 0}


class MetricsError(RuntimeError):
    """The metrics source is unusable (not reachable, or it rejects the reader's queries)."""


@dataclass(frozen=True)
class WindowMark:
    """A window boundary: its unix time and, for the scrape reader, the scrape taken then."""

    at: float
    snapshot: Snapshot | None = None


class MetricsReader(Protocol):
    """Server-side figures of the service under test between two marks."""

    source: str  # names the reader in measurements ("scrape", "prometheus")

    def mark(self) -> WindowMark:
        """A boundary at the current time; never raises for a failed scrape."""
        ...

    def window(
        self, start: WindowMark, end: WindowMark, endpoint: str, samples: Sequence[WindowMark] = ()
    ) -> WindowFigures | None:
        """Figures for `endpoint` (e.g. "/echo") over [start, end]; `samples` are marks inside the
        window (gauge samples, for readers that keep them). None when this reader cannot tell
        (a scrape failed, the window is shorter than the reader's resolution, no samples yet);
        MetricsError when the source rejects the reader's queries (a setup error that repeats)."""
        ...

    def close(self) -> None: ...


ReaderFactory = Callable[[str], MetricsReader]  # the server's base URL -> a reader of its metrics


class ScrapeReader:
    """MetricsReader that scrapes `url`/metrics at every mark: exact deltas between scrapes."""

    source = "scrape"

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url.rstrip("/") + "/metrics"
        self._client = client or httpx.Client(timeout=timeout_s)
        self.clock = clock

    def scrape(self) -> Snapshot:
        """One scrape, time-stamped at the middle of the request."""
        t0 = self.clock()
        response = self._client.get(self.url)
        t1 = self.clock()
        response.raise_for_status()
        return parse_metrics(response.text, taken_at=(t0 + t1) / 2)

    def mark(self) -> WindowMark:
        try:
            snapshot = self.scrape()
        except (httpx.HTTPError, ValueError):
            return WindowMark(self.clock())
        return WindowMark(snapshot.taken_at, snapshot)

    def window(
        self, start: WindowMark, end: WindowMark, endpoint: str, samples: Sequence[WindowMark] = ()
    ) -> WindowFigures | None:
        if start.snapshot is None or end.snapshot is None:
            return None
        middle = [m.snapshot for m in samples if m.snapshot is not None]
        return window_figures(start.snapshot, end.snapshot, endpoint, middle)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ScrapeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
