"""A real study on the digits service: bentoml serve + Locust, report and winner file; Ctrl-C cleanup."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from core.polling import wait_until
from core.serveconfig import load_serve_config, load_winner
from core.server import REPO_ROOT, port_is_free
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


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_mid_trial_leaves_no_process_or_port(models_in_store: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "tuner.cli", "tune", "digits", "--trials", "2", "--users", "4",
           "--max-extend", "1", "--step-seconds", "20", "--warmup-seconds", "0",
           "--out", str(out)]  # fmt: skip
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True")
    log_path = tmp_path / "tune.out"  # a file, not a pipe: an unread pipe that fills up blocks the CLI
    log = log_path.open("wb")
    # A shell's background job (e.g. `.ci/run &`) inherits SIGINT ignored, and Python keeps it
    # ignored; restore the default so the CLI sees Ctrl-C as in a terminal.
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, start_new_session=True, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=_default_sigint)  # fmt: skip
    children: list[psutil.Process] = []

    def load_phase_port() -> int | None:
        """The trial server's port once the CLI runs both `bentoml serve` and Locust."""
        if proc.poll() is not None:
            pytest.fail(f"the CLI exited with {proc.returncode} before the load phase")
        children[:] = _descendants(proc.pid)
        lines = [" ".join(c.cmdline()) for c in children if c.is_running()]
        server = [line for line in lines if "bentoml serve" in line.replace(" -m ", " ")]
        if server and any("locust" in line for line in lines):
            return int(server[0].split("--port ")[1].split()[0])
        return None

    try:
        port = wait_until(load_phase_port, 60.0, interval_s=0.5)
        assert port is not None, "the trial never got to the load phase"
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        # Shutdown is graceful: Locust gets up to ~16 s and `bentoml serve` up to ~20 s to stop.
        proc.wait(timeout=90)
    finally:
        log.close()
        if proc.poll() is None:  # a failed test must not leave servers behind either
            for child in [*children, *_descendants(proc.pid)]:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            os.killpg(proc.pid, signal.SIGKILL)
    output = log_path.read_bytes()
    assert proc.returncode == 130, output.decode(errors="replace")[-2000:]
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert port_is_free(port)
    assert b"--resume" in output
