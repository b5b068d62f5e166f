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


def test_a_token_is_sent_as_a_bearer_header_on_every_request() -> None:
    seen: list[httpx.Request] = []
    with ServetuneClient("http://svc", transport=transport(200, [[0.0]], seen), token="tok-123") as client:
        client.embed(["a"])
        client.classify([[0.0] * 64])
    assert [r.headers["authorization"] for r in seen] == ["Bearer tok-123", "Bearer tok-123"]
    with ServetuneClient("http://svc", transport=transport(200, [[0.0]], seen)) as client:
        client.embed(["a"])
    assert "authorization" not in seen[-1].headers


def test_a_refusal_with_the_guards_error_body_names_the_header() -> None:
    seen: list[httpx.Request] = []
    body = {
        "error": "invalid bearer token",
        "detail": [{"loc": ["header", "authorization"], "msg": "the bearer token is not valid", "type": "x"}],
    }
    with (
        ServetuneClient("http://svc", transport=transport(401, body, seen), token="wrong") as client,
        pytest.raises(ServiceError) as info,
    ):
        client.classify([[0.0] * 64])
    assert info.value.status_code == 401
    assert info.value.message == "invalid bearer token: header.authorization: the bearer token is not valid"


def test_call_posts_any_body_to_any_endpoint() -> None:
    seen: list[httpx.Request] = []
    with ServetuneClient("http://svc", transport=transport(200, [[0.5, 0.5]], seen)) as client:
        assert client.call("encode", {"sentences": ["hi"]}) == [[0.5, 0.5]]
    assert seen[0].url.path == "/encode"
    assert json.loads(seen[0].content) == {"sentences": ["hi"]}


def test_call_errors_carry_starlettes_detail() -> None:
    seen: list[httpx.Request] = []
    with (
        ServetuneClient("http://svc", transport=transport(404, {"detail": "Not Found"}, seen)) as client,
        pytest.raises(ServiceError) as info,
    ):
        client.call("/nope", {})
    assert info.value.status_code == 404 and info.value.message == "Not Found"
