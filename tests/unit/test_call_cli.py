"""`servetune call` for any service: the body from --json / --json-file / stdin, one-line errors
naming the option (nothing here reaches a server)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

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
