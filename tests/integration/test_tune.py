"""A real study on the digits service: bentoml serve + Locust, report and winner file; Ctrl-C cleanup."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from core.serveconfig import load_serve_config, load_winner
from tests.integration.cli_run import cli
from tuner.cli import app
from tuner.space import default_space

pytestmark = pytest.mark.integration


def test_three_trial_study_on_digits(models_in_store: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "study"
    args = ["tune", "digits", "--trials", "3", "--strategy", "grid", "--users", "12",
            "--max-extend", "1", "--step-seconds", "2", "--warmup-seconds", "0", "--finalists", "1",
            "--repeats", "1", "--slo-p95-ms", "500", "--max-failure-ratio", "0.05",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [yaml.safe_load(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["trial", "trial", "trial", "finalist"]
    space = default_space("digits")
    for record in records:
        assert record["status"] == "ok", record["reason"]
        assert record["steps"] and record["goodput_rps"] > 0
        assert record["rss_mb"] and record["rss_mb"] > 50
    html = (out / "report.html").read_text()
    assert "Goodput per trial" in html and html.count("<svg") == 3, "goodput, latency and batch charts"
    assert "Mean batch in that step:" in html, "the winner's batch sizes come from the server's histogram"
    assert (out / "steps.csv").read_text().count("\n") >= 4
    winner = load_winner(out / "winner.yaml")
    assert winner.config == load_serve_config(out / "winner.yaml")
    assert winner.config.service == "digits"
    assert winner.goodput_rps > 0 and winner.slo_p95_ms == 500
    best = max((r for r in records if r["kind"] == "trial"), key=lambda r: r["score"])
    assert winner.config.model_dump() | {"service": "digits"} == {"service": "digits", **best["config"]}
    assert any(best["config"] == c.to_dict() for c in space.configs)
    assert "winner" in result.output
    mine = psutil.Process().children(recursive=True)
    assert not [p for p in mine if p.is_running() and "bentoml" in " ".join(p.cmdline())]


def test_ctrl_c_mid_trial_leaves_no_process_or_port(models_in_store: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    args = ["tune", "digits", "--trials", "2", "--users", "4", "--max-extend", "1", "--step-seconds", "20",
            "--warmup-seconds", "0", "--out", str(out)]  # fmt: skip
    with cli(args, tmp_path / "tune.out") as run:
        port = run.wait_for_load_phase()
        time.sleep(2)
        os.killpg(run.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        assert run.proc.wait(timeout=60) == 130, run.output()[-2000:]
        run.assert_nothing_left(port)
    assert "interrupted by SIGINT" in run.output() and "--resume" in run.output()
