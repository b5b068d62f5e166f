"""Deploying a user's own service: the winner file names it, the bentofile runs it through the
adapter with the knobs baked in, the build folder is a copy of its working dir plus the adapter."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from core.registry import ServiceSpec, register, unregister
from core.serveconfig import (
    ServeConfig,
    TargetOutsideError,
    TargetRef,
    WinnerFile,
    load_winner,
    peek_target,
    relative_target,
)
from core.server import REPO_ROOT
from deploy import bento, prometheus
from deploy.context import RenderContext, dns_name
from deploy.plan import DeployOptions, size
from services import adapter, gpumetrics
from tuner.cli import app

EXAMPLES = REPO_ROOT / "examples"
KEY = "UserEmbedding"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the embedding example, with a cache and a VCS folder the build must skip."""
    folder = tmp_path / "proj"
    shutil.copytree(EXAMPLES / "embedding", folder)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "service.cpython-311.pyc").write_bytes(b"\0")
    return folder


@pytest.fixture
def spec(project: Path) -> Iterator[ServiceSpec]:
    """The example registered as resolve_target registers a described user service."""
    registered = register(
        ServiceSpec(
            key=KEY, import_path=f"{project / 'service.py'}:SentenceEmbedding", bento_name=KEY,
            endpoint="encode", packages=("bentoml",), working_dir=str(project), batchable=True,
            written_batching=(32, 1000), routes=("/encode",), reads_knob_args=False,
            service_args=(("greeting", "hi"),),
        )
    )  # fmt: skip
    yield registered
    unregister(KEY)


def winner_for(spec: ServiceSpec, **config: Any) -> WinnerFile:
    reference = TargetRef.of(spec)
    assert reference is not None
    knobs = {"max_batch_size": 6, "max_latency_ms": 300, "workers": 2, "threads": 1, **config}
    return WinnerFile(
        config=ServeConfig(service=spec.key, **knobs), slo_p95_ms=200, goodput_rps=40.0, cores=2,
        **reference.model_dump(),
    )  # fmt: skip


def context_for(winner: WinnerFile) -> RenderContext:
    options = DeployOptions()
    return RenderContext(winner, options, size(winner, options), "servetune-userembedding:latest", "")


def test_winner_file_round_trips_the_target_and_old_files_still_load(
    spec: ServiceSpec, tmp_path: Path
) -> None:
    winner = winner_for(spec)
    assert winner.target == "service.py:SentenceEmbedding"
    assert winner.working_dir == str(Path(spec.working_dir or "").resolve())
    assert winner.endpoint == "encode" and winner.service_args == {"greeting": "hi"}
    path = tmp_path / "winner.yaml"
    path.write_text(yaml.safe_dump(winner.model_dump(mode="json"), sort_keys=False))
    assert load_winner(path) == winner
    reference = peek_target(path)
    assert reference == winner.target_ref()
    assert reference is not None
    assert reference.import_path() == spec.import_path
    assert (
        reference.import_path(tmp_path / "moved") == f"{tmp_path / 'moved' / 'service.py'}:SentenceEmbedding"
    )
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"config": {"service": "digits"}, "slo_p95_ms": 100, "goodput_rps": 5.0}))
    assert peek_target(old) is None
    assert load_winner(old).target_ref() is None


def test_relative_target_keeps_module_paths_and_refuses_files_outside(tmp_path: Path) -> None:
    assert relative_target(f"{tmp_path / 'pkg' / 'svc.py'}:Svc", tmp_path) == "pkg/svc.py:Svc"
    assert relative_target("pkg.svc:Svc", tmp_path) == "pkg.svc:Svc"
    with pytest.raises(TargetOutsideError, match="not under the working dir"):
        relative_target("/elsewhere/svc.py:Svc", tmp_path)


def test_user_bentofile_keeps_the_users_sections_and_bakes_in_the_knobs(spec: ServiceSpec) -> None:
    context = context_for(winner_for(spec))
    doc = bento.bentofile(context)
    assert doc["service"] == "servetune_adapter:service"
    assert doc["name"] == "servetune-userembedding"
    assert doc["include"] == ["*.py", *bento.ADAPTER_FILES]
    assert "servetune_gpumetrics.py" in bento.ADAPTER_FILES
    assert "sentence-transformers>=3.0" in doc["python"]["packages"]
    assert doc["python"]["lock_packages"] is False
    assert doc["labels"]["owner"] == "servetune-examples"
    assert doc["labels"]["servetune.io/endpoint"] == "/encode"
    assert doc["args"] == {"greeting": "hi"}
    assert "models" not in doc
    envs = {e["name"]: e["value"] for e in doc["envs"]}
    assert envs[adapter.ENV_TARGET] == "service.py:SentenceEmbedding"
    assert adapter.ENV_WORKING_DIR not in envs, "inside a Bento the adapter uses the Bento's source folder"
    assert json.loads(envs[adapter.ENV_BATCHING]) == {"encode": {"max_batch_size": 6, "max_latency_ms": 300}}
    assert envs[adapter.ENV_THREADS] == envs["OMP_NUM_THREADS"] == "1"
    assert json.loads(envs["BENTOML_CONFIG_OVERRIDES"]) == {"services": {KEY: {"workers": 2}}}


def test_user_bentofile_without_one_of_its_own_and_with_envs_of_its_own(spec: ServiceSpec) -> None:
    context = context_for(winner_for(spec))
    user = {"envs": [{"name": "MY_FLAG", "value": "1"}, {"name": adapter.ENV_THREADS, "value": "8"}]}
    doc = bento.user_bentofile(context, user)
    envs = [(e["name"], e["value"]) for e in doc["envs"]]
    assert ("MY_FLAG", "1") in envs and (adapter.ENV_THREADS, "1") in envs
    assert (adapter.ENV_THREADS, "8") not in envs, "the tuned value replaces the user's"
    bare = bento.user_bentofile(context, {})
    assert "include" not in bare, "BentoML's default: everything in the build folder"
    assert bare["python"]["packages"][0].startswith("bentoml==")


def test_user_bentofile_serves_with_the_event_loop_and_parser_it_was_measured_with(spec: ServiceSpec) -> None:
    context = context_for(winner_for(spec))
    bare = bento.user_bentofile(context, {})["python"]["packages"]
    assert {p.split("==")[0] for p in bare} >= {"bentoml", "uvloop", "httptools"}
    own = {"python": {"packages": ["torch", "UVLoop>=0.19; sys_platform != 'win32'"]}}
    packages = bento.user_bentofile(context, own)["python"]["packages"]
    assert packages[:2] == own["python"]["packages"], "the user's own lines come first, untouched"
    assert [p.split("==")[0] for p in packages[2:]] == ["httptools"], "uvloop is listed already"


def test_non_batchable_endpoint_gets_no_batching(spec: ServiceSpec) -> None:
    register(ServiceSpec(**{**spec.__dict__, "batchable": False, "written_batching": None}))
    env = bento.adapter_env(context_for(winner_for(spec)))
    assert json.loads(env[adapter.ENV_BATCHING]) == {}


def test_build_folder_is_a_copy_with_the_adapter_and_its_defaults(project: Path, tmp_path: Path) -> None:
    env = {adapter.ENV_TARGET: "service.py:SentenceEmbedding", adapter.ENV_THREADS: "1"}
    src = bento.prepare_build_dir(project, tmp_path / "build" / "src", env)
    assert sorted(p.name for p in src.iterdir()) == sorted(
        ["README.md", "bentofile.yaml", "requests.jsonl", "service.py", *bento.ADAPTER_FILES]
    )
    assert (src / "servetune_adapter.py").read_text() == Path(adapter.__file__).read_text()
    assert json.loads((src / "servetune_adapter.env.json").read_text()) == env
    assert (src / "servetune_gpumetrics.py").read_text() == Path(gpumetrics.__file__).read_text()
    assert adapter.defaults_path(str(src / "servetune_adapter.py")) == str(src / "servetune_adapter.env.json")
    assert not Path(adapter.defaults_path()).exists(), "servetune's own adapter has no defaults file"


def test_adapter_defaults_fill_only_what_the_environment_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "servetune_adapter.env.json"
    path.write_text(json.dumps({"SERVETUNE_TEST_A": "from-file", "SERVETUNE_TEST_B": "from-file"}))
    monkeypatch.setenv("SERVETUNE_TEST_B", "from-env")
    monkeypatch.delenv("SERVETUNE_TEST_A", raising=False)
    try:
        assert adapter.apply_defaults(str(path)) == {"SERVETUNE_TEST_A": "from-file"}
        assert os.environ["SERVETUNE_TEST_A"] == "from-file"
        assert os.environ["SERVETUNE_TEST_B"] == "from-env"
    finally:
        os.environ.pop("SERVETUNE_TEST_A", None)
    assert adapter.apply_defaults(str(tmp_path / "missing.json")) == {}
    path.write_text("[1, 2]")
    with pytest.raises(adapter.AdapterError, match="JSON object"):
        adapter.apply_defaults(str(path))


def test_names_and_routes_follow_the_users_service(spec: ServiceSpec) -> None:
    context = context_for(winner_for(spec))
    assert context.name == "servetune-userembedding"
    assert dns_name("My_Service.v2") == "my-service-v2"
    assert context.selector.endswith('runner_name="UserEmbedding", endpoint="/encode"')
    (rule,) = prometheus.adapter_values(context)["rules"]["custom"]
    assert "/encode" in rule["metricsQuery"] and "/predict" in rule["metricsQuery"]


def test_deploy_cli_renders_a_user_service_from_its_winner_file(tmp_path: Path) -> None:
    """End to end without building: describe the example (a subprocess), register it, render."""
    folder = tmp_path / "mixed"
    shutil.copytree(EXAMPLES / "mixed", folder)
    document = {
        "config": {"service": "TabularModels", "workers": 1, "threads": 1},
        "slo_p95_ms": 100, "goodput_rps": 80.0, "cores": 2,
        "target": "service.py:TabularModels", "working_dir": str(tmp_path / "gone"),
        "endpoint": "predict_iris",
    }  # fmt: skip
    winner = tmp_path / "winner.yaml"
    winner.write_text(yaml.safe_dump(document))
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text("from locust import FastHttpUser\n\n\nclass ServiceUser(FastHttpUser):\n    pass\n")
    out = tmp_path / "out"
    args = ["deploy", str(winner), "--out", str(out), "--no-build", "--locustfile", str(locustfile)]
    try:
        moved = CliRunner().invoke(app, args)
        assert moved.exit_code == 2 and "--working-dir" in moved.output
        result = CliRunner().invoke(app, [*args, "--working-dir", str(folder)])
        assert result.exit_code == 0, result.output
    finally:
        unregister("TabularModels")
    doc = yaml.safe_load((out / "bento" / "bentofile.yaml").read_text())
    envs = {e["name"]: e["value"] for e in doc["envs"]}
    assert envs[adapter.ENV_TARGET] == "service.py:TabularModels"
    assert json.loads(envs[adapter.ENV_BATCHING]) == {}, "/predict_iris is not batchable"
    deployment = yaml.safe_load((out / "k8s" / "deployment.yaml").read_text())
    assert deployment["metadata"]["name"] == "servetune-tabularmodels"
    assert "/predict_iris" in (out / "prometheus" / "adapter-values.yaml").read_text()
    assert 'endpoint="/predict_iris"' in (out / "prometheus" / "rules.yml").read_text()
