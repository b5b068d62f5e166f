import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from services.limits import BodyLimitMiddleware


async def echo_length(request: Request) -> JSONResponse:
    return JSONResponse({"received": len(await request.body())})


def client(limit: int) -> TestClient:
    app = Starlette(routes=[Route("/echo", echo_length, methods=["POST"])])
    return TestClient(BodyLimitMiddleware(app, max_bytes=limit))


def test_body_under_the_limit_reaches_the_app_intact() -> None:
    response = client(100).post("/echo", content=b"x" * 100)
    assert response.status_code == 200
    assert response.json() == {"received": 100}


def test_declared_oversized_body_gets_413_json() -> None:
    response = client(100).post("/echo", content=b"x" * 101)
    assert response.status_code == 413
    assert "too large" in response.json()["error"]


def test_chunked_body_without_length_is_capped_too() -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"y" * 40

    response = client(100).post("/echo", content=chunks())
    assert response.status_code == 413
    assert json.loads(response.content)["error"].startswith("request body too large")
