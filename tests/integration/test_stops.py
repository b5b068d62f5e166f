"""Every stop of the real CLI leaves no server, worker, Locust or listening port behind.

SIGTERM/SIGINT to `servetune serve`, SIGTERM to `servetune loadtest` and `servetune tune` (sent to
the CLI's pid only: the server and Locust run in sessions of their own, so nothing else reaches
them), SIGKILL of the tuner mid-trial (its watchdog stops the children), and SIGKILL of both the
tuner and its watchdog (then `--resume` finds the orphans through the study's pid file, stops
them and says so). After each: within 10 s nothing the run started remains (found by the run tag
in their environment, wherever they were re-parented) and the server's port is free.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from core.leftovers import RUNNING_FILE
from core.polling import wait_until
from core.server import free_port
from tests.integration.cli_run import CliRun, cli

pytestmark = pytest.mark.integration

TUNE_ARGS = ["tune", "digits", "--trials", "1", "--strategy", "grid", "--users", "4", "--max-extend", "1",
             "--step-seconds", "6", "--warmup-seconds", "0", "--finalists", "0"]  # fmt: skip


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _exit_code(run: CliRun, timeout_s: float = 10.0) -> int:
    code = run.proc.wait(timeout_s)
    return int(code)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_on_a_signal(models_in_store: dict[str, str], tmp_path: Path, signum: int) -> None:
    port = free_port()
    with cli(["serve", "digits", "--port", str(port), "--workers", "2"], tmp_path / "serve.out") as run:
        assert wait_until(lambda: _ready(port), 90.0, interval_s=0.3), run.output()
        assert len([c for c in run.commands() if "_bentoml_impl.worker" in c]) == 2
        os.kill(run.pid, signum)  # to servetune only, as `kill` or systemd would
        assert _exit_code(run) == 0, "a server told to stop ends normally"
        run.assert_nothing_left(port)
    assert f"{signal.Signals(signum).name}: stopping the server and its workers" in run.output()


def test_loadtest_stops_on_sigterm(models_in_store: dict[str, str], tmp_path: Path) -> None:
    args = ["loadtest", "digits", "--users", "4", "--step-seconds", "60", "--workers", "2"]
    with cli(args, tmp_path / "loadtest.out") as run:
        port = run.wait_for_load_phase()
        time.sleep(1)
        os.kill(run.pid, signal.SIGTERM)
        assert _exit_code(run) == 143, run.output()[-2000:]
        run.assert_nothing_left(port)
    assert "interrupted by SIGTERM" in run.output()


def test_tune_stops_on_sigterm_mid_trial(models_in_store: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "study"
    with cli([*TUNE_ARGS, "--step-seconds", "30", "--out", str(out)], tmp_path / "tune.out") as run:
        port = run.wait_for_load_phase()
        assert (out / RUNNING_FILE).exists(), "the pid file exists while a trial runs"
        os.kill(run.pid, signal.SIGTERM)
        assert _exit_code(run, 30.0) == 143, run.output()[-2000:]
        run.assert_nothing_left(port)
    output = run.output()
    assert "interrupted by SIGTERM" in output and "--resume" in output
    assert not (out / RUNNING_FILE).exists(), "a stopped study removes its pid file"


def test_sigkill_of_the_tuner_mid_trial_leaves_nothing_behind(
    models_in_store: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "study"
    with cli([*TUNE_ARGS, "--out", str(out)], tmp_path / "tune.out") as run:
        port = run.wait_for_load_phase()
        running = json.loads((out / RUNNING_FILE).read_text())
        assert running["owner"]["pid"] == run.pid
        assert sorted(p["role"] for p in running["processes"]) == ["locust", "server"]
        os.kill(run.pid, signal.SIGKILL)
        assert _exit_code(run) == -signal.SIGKILL
        run.assert_nothing_left(port)


def test_resume_stops_what_a_killed_run_left(models_in_store: dict[str, str], tmp_path: Path) -> None:
    """Tuner and watchdog both SIGKILLed: the trial's server, workers and Locust keep running
    (holding the port) until `--resume` reads the pid file, stops them and says so."""
    out = tmp_path / "study"
    with cli([*TUNE_ARGS, "--out", str(out)], tmp_path / "tune.out") as killed:
        port = killed.wait_for_load_phase()
        watchdogs = [p for p in killed.started() if "core.watchdog" in p.cmdline()]
        assert len(watchdogs) == 1
        for proc in [*watchdogs, psutil.Process(killed.pid)]:
            proc.kill()
        killed.proc.wait(10)
        time.sleep(1)
        roles = " ".join(killed.commands())
        assert "bentoml" in roles and "_bentoml_impl.worker" in roles and "locust" in roles, roles
        recorded = json.loads((out / RUNNING_FILE).read_text())["processes"]
        server_pid = next(p["pid"] for p in recorded if p["role"] == "server")
        with cli([*TUNE_ARGS, "--out", str(out), "--resume"], tmp_path / "resume.out") as resumed:
            assert wait_until(lambda: not killed.started(), 15.0, interval_s=0.2), killed.commands()
            assert _exit_code(resumed, 120.0) == 0, resumed.output()[-2000:]
            resumed.assert_nothing_left(port)
    output = resumed.output().replace("\n", " ")
    assert "left by an interrupted run" in output and f"server (pid {server_pid})" in output, output[-2000:]
    assert not (out / RUNNING_FILE).exists()
    records = (out / "trials.jsonl").read_text().splitlines()
    assert len(records) == 1, "the resumed study ran the interrupted trial"
