import json
from pathlib import Path

import pytest

from core.serveconfig import ConfigFileError, ServeConfig, dump_serve_config, load_serve_config
from core.server import BentoServer, main_bentoml_home


def test_config_round_trips_and_accepts_a_winner_document(tmp_path: Path) -> None:
    config = ServeConfig(service="embedding", max_batch_size=16, max_latency_ms=200, workers=2, threads=1)
    path = tmp_path / "winner.json"
    dump_serve_config(config, path)
    assert load_serve_config(path) == config
    wrapped = tmp_path / "wrapped.yaml"
    wrapped.write_text(json.dumps({"config": config.model_dump(), "goodput_rps": 12.5}))
    assert load_serve_config(wrapped) == config


def test_bad_config_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("service: embedding\nmax_batch_size: 1\n")
    with pytest.raises(ConfigFileError, match="max_batch_size"):
        load_serve_config(path)
    path.write_text("service: [unclosed\n")
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_serve_config(path)


def test_server_command_and_environment_carry_every_knob() -> None:
    config = ServeConfig(service="digits", max_batch_size=8, max_latency_ms=300, workers=2, threads=1)
    server = BentoServer(config.server_spec(port=3999))
    try:
        cmd = server.command()
        env = server.environment()
        shared_models = (server.home / "models").resolve()
    finally:
        server.stop()
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "3999"
    args = {cmd[i + 1] for i, part in enumerate(cmd) if part == "--arg"}
    assert {"max_batch_size=8", "max_latency_ms=300", "threads=1", "variant=fp32"} <= args
    overrides = json.loads(env["BENTOML_CONFIG_OVERRIDES"])
    assert overrides == {"services": {"DigitsClassifier": {"workers": 2}}}
    assert env["BENTOML_DO_NOT_TRACK"] == "True"
    assert env["BENTOML_HOME"] == str(server.home) != str(main_bentoml_home()), "a private home per server"
    assert shared_models == (main_bentoml_home() / "models").resolve(), "it reads the shared model store"
    assert not Path(env["BENTOML_HOME"]).exists(), "stop() removes the private home"
