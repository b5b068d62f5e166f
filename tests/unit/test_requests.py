"""Request pools: the user's requests file, the pool file, synthetic bodies from a schema."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import bentoml
import jsonschema
import numpy as np
import pytest
import torch
from bentoml.validators import DType, Shape
from pydantic import BaseModel, Field

from loadtests.requests import (
    NoJsonBody,
    Request,
    RequestsFileError,
    SchemaError,
    builtin_requests,
    ordered,
    read_pool,
    read_requests_file,
    request_schema,
    synthetic_requests,
    write_pool,
)
from loadtests.runner import LoadTarget, LocustRunner

ROUTES = ("/encode", "/info")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text(text)
    return path


def test_plain_lines_go_to_the_default_route_byte_for_byte(tmp_path: Path) -> None:
    path = write(tmp_path, '{"sentences": ["a b"]}\n\n  \n{"sentences":["c"],"n":1}\n')
    found = read_requests_file(path, "encode", ROUTES)
    assert found == [
        Request("/encode", b'{"sentences": ["a b"]}'),
        Request("/encode", b'{"sentences":["c"],"n":1}'),
    ]


def test_wrapped_lines_mix_endpoints(tmp_path: Path) -> None:
    lines = [
        {"endpoint": "/info", "body": {}},
        {"endpoint": "encode", "body": {"sentences": ["x"]}},
        {"sentences": ["y"]},
        {"endpoint": "/info", "body": {"x": 1}, "extra": 0},  # not exactly the two keys: a body
    ]
    path = write(tmp_path, "\n".join(json.dumps(line) for line in lines))
    found = read_requests_file(path, "/encode", ROUTES)
    assert [r.route for r in found] == ["/info", "/encode", "/encode", "/encode"]
    assert json.loads(found[1].body) == {"sentences": ["x"]}
    assert json.loads(found[3].body) == lines[3]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}\n{"a": 1 "b": 2}\n', "requests.jsonl:2: not valid JSON (Expecting ',' delimiter)"),
        ('{"a": 1}\n\n[1, 2]\n', "requests.jsonl:3: a request body must be a JSON object, got an array"),
        ('"text"\n', "requests.jsonl:1: a request body must be a JSON object, got a string"),
        ('{"a": NaN}\n', "requests.jsonl:1: not valid JSON (NaN is not JSON)"),
        (
            '{"a": 1}\n{"a": 1}\n{"endpoint": "/nope", "body": {}}\n',
            "requests.jsonl:3: endpoint '/nope' is not one of /encode, /info",
        ),
        ('{"endpoint": "/info", "body": [1]}\n', 'requests.jsonl:1: "body" must be a JSON object'),
        ('{"endpoint": 3, "body": {}}\n', 'requests.jsonl:1: "endpoint" must be a route'),
        ("", "requests.jsonl: no requests (empty file)"),
        ("\n \n", "requests.jsonl: no requests (only blank lines)"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RequestsFileError) as caught:
        read_requests_file(path, "/encode", ROUTES)
    assert str(caught.value).startswith(f"{tmp_path}/{message}"), str(caught.value)


def test_an_unknown_default_route_and_binary_lines_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, '{"a": 1}\n')
    with pytest.raises(RequestsFileError, match=r"requests.jsonl:1: endpoint \(the default\) '/x' is not"):
        read_requests_file(path, "/x", ROUTES)
    assert read_requests_file(path, "/x")[0].route == "/x", "without routes any endpoint goes"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(RequestsFileError, match=r"requests\.jsonl:2: not UTF-8"):
        read_requests_file(path, "/encode", ROUTES)
    with pytest.raises(RequestsFileError, match=r"missing\.jsonl: cannot read"):
        read_requests_file(tmp_path / "missing.jsonl", "/encode")


def test_the_file_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import loadtests.requests as module

    path = write(tmp_path, '{"a": 1}\n' * 4)
    monkeypatch.setattr(module, "MAX_LINES", 3)
    with pytest.raises(RequestsFileError, match=r"requests\.jsonl:4: more than 3 requests"):
        read_requests_file(path, "/encode")
    monkeypatch.setattr(module, "MAX_BYTES", 10)
    with pytest.raises(RequestsFileError, match="MB cap"):
        read_requests_file(path, "/encode")


def test_shuffle_is_deterministic_and_keeps_every_request() -> None:
    pool = [Request("/a", str(i).encode()) for i in range(50)]
    assert ordered(pool, None) == pool
    once, again = ordered(pool, 7), ordered(pool, 7)
    assert once == again and once != pool and sorted(once, key=lambda r: int(r.body)) == pool
    assert ordered(pool, 8) != once


def test_the_pool_file_keeps_bodies_exact(tmp_path: Path) -> None:
    pool = [Request("/a", b'{"x":  1.50, "s": "\\u00e9\xc3\xa9"}'), Request("/b", b"{}")]
    path = write_pool(pool, tmp_path / "pool.jsonl")
    assert read_pool(path) == pool
    with pytest.raises(ValueError, match="at least one"):
        write_pool([], tmp_path / "empty.jsonl")


def test_builtin_requests_wrap_the_registered_row_pool() -> None:
    found = builtin_requests("noop", rows_per_request=3, count=5)
    assert len(found) == 5 and {r.route for r in found} == {"/echo"}
    assert all(len(json.loads(r.body)["items"]) == 3 for r in found)
    assert builtin_requests("noop", 3, count=5) == found, "seeded"
    assert builtin_requests("noop", 1, count=2, route="echo_unbatched")[0].route == "/echo_unbatched"


# BentoML's /docs.json request bodies of the shipped services (inline), and a pydantic-like $ref one.
NOOP = {
    "type": "object",
    "title": "Input",
    "required": ["items"],
    "properties": {"items": {"items": {"type": "number"}, "maxItems": 256, "minItems": 1, "type": "array"}},
}
EMBEDDING = {
    "type": "object",
    "required": ["sentences"],
    "properties": {
        "sentences": {
            "items": {"maxLength": 2000, "minLength": 1, "pattern": "\\S", "type": "string"},
            "maxItems": 64,
            "minItems": 1,
            "type": "array",
        }
    },
}
PIXELS = {
    "items": {"maximum": 16.0, "minimum": 0.0, "type": "number"},
    "maxItems": 64,
    "minItems": 64,
    "type": "array",
}
DIGITS = {
    "type": "object",
    "required": ["images"],
    "properties": {
        "images": {
            "items": {"anyOf": [PIXELS, {"type": "null"}]},
            "maxItems": 256,
            "minItems": 1,
            "type": "array",
        }
    },
}
OPENAPI: dict[str, Any] = {
    "openapi": "3.0.2",
    "paths": {
        "/rank": {
            "post": {
                "requestBody": {
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/rank__Input"}}}
                }
            }
        },
        "/upload": {"post": {"requestBody": {"content": {"multipart/form-data": {"schema": {}}}}}},
        "/health": {"get": {}},
        "/sample": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {"type": "object"},
                            "examples": {"one": {"value": {"q": "hello"}}},
                        }
                    }
                }
            }
        },
    },
    "components": {
        "schemas": {
            "rank__Input": {
                "type": "object",
                "required": ["query", "docs", "top_k", "mode", "options"],
                "properties": {
                    "query": {"type": "string", "minLength": 20, "maxLength": 30},
                    "docs": {"type": "array", "items": {"$ref": "#/components/schemas/Doc"}, "minItems": 3},
                    "top_k": {"type": "integer", "minimum": 1, "exclusiveMaximum": 5},
                    "mode": {"enum": ["fast", "exact"]},
                    "options": {"$ref": "#/components/schemas/Options"},
                    "note": {"type": "string"},
                },
            },
            "Doc": {
                "type": "object",
                "required": ["id", "text", "score", "tags", "parent"],
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "text": {"type": "string", "examples": ["a doc"]},
                    "score": {"type": "number", "minimum": -1, "maximum": 1, "multipleOf": 0.25},
                    "tags": {"type": ["array", "null"], "items": {"type": "string", "maxLength": 3}},
                    "parent": {"anyOf": [{"$ref": "#/components/schemas/Doc"}, {"type": "null"}]},
                },
            },
            "Options": {
                "allOf": [
                    {"type": "object", "required": ["flag"], "properties": {"flag": {"type": "boolean"}}},
                    {"required": ["limit"], "properties": {"limit": {"type": "integer", "default": 9}}},
                ]
            },
        }
    },
}


@pytest.mark.parametrize(("schema", "route"), [(NOOP, "/echo"), (EMBEDDING, "encode"), (DIGITS, "/predict")])
def test_synthetic_bodies_validate_against_the_services_schemas(schema: dict[str, Any], route: str) -> None:
    found = synthetic_requests(schema, route, count=20, seed=3)
    assert len(found) == 20 and {r.route for r in found} == {"/" + route.lstrip("/")}
    for request in found:
        jsonschema.validate(json.loads(request.body), schema)
    assert synthetic_requests(schema, route, count=20, seed=3) == found, "deterministic per seed"
    items = json.loads(found[0].body)[next(iter(schema["required"]))]
    assert len(items) == 1, "one array item unless minItems asks more"


def test_synthetic_words_and_bounds() -> None:
    found = synthetic_requests(EMBEDDING, "/encode", count=30, seed=1)
    words = {w for r in found for s in json.loads(r.body)["sentences"] for w in s.split()}
    assert words and all(w.isalpha() for w in words)
    assert synthetic_requests(EMBEDDING, "/encode", count=30, seed=2) != found
    digits = synthetic_requests(DIGITS, "/predict", count=5)
    for request in digits:
        (image,) = json.loads(request.body)["images"]
        assert len(image) == 64 and all(isinstance(v, float) and 0.0 <= v <= 16.0 for v in image)


class Order(BaseModel):
    """A body whose strings are constrained by regexes, as users write them with pydantic."""

    sku: Annotated[str, Field(pattern=r"^SKU-[0-9]{4}$")]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    code: Annotated[str, Field(pattern=r"[a-z]{2}_\d+", max_length=8)]  # unanchored, and a limit
    phone: Annotated[str, Field(pattern=r"^\+?[1-9]\d{6,14}$", min_length=10)]
    slug: Annotated[str, Field(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")]


def test_synthetic_strings_follow_their_pattern() -> None:
    schema = Order.model_json_schema()
    found = synthetic_requests(schema, "/order", count=40, seed=7)
    for request in found:
        Order.model_validate_json(request.body)  # pydantic (what BentoML checks with) accepts it
        jsonschema.validate(json.loads(request.body), schema)
    assert len({json.loads(r.body)["sku"] for r in found}) > 10, "drawn, not one fixed string"
    assert synthetic_requests(schema, "/order", count=40, seed=7) == found, "deterministic per seed"


@pytest.mark.parametrize("pattern", [r"^\p{L}+$", r"^(?=.*\d)[a-z]{8}$", r"^[^\x00-\U0010ffff]$"])
def test_a_pattern_python_cannot_draw_from_still_gives_a_string(pattern: str) -> None:
    name = {"type": "string", "pattern": pattern}
    (request,) = synthetic_requests({"required": ["name"], "properties": {"name": name}}, "/x", count=1)
    assert isinstance(json.loads(request.body)["name"], str), "words: the service's 400 asks for --requests"


@bentoml.service
class TensorInputs:
    """Tensor parameters as BentoML's examples declare them (`Shape`/`DType` validators)."""

    @bentoml.api(batchable=True)
    def score(self, x: Annotated[torch.Tensor, Shape((-1, 4)), DType("float32")]) -> np.ndarray:
        return x.sum(dim=1).numpy()

    @bentoml.api
    def grid(self, cells: Annotated[np.ndarray, Shape((2, 3)), DType("int64")], scale: float = 1.0) -> int:
        return int(cells.sum() * scale)


@pytest.mark.parametrize("api", ["score", "grid"])
def test_synthetic_tensors_have_the_shape_and_dtype_their_validators_declare(api: str) -> None:
    document = TensorInputs.openapi_spec.asdict()
    schema = request_schema(document, api, api)
    found = synthetic_requests(schema, api, count=5, components=document.get("components"))
    model = TensorInputs.apis[api].input_spec
    for request in found:
        model.model_validate_json(request.body)  # BentoML's own validator reshapes it: no error
    first = json.loads(found[0].body)
    if api == "score":
        assert len(first["x"]) == 1 and len(first["x"][0]) == 4, "a free dimension gets one row"
    else:
        assert [len(row) for row in first["cells"]] == [3, 3]
        assert all(isinstance(v, int) for row in first["cells"] for v in row), "int64 cells"
    assert (
        request_schema(document, api)
        == TensorInputs.openapi_spec.asdict()["paths"][f"/{api}"]["post"]["requestBody"]["content"][
            "application/json"
        ]["schema"]
    ), "without the API's name: the body schema as written"


def test_request_schema_resolves_refs_and_synthetic_bodies_fit() -> None:
    schema = request_schema(OPENAPI, "rank")
    assert "$ref" not in json.dumps(schema)
    assert schema["properties"]["docs"]["items"]["required"][0] == "id"
    assert schema["properties"]["docs"]["items"]["properties"]["parent"]["anyOf"][0] == {}, "a cycle stops"
    found = synthetic_requests(schema, "/rank", count=10, seed=5)
    for request in found:
        body = json.loads(request.body)
        jsonschema.validate(
            body, OPENAPI["components"]["schemas"]["rank__Input"] | {"components": OPENAPI["components"]}
        )
        assert "note" not in body, "only the required properties"
        assert len(body["docs"]) == 3 and body["docs"][0]["text"] == "a doc"
        assert body["options"]["limit"] == 9 and isinstance(body["options"]["flag"], bool)
        assert 1 <= body["top_k"] <= 4 and body["mode"] in {"fast", "exact"}
        assert 20 <= len(body["query"]) <= 30


def test_unresolved_refs_come_from_the_components() -> None:
    raw = {"$ref": "#/components/schemas/Doc"}
    (request,) = synthetic_requests(raw, "/x", count=1, components=OPENAPI["components"])
    body = json.loads(request.body)
    assert set(body) == {"id", "text", "score", "tags", "parent"} and body["parent"] is None, "cycle: null"
    assert body["score"] in {-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0}


def test_request_schema_errors_are_clear() -> None:
    with pytest.raises(SchemaError, match=r"no endpoint /nope \(POST endpoints: /rank, /sample, /upload\)"):
        request_schema(OPENAPI, "/nope")
    with pytest.raises(NoJsonBody, match="/upload takes no JSON request body") as upload:
        request_schema(OPENAPI, "upload")
    assert "--locustfile" in upload.value.fix  # a JSON requests file cannot carry a file upload
    with pytest.raises(SchemaError, match="/health takes no POST"):
        request_schema(OPENAPI, "/health")
    sample = request_schema(OPENAPI, "/sample")
    assert [json.loads(r.body) for r in synthetic_requests(sample, "/sample", count=2)] == [
        {"q": "hello"}
    ] * 2


def test_load_targets_carry_their_pool(tmp_path: Path) -> None:
    target = LoadTarget.of("noop", "echo_unbatched", rows_per_request=2)
    assert target.route == "/echo_unbatched" and target.requests is not None
    assert {r.route for r in target.requests} == {"/echo_unbatched"} and "requests" not in repr(target)
    mixed = [Request("/a", b"{}"), Request("/b", b"{}"), Request("/b", b"{}")]
    assert LoadTarget.with_requests("mine", mixed).route == "/b", "the most frequent route"
    assert LoadTarget.with_requests("mine", mixed, "a").user_class == "ServiceUser"
    with pytest.raises(ValueError, match="empty"):
        LoadTarget.with_requests("mine", [])
    runner = LocustRunner()
    assert runner.target(target) is target
    with pytest.raises(ValueError, match="in the LoadTarget"):
        runner.target(target, "echo")


def test_a_user_locustfile_runs_with_servetunes_shape_and_hooks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        LocustRunner(locustfile=tmp_path / "missing.py")
    user_file = tmp_path / "my_users.py"
    user_file.write_text("")
    runner = LocustRunner(locustfile=user_file, processes=2)
    target = runner.target("noop")
    assert target == LoadTarget("noop", "/echo") and runner._pool(target) is None
    with pytest.raises(ValueError, match="give the endpoint"):
        runner.target("mine")
    assert runner.target("mine", "score").route == "/score"
    cmd = runner._command("http://127.0.0.1:3000", target)
    files = cmd[cmd.index("-f") + 1].split(",")
    assert [Path(f).name for f in files] == ["locust_shapes.py", "locust_hooks.py", "my_users.py"]
    assert "ServiceUser" not in cmd and cmd[cmd.index("--processes") + 1] == "2"
    plain = LocustRunner()._command("http://127.0.0.1:3000", LoadTarget.of("noop"))
    assert plain[-1] == "ServiceUser" and "locustfile.py" in plain[plain.index("-f") + 1]


def test_a_registered_services_requests_file_is_its_load(tmp_path: Path) -> None:
    from core.registry import ServiceSpec, register, service_spec, unregister

    path = write(tmp_path, '{"q": "a"}\n{"endpoint": "/other", "body": {"q": "b"}}\n')
    register(
        ServiceSpec(
            key="users-own",
            import_path="svc.py:Mine",
            bento_name="Mine",
            endpoint="score",
            working_dir=str(tmp_path),
            routes=("/score", "/other"),
            requests_file=str(path),
        )
    )
    try:
        target = LoadTarget.of("users-own")
        assert target.route == "/score" and target.requests is not None
        assert [r.route for r in target.requests] == ["/score", "/other"]
        naive = LoadTarget.of("users-own", "score_one")
        assert naive.requests is not None and [r.route for r in naive.requests] == ["/score_one", "/other"]
        path.write_text('{"endpoint": "/nope", "body": {}}\n')
        with pytest.raises(RequestsFileError, match="endpoint '/nope' is not one of /other, /score"):
            LoadTarget.of("users-own")
        builtin = dataclasses.replace(service_spec("noop"), key="noop-file", requests_file=str(path))
        register(builtin)
        path.write_text('{"items": [1.0]}\n')
        (request,) = LoadTarget.of("noop-file").requests or ()
        assert request == Request("/echo", b'{"items": [1.0]}'), "the file, not the rows"
    finally:
        unregister("users-own")
        unregister("noop-file")
