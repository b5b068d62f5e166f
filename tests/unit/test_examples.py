"""The example services under examples/: plain BentoML services that servetune is shown and tested on.

They must stay ordinary user code (no servetune imports), and their request files must match the
APIs they declare. Nothing here starts a server or builds a model: `import_service` only imports the
module, and the models load in the service's `__init__`, which is never called.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVETUNE_PACKAGES = {"servetune", "core", "services", "tuner", "loadtests", "deploy", "bench"}

# example folder -> (service class, {api name: batchable}, {requests file: api name or None for mixed})
CASES: dict[str, tuple[str, dict[str, bool], dict[str, str | None]]] = {
    "embedding": ("SentenceEmbedding", {"encode": True}, {"requests.jsonl": "encode"}),
    "mixed": (
        "TabularModels",
        {"classify_digits": True, "predict_iris": False},
        {"requests.jsonl": "classify_digits", "requests-mixed.jsonl": None},
    ),
}


def _read_jsonl(path: Path) -> list[Any]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines, f"{path} is empty"
    return [json.loads(line) for line in lines]


def _api_params_from_ast(source: Path, class_name: str) -> dict[str, list[str]]:
    """The parameters (less `self`) of each `@bentoml.api` method of `class_name`, read from the AST."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    apis: dict[str, list[str]] = {}
    for node in cls.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for deco in node.decorator_list:
            target = deco.func if isinstance(deco, ast.Call) else deco
            if ast.unparse(target) == "bentoml.api":
                apis[node.name] = [a.arg for a in node.args.args[1:] + node.args.kwonlyargs]
    return apis


@pytest.fixture
def import_example() -> Iterator[Any]:
    """Import `examples/<name>/service.py:<Class>` the way `bentoml serve` does.

    Both examples are a module named `service`, and BentoML's loader reuses `sys.modules["service"]`
    (even `reload=True` reloads the first file), so the cached module goes before and after.
    """
    from _bentoml_impl.loader import import_service

    def load(name: str, class_name: str) -> Any:
        sys.modules.pop("service", None)
        return import_service(f"service:{class_name}", working_dir=str(EXAMPLES / name))

    yield load
    sys.modules.pop("service", None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_does_not_import_servetune(name: str) -> None:
    for source in (EXAMPLES / name).rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{source}: relative import"
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in SERVETUNE_PACKAGES, f"{source} imports {module}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bentofile_points_at_the_service(name: str) -> None:
    class_name = CASES[name][0]
    bentofile = yaml.safe_load((EXAMPLES / name / "bentofile.yaml").read_text(encoding="utf-8"))
    assert bentofile["service"] == f"service:{class_name}"
    assert "*.py" in bentofile["include"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_apis_are_batchable_as_described(name: str, import_example: Any) -> None:
    class_name, batchable, _ = CASES[name]
    svc = import_example(name, class_name)
    assert svc.name == class_name
    assert {api: svc.apis[api].batchable for api in svc.apis} == batchable
    for api in svc.apis.values():
        assert api.route == f"/{api.name}"
        if api.batchable:
            assert api.max_batch_size > 1
    # One worker, BentoML's default: choosing the worker count is servetune's job.
    assert "workers" not in svc.config
    # The AST and BentoML agree on each API's parameters.
    from_ast = _api_params_from_ast(EXAMPLES / name / "service.py", class_name)
    assert {api: list(svc.apis[api].input_spec.model_fields) for api in svc.apis} == from_ast


@pytest.mark.parametrize("name", sorted(CASES))
def test_request_files_match_the_apis(name: str, import_example: Any) -> None:
    class_name, _, files = CASES[name]
    svc = import_example(name, class_name)
    routes = {api.route: api for api in svc.apis.values()}
    for file_name, api_name in files.items():
        for i, line in enumerate(_read_jsonl(EXAMPLES / name / file_name), 1):
            where = f"{name}/{file_name}:{i}"
            assert isinstance(line, dict), where
            if api_name is None:  # the mixed form: {"endpoint": "/route", "body": {...}}
                assert set(line) == {"endpoint", "body"}, where
                api, body = routes[line["endpoint"]], line["body"]
            else:
                api, body = svc.apis[api_name], line
            assert isinstance(body, dict), where
            fields = api.input_spec.model_fields
            assert set(body) <= set(fields), where
            assert {k for k, f in fields.items() if f.is_required()} <= set(body), where
            api.input_spec.model_validate(body)  # what the server would do with it


def test_embedding_requests_hold_one_sentence_each() -> None:
    bodies = _read_jsonl(EXAMPLES / "embedding" / "requests.jsonl")
    assert 400 <= len(bodies) <= 600
    for body in bodies:
        [sentence] = body["sentences"]
        assert isinstance(sentence, str) and sentence.strip()
    assert len({b["sentences"][0] for b in bodies}) == len(bodies)


def test_mixed_requests_hold_one_image_each_and_use_both_endpoints() -> None:
    bodies = _read_jsonl(EXAMPLES / "mixed" / "requests.jsonl")
    assert len(bodies) >= 100
    for body in bodies:
        [image] = body["images"]
        assert len(image) == 64 and all(0 <= v <= 16 for v in image)
    mixed = _read_jsonl(EXAMPLES / "mixed" / "requests-mixed.jsonl")
    assert {line["endpoint"] for line in mixed} == {"/classify_digits", "/predict_iris"}
