"""Array answers: orjson JSON by default, float32 bytes on request, through BentoML's real app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import bentoml
import httpx
import jsonschema
import numpy as np
import pytest
from pydantic import Field
from starlette.testclient import TestClient

from services.client import ServetuneClient, ServiceError, decode_array
from services.guards import install_guards
from services.responses import FAST_JSON_ENV, FloatRows, VectorRows, binary_routes, json_body
from services.wire import BINARY_MEDIA_TYPE, SHAPE_HEADER, wants_binary

Xs = Annotated[list[float], Field(min_length=1, max_length=16)]


@bentoml.service(name="ArrayAnswers")
class ArrayAnswers:
    @bentoml.api(batchable=True, max_batch_size=8, max_latency_ms=500, output_spec=VectorRows)
    def rows(self, xs: Xs) -> np.ndarray:
        return np.asarray([[x, x / 3, 1e-8, -x] for x in xs], dtype=np.float32)

    @bentoml.api(output_spec=FloatRows)
    def echo(self, xs: Xs) -> list[float]:
        return list(xs)

    @bentoml.api
    def plain(self, xs: Xs) -> list[float]:
        return list(xs)


install_guards(ArrayAnswers)


def expected_rows(xs: list[float]) -> np.ndarray:
    return np.asarray([[x, x / 3, 1e-8, -x] for x in xs], dtype=np.float32)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(ArrayAnswers.to_asgi()) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("accept", "binary"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("application/octet-stream", True),
        ("APPLICATION/OCTET-STREAM", True),
        ("application/octet-stream, */*;q=0.1", True),
        ("application/json;q=0.5, application/octet-stream", True),
        ("application/octet-stream;q=0.4, application/json", False),
        ("application/octet-stream, application/json", False),  # a tie: JSON
        ("application/octet-stream;q=0", False),
        ("application/octet-stream;q=abc", False),
        ("text/html", False),
    ],
)
def test_accept_negotiation(accept: str | None, binary: bool) -> None:
    assert wants_binary(accept) is binary


def test_json_is_the_default_and_carries_the_float32_values(client: TestClient) -> None:
    xs = [1.0, 2.0, 0.1]
    response = client.post("/rows", json={"xs": xs})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    got = np.asarray(response.json(), dtype=np.float32)
    np.testing.assert_array_equal(got, expected_rows(xs))


def test_binary_on_request_is_the_same_array(client: TestClient) -> None:
    xs = [1.0, 2.0, 0.1]
    response = client.post("/rows", json={"xs": xs}, headers={"accept": BINARY_MEDIA_TYPE})
    assert response.status_code == 200
    assert response.headers["content-type"] == BINARY_MEDIA_TYPE
    assert response.headers[SHAPE_HEADER] == "3,4"
    assert len(response.content) == 3 * 4 * 4
    np.testing.assert_array_equal(decode_array(response), expected_rows(xs))


def test_bentoml_encoder_switch_gives_the_same_numbers(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    xs = [3.0, 0.7]
    fast = client.post("/rows", json={"xs": xs}).json()
    monkeypatch.setenv(FAST_JSON_ENV, "0")
    slow = client.post("/rows", json={"xs": xs})
    assert slow.status_code == 200
    assert slow.text != json_body(expected_rows(xs)).decode()  # really BentoML's encoder
    np.testing.assert_array_equal(
        np.asarray(slow.json(), dtype=np.float32), np.asarray(fast, dtype=np.float32)
    )
    binary = client.post("/rows", json={"xs": xs}, headers={"accept": BINARY_MEDIA_TYPE})
    assert binary.headers["content-type"] == BINARY_MEDIA_TYPE


def test_a_list_output_is_encoded_too(client: TestClient) -> None:
    response = client.post("/echo", json={"xs": [1.5, -2.0]})
    assert response.json() == [1.5, -2.0]
    binary = client.post("/echo", json={"xs": [1.5, -2.0]}, headers={"accept": BINARY_MEDIA_TYPE})
    assert binary.headers[SHAPE_HEADER] == "2"
    np.testing.assert_array_equal(decode_array(binary), np.asarray([1.5, -2.0], dtype=np.float32))


@pytest.mark.parametrize("accept", ["application/json", BINARY_MEDIA_TYPE])
def test_bad_input_is_still_a_json_400_whatever_the_accept_header(client: TestClient, accept: str) -> None:
    response = client.post("/rows", json={"xs": []}, headers={"accept": accept})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"][0]["loc"][-1] == "xs"


def test_the_openapi_document_declares_the_binary_answer_only_where_it_exists(client: TestClient) -> None:
    assert binary_routes(ArrayAnswers) == ["/echo", "/rows"]
    paths = client.get("/docs.json").json()["paths"]
    ok = paths["/rows"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"application/json", BINARY_MEDIA_TYPE}
    assert ok["content"][BINARY_MEDIA_TYPE]["schema"] == {"type": "string", "format": "binary"}
    jsonschema.validate("3,384", ok["headers"][SHAPE_HEADER.title()]["schema"])
    assert set(paths["/plain"]["post"]["responses"]["200"]["content"]) == {"application/json"}


def handler_for(app: TestClient) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        answer = app.request(
            request.method, request.url.path, content=request.content, headers=dict(request.headers)
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return httpx.MockTransport(handle)


def test_the_python_client_decodes_the_binary_answer(client: TestClient) -> None:
    with ServetuneClient(transport=handler_for(client)) as api:
        got = api.call_array("/rows", {"xs": [1.0, 0.25]})
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected_rows([1.0, 0.25]))
        with pytest.raises(ServiceError) as error:
            api.call_array("/rows", {"xs": []})
        assert error.value.status_code == 400
        with pytest.raises(ServiceError, match="expected a application/octet-stream"):
            api.call_array("/plain", {"xs": [1.0]})


def test_a_truncated_binary_answer_is_a_clear_error() -> None:
    response = httpx.Response(
        200, headers={"content-type": BINARY_MEDIA_TYPE, SHAPE_HEADER: "2,4"}, content=b"\0" * 12
    )
    with pytest.raises(ServiceError, match="malformed binary answer"):
        decode_array(response)


def test_json_body_handles_strided_arrays() -> None:
    array: Any = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    assert json_body(array) == b"[[0.0,2.0],[4.0,6.0],[8.0,10.0]]"
