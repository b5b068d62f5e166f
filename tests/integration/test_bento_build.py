"""`servetune deploy` builds a real Bento offline; `bentoml serve <bento>` runs the winner's knobs;
a real Prometheus scraping it evaluates the rendered rules and dashboard queries to real numbers."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bentoml
import httpx
import pytest
import yaml
from typer.testing import CliRunner

from core.polling import wait_until
from core.server import free_port
from deploy.bento import BuiltBentoServer
from deploy.grafana import dashboard_queries
from deploy.validate import substitute_grafana
from services.models.data import held_out_raw
from tests.integration.helpers import bentoml_processes, metric_samples
from tuner.cli import app

pytestmark = pytest.mark.integration

# 6 is not a power of two: BentoML's batch-size histogram ends its finite buckets at the
# service's max_batch_size, so `le="6.0"` only exists if the Bento's build-time arg took effect
# (the service default is 32).
MAX_BATCH_SIZE = 6
NAMESPACE = "servetune"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, digits_tag: str) -> tuple[Path, str]:
    """Run `servetune deploy` with the build on; (output dir, bento tag)."""
    tmp = tmp_path_factory.mktemp("bento")
    winner = tmp / "winner.yaml"
    config = {"service": "digits", "max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": 5000, "threads": 1}
    # A generous SLO and capacity: on a shared 2-core machine no alert may go pending by accident.
    winner.write_text(yaml.safe_dump({"config": config, "slo_p95_ms": 5000, "goodput_rps": 1000.0}))
    locustfile = tmp / "locustfile.py"
    locustfile.write_text("from locust import FastHttpUser\n\n\nclass DigitsUser(FastHttpUser):\n    pass\n")
    out = tmp / "deploy"
    args = [
        "deploy",
        str(winner),
        "--out",
        str(out),
        "--locustfile",
        str(locustfile),
        "--namespace",
        NAMESPACE,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "sizing.json").read_text())["bento"]


@pytest.fixture(scope="module")
def served(built: tuple[Path, str]) -> Iterator[BuiltBentoServer]:
    server = BuiltBentoServer(built[1], "digits")
    server.start()
    yield server
    pid = server.process.pid if server.process else None
    server.stop()
    assert all(p.pid != pid for p in bentoml_processes()), "the bento server was stopped"


def send_load(url: str, requests: int = 64) -> list[int]:
    rows = held_out_raw()[0][:requests].tolist()

    def post(row: list[float]) -> int:
        return httpx.post(f"{url}/predict", json={"images": [row]}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(post, rows))


def test_bento_is_built_offline_with_the_winner_args(built: tuple[Path, str], digits_tag: str) -> None:
    out, tag = built
    info = bentoml.bentos.get(tag).info
    assert info.args["max_batch_size"] == MAX_BATCH_SIZE
    assert info.args["model_tag"] == digits_tag
    assert [str(m.tag) for m in info.models] == [digits_tag]
    dockerfile = (out / "bento" / "Dockerfile").read_text()
    assert "BENTOML_CONFIG_OVERRIDES" in dockerfile and "ENTRYPOINT" in dockerfile
    pod = yaml.safe_load((out / "k8s" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == tag


def test_served_bento_runs_the_winner_max_batch_size(
    served: BuiltBentoServer, built: tuple[Path, str]
) -> None:
    assert served.command()[4] == built[1] and "--arg" not in served.command()
    codes = send_load(served.url)
    assert codes == [200] * len(codes)
    buckets: dict[float, float] = {}
    for name, labels, value in metric_samples(served.url, "bentoml_service_adaptive_batch_size"):
        if name.endswith("_bucket"):
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    finite = sorted(le for le in buckets if le != math.inf)
    assert finite[-1] == MAX_BATCH_SIZE, f"batch-size buckets {finite}: the Bento's arg did not apply"
    assert buckets[math.inf] > 0
    assert buckets[MAX_BATCH_SIZE] == buckets[math.inf], "no batch above max_batch_size"


@contextlib.contextmanager
def prometheus_server(tmp: Path, target: str, rules: Path) -> Iterator[str]:
    """A throwaway Prometheus on 127.0.0.1 scraping `target` every second, as Kubernetes would
    label it (namespace, pod), evaluating `rules` every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing in CI: install the Debian package `prometheus`")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    fast_rules = yaml.safe_load(rules.read_text())
    for group in fast_rules["groups"]:
        group["interval"] = "1s"
    (tmp / "rules.yml").write_text(yaml.safe_dump(fast_rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "bento",
                "honor_labels": True,
                "static_configs": [
                    {"targets": [target], "labels": {"namespace": NAMESPACE, "pod": "servetune-digits-0"}}
                ],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])


def test_rules_and_dashboard_evaluate_against_real_metrics(
    served: BuiltBentoServer, built: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = built
    rules = out / "prometheus" / "rules.yml"
    with prometheus_server(tmp_path, f"127.0.0.1:{served.port}", rules) as prom:

        def recorded_p95() -> list[dict[str, Any]]:
            send_load(served.url, 32)
            recorded = query(prom, "servetune:request_duration_seconds:p95_5m")
            # Until two scrapes differ the rate is 0 and histogram_quantile records NaN.
            return [sample for sample in recorded if math.isfinite(float(sample["value"][1]))]

        p95 = wait_until(recorded_p95, 60.0, interval_s=1.0)
        assert p95, "the p95 recording rule produced nothing from real BentoML metrics"
        assert 0 < float(p95[0]["value"][1]) < 30
        (rps,) = query(prom, "servetune:requests:rate1m")
        assert float(rps["value"][1]) > 0
        (per_pod,) = query(prom, "servetune:requests_per_pod:rate1m")
        assert per_pod["metric"]["pod"] == "servetune-digits-0"
        (errors,) = query(prom, "servetune:errors:ratio_rate5m")
        assert float(errors["value"][1]) == 0.0, "all requests succeeded"
        assert query(prom, 'ALERTS{alertname=~"Servetune.*"}') == []
        board = json.loads((out / "grafana" / "dashboard.json").read_text())
        empty = []
        for expr in dashboard_queries(board):
            if not query(prom, substitute_grafana(expr).replace('"servetune"', f'"{NAMESPACE}"')):
                empty.append(expr)
        # container_* series come from the kubelet's cAdvisor, which this setup does not have
        assert all("container_" in expr for expr in empty), empty
