"""`servetune deploy`: clear errors for bad input, and a full render without building."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tuner.cli import app

LOCUSTFILE = "from locust import FastHttpUser\n\n\nclass DigitsUser(FastHttpUser):\n    pass\n"


def write_winner(path: Path, **overrides: Any) -> Path:
    document: dict[str, Any] = {
        "config": {
            "service": "digits",
            "max_batch_size": 8,
            "max_latency_ms": 500,
            "workers": 1,
            "threads": 1,
        },
        "slo_p95_ms": 100,
        "goodput_rps": 250.0,
        "rss_mb": 420.0,
        "cores": 2,
        # extra fields the tuner's report writes; deploy must accept them
        "goodput_spread_rps": 12.5,
        "goodput_measurements": [240.0, 252.5, 257.5],
        "key": "digits|8|500|1|1|0|fp32",
    }
    document.update(overrides)
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def locustfile(tmp_path: Path) -> Path:
    path = tmp_path / "locustfile.py"
    path.write_text(LOCUSTFILE)
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["deploy", *args])


def test_bad_winner_files_name_the_field(tmp_path: Path, locustfile: Path) -> None:
    out = str(tmp_path / "out")
    bad_knob = write_winner(tmp_path / "a.yaml", config={"service": "digits", "max_batch_size": 1})
    result = invoke(str(bad_knob), "--out", out, "--no-build", "--locustfile", str(locustfile))
    assert result.exit_code == 2 and "config.max_batch_size" in result.output
    missing = tmp_path / "b.yaml"
    missing.write_text(yaml.safe_dump({"config": {"service": "digits"}, "slo_p95_ms": 100}))
    result = invoke(str(missing), "--out", out, "--no-build", "--locustfile", str(locustfile))
    assert result.exit_code == 2 and "goodput_rps" in result.output
    zero = write_winner(tmp_path / "c.yaml", goodput_rps=0.0)
    result = invoke(str(zero), "--out", out, "--no-build", "--locustfile", str(locustfile))
    assert result.exit_code == 2 and "goodput_rps" in result.output
    assert "Traceback" not in result.output


def test_bad_options_name_the_option(tmp_path: Path, locustfile: Path) -> None:
    winner = str(write_winner(tmp_path / "w.yaml"))
    out = str(tmp_path / "out")
    result = invoke(winner, "--out", out, "--no-build", "--peak-rps", "-5", "--locustfile", str(locustfile))
    assert result.exit_code == 2 and "--peak-rps" in result.output
    result = invoke(
        winner, "--out", out, "--no-build", "--namespace", "Bad_NS", "--locustfile", str(locustfile)
    )
    assert result.exit_code == 2 and "--namespace" in result.output
    result = invoke(
        winner, "--out", out, "--no-build", "--monitor-label", "novalue", "--locustfile", str(locustfile)
    )
    assert result.exit_code == 2 and "--monitor-label" in result.output
    result = invoke(winner, "--out", out, "--no-build", "--locustfile", str(tmp_path / "missing.py"))
    assert result.exit_code == 2 and "--locustfile" in result.output


def test_render_without_build_and_validate(tmp_path: Path, locustfile: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("--validate needs promtool (test_deploy_render fails in CI when it is missing)")
    winner = str(write_winner(tmp_path / "w.yaml"))
    out = tmp_path / "out"
    result = invoke(
        winner, "--out", str(out), "--no-build", "--peak-rps", "2000", "--image", "registry.example/d:1",
        "--locustfile", str(locustfile), "--validate",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "valid: manifests" in result.output and "invalid" not in result.output
    sizing = json.loads((out / "sizing.json").read_text())
    assert sizing["image"] == "registry.example/d:1"
    assert sizing["sizing"]["min_replicas"] == 12  # ceil(2000 / (250 x 0.7))
    assert not (out / "bento" / "Dockerfile").exists(), "--no-build writes only the bentofile"
    deployment = yaml.safe_load((out / "k8s" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/d:1"


def test_auth_option_writes_the_secret_and_says_to_fill_it(tmp_path: Path, locustfile: Path) -> None:
    winner = str(write_winner(tmp_path / "w.yaml"))
    out = tmp_path / "out"
    result = invoke(winner, "--out", str(out), "--no-build", "--locustfile", str(locustfile), "--auth")
    assert result.exit_code == 0, result.output
    assert "auth: put a random token in" in result.output
    secret = yaml.safe_load((out / "k8s" / "auth" / "secret.yaml").read_text())
    assert secret["kind"] == "Secret"
    deployment = yaml.safe_load((out / "k8s" / "deployment.yaml").read_text())
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "SERVETUNE_AUTH_TOKEN_FILE" in {e["name"] for e in env}
    assert (out / "k8s" / "networkpolicy.yaml").is_file()
    plain = invoke(winner, "--out", str(tmp_path / "plain"), "--no-build", "--locustfile", str(locustfile))
    assert plain.exit_code == 0 and not (tmp_path / "plain" / "k8s" / "auth").exists()
