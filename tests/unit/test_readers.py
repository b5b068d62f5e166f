"""The MetricsReader seam: one contract for the scrape reader and the PromQL reader, over fakes of
their transports (a /metrics page server and a Prometheus query API), plus option handling."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.metrics import (
    MetricsError,
    MetricsReader,
    ScrapeReader,
    WindowFigures,
    histogram_quantile,
)
from core.promql import PrometheusReaders, PromQLReader, TargetsFile, instance_of
from core.readers import reader_factory
from tests.unit.test_metrics import exposition

INSTANCE = "127.0.0.1:3000"
# In [10, 20]: 2xx +100 (40 <= 5 ms, 40 in 5-10 ms, 20 in 10-20 ms), 503 +25, 60 requests per worker.
BEFORE = exposition([100, 150, 200, 200], 5, {"1": (80, 120), "2": (60, 80)}, 2)
AFTER = exposition([140, 230, 300, 300], 30, {"1": (120, 180), "2": (100, 140)}, 2)


def history(interval: float = 1.0) -> list[tuple[float, str]]:
    """A server scraped every `interval` s from t=0 to 30: counters jump between t=19 and t=20."""
    return [(t * interval, BEFORE if t * interval < 20 else AFTER) for t in range(round(30 / interval) + 1)]


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def page_server(pages: list[tuple[float, str]], clock: Clock) -> httpx.MockTransport:
    """A server whose /metrics page is the latest page at the clock's time."""

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/metrics"
        text = [text for at, text in pages if at <= clock.now][-1]
        return httpx.Response(200, text=text)

    return httpx.MockTransport(handle)


AGGREGATE: dict[str, Callable[[list[float]], float]] = {
    "sum": sum, "max": max, "min": min, "avg": lambda values: sum(values) / len(values),
}  # fmt: skip
Labels = dict[str, str]
Vector = list[tuple[Labels, float]]
Series = dict[tuple[Any, ...], list[tuple[float, float]]]  # label items -> (time, value) samples


@dataclass
class FakePrometheus:
    """Answers the Prometheus HTTP API for the query shapes the PromQL reader sends, from a
    history of scrapes of one target. Samples later than `visible` are not ingested yet; every
    `up` range query ingests `reveal` more seconds (a scrape loop running while the reader waits)."""

    scrapes: list[tuple[float, str]]
    instance: str = INSTANCE
    visible: float = math.inf
    reveal: float = 0.0
    queries: list[str] = field(default_factory=list)
    samples: list[tuple[float, str, Labels, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        target = {"instance": self.instance, "job": "servetune"}
        for at, text in self.scrapes:
            self.samples.append((at, "up", dict(target), 1.0))
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    self.samples.append((at, s.name, {**s.labels, **target}, float(s.value)))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        query, at = request.url.params["query"], float(request.url.params["time"])
        self.queries.append(query)
        try:
            kind, result = self.evaluate(query, at)
        except ValueError as exc:
            return httpx.Response(400, json={"status": "error", "error": str(exc)})
        if query.startswith("up{") and "[" in query:
            self.visible += self.reveal
        return httpx.Response(200, json={"status": "success", "data": {"resultType": kind, "result": result}})

    # -- a tiny PromQL evaluator for the reader's shapes ---------------------------------------
    def _select(
        self, selector: str, start: float, end: float
    ) -> dict[tuple[Any, ...], list[tuple[float, float]]]:
        match = re.fullmatch(r"(\w+)\{(.*)\}", selector)
        if match is None:
            raise ValueError(f"unsupported selector {selector!r}")
        name, body = match.groups()
        matchers = re.findall(r'(\w+)(=~|=)"([^"]*)"', body)
        if ",".join(f'{k}{op}"{v}"' for k, op, v in matchers) != body:
            raise ValueError(f"parse error in label matchers {body!r}")
        series: Series = {}
        for at, sample_name, labels, value in self.samples:
            if sample_name != name or not start <= at <= min(end, self.visible):
                continue
            if all(
                (re.fullmatch(v, labels.get(k, "")) if op == "=~" else labels.get(k) == v)
                for k, op, v in matchers
            ):
                series.setdefault(tuple(sorted(labels.items())), []).append((at, value))
        return series

    def _vector(self, expr: str, at: float) -> Vector:
        if m := re.fullmatch(r"(sum|max) by \((\w+)\) \((.+)\)", expr):
            grouped: dict[str, list[float]] = {}
            for labels, value in self._vector(m[3], at):
                grouped.setdefault(labels.get(m[2], ""), []).append(value)
            return [({m[2]: key}, AGGREGATE[m[1]](values)) for key, values in grouped.items()]
        if m := re.fullmatch(r"(sum|count|avg|max|min)\((.+)\)", expr):
            inner = self._vector(m[2], at)
            if m[1] == "count":
                return [({}, float(len(inner)))]
            return [({}, AGGREGATE[m[1]]([v for _, v in inner]))] if inner else []
        if m := re.fullmatch(r"histogram_quantile\(([\d.]+), (.+)\)", expr):
            buckets = {float(labels["le"]): value for labels, value in self._vector(m[2], at)}
            q = histogram_quantile(float(m[1]), buckets) if buckets else None
            return [({}, math.nan if q is None else q)] if buckets else []
        if m := re.fullmatch(r"(increase|(?:avg|max|min)_over_time)\((.+)\[(\d+)ms\]\)", expr):
            out = []
            for key, points in self._select(m[2], at - int(m[3]) / 1000, at).items():
                if m[1].endswith("_over_time"):
                    out.append((dict(key), AGGREGATE[m[1].split("_")[0]]([v for _, v in points])))
                elif len(points) >= 2:  # samples sit on the window's edges: no extrapolation
                    out.append((dict(key), points[-1][1] - points[0][1]))
            return out
        return [(dict(key), points[-1][1]) for key, points in self._select(expr, at - 300, at).items()]

    def evaluate(self, query: str, at: float) -> tuple[str, list[dict[str, Any]]]:
        if m := re.fullmatch(r"(\w+\{.*\})\[(\d+)ms\]", query):
            series = self._select(m[1], at - int(m[2]) / 1000, at)
            matrix = [{"metric": dict(k), "values": [[t, repr(v)] for t, v in p]} for k, p in series.items()]
            return "matrix", matrix
        vector = self._vector(query, at)
        return "vector", [{"metric": labels, "value": [at, repr(value)]} for labels, value in vector]


ReaderMaker = Callable[[list[tuple[float, str]], Clock], MetricsReader]


def scrape_reader(pages: list[tuple[float, str]], clock: Clock) -> MetricsReader:
    client = httpx.Client(transport=page_server(pages, clock), base_url="http://" + INSTANCE)
    return ScrapeReader("http://" + INSTANCE, client=client, clock=clock)


def promql_reader(pages: list[tuple[float, str]], clock: Clock) -> MetricsReader:
    client = httpx.Client(transport=FakePrometheus(pages).transport())
    return PromQLReader("http://prom:9090", selector=f'instance="{INSTANCE}"', client=client, clock=clock)


READERS: dict[str, ReaderMaker] = {"scrape": scrape_reader, "prometheus": promql_reader}


@pytest.fixture(params=sorted(READERS))
def reader_case(request: pytest.FixtureRequest) -> Iterator[tuple[str, MetricsReader, Clock]]:
    clock = Clock()
    reader = READERS[request.param](history(), clock)
    yield request.param, reader, clock
    reader.close()


def _window(reader: MetricsReader, clock: Clock, start: float, end: float) -> WindowFigures | None:
    clock.now = start
    first = reader.mark()
    clock.now = end
    last = reader.mark()
    clock.now = end + 0.5
    return reader.window(first, last, "/echo")


def test_both_readers_give_the_same_window_figures(reader_case: tuple[str, MetricsReader, Clock]) -> None:
    name, reader, clock = reader_case
    fig = _window(reader, clock, 10.0, 20.0)
    assert fig is not None and fig.source == name
    assert fig.seconds == pytest.approx(10.0)
    assert fig.by_status == {"200": 100, "503": 25} and fig.failures_by_status == {"503": 25}
    assert fig.rps == pytest.approx(12.5) and fig.goodput_rps == pytest.approx(10.0)
    assert fig.failure_ratio == pytest.approx(0.2)
    assert fig.p50_ms == pytest.approx(5 + 5 * (50 - 40) / 40)
    assert fig.p95_ms == pytest.approx(10 + 10 * (95 - 80) / 20)
    assert fig.requests_per_worker == {"1": 60, "2": 60}
    assert fig.batches_per_worker == {"1": 40, "2": 40}
    assert fig.batch_size_hist == {"1": 40, "2": 40}
    assert fig.in_progress == pytest.approx(2)


def test_the_readers_are_drop_ins_for_each_other() -> None:
    figures = []
    for make in READERS.values():
        clock = Clock()
        reader = make(history(), clock)
        figures.append(_window(reader, clock, 10.0, 20.0))
        reader.close()
    scrape, prom = figures
    assert scrape is not None and prom is not None
    assert replace(prom, source="scrape") == scrape


GIB = 1024**3
GPU_GAUGES = "\n".join([
    "# TYPE servetune_gpu_utilization_ratio gauge",
    'servetune_gpu_utilization_ratio{gpu="0"} 0.5',
    'servetune_gpu_utilization_ratio{gpu="1"} 0.7',
    "# TYPE servetune_gpu_memory_used_bytes gauge",
    f'servetune_gpu_memory_used_bytes{{gpu="0",pid="11"}} {1 * GIB}',
    f'servetune_gpu_memory_used_bytes{{gpu="0",pid="12"}} {2.5 * GIB}',
    f'servetune_gpu_memory_used_bytes{{gpu="1",pid="13"}} {3 * GIB}',
    "# TYPE servetune_gpu_memory_total_bytes gauge",
    f'servetune_gpu_memory_total_bytes{{gpu="0"}} {80 * GIB}',
    f'servetune_gpu_memory_total_bytes{{gpu="1"}} {40 * GIB}',
])  # fmt: skip


@pytest.mark.parametrize("name", sorted(READERS))
def test_both_readers_give_the_same_gpu_figures(name: str) -> None:
    clock = Clock()
    pages = [(at, text + GPU_GAUGES + "\n") for at, text in history()]
    reader = READERS[name](pages, clock)
    fig = _window(reader, clock, 10.0, 20.0)
    reader.close()
    assert fig is not None
    assert fig.gpu_utilization == pytest.approx(0.6)  # the mean over the devices
    assert fig.gpu_memory_peak_bytes == 3 * GIB  # the largest worker
    assert fig.gpu_memory_device_peak_bytes == round(3.5 * GIB)  # device 0's two workers together
    assert fig.gpu_memory_total_bytes == 40 * GIB  # the smallest device


def test_no_gpu_gauges_no_gpu_figures(
    reader_case: tuple[str, MetricsReader, Clock],
) -> None:
    _, reader, clock = reader_case
    fig = _window(reader, clock, 10.0, 20.0)
    assert fig is not None and fig.gpu_utilization is None
    assert fig.gpu_memory_peak_bytes is None and fig.gpu_memory_device_peak_bytes is None
    assert fig.gpu_memory_total_bytes is None


def test_promql_asks_one_gpu_query_of_a_server_without_gpu_gauges() -> None:
    clock = Clock()
    cpu, gpu = FakePrometheus(history()), FakePrometheus([(at, t + GPU_GAUGES + "\n") for at, t in history()])
    asked = []
    for prometheus in (cpu, gpu):
        client = httpx.Client(transport=prometheus.transport())
        reader = PromQLReader(
            "http://prom:9090", selector=f'instance="{INSTANCE}"', client=client, clock=clock
        )
        assert _window(reader, clock, 10.0, 20.0) is not None
        asked.append([q for q in prometheus.queries if "servetune_gpu" in q])
    assert len(asked[0]) == 1 and len(asked[1]) == 4, asked


def test_a_window_without_the_load_has_no_requests(reader_case: tuple[str, MetricsReader, Clock]) -> None:
    _, reader, clock = reader_case
    fig = _window(reader, clock, 21.0, 29.0)
    assert fig is not None and fig.requests == 0 and fig.p95_ms is None and fig.failure_ratio == 0.0


def test_marks_follow_the_clock(reader_case: tuple[str, MetricsReader, Clock]) -> None:
    _, reader, clock = reader_case
    clock.now = 12.0
    assert reader.mark().at == pytest.approx(12.0)


def test_an_unreachable_source_gives_no_figures_not_an_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    clock = Clock(10.0)
    client = httpx.Client(transport=httpx.MockTransport(refuse))
    readers: list[MetricsReader] = [
        ScrapeReader("http://" + INSTANCE, client=client, clock=clock),
        PromQLReader("http://prom:9090", client=client, clock=clock),
    ]
    for reader in readers:
        start = reader.mark()
        clock.now = 20.0
        assert reader.window(start, reader.mark(), "/echo") is None
        clock.now = 10.0


def test_promql_refuses_a_window_shorter_than_three_scrape_intervals() -> None:
    clock = Clock()
    prometheus = FakePrometheus(history(interval=2.0))
    client = httpx.Client(transport=prometheus.transport())
    reader = PromQLReader("http://prom:9090", selector=f'instance="{INSTANCE}"', client=client, clock=clock)
    assert _window(reader, clock, 14.0, 19.0) is None, "5 s < 3 x 2 s: too few samples to measure"
    assert reader.scrape_interval() == pytest.approx(2.0)
    fig = _window(reader, clock, 10.0, 20.0)
    assert fig is not None and fig.requests == pytest.approx(125)


def test_promql_waits_until_prometheus_has_scraped_past_the_window() -> None:
    clock = Clock()
    prometheus = FakePrometheus(history(), visible=18.0, reveal=1.0)
    client = httpx.Client(transport=prometheus.transport())
    reader = PromQLReader("http://prom:9090", selector=f'instance="{INSTANCE}"', client=client, clock=clock)
    fig = _window(reader, clock, 10.0, 20.0)
    # answered from the samples up to 18 s, the window would hold no request at all
    assert fig is not None and fig.requests == pytest.approx(125)
    assert prometheus.visible >= 20.0


def test_a_bad_selector_is_an_error_not_silence() -> None:
    clock = Clock(10.0)
    client = httpx.Client(transport=FakePrometheus(history()).transport())
    reader = PromQLReader("http://prom:9090", selector="instance=", client=client, clock=clock)
    with pytest.raises(MetricsError):
        reader.check()


def test_attach_names_the_server_in_the_targets_file_and_close_removes_it(tmp_path: Path) -> None:
    clock = Clock(20.0)
    targets = TargetsFile(tmp_path / "targets.json")
    client = httpx.Client(transport=FakePrometheus(history()).transport())
    reader = PromQLReader(
        "http://prom:9090", selector=f'instance="{INSTANCE}"', client=client, clock=clock, targets=targets
    )
    reader.attach(INSTANCE, timeout_s=2.0)
    assert json.loads(targets.path.read_text()) == [
        {"targets": [INSTANCE], "labels": {"servetune": "under_test"}}
    ]
    reader.close()
    assert targets.instances() == []


def test_attach_fails_clearly_when_prometheus_never_scrapes_the_server(tmp_path: Path) -> None:
    clock = Clock(25.0)
    client = httpx.Client(transport=FakePrometheus(history()).transport())
    reader = PromQLReader(
        "http://prom:9090", selector='instance="127.0.0.1:4000"', client=client, clock=clock,
        targets=TargetsFile(tmp_path / "targets.json"),
    )  # fmt: skip
    with pytest.raises(MetricsError, match="file_sd_configs"):
        reader.attach("127.0.0.1:4000", timeout_s=0.3)
    reader.close()


def test_the_prometheus_factory_selects_each_server_by_instance() -> None:
    assert instance_of("http://127.0.0.1:41234") == "127.0.0.1:41234"
    with pytest.raises(ValueError):
        instance_of("http://127.0.0.1")
    factory = PrometheusReaders("http://prom:9090")
    reader = factory("http://127.0.0.1:41234/")
    assert reader.selector == 'instance="127.0.0.1:41234"' and reader.targets is None
    reader.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": "statsd"}, "--metrics: choose one of scrape, prometheus"),
        ({"metrics": "prometheus"}, "--prometheus-url: required"),
        ({"metrics": "scrape", "prometheus_url": "http://x:9090"}, "--prometheus-url: only used with"),
        ({"metrics": "prometheus", "prometheus_url": "x:9090"}, "--prometheus-url: expected http(s)"),
        ({"metrics": "prometheus", "prometheus_url": "http://x:9090"}, "--prometheus-targets: required"),
        ({"metrics": "prometheus", "prometheus_url": "http://x:9090", "targets": Path("t.yml")}, ".json"),
        ({"metrics": "prometheus", "prometheus_url": "http://127.0.0.1:9", "targets": Path("t.json")},
         "--prometheus-url: cannot reach Prometheus"),
    ],
)  # fmt: skip
def test_reader_options_name_the_bad_option(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        reader_factory(**kwargs)


def test_scrape_is_the_default_reader() -> None:
    from loadtests.runner import LocustRunner

    assert reader_factory("scrape") is ScrapeReader
    assert LocustRunner().metrics is ScrapeReader


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["loadtest", "noop", "--users", "2", "--metrics", "prometheus"], "--prometheus-url: required"),
        (["loadtest", "noop", "--users", "2", "--metrics", "prometheus", "--prometheus-url",
          "http://127.0.0.1:9"], "--prometheus-targets: required"),
        (["tune", "digits", "--metrics", "prom"], "--metrics: choose one of"),
        (["tune", "digits", "--metrics", "prometheus", "--prometheus-url", "http://127.0.0.1:9",
          "--prometheus-targets", "t.json"], "--prometheus-url: cannot reach Prometheus"),
    ],
)  # fmt: skip
def test_cli_names_the_bad_metrics_option(args: list[str], message: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tuner.cli import app

    if args[0] == "tune":
        args = [*args, "--out", str(tmp_path / "study")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "study" / "study.json").exists(), "no study is started on bad options"
