import json

import httpx
import pytest

from services.client import ServetuneClient, ServiceError


def transport(status: int, body: object, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def test_classify_posts_images_and_returns_predictions() -> None:
    seen: list[httpx.Request] = []
    answer = [{"label": 4, "probabilities": [0.1] * 10}]
    with ServetuneClient("http://svc", transport=transport(200, answer, seen)) as client:
        assert client.classify([[0.0] * 64]) == answer
    assert seen[0].url.path == "/predict"
    assert json.loads(seen[0].content) == {"images": [[0.0] * 64]}


def test_service_errors_carry_status_and_the_field_in_error() -> None:
    seen: list[httpx.Request] = []
    body = {
        "error": "1 validation error for Input",
        "detail": [{"loc": ["sentences", 0], "msg": "String should have at least 1 character"}],
    }
    with (
        ServetuneClient("http://svc", transport=transport(400, body, seen)) as client,
        pytest.raises(ServiceError) as info,
    ):
        client.embed([""])
    assert info.value.status_code == 400
    assert "sentences.0" in info.value.message
