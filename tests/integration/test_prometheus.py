"""A real Prometheus server scrapes live services: its PromQL figures agree with /metrics deltas,
and `loadtest` / `tune --metrics prometheus` measure through it (file_sd targets for trial servers)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from core.measurement import LoadStep
from core.metrics import WindowMark
from core.polling import wait_until
from core.promql import PromQLReader
from core.registry import service_spec
from core.server import BentoServer, ServerSpec, free_port, running_server
from loadtests.runner import LocustRunner
from tuner.cli import app
from tuner.store import StudyStore

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


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


@contextlib.contextmanager
def run_prometheus(folder: Path, interval: str, scrape_config: str) -> Iterator[str]:
    """A Prometheus server with one `servetune` scrape job (`scrape_config` is the job's target
    part, YAML indented for the job); yields its URL and always stops it."""
    binary = _prometheus_binary()
    port = free_port()
    config = folder / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
        f"  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: servetune\n    metrics_path: /metrics\n{scrape_config}"
    )
    log_path = folder / "prometheus.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, log_path.read_text()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            return False

        if not wait_until(ready, 30, interval_s=0.2):
            pytest.fail("Prometheus did not become ready:\n" + log_path.read_text())
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def server() -> Iterator[BentoServer]:
    spec = ServerSpec(service_spec("noop"), args={"max_batch_size": 8, "max_latency_ms": 1000}, workers=2)
    with running_server(spec) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(server: BentoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping the noop server (a static target) every second (shared by the module's
    tests: each reads only its own time window)."""
    targets = f"    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n"
    with run_prometheus(tmp_path_factory.mktemp("prometheus"), f"{SCRAPE_S}s", targets) as url:

        def scraped() -> bool:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
                return bool(_query(url, 'up{job="servetune"}')[0]["value"][1] == "1")
            return False

        if not wait_until(scraped, 30, interval_s=0.3):
            pytest.fail("Prometheus never scraped the service")
        yield url


def _close(a: float | None, b: float | None, tolerance: float = 0.10) -> bool:
    assert a is not None and b is not None
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


def test_promql_reader_agrees_with_the_scrape_reader(server: BentoServer, prometheus: str) -> None:
    (report,) = LocustRunner(settle_s=1.0).run(server.url, "noop", [LoadStep(users=6, duration_s=8)])
    direct = report.server
    assert direct is not None and direct.requests > 100 and direct.source == "scrape"
    with PromQLReader(prometheus, selector=f'instance="127.0.0.1:{server.port}"') as reader:
        via_prom = reader.window(WindowMark(report.window_start), WindowMark(report.window_end), "/echo")
    assert via_prom is not None and via_prom.source == "prometheus"
    pairs = {"rps": (direct.rps, via_prom.rps), "p50": (direct.p50_ms, via_prom.p50_ms),
             "p95": (direct.p95_ms, via_prom.p95_ms)}  # fmt: skip
    far = {name: pair for name, pair in pairs.items() if not _close(*pair)}
    assert not far, f"scrape reader vs PromQL differ by > 10%: {far}"
    assert set(via_prom.requests_per_worker) == set(direct.requests_per_worker)
    assert _close(sum(direct.requests_per_worker.values()), sum(via_prom.requests_per_worker.values()))
    assert via_prom.batch_size_hist and direct.batch_size_hist
    assert via_prom.failure_ratio == direct.failure_ratio == 0.0


def test_loadtest_measures_through_prometheus(server: BentoServer, prometheus: str, tmp_path: Path) -> None:
    out = tmp_path / "steps.json"
    args = ["loadtest", "noop", "--url", server.url, "--users", "4", "--step-seconds", "5",
            "--metrics", "prometheus", "--prometheus-url", prometheus, "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (step,) = json.loads(out.read_text())
    figures, measured = step["server"], step["measurement"]
    assert figures["source"] == "prometheus" and measured["server_source"] == "prometheus"
    assert figures["requests"] == pytest.approx(measured["requests"], rel=0.25)
    assert measured["server_p95_ms"] is not None and measured["server_p95_ms"] > 0


TINY_SPACE = """\
service: digits
max_batch_size: [8, 16, 32]
max_latency_ms: [1000]
workers: [1]
threads: auto
gpus: auto
variant: auto
"""


def test_tune_digits_measures_every_trial_through_prometheus(digits_tag: str, tmp_path: Path) -> None:
    """Prometheus only knows the file_sd file; servetune names each trial's server in it."""
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    out = tmp_path / "study"
    job = f"    file_sd_configs:\n      - files: ['{targets}']\n        refresh_interval: 1s\n"
    already = {p.pid for p in psutil.Process().children(recursive=True)}  # e.g. the module's server
    with run_prometheus(tmp_path, "500ms", job) as url:
        args = ["tune", "digits", "--metrics", "prometheus", "--prometheus-url", url,
                "--prometheus-targets", str(targets), "--trials", "3", "--strategy", "random",
                "--space", str(space), "--users", "4", "--step-seconds", "2", "--warmup-seconds", "0",
                "--max-extend", "1", "--finalists", "0", "--slo-p95-ms", "2000",
                "--max-failure-ratio", "0.05", "--out", str(out)]  # fmt: skip
        try:
            result = CliRunner().invoke(app, args)
        finally:
            mine = [p for p in psutil.Process().children(recursive=True) if p.pid not in already]
            leftovers = [p for p in mine if p.is_running() and "bentoml" in " ".join(p.cmdline())]
            for proc in leftovers:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        assert result.exit_code == 0, result.output
        assert "warning" not in result.output, "Prometheus's config names the targets file"
        scraped = {
            str(r["metric"]["instance"]) for r in _query(url, 'count_over_time(up{job="servetune"}[10m])')
        }
    assert not leftovers, "the tune command stopped every server it started"
    records = StudyStore(out).records()
    assert [r.kind for r in records] == ["trial"] * 3
    assert len({r.key for r in records}) == 3
    ports = {log.stem.removeprefix("server-") for log in (out / "logs").glob("*/server-*.log")}
    assert len(ports) == 3 and {f"127.0.0.1:{p}" for p in ports} <= scraped, (ports, scraped)
    for record in records:
        assert record.status == "ok", record.reason
        assert record.steps, record.key
        for step in record.steps:
            assert step.server_source == "prometheus", (record.key, step)
            assert step.server_p95_ms is not None and step.server_p95_ms > 0
            assert set(step.requests_per_worker) == {"1"}
            assert sum(step.requests_per_worker.values()) == pytest.approx(step.requests, rel=0.35)
    assert json.loads(targets.read_text()) == [], "the last trial's server is no longer a target"
