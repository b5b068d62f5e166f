"""The request guards in front of the services: bearer auth, the OpenAPI fix-up, their order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from services import guards
from services.auth import (
    AUTH_TOKEN_FILE_ENV,
    PLACEHOLDER_TOKEN,
    BearerAuthMiddleware,
    TokenFileError,
    bearer_token,
    read_token,
)
from services.limits import BodyLimitMiddleware, JsonOnlyMiddleware
from services.openapi import OpenApiMiddleware, patch_openapi

TOKEN = "s3cret-token-0123456789abcdef"


async def predict(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse("# metrics\n")


def token_file(tmp_path: Path, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    return path


@pytest.fixture
def guarded(tmp_path: Path) -> TestClient:
    routes = [Route("/predict", predict, methods=["POST"])]
    routes += [Route(p, metrics) for p in ("/metrics", "/readyz", "/livez", "/healthz", "/docs.json")]
    return TestClient(BearerAuthMiddleware(Starlette(routes=routes), token_file=str(token_file(tmp_path))))


def test_without_a_token_the_inference_endpoint_answers_401_json(guarded: TestClient) -> None:
    response = guarded.post("/predict", json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["detail"][0]["loc"] == ["header", "authorization"]
    assert response.json()["detail"][0]["type"] == "missing_token"


@pytest.mark.parametrize(
    "authorization", [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer ", TOKEN]
)
def test_a_wrong_token_or_scheme_answers_401(guarded: TestClient, authorization: str) -> None:
    response = guarded.post("/predict", json={}, headers={"authorization": authorization})
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_the_right_token_passes(guarded: TestClient, scheme: str) -> None:
    response = guarded.post("/predict", json={}, headers={"authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200
    assert response.json() == {"ok": True}


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/livez", "/healthz", "/docs.json"])
def test_probes_metrics_and_docs_stay_open(guarded: TestClient, path: str) -> None:
    assert guarded.get(path).status_code == 200


def test_unknown_paths_need_the_token_too(guarded: TestClient) -> None:
    assert guarded.get("/anything").status_code == 401


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("short\n", "at least"),
        (PLACEHOLDER_TOKEN + "\n", "placeholder"),
        ("two words-but-long-enough\n", "without spaces"),
        ("tab\tseparated-long-enough\n", "without spaces"),
        ("ctrl\x01char-long-enough-x\n", "without spaces"),
        ("", "at least"),
    ],
)
def test_bad_token_files_are_refused(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(TokenFileError, match=reason):
        read_token(token_file(tmp_path, text))


def test_a_missing_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read"):
        read_token(tmp_path / "absent")


def test_bearer_token_parsing() -> None:
    assert bearer_token(b"Bearer abc") == b"abc"
    assert bearer_token(b"  bearer   abc ") == b"abc"
    assert bearer_token(b"Basic abc") is None
    assert bearer_token(None) is None


def bentoml_like_spec() -> dict[str, Any]:
    """What BentoML 1.4 serves at /docs.json, cut to one API and one probe."""
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    }
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/InvalidArgument"}}}
    return {
        "openapi": "3.0.2",
        "paths": {
            "/readyz": {"get": {"responses": {"200": {"description": "ok"}}}},
            "/predict": {
                "post": {
                    "x-bentoml-name": "predict",
                    "responses": {
                        "200": {"description": "ok"},
                        "400": {"description": "bad", "content": ref},
                        "404": {"description": "nf", "content": ref},
                    },
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "required": ["images"], "properties": {}}
                            }
                        }
                    },
                }
            },
            "/info": {
                "post": {
                    "x-bentoml-name": "info",
                    "responses": {"200": {"description": "ok"}},
                    "requestBody": {
                        "content": {"application/json": {"schema": {"type": "object", "properties": {}}}}
                    },
                }
            },
        },
        "components": {
            "schemas": {"InvalidArgument": error, "NotFound": error, "InternalServerError": error}
        },
    }


def error_validator(spec: dict[str, Any]) -> Any:
    """A validator of the declared error schema, with the document's components resolvable."""
    schema = {**spec["components"]["schemas"]["Error"], "components": spec["components"]}
    schema = json.loads(json.dumps(schema))
    return jsonschema.Draft7Validator(schema)


def test_the_patched_error_schema_accepts_the_bodies_really_sent() -> None:
    spec = patch_openapi(bentoml_like_spec(), auth=False, max_body_bytes=1000)
    validator = error_validator(spec)
    bentoml_400 = {
        "error": "1 validation error for Input",
        "detail": [{"type": "missing", "loc": ["images", 0], "msg": "Field required", "url": "https://x"}],
    }
    for body in (bentoml_400, {"error": "An unexpected error has occurred"}):
        assert list(validator.iter_errors(body)) == []
    assert list(validator.iter_errors({"error": "x", "detail": "a string"})), "detail is a list"
    assert "InvalidArgument" not in spec["components"]["schemas"]


def test_the_patched_operations_declare_every_status_and_a_required_body() -> None:
    spec = patch_openapi(bentoml_like_spec(), auth=False, max_body_bytes=1000)
    predict_op = spec["paths"]["/predict"]["post"]
    assert sorted(predict_op["responses"]) == ["200", "400", "413", "415", "500", "503", "504"]
    assert predict_op["requestBody"]["required"] is True
    assert predict_op["requestBody"]["x-max-body-bytes"] == 1000
    assert spec["paths"]["/info"]["post"]["requestBody"]["required"] is False, "no required field"
    assert "security" not in predict_op and "securitySchemes" not in spec["components"]
    assert spec["paths"]["/readyz"] == bentoml_like_spec()["paths"]["/readyz"]


def test_with_auth_the_operations_declare_bearer_and_401() -> None:
    spec = patch_openapi(bentoml_like_spec(), auth=True, max_body_bytes=1000)
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "the token in the file SERVETUNE_AUTH_TOKEN_FILE names",
    }
    for path in ("/predict", "/info"):
        operation = spec["paths"][path]["post"]
        assert operation["security"] == [{"bearerAuth": []}]
        assert "401" in operation["responses"]
    assert "security" not in spec["paths"]["/readyz"]["get"]


def test_the_middleware_serves_the_patched_document() -> None:
    async def docs(request: Request) -> JSONResponse:
        return JSONResponse(bentoml_like_spec())

    app = Starlette(routes=[Route("/docs.json", docs)])
    response = TestClient(OpenApiMiddleware(app, auth=False, max_body_bytes=5)).get("/docs.json")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json() == patch_openapi(bentoml_like_spec(), auth=False, max_body_bytes=5)


class FakeService:
    def __init__(self) -> None:
        self.middlewares: list[tuple[type, dict[str, Any]]] = []
        self.apis: dict[str, Any] = {}

    def add_asgi_middleware(self, cls: type, **options: Any) -> None:
        self.middlewares.append((cls, options))


def test_guards_order_without_and_with_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_TOKEN_FILE_ENV, raising=False)
    service = FakeService()
    guards.install_guards(service)
    assert [cls for cls, _ in service.middlewares] == [
        JsonOnlyMiddleware,
        BodyLimitMiddleware,
        OpenApiMiddleware,
    ]
    monkeypatch.setenv(AUTH_TOKEN_FILE_ENV, str(token_file(tmp_path)))
    service = FakeService()
    guards.install_guards(service)
    assert service.middlewares[0] == (BearerAuthMiddleware, {"token_file": str(tmp_path / "token")})
    assert service.middlewares[-1][1]["auth"] is True


def test_a_bad_token_file_stops_the_service_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTH_TOKEN_FILE_ENV, str(token_file(tmp_path, PLACEHOLDER_TOKEN)))
    with pytest.raises(TokenFileError, match="placeholder"):
        guards.install_guards(FakeService())
