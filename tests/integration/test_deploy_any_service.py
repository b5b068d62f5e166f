"""`servetune deploy` of a user's own service: a real Bento built offline from a copy of its
working dir; `bentoml serve <bento>` (no servetune variable, no --arg) runs the winner's knobs."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import psutil
import pytest
import yaml
from typer.testing import CliRunner

from core.registry import unregister
from core.server import REPO_ROOT
from deploy.bento import BuiltBentoServer
from services import adapter
from tests.integration.helpers import bentoml_processes, metric_samples
from tuner.cli import app

pytestmark = pytest.mark.integration

SERVICE = "SentenceEmbedding"
# Not a power of two: the batch-size histogram's finite buckets end at the max_batch_size the
# worker runs with, so `le="6.0"` exists only when the Bento's own knob took effect (written: 32).
MAX_BATCH_SIZE = 6
MAX_LATENCY_MS = 300


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """`servetune deploy` of a winner for the embedding example copied elsewhere; (out, tag).
    The Bento is deleted from the store afterwards."""
    tmp = tmp_path_factory.mktemp("user-bento")
    project = tmp / "project"
    shutil.copytree(REPO_ROOT / "examples" / "embedding", project)
    config = {"service": SERVICE, "max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": MAX_LATENCY_MS,
              "workers": 1, "threads": 1}  # fmt: skip
    document = {
        "config": config, "slo_p95_ms": 500, "goodput_rps": 30.0, "cores": 2,
        "target": "service.py:SentenceEmbedding", "working_dir": str(project), "endpoint": "encode",
    }  # fmt: skip
    winner = tmp / "winner.yaml"
    winner.write_text(yaml.safe_dump(document))
    out = tmp / "deploy"
    try:
        result = CliRunner().invoke(app, ["deploy", str(winner), "--out", str(out)])
        assert result.exit_code == 0, result.output
        tag = json.loads((out / "sizing.json").read_text())["bento"]
        yield out, tag
        bentoml.bentos.delete(tag)
    finally:
        unregister(SERVICE)
    assert project.joinpath("service.py").is_file() and not project.joinpath("servetune_adapter.py").exists()


@pytest.fixture(scope="module")
def served(built: tuple[Path, str]) -> Iterator[BuiltBentoServer]:
    """`bentoml serve <tag>`; the service stays registered (by deploy) until `built` ends."""
    server = BuiltBentoServer(built[1], SERVICE)
    try:
        server.start(ready_timeout_s=100.0)
        yield server
    finally:
        pid = server.process.pid if server.process else None
        server.stop()
        assert all(p.pid != pid for p in bentoml_processes()), "the bento server was stopped"


def test_bento_carries_the_adapter_and_the_winners_knobs(built: tuple[Path, str]) -> None:
    _, tag = built
    stored = bentoml.bentos.get(tag)
    assert stored.info.service == "servetune_adapter:service"
    src = Path(stored.path) / "src"
    assert sorted(p.name for p in src.glob("*.py")) == sorted(
        ["service.py", "servetune_adapter.py", "servetune_gpumetrics.py"]
    )  # the adapter starts the GPU metrics sampler from the Bento's copy
    envs = {e.name: e.value for e in stored.info.envs}
    assert envs[adapter.ENV_TARGET] == "service.py:SentenceEmbedding"
    batching = {"encode": {"max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": MAX_LATENCY_MS}}
    assert json.loads(envs[adapter.ENV_BATCHING]) == batching
    assert envs[adapter.ENV_THREADS] == "1"
    assert json.loads(envs["BENTOML_CONFIG_OVERRIDES"]) == {"services": {SERVICE: {"workers": 1}}}
    assert json.loads((src / "servetune_adapter.env.json").read_text())[adapter.ENV_BATCHING] == json.dumps(
        batching
    )


def test_served_bento_runs_the_winners_batching(served: BuiltBentoServer) -> None:
    env = served.environment()
    assert adapter.ENV_TARGET not in env and adapter.ENV_BATCHING not in env, "only the Bento's own knobs"

    def post(i: int) -> int:
        body = {"sentences": [f"sentence number {i} for the deployed service"]}
        return httpx.post(f"{served.url}/encode", json=body, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(post, range(36)))
    assert codes == [200] * len(codes)
    (record,) = served.evidence()
    assert record["batching"] == {
        "encode": {"max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": MAX_LATENCY_MS}
    }
    assert psutil.Process(record["pid"]).environ()["OMP_NUM_THREADS"] == "1", "the Bento's threads"
    buckets: dict[float, float] = {}
    for name, labels, value in metric_samples(served.url, "bentoml_service_adaptive_batch_size"):
        if name.endswith("_bucket"):
            buckets[float(labels["le"])] = buckets.get(float(labels["le"]), 0.0) + value
    finite = sorted(le for le in buckets if le != math.inf)
    assert finite[-1] == MAX_BATCH_SIZE, f"batch-size buckets {finite}: the Bento's knob did not apply"
    assert buckets[MAX_BATCH_SIZE] == buckets[math.inf] > 0
