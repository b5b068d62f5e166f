import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from services.limits import BodyLimitMiddleware, JsonOnlyMiddleware, media_type_of


async def echo_length(request: Request) -> JSONResponse:
    return JSONResponse({"received": len(await request.body())})


def app() -> Starlette:
    return Starlette(routes=[Route("/echo", echo_length, methods=["POST"])])


def client(limit: int) -> TestClient:
    return TestClient(BodyLimitMiddleware(app(), max_bytes=limit))


def test_body_under_the_limit_reaches_the_app_intact() -> None:
    response = client(100).post("/echo", content=b"x" * 100)
    assert response.status_code == 200
    assert response.json() == {"received": 100}


def test_declared_oversized_body_gets_413_json_naming_the_body() -> None:
    response = client(100).post("/echo", content=b"x" * 101)
    assert response.status_code == 413
    assert "too large" in response.json()["error"]
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_chunked_body_without_length_is_capped_too() -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"y" * 40

    response = client(100).post("/echo", content=chunks())
    assert response.status_code == 413
    assert json.loads(response.content)["error"].startswith("request body too large")


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",  # no boundary: BentoML's form parser answered 500
        "multipart/form-data; boundary=xyz",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/vnd.bentoml+pickle",
        "application/jsonx",
        "",
    ],
)
def test_a_body_that_is_not_json_gets_415_naming_the_header(content_type: str) -> None:
    response = TestClient(JsonOnlyMiddleware(app())).post(
        "/echo", content=b'{"a": 1}', headers={"content-type": content_type}
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert "unsupported media type" in body["error"]
    assert body["detail"] == [
        {
            "loc": ["header", "content-type"],
            "msg": "Content-Type must be application/json",
            "type": "unsupported_media_type",
        }
    ]


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8", None])
def test_json_or_no_content_type_passes(content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = TestClient(JsonOnlyMiddleware(app())).post("/echo", content=b"{}", headers=headers)
    assert response.status_code == 200
    assert response.json() == {"received": 2}


def test_media_type_drops_parameters_and_case() -> None:
    assert media_type_of(b" Application/JSON ; charset=UTF-8") == "application/json"
