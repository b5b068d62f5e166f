"""Bearer-token auth on real servers: 401 without the token, 200 with it; probes, metrics and
docs open; `servetune serve --auth-token-file` and `servetune call --auth-token-file` end to end."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from core.polling import wait_until
from core.serveconfig import ServeConfig
from core.server import REPO_ROOT, BentoServer, free_port, port_is_free, running_server
from services.auth import AUTH_TOKEN_FILE_ENV
from tests.integration.helpers import bentoml_processes
from tuner.cli import app

pytestmark = pytest.mark.integration

TOKEN = "integration-token-5f0c2a7e9b1d"
IMAGE = [0.0] * 64
OPEN_PATHS = ("/metrics", "/readyz", "/livez", "/healthz", "/docs.json")


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def authed_server(models_in_store: dict[str, str], token_file: Path) -> Iterator[BentoServer]:
    spec = ServeConfig(service="digits").server_spec()
    spec = dataclasses.replace(spec, extra_env={AUTH_TOKEN_FILE_ENV: str(token_file)})
    with running_server(spec) as server:
        yield server


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", ["/predict", "/info"])
def test_inference_needs_the_token(authed_server: BentoServer, path: str) -> None:
    url = f"{authed_server.url}{path}"
    payload = {"images": [IMAGE]} if path == "/predict" else {}
    missing = httpx.post(url, json=payload, timeout=30)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["detail"][0]["loc"] == ["header", "authorization"]
    wrong = httpx.post(url, json=payload, headers=bearer(TOKEN + "0"), timeout=30)
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    right = httpx.post(url, json=payload, headers=bearer(TOKEN), timeout=30)
    assert right.status_code == 200, right.text[:300]


def test_probes_metrics_and_docs_answer_without_the_token(authed_server: BentoServer) -> None:
    for path in OPEN_PATHS:
        assert httpx.get(f"{authed_server.url}{path}", timeout=30).status_code == 200, path
    document = httpx.get(f"{authed_server.url}/docs.json", timeout=30).json()
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    predict = document["paths"]["/predict"]["post"]
    assert predict["security"] == [{"bearerAuth": []}]
    assert "401" in predict["responses"]


def test_servetune_serve_and_call_with_a_token_file(
    models_in_store: dict[str, str], token_file: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tuner.cli", "serve", "digits", "--port", str(port)]
    serve = subprocess.Popen(
        [*command, "--auth-token-file", str(token_file)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert wait_until(lambda: _ready(url) or serve.poll() is not None, 90.0, interval_s=0.5)
        assert serve.poll() is None, serve.stdout.read() if serve.stdout else ""
        children = psutil.Process(serve.pid).children(recursive=True)
        assert children and all(TOKEN not in " ".join(c.cmdline()) for c in children)
        (bentoml_serve,) = [c for c in children if "bentoml serve" in " ".join(c.cmdline())]
        assert bentoml_serve.environ()[AUTH_TOKEN_FILE_ENV] == str(token_file.resolve()), "the path only"
        assert {c.laddr.ip for c in _listening(port)} == {"127.0.0.1"}, "local servers bind 127.0.0.1"
        assert httpx.post(f"{url}/predict", json={"images": [IMAGE]}, timeout=30).status_code == 401
        runner = CliRunner()
        refused = runner.invoke(app, ["call", "digits", "--sample", "2", "--url", url])
        assert refused.exit_code == 1 and "401" in refused.output
        called = runner.invoke(
            app, ["call", "digits", "--sample", "2", "--url", url, "--auth-token-file", str(token_file)]
        )
        assert called.exit_code == 0, called.output
        assert "label" in called.output
    finally:
        _stop(serve, port)
    assert port_is_free(port)


def test_serve_refuses_a_bad_token_file_before_starting(tmp_path: Path) -> None:
    short = tmp_path / "token"
    short.write_text("short\n")
    result = CliRunner().invoke(app, ["serve", "digits", "--auth-token-file", str(short)])
    assert result.exit_code == 2
    assert "--auth-token-file" in result.output and "at least 16" in result.output


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _servers(port: int) -> list[psutil.Process]:
    return [p for p in bentoml_processes() if str(port) in " ".join(p.cmdline())]


def _listening(port: int) -> list[Any]:
    return [
        c
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    ]


def _stop(serve: subprocess.Popen[str], port: int) -> None:
    """Ctrl-C servetune (it stops its server), then make sure nothing of it is left."""
    if serve.poll() is None:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(10)
    for leftover in _servers(port):
        leftover.kill()
    wait_until(lambda: port_is_free(port), 10.0, interval_s=0.2)
