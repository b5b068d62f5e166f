"""Real `bentoml serve` processes with non-default knobs, both services, every bad input."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

from core.polling import wait_until
from core.serveconfig import ServeConfig
from core.server import BentoServer, ServerError, port_is_free
from services.client import ServetuneClient
from services.digits import MAX_IMAGES_PER_REQUEST
from services.embedding import MAX_SENTENCE_CHARS, MAX_SENTENCES_PER_REQUEST
from services.limits import MAX_BODY_BYTES
from services.models.data import PIXEL_MAX, held_out_raw
from tests.integration.helpers import bentoml_processes, labelled_totals, status_totals, worker_processes
from tuner.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits_server(models_in_store: dict[str, str]) -> Iterator[BentoServer]:
    config = ServeConfig(service="digits", workers=2, max_batch_size=8, max_latency_ms=2000, threads=1)
    server = BentoServer(config.server_spec())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embedding_server(models_in_store: dict[str, str]) -> Iterator[BentoServer]:
    config = ServeConfig(service="embedding", max_batch_size=4, max_latency_ms=5000)
    server = BentoServer(config.server_spec())
    server.start()
    yield server
    server.stop()


def test_knobs_from_the_command_line_take_effect(digits_server: BentoServer) -> None:
    assert digits_server.process is not None
    assert len(worker_processes(digits_server.process.pid)) == 2
    assert digits_server.ready_workers() == 2, "start() returns once every worker is ready"
    image = held_out_raw()[0][0].tolist()

    def one_call(_: int) -> int:
        return httpx.post(f"{digits_server.url}/predict", json={"images": [image]}, timeout=30).status_code

    buckets_before, workers_before = batch_histogram(digits_server.url)
    with ThreadPoolExecutor(max_workers=32) as pool:
        codes = list(pool.map(one_call, range(200)))
    assert codes.count(200) == 200
    buckets_after, workers_after = batch_histogram(digits_server.url)
    counts = buckets_after - buckets_before  # this test's batches only
    per_worker = workers_after - workers_before
    total = counts["+Inf"]
    assert total > 0
    assert counts["8.0"] == total, "no batch may exceed max_batch_size=8"
    assert counts["1.0"] < total, "concurrent single-image requests must have been batched"
    assert set(per_worker) == {"1", "2"}, "both workers served batches"
    infos = [ServetuneClient(digits_server.url).info() for _ in range(4)]
    assert all(i["knobs"]["max_batch_size"] == 8 and i["threads"] == 1 for i in infos)


def test_digits_labels_held_out_images(digits_server: BentoServer) -> None:
    x, y = held_out_raw()
    with ServetuneClient(digits_server.url) as client:
        flat = client.classify(x[:40].tolist())
        grid = client.classify(x[:5].reshape(5, 8, 8).tolist())
    correct = sum(p["label"] == int(t) for p, t in zip(flat, y[:40], strict=True))
    assert correct >= 38
    assert [p["label"] for p in grid] == [p["label"] for p in flat[:5]]


def test_embedding_ranks_paraphrases_above_unrelated(embedding_server: BentoServer) -> None:
    with ServetuneClient(embedding_server.url) as client:
        a, b, c = client.embed(
            [
                "A man is playing a guitar on stage.",
                "Someone performs a song on the guitar.",
                "The central bank raised interest rates.",
            ]
        )
    cos = lambda u, v: sum(p * q for p, q in zip(u, v, strict=True))  # noqa: E731
    assert len(a) == 384
    assert abs(cos(a, a) - 1.0) < 1e-3
    assert cos(a, b) > cos(a, c) + 0.3


def test_embedding_binary_answer_is_the_json_answer_in_float32(embedding_server: BentoServer) -> None:
    sentences = ["A man is playing a guitar on stage.", "The central bank raised interest rates."]
    with ServetuneClient(embedding_server.url) as client:
        as_json = np.asarray(client.embed(sentences), dtype=np.float32)
        as_binary = client.embed_array(sentences)
        refused = httpx.post(
            f"{embedding_server.url}/encode",
            json={"sentences": []},
            headers={"accept": "application/octet-stream"},
        )
    assert as_binary.shape == (2, 384)
    assert as_binary.dtype == np.float32
    np.testing.assert_allclose(as_binary, as_json, rtol=0, atol=1e-6)  # batching may differ
    assert refused.status_code == 400
    assert refused.json()["detail"][0]["loc"][-1] == "sentences"


BAD_DIGITS = {
    "wrong shape": json.dumps({"images": [[1, 2, 3]]}),
    "wrong type": json.dumps({"images": "abc"}),
    "nan": '{"images": [[NaN' + ",0" * 63 + "]]}",
    "inf": '{"images": [[Infinity' + ",0" * 63 + "]]}",
    "empty batch": json.dumps({"images": []}),
    "too many": json.dumps({"images": [[0] * 64] * 257}),
    "malformed json": '{"images": [[1, 2',
    "boolean pixel": json.dumps({"images": [[False] + [0] * 63]}),
    "numeric string pixel": json.dumps({"images": [["1"] + [0] * 63]}),
    "oversized body": json.dumps({"images": [[16] * 64] * 9000}),
}
BAD_SENTENCES = {
    "wrong type": json.dumps({"sentences": [1, 2]}),
    "empty batch": json.dumps({"sentences": []}),
    "empty sentence": json.dumps({"sentences": [""]}),
    "too long": json.dumps({"sentences": ["word " * 1000]}),
    "too many": json.dumps({"sentences": ["hi"] * 65}),
    "malformed json": '{"sentences": ["a"',
}


@pytest.mark.parametrize("case", sorted(BAD_DIGITS))
def test_digits_bad_input_gets_4xx_json(digits_server: BentoServer, case: str) -> None:
    response = httpx.post(
        f"{digits_server.url}/predict",
        content=BAD_DIGITS[case],
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert 400 <= response.status_code < 500, response.text[:300]
    assert "error" in json.dumps(response.json())
    ok = httpx.post(f"{digits_server.url}/predict", json={"images": [[0] * 64]}, timeout=30)
    assert ok.status_code == 200


NOT_JSON = {
    "multipart without boundary": ("multipart/form-data", b'{"images": [[0]]}'),  # was a 500
    "form": ("application/x-www-form-urlencoded", b"images=1"),
    "json as text": ("text/plain", json.dumps({"images": [[0.0] * 64]}).encode()),
    "pickle": ("application/vnd.bentoml+pickle", b"\x80\x04N."),
}


@pytest.mark.parametrize("path", ["/predict", "/info"])
@pytest.mark.parametrize("case", sorted(NOT_JSON))
def test_a_body_that_is_not_json_gets_415_json(digits_server: BentoServer, case: str, path: str) -> None:
    content_type, body = NOT_JSON[case]
    url = f"{digits_server.url}{path}"
    response = httpx.post(url, content=body, headers={"content-type": content_type}, timeout=30)
    assert response.status_code == 415, response.text[:300]
    assert response.json()["detail"][0]["loc"] == ["header", "content-type"]
    assert httpx.post(url, json={"images": [[0] * 64]}, timeout=30).status_code == 200


def test_openapi_documents_the_limits_and_the_real_error_body(
    digits_server: BentoServer, embedding_server: BentoServer
) -> None:
    document = httpx.get(f"{digits_server.url}/docs.json", timeout=30).json()
    predict = document["paths"]["/predict"]["post"]
    body = predict["requestBody"]
    assert body["required"] is True and body["x-max-body-bytes"] == MAX_BODY_BYTES
    images = body["content"]["application/json"]["schema"]["properties"]["images"]
    assert (images["minItems"], images["maxItems"]) == (1, MAX_IMAGES_PER_REQUEST)
    flat = images["items"]["anyOf"][0]
    assert flat["minItems"] == flat["maxItems"] == 64
    assert (flat["items"]["minimum"], flat["items"]["maximum"]) == (0, PIXEL_MAX)
    assert {"400", "413", "415", "500", "503"} <= set(predict["responses"])
    encode = httpx.get(f"{embedding_server.url}/docs.json", timeout=30).json()["paths"]["/encode"]["post"]
    sentences = encode["requestBody"]["content"]["application/json"]["schema"]["properties"]["sentences"]
    assert (sentences["minItems"], sentences["maxItems"]) == (1, MAX_SENTENCES_PER_REQUEST)
    assert (sentences["items"]["minLength"], sentences["items"]["maxLength"]) == (1, MAX_SENTENCE_CHARS)
    # the error schema the document declares accepts what the service really sends
    declared = {**predict["responses"]["400"]["content"]["application/json"]["schema"]}
    declared["components"] = document["components"]
    sent = httpx.post(f"{digits_server.url}/predict", json={"images": [[True] * 64]}, timeout=30)
    assert sent.status_code == 400
    jsonschema.validate(sent.json(), declared)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"error": "x", "detail": "a string"}, declared)


@pytest.mark.parametrize("case", sorted(BAD_SENTENCES))
def test_embedding_bad_input_gets_4xx_json(embedding_server: BentoServer, case: str) -> None:
    response = httpx.post(
        f"{embedding_server.url}/encode",
        content=BAD_SENTENCES[case],
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert 400 <= response.status_code < 500, response.text[:300]
    assert "error" in json.dumps(response.json())
    ok = httpx.post(f"{embedding_server.url}/encode", json={"sentences": ["still serving"]}, timeout=30)
    assert ok.status_code == 200


def test_bad_input_is_counted_as_4xx_never_as_5xx(
    digits_server: BentoServer, embedding_server: BentoServer
) -> None:
    for server, endpoint, cases in (
        (digits_server, "/predict", BAD_DIGITS),
        (embedding_server, "/encode", BAD_SENTENCES),
    ):
        before = status_totals(server.url)
        codes = [
            httpx.post(
                f"{server.url}{endpoint}",
                content=body,
                headers={"content-type": "application/json"},
                timeout=30,
            ).status_code
            for body in cases.values()
        ]
        assert all(400 <= code < 500 for code in codes), codes
        sent = Counter(str(code) for code in codes)
        counted = statuses_since(server.url, before, sent)
        assert counted == sent, f"{endpoint}: the server counted {dict(counted)} for {dict(sent)}"


def statuses_since(url: str, before: Counter[str], expected: Counter[str]) -> Counter[str]:
    """Requests per status counted since `before`; waits up to 10 s for them to reach `expected`
    (the metrics middleware may count a request just after its response went out)."""
    wait_until(lambda: status_totals(url) - before == expected, 10.0, interval_s=0.2)
    return status_totals(url) - before


def batch_histogram(url: str) -> tuple[Counter[str], Counter[str]]:
    """Adaptive batches so far: per histogram bucket (le) and per worker index."""
    family = "bentoml_service_adaptive_batch_size"
    return (
        labelled_totals(url, family, f"{family}_bucket", "le"),
        labelled_totals(url, family, f"{family}_count", "worker_index"),
    )


def test_cli_call_prints_labels(digits_server: BentoServer) -> None:
    result = CliRunner().invoke(app, ["call", "digits", "--sample", "3", "--url", digits_server.url])
    assert result.exit_code == 0, result.output
    assert "label" in result.output
    bad = CliRunner().invoke(app, ["call", "digits", "1,2,3", "--url", digits_server.url])
    assert bad.exit_code == 1
    assert "refused" in bad.output


def test_each_worker_listens_on_its_own_socket_and_connections_spread(digits_server: BentoServer) -> None:
    assert digits_server.process is not None
    listeners = {
        worker.pid: [
            c
            for c in worker.net_connections("tcp")
            if c.status == "LISTEN" and c.laddr.port == digits_server.port
        ]
        for worker in worker_processes(digits_server.process.pid)
    }
    assert len(listeners) == 2 and all(len(sockets) == 1 for sockets in listeners.values())
    assert {s[0].laddr.ip for s in listeners.values()} == {"127.0.0.1"}, "local servers bind loopback"
    inodes = {os.readlink(f"/proc/{pid}/fd/{sockets[0].fd}") for pid, sockets in listeners.items()}
    assert len(inodes) == 2, f"the workers share one listening socket: {inodes}"
    # Keep-alive clients used to land 27:1 or 28:0 on the busy worker; the kernel now hashes
    # each connection to one of the listeners (P(fewer than 8 of 40 on a worker) ~ 1e-5).
    per_worker: Counter[int] = Counter()
    connections = [http.client.HTTPConnection("127.0.0.1", digits_server.port, timeout=30) for _ in range(40)]
    try:
        for connection in connections:
            connection.request("POST", "/info", body="{}", headers={"content-type": "application/json"})
            per_worker[json.loads(connection.getresponse().read())["worker_index"]] += 1
    finally:
        for connection in connections:
            connection.close()
    assert set(per_worker) == {1, 2} and min(per_worker.values()) >= 8, per_worker


def test_a_taken_port_fails_the_start_with_the_reason(models_in_store: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        server = BentoServer(
            ServeConfig(service="digits", workers=2).server_spec(port=taken.getsockname()[1])
        )
        with pytest.raises(ServerError, match="Address already in use") as failure:
            server.start(ready_timeout_s=60)
    assert not [p for p in bentoml_processes() if " ".join(p.cmdline()).count(str(server.port))]
    assert f"full log: {server.log.path}" in str(failure.value) and server.log.path.is_file()
    shutil.rmtree(server.log_dir)


def test_stop_leaves_no_process_or_port(models_in_store: dict[str, str]) -> None:
    server = BentoServer(ServeConfig(service="digits", workers=2).server_spec())
    server.start()
    assert server.process is not None
    pids = [server.process.pid, *(p.pid for p in worker_processes(server.process.pid))]
    server.stop()
    alive = [p.pid for p in bentoml_processes() if p.pid in pids]
    assert alive == []
    assert port_is_free(server.port)
    assert not server.log_dir.exists(), "a clean stop removes the temporary log directory"
