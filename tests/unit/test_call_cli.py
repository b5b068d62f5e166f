"""`servetune call` for any service: the body from --json / --json-file / stdin, one-line errors
naming the option (nothing here reaches a server)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

import services.client as client_module
from tuner.cli import app
from tuner.commands.serving import BodyError, read_body


def test_read_body_from_text_file_and_stdin(tmp_path: Path) -> None:
    assert read_body('{"sentences": ["hi"]}', None, io.StringIO()) == {"sentences": ["hi"]}
    body = tmp_path / "body.json"
    body.write_text('{"measurements": [5.1, 3.5, 1.4, 0.2]}\n')
    assert read_body(None, body, io.StringIO()) == {"measurements": [5.1, 3.5, 1.4, 0.2]}
    assert read_body("-", None, io.StringIO("[1, 2]")) == [1, 2]
    assert read_body(None, Path("-"), io.StringIO('"text"')) == "text"


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ('{"sentences": [hi]}', None, "--json: not valid JSON (Expecting value at column 16)"),
        ("{}", Path("x.json"), "--json/--json-file: give the body one way, not both"),
        (None, None, "--json: give the request body"),
        (None, Path("/nonexistent/body.json"), "--json-file: cannot read /nonexistent/body.json"),
    ],
)
def test_read_body_errors_name_the_option(text: str | None, path: Path | None, message: str) -> None:
    with pytest.raises(BodyError) as info:
        read_body(text, path, io.StringIO())
    assert str(info.value).startswith(message)


def test_bad_json_in_a_file_names_the_line(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text('{\n  "sentences": ["a",]\n}\n')
    with pytest.raises(BodyError, match=r"--json-file: not valid JSON \(.* at line 2 column"):
        read_body(None, body, io.StringIO())


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["call", *args])
    return result.exit_code, " ".join(result.output.split())


def test_call_cli_errors_are_one_line_and_name_the_option() -> None:
    url = ["--url", "http://127.0.0.1:9"]
    code, out = invoke("--endpoint", "/encode", "--json", "{nope", *url)
    assert code == 2 and "error: --json: not valid JSON" in out and "Traceback" not in out
    code, out = invoke("--json", "{}", *url)
    assert code == 2 and "--endpoint: name the API" in out
    code, out = invoke("embedding", "a sentence", "--json", "{}", *url)
    assert code == 2 and "inputs:" in out
    code, out = invoke("whatever", "--endpoint", "/encode", "--json", "{}", *url)
    assert code == 2 and "service: 'whatever' is not needed with --endpoint" in out
    code, out = invoke(*url)
    assert code == 2 and "--endpoint: give the API" in out


def test_call_cli_cannot_reach_is_one_line() -> None:
    code, out = invoke(
        "--endpoint", "encode", "--json", '{"sentences": ["hi"]}', "--url", "http://127.0.0.1:9"
    )
    assert code == 1 and out.startswith("error: cannot reach http://127.0.0.1:9")


def binary_service(request: httpx.Request) -> httpx.Response:
    """/encode with an Accept of octet-stream: two 3-number rows, little-endian float32."""
    sentences = json.loads(request.content)["sentences"]
    if request.headers.get("accept") != "application/octet-stream" or request.url.path == "/json_only":
        return httpx.Response(200, json=[[0.5, 0.25, 1.0]] * len(sentences))
    rows = np.array([[0.5, 0.25, 1.0]] * len(sentences), dtype="<f4")
    headers = {"content-type": "application/octet-stream", "x-array-shape": f"{len(sentences)},3"}
    return httpx.Response(200, content=rows.tobytes(), headers=headers)


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> None:
    class Client(client_module.ServetuneClient):
        def __init__(self, base_url: str, token: str | None = None) -> None:
            super().__init__(base_url, transport=httpx.MockTransport(binary_service), token=token)

    monkeypatch.setattr(client_module, "ServetuneClient", Client)


@pytest.mark.usefixtures("fake_client")
def test_save_array_writes_the_binary_answer_as_npy(tmp_path: Path) -> None:
    out = tmp_path / "vectors.bin"  # saved at exactly this name, no .npy added
    code, text = invoke("embedding", "a", "b", "--save-array", str(out))
    assert code == 0 and f"saved a 2x3 float32 array to {out}" in text
    assert np.load(out).tolist() == [[0.5, 0.25, 1.0]] * 2
    generic = tmp_path / "one.npy"
    code, _ = invoke("--endpoint", "/encode", "--json", '{"sentences": ["x"]}', "--save-array", str(generic))
    assert code == 0 and np.load(generic).shape == (1, 3)


@pytest.mark.usefixtures("fake_client")
def test_save_array_errors_name_the_option(tmp_path: Path) -> None:
    code, out = invoke("digits", "--sample", "2", "--save-array", str(tmp_path / "x.npy"))
    assert code == 2 and "--save-array: give --endpoint and --json" in out
    code, out = invoke("--endpoint", "/json_only", "--json", '{"sentences": ["x"]}', "--save-array", "x.npy")
    assert code == 1 and "--save-array: /json_only has no binary answer: expected a application/octet" in out
    code, out = invoke("embedding", "a", "--save-array", str(tmp_path / "missing" / "x.npy"))
    assert code == 2 and "--save-array: cannot write" in out and "Traceback" not in out
