"""A worker SIGKILLed under Locust load: BentoML replaces it, requests after that all succeed, and
the tuner fails (does not score) a trial during which a worker died."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from core.deployer import LocalBentoDeployer
from core.measurement import LoadStep
from core.polling import wait_until
from core.serveconfig import ServeConfig
from core.server import BentoServer, running_server
from loadtests.runner import LocustRunner
from services.models.data import held_out_raw
from tests.integration.helpers import wait_all_workers
from tuner.objective import SLO
from tuner.space import Config
from tuner.trial import LoadPlan, TrialRunner

pytestmark = pytest.mark.integration


def _locust_running() -> bool:
    children = psutil.Process().children(recursive=True)
    return any("locust" in " ".join(c.cmdline()) for c in children if c.is_running())


def _ask_info(port: int) -> tuple[int, int]:
    """(worker_index from /info, pid of the server process that accepted this connection)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.connect()
        assert conn.sock is not None
        local = conn.sock.getsockname()
        conn.request("POST", "/info", body="{}", headers={"Content-Type": "application/json"})
        index = int(json.loads(conn.getresponse().read())["worker_index"])
        owners = [
            c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.raddr and (c.raddr.ip, c.raddr.port) == local and c.laddr.port == port and c.pid
        ]
        return index, owners[0] if owners else -1
    finally:
        conn.close()


def _predict_fresh_connection(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def _replacement(server: BentoServer, index: int, old_pid: int) -> int | None:
    new = [p.pid for i, p in server.workers() if i == index and p.pid != old_pid]
    return new[0] if new else None


def test_a_worker_killed_under_load_is_replaced_and_then_every_request_succeeds(
    models_in_store: dict[str, str],
) -> None:
    spec = ServeConfig(service="digits", workers=2, threads=1, max_batch_size=8, max_latency_ms=2000)
    with running_server(spec.server_spec()) as server, ThreadPoolExecutor(1) as pool:
        assert wait_all_workers(server.url, 2) == {1, 2}
        runner = LocustRunner(settle_s=0.5, max_extend=1.0)
        load = pool.submit(runner.run, server.url, "digits", [LoadStep(users=8, duration_s=15)])
        assert wait_until(_locust_running, 60.0, interval_s=0.2)
        (index, victim), *_ = server.workers()
        victim.kill()
        new_pid = wait_until(lambda: _replacement(server, index, victim.pid), 30.0, interval_s=0.2)
        assert new_pid is not None, "BentoML did not start a new worker"
        assert not load.done(), "the worker died while Locust was loading the server"

        def answered_by_new_worker() -> bool:
            return _ask_info(server.port) == (index, new_pid)

        assert wait_until(answered_by_new_worker, 30.0, interval_s=0.1), "the new worker never answered"
        body = json.dumps({"images": [held_out_raw()[0][0].tolist()]}).encode()
        with ThreadPoolExecutor(8) as clients:
            codes = list(clients.map(lambda _: _predict_fresh_connection(server.port, body), range(200)))
        assert codes == [200] * 200
        (report,) = load.result(timeout=120)
    assert report.client.requests > 0


def test_the_tuner_fails_a_trial_during_which_a_worker_died(
    models_in_store: dict[str, str], tmp_path: Path
) -> None:
    killed: list[tuple[int, int]] = []
    stop = threading.Event()

    def kill_a_worker_under_load() -> None:
        def target() -> tuple[int, psutil.Process] | None:
            if stop.is_set() or not _locust_running():
                return None
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    cmd = child.cmdline()
                    if "--worker-id" in cmd and cmd[cmd.index("--worker-id") + 1] == "2":
                        return 2, child
            return None

        found = wait_until(target, 90.0, interval_s=0.2)
        if found is not None and not stop.wait(1.0):
            found[1].kill()
            killed.append((found[0], found[1].pid))

    deployer = LocalBentoDeployer("digits", tmp_path / "logs")
    runner = LocustRunner(settle_s=0.5, max_extend=1.0)
    trial = TrialRunner(deployer, runner, LoadPlan.users([6], step_s=8), SLO(latency_ms=1000), "digits")
    killer = threading.Thread(target=kill_a_worker_under_load, daemon=True)
    killer.start()
    try:
        measured = trial.measure(Config(max_batch_size=8, max_latency_ms=2000, workers=2, threads=1))
    finally:
        stop.set()
        killer.join(10)
    assert killed, "the worker was never killed"
    _, pid = killed[0]
    assert measured.steps, "the load ran to the end"
    assert not measured.ok
    first = measured.reason.splitlines()[0]
    assert first.startswith("a worker died during the load, not scored: worker 2 ")
    assert f"(pid {pid}) died during the trial; BentoML replaced it with pid" in first
