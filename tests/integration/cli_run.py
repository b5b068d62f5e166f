"""Run the `servetune` CLI as a real subprocess and find every process it started, even orphans."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from core.polling import wait_until
from core.runtags import RUN_ENV
from core.server import REPO_ROOT, port_is_free

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def child_setup() -> None:
    """In the CLI child before it runs: SIGINT as in a terminal, SIGTERM when pytest dies."""
    # A shell's background job (e.g. `.ci/run &`) inherits SIGINT ignored, and Python keeps it
    # ignored; restore the default so the CLI sees SIGINT as in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # A pytest killed outright runs no `finally`: the CLI (its own session) then stops itself
    # and what it started, as it does on any SIGTERM.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class CliRun:
    """One `python -m tuner.cli ...` in a session of its own, its output in a file."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")

    def started(self) -> list[psutil.Process]:
        """Live processes started by this CLI run: carrying its run tag (servers, their workers,
        Locust, wherever they were re-parented) or its watchdog."""
        prefix = f"{self.pid}-"
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                cmd = proc.info["cmdline"] or []
                watchdog = "core.watchdog" in cmd and str(self.pid) in cmd
                if (watchdog or proc.environ().get(RUN_ENV, "").startswith(prefix)) and (
                    proc.status() != psutil.STATUS_ZOMBIE
                ):
                    found.append(proc)
        return found

    def commands(self) -> list[str]:
        found = []
        for proc in self.started():
            with contextlib.suppress(psutil.Error):
                found.append(" ".join(proc.cmdline()))
        return found

    def server_port(self) -> int | None:
        """The port of the `bentoml serve` this run started (None before it runs)."""
        for line in self.commands():
            if "bentoml serve" in line.replace(" -m ", " ") and "--port " in line:
                return int(line.split("--port ")[1].split()[0])
        return None

    def listening_ports(self) -> set[int]:
        pids = {p.pid for p in self.started()}
        return {
            c.laddr.port
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids and c.laddr
        }

    def wait_for_load_phase(self, timeout_s: float = 90.0) -> int:
        """Until the run has both `bentoml serve` (workers up) and Locust; the server's port."""

        def phase() -> int | None:
            if self.proc.poll() is not None:
                pytest.fail(f"the CLI exited with {self.proc.returncode} early:\n{self.output()[-2000:]}")
            lines = self.commands()
            port = self.server_port()
            workers = [line for line in lines if "_bentoml_impl.worker" in line]
            if port is not None and workers and any("locust" in line for line in lines):
                return port
            return None

        port = wait_until(phase, timeout_s, interval_s=0.25)
        assert port is not None, f"the run never got to the load phase:\n{self.output()[-2000:]}"
        return port

    def assert_nothing_left(self, port: int, within_s: float = 10.0) -> None:
        """No process this run started and no port it listened on remains after `within_s`."""

        def clean() -> bool:
            return not self.started() and port_is_free(port)

        if not wait_until(clean, within_s, interval_s=0.2):
            left, ports = self.commands(), self.listening_ports()
            raise AssertionError(f"left after {within_s:.0f} s: {left}; port {port}; listening: {ports}")


@contextlib.contextmanager
def cli(args: list[str], log_path: Path) -> Iterator[CliRun]:
    """Start the CLI; on the way out kill whatever it left (a failed test must not leak servers)."""
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuner.cli", *args], cwd=REPO_ROOT, env=env, start_new_session=True,
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=child_setup,
        )  # fmt: skip
    run = CliRun(proc, log_path)
    try:
        yield run
    finally:
        leftovers = [run.proc.pid] if run.proc.poll() is None else []
        for child in run.started():
            leftovers.append(child.pid)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            run.proc.wait(10)
