"""The adapter that injects knobs into any service; pins the BentoML internals it relies on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services import adapter

REPO = Path(__file__).resolve().parents[2]


def _noop_service() -> object:
    from _bentoml_impl.loader import import_service

    return import_service("services.noop:NoOp", working_dir=str(REPO))


def test_batching_set_on_the_api_reaches_the_dispatcher_bentoml_builds() -> None:
    """If BentoML stops reading APIMethod.max_batch_size when it builds a worker's dispatchers,
    the injected knobs silently do nothing: this test is the tripwire."""
    from _bentoml_impl.server.app import ServiceAppFactory

    service = _noop_service()
    before = service.apis["echo"].max_batch_size  # type: ignore[attr-defined]
    try:
        adapter.apply_batching(service, {"echo": {"max_batch_size": 7, "max_latency_ms": 123}})
        service.inject_config()  # type: ignore[attr-defined]  # as `bentoml serve` does first
        factory = ServiceAppFactory(service, is_main=True)  # type: ignore[arg-type]
        dispatcher = factory.dispatchers["echo"]
        assert dispatcher.max_batch_size == 7
        assert dispatcher.max_latency == pytest.approx(0.123)
        assert "echo_unbatched" not in factory.dispatchers
    finally:
        service.apis["echo"].max_batch_size = before  # type: ignore[attr-defined]


def test_batching_refuses_unknown_or_unbatchable_apis() -> None:
    service = _noop_service()
    with pytest.raises(adapter.AdapterError, match="no API 'nope'"):
        adapter.apply_batching(service, {"nope": {"max_batch_size": 4}})
    with pytest.raises(adapter.AdapterError, match="not batchable"):
        adapter.apply_batching(service, {"echo_unbatched": {"max_batch_size": 4}})
    with pytest.raises(ValueError):  # BentoML's own validator: a batch of 1 is not batching
        adapter.apply_batching(service, {"echo": {"max_batch_size": 1}})


def test_read_batching_parses_the_environment_value() -> None:
    assert adapter.read_batching(None) == {}
    assert adapter.read_batching(json.dumps({"encode": {"max_batch_size": "8"}})) == {
        "encode": {"max_batch_size": 8}
    }
    with pytest.raises(adapter.AdapterError):
        adapter.read_batching("[1, 2]")


@pytest.mark.parametrize(
    ("gpus", "index", "visible", "expected"),
    [
        (0, 1, ["0", "1"], None),  # no GPUs asked: leave the list alone
        (2, 1, ["0", "1"], "0"),
        (2, 2, ["0", "1"], "1"),
        (2, 3, ["0", "1"], "0"),  # round-robin
        (1, 2, ["3", "5"], "3"),  # only the first `gpus` of the visible list
        (2, None, ["0", "1"], None),  # the arbiter process is not a worker
        (2, 1, [], None),
    ],
)
def test_each_worker_keeps_one_gpu(
    gpus: int, index: int | None, visible: list[str], expected: str | None
) -> None:
    assert adapter.worker_gpu(gpus, index, visible) == expected


def test_threads_are_set_only_where_torch_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import torch

    before = torch.get_num_threads()
    try:
        assert adapter.apply_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert adapter.apply_threads(None) is None
        monkeypatch.delitem(sys.modules, "torch")
        assert adapter.apply_threads(1) is None
    finally:
        torch.set_num_threads(before)


def test_evidence_is_one_json_line_per_call(tmp_path: Path) -> None:
    path = tmp_path / "evidence.jsonl"
    adapter.write_evidence(str(path), {"worker_index": 1})
    adapter.write_evidence(str(path), {"worker_index": 2})
    adapter.write_evidence(None, {"worker_index": 3})
    assert [json.loads(line)["worker_index"] for line in path.read_text().splitlines()] == [1, 2]


def test_evidence_that_cannot_be_written_does_not_stop_a_worker(tmp_path: Path) -> None:
    """A read-only root (the pod's) or a missing folder: the worker starts without evidence."""
    adapter.write_evidence(str(tmp_path), {"worker_index": 1})  # a directory: IsADirectoryError
    adapter.write_evidence(str(tmp_path / "missing" / "evidence.jsonl"), {"worker_index": 1})
    assert list(tmp_path.iterdir()) == []


TRIM_CHECK = """
import json, os, sys
from starlette.testclient import TestClient
from services import adapter
from services.noop import NoOp
adapter.trim_serving_path()
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
app = NoOp.to_asgi()
kinds = [m.cls for m in app.user_middleware]
from uvicorn.config import Config
config = Config(app=None)
config.load()
with TestClient(app) as client:
    answer = client.post("/echo", json={"items": [1.0]})
print(json.dumps({
    "otel": OpenTelemetryMiddleware in kinds,
    "request_id": answer.headers.get("x-bentoml-request-id"),
    "status": answer.status_code,
    "http": config.http_protocol_class.__name__,
    "loop": getattr(config, "loop", None),
    "uvloop_importable": sys.modules.get("uvloop", "absent") is not None,
}))
"""


def trimmed(env: dict[str, str]) -> dict[str, object]:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in {adapter.ENV_UVLOOP, adapter.ENV_TRACING}}
    done = subprocess.run(
        [sys.executable, "-c", TRIM_CHECK],
        env={**clean, "BENTOML_DO_NOT_TRACK": "True", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_serving_path_is_trimmed_but_keeps_the_request_id() -> None:
    result = trimmed({})
    assert result["otel"] is False
    assert result["status"] == 200
    assert str(result["request_id"]).strip()
    assert result["http"] == "HttpToolsProtocol"
    assert result["uvloop_importable"] is True


def test_the_switches_put_bentoml_and_uvicorn_defaults_back() -> None:
    result = trimmed({adapter.ENV_UVLOOP: "0", adapter.ENV_TRACING: "1"})
    assert result["otel"] is True
    assert result["status"] == 200
    assert result["http"] == "H11Protocol"
    assert result["uvloop_importable"] is False


# --- a dependency's processes (bentoml.depends) run as written --------------------------------


def test_the_served_service_is_read_from_bentomls_worker_arguments() -> None:
    worker = ["-m", "_bentoml_impl.worker.service", "servetune_adapter:service", "--service-name", "Scorer"]
    assert adapter.served_service(worker) == "Scorer"
    assert adapter.served_service(["x", "--service-name=Gateway", "--fd", "3"]) == "Gateway"
    assert adapter.served_service(["bentoml", "serve", "servetune_adapter:service"]) is None  # the arbiter
    assert adapter.serves_dependency(worker, "Gateway")
    assert not adapter.serves_dependency([*worker[:-1], "Gateway"], "Gateway")  # the target's own worker
    assert not adapter.serves_dependency(worker, None)  # a launcher that names no target: knobs everywhere
    assert not adapter.serves_dependency(["bentoml", "serve"], "Gateway")


def test_a_dependency_gets_back_the_environment_the_knobs_replaced() -> None:
    before = {"OMP_NUM_THREADS": "4", "PATH": "/bin"}
    knobs = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    raw = adapter.prior_environment(before, {**knobs, "PATH": "/elsewhere"})  # only the thread/GPU variables
    assert set(json.loads(raw)) == set(knobs)
    env = {**before, **knobs, "CUDA_VISIBLE_DEVICES": "1"}  # BentoML gave this worker its own GPU
    restored = adapter.restore_prior_environment(raw, env)
    assert sorted(restored) == ["MKL_NUM_THREADS", "OMP_NUM_THREADS"]
    assert env == {"OMP_NUM_THREADS": "4", "PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1"}
    assert adapter.restore_prior_environment(None, env) == []
    assert adapter.restore_prior_environment("", env) == []
