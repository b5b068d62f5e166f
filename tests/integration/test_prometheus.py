"""A real Prometheus server scrapes a live service; its PromQL figures agree with /metrics deltas."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.measurement import LoadStep
from core.promql import PromQLReader
from core.registry import service_spec
from core.server import BentoServer, ServerSpec, free_port, running_server
from loadtests.runner import LocustRunner

pytestmark = pytest.mark.integration
SCRAPE_S = 1


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    message = "the `prometheus` binary is missing: apt-get install -y prometheus (.ci/run does this as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message + "; skipped because CI is not set")


@pytest.fixture
def server() -> Iterator[BentoServer]:
    spec = ServerSpec(service_spec("noop"), args={"max_batch_size": 8, "max_latency_ms": 1000}, workers=2)
    with running_server(spec) as running:
        yield running


@pytest.fixture
def prometheus(server: BentoServer, tmp_path: Path) -> Iterator[str]:
    binary = _prometheus_binary()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {SCRAPE_S}s\n  evaluation_interval: {SCRAPE_S}s\n"
        f"scrape_configs:\n  - job_name: servetune\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                up = httpx.get(
                    f"{url}/api/v1/query", params={"query": 'up{job="servetune"}'}, timeout=2
                ).json()
                if up["data"]["result"] and up["data"]["result"][0]["value"][1] == "1":
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        else:
            pytest.fail("Prometheus never scraped the service:\n" + (tmp_path / "prometheus.log").read_text())
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _close(a: float | None, b: float | None, tolerance: float = 0.10) -> bool:
    assert a is not None and b is not None
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


def test_promql_reader_agrees_with_the_scrape_reader(server: BentoServer, prometheus: str) -> None:
    (report,) = LocustRunner(settle_s=1.0).run(server.url, "noop", [LoadStep(users=6, duration_s=12)])
    direct = report.server
    assert direct is not None and direct.requests > 100
    time.sleep(2.5 * SCRAPE_S)  # let Prometheus scrape past the window's end
    with PromQLReader(prometheus, selector='job="servetune"') as reader:
        via_prom = reader.window("/echo", report.window_start, report.window_end)
    pairs = {"rps": (direct.rps, via_prom.rps), "p50": (direct.p50_ms, via_prom.p50_ms),
             "p95": (direct.p95_ms, via_prom.p95_ms)}  # fmt: skip
    far = {name: pair for name, pair in pairs.items() if not _close(*pair)}
    assert not far, f"scrape reader vs PromQL differ by > 10%: {far}"
    assert set(via_prom.requests_per_worker) == set(direct.requests_per_worker)
    assert _close(sum(direct.requests_per_worker.values()), sum(via_prom.requests_per_worker.values()))
    assert via_prom.batch_size_hist and direct.batch_size_hist
    assert via_prom.failure_ratio == direct.failure_ratio == 0.0
