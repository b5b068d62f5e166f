"""`servetune deploy` builds a real Bento offline; `bentoml serve <bento>` runs the winner's knobs."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import pytest
import yaml
from typer.testing import CliRunner

from deploy.bento import BuiltBentoServer
from services.models.data import held_out_raw
from tests.integration.helpers import bentoml_processes, metric_samples
from tuner.cli import app

pytestmark = pytest.mark.integration

# 6 is not a power of two: BentoML's batch-size histogram ends its finite buckets at the
# service's max_batch_size, so `le="6.0"` only exists if the Bento's build-time arg took effect
# (the service default is 32).
MAX_BATCH_SIZE = 6


def test_built_bento_serves_with_the_winner_knobs(tmp_path: Path, digits_tag: str) -> None:
    winner = tmp_path / "winner.yaml"
    config = {"service": "digits", "max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": 5000, "threads": 1}
    winner.write_text(yaml.safe_dump({"config": config, "slo_p95_ms": 250, "goodput_rps": 150.0}))
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text("from locust import FastHttpUser\n\n\nclass DigitsUser(FastHttpUser):\n    pass\n")
    out = tmp_path / "deploy"

    result = CliRunner().invoke(
        app, ["deploy", str(winner), "--out", str(out), "--locustfile", str(locustfile)]
    )
    assert result.exit_code == 0, result.output

    tag = json.loads((out / "sizing.json").read_text())["bento"]
    built = bentoml.bentos.get(tag)
    assert built.info.args["max_batch_size"] == MAX_BATCH_SIZE
    assert built.info.args["model_tag"] == digits_tag
    assert [str(m.tag) for m in built.info.models] == [digits_tag]
    dockerfile = (out / "bento" / "Dockerfile").read_text()
    assert "BENTOML_CONFIG_OVERRIDES" in dockerfile and "ENTRYPOINT" in dockerfile
    image = yaml.safe_load((out / "k8s" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    assert image["containers"][0]["image"] == tag

    with BuiltBentoServer(tag, "digits") as server:
        assert server.command()[4] == tag and "--arg" not in server.command()
        image_rows = held_out_raw()[0][:64].tolist()

        def post(row: list[float]) -> int:
            return httpx.post(f"{server.url}/predict", json={"images": [row]}, timeout=30).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            codes = list(pool.map(post, image_rows))
        assert codes == [200] * len(image_rows)
        buckets: dict[float, float] = {}
        for name, labels, value in metric_samples(server.url, "bentoml_service_adaptive_batch_size"):
            if name.endswith("_bucket"):
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + value
        finite = sorted(le for le in buckets if le != float("inf"))
        assert finite[-1] == MAX_BATCH_SIZE, f"batch-size buckets {finite}: the Bento's arg did not apply"
        assert buckets[float("inf")] > 0
        assert buckets[MAX_BATCH_SIZE] == buckets[float("inf")], "no batch above max_batch_size"
        server_pid = server.process.pid if server.process else None
    assert server_pid is not None
    assert all(p.pid != server_pid for p in bentoml_processes())
