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


def test_study_on_digits_searches_each_configs_capacity(
    models_in_store: dict[str, str], tmp_path: Path
) -> None:
    """The default load: a probe, then a capacity search per config; piped output is one line
    per measurement; the winner file carries the finalist's runs and interval."""
    out = tmp_path / "study"
    args = ["tune", "digits", "--trials", "2", "--strategy", "grid", "--warmup-seconds", "1",
            "--max-step-seconds", "3", "--resolution", "0.1", "--finalists", "1", "--repeats", "2",
            "--slo-p95-ms", "100", "--max-failure-ratio", "0.05", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [yaml.safe_load(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["trial", "trial", "finalist", "finalist"]
    space = default_space("digits")
    for record in records:
        assert record["status"] == "ok", record["reason"]
        capacity = record["capacity"]
        assert capacity["mode"] == "rate" and capacity["steps"] == len(record["steps"]) >= 2
        assert capacity["limited_by"] in ("slo", "generator", "max_load", "step_cap"), capacity
        assert all(step["step"]["rate"] for step in record["steps"]), "every scored step is paced"
        assert record["goodput_rps"] == pytest.approx(capacity["goodput_rps"])
        assert record["rss_mb"] and record["rss_mb"] > 50
    html = (out / "report.html").read_text()
    assert "Goodput per trial" in html and "Latency vs offered load" in html
    assert (out / "steps.csv").read_text().count("\n") >= 8
    winner = load_winner(out / "winner.yaml")
    assert winner.config == load_serve_config(out / "winner.yaml")
    assert winner.config.service == "digits" and winner.slo_p95_ms == 100
    best = max((r for r in records if r["kind"] == "trial"), key=lambda r: r["score"])
    runs = [best["goodput_rps"]] + [r["goodput_rps"] for r in records if r["kind"] == "finalist"]
    assert winner.goodput_rps == pytest.approx(sum(runs) / 3, abs=0.01)  # the trial's search and 2 more
    assert winner.goodput_interval_rps is not None
    low, high = winner.goodput_interval_rps
    assert low <= winner.goodput_rps <= high
    assert winner.config.model_dump() | {"service": "digits"} == {"service": "digits", **best["config"]}
    assert any(best["config"] == c.to_dict() for c in space.configs)
    assert "winner" in result.output
    measured_lines = [line for line in result.output.splitlines() if " knee " in line]
    assert len(measured_lines) >= 4, result.output  # piped: one plain line per measurement
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
