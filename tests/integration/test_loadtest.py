"""The Locust runner against a real service: a short stepped run, parsed and cross-checked."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from core.measurement import InvalidReason, LoadStep, StepMeasurement
from core.registry import service_spec
from core.server import ServerSpec, running_server
from loadtests.runner import LocustRunner

pytestmark = pytest.mark.integration


def _locust_children() -> list[psutil.Process]:
    me = psutil.Process()
    return [p for p in me.children(recursive=True) if "locust" in " ".join(p.cmdline())]


def test_stepped_run_against_digits(digits_tag: str) -> None:
    spec = ServerSpec(service_spec("digits"), args={"max_batch_size": 8, "max_latency_ms": 2000}, workers=1)
    seen: list[StepMeasurement] = []

    def stop_after(step: StepMeasurement) -> bool:
        seen.append(step)
        return step.step.users >= 6

    steps = [
        LoadStep(users=2, duration_s=2),
        LoadStep(users=6, duration_s=2),
        LoadStep(users=12, duration_s=2),
    ]
    with running_server(spec) as server:
        runner = LocustRunner(settle_s=0.5, rows_per_request=2)
        measured = runner.run_steps(server.url, "digits", steps, stop_after=stop_after)
    assert [m.step.users for m in measured] == [2, 6], "stop_after ends the run after the 6-user step"
    assert seen == measured
    for m, report in zip(measured, runner.last_reports, strict=True):
        assert m.requests > 10 and m.successes == m.requests and m.failure_ratio == 0.0
        assert m.duration_s >= 1.5
        assert m.rps == pytest.approx(m.requests / m.duration_s)
        assert 0 < m.client_p50_ms <= m.client_p95_ms <= m.client_p99_ms < 10_000
        assert report.server is not None
        assert report.server.requests == pytest.approx(m.requests, rel=0.15), "client and server count alike"
        assert m.server_p50_ms is not None and m.server_p50_ms > 0
        # the batch-size metric counts requests (not rows) per batch, so it sums to the requests
        assert sum(m.requests_per_worker.values()) == pytest.approx(report.server.requests, rel=0.05)
        assert m.batch_size_hist and set(m.requests_per_worker) == {"1"}
        assert m.generator_cpu > 0 and m.valid, m.invalid
        assert m.server_source == "scrape"
        assert len(report.sub_windows) >= 3
    assert not _locust_children(), "the locust process group is gone"


def test_a_dead_server_is_an_error_not_a_hang() -> None:
    runner = LocustRunner(settle_s=0.2, start_timeout_s=30)
    measured = runner.run_steps("http://127.0.0.1:9", "noop", [LoadStep(users=1, duration_s=1)])
    (m,) = measured
    assert m.successes == 0 and m.failure_ratio == 1.0
    assert m.failures_by_status and m.client_p95_ms == float("inf")
    assert not _locust_children()


def test_workers_are_counted_and_uneven_load_is_flagged() -> None:
    from loadtests.runner import local_server_workers

    spec = ServerSpec(service_spec("noop"), args={"max_batch_size": 4}, workers=2)
    with running_server(spec) as server:
        assert local_server_workers(server.url) == 2
        # One user holds one keep-alive connection: every request lands on the same worker.
        (m,) = LocustRunner(settle_s=0.3).run_steps(server.url, "noop", [LoadStep(users=1, duration_s=1.5)])
    assert len(m.requests_per_worker) == 1
    (flag,) = m.flagged(InvalidReason.UNEVEN_WORKERS)
    assert not m.valid and "fair share 50%" in flag.detail, m.invalid


def test_a_written_pool_mixes_endpoints(tmp_path: Path) -> None:
    from core.metrics import ScrapeReader, window_figures
    from loadtests.requests import read_requests_file
    from loadtests.runner import LoadTarget

    lines = [
        {"endpoint": "/echo" if i % 2 else "echo_unbatched", "body": {"items": [float(i), 1.5]}}
        for i in range(20)
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    spec = service_spec("noop")
    requests = read_requests_file(path, spec.route, ["/echo", "/echo_unbatched", "/info"])
    target = LoadTarget.with_requests("noop", requests, route="/echo")
    server_spec = ServerSpec(spec, args={"max_batch_size": 4}, workers=1)
    with running_server(server_spec) as server, ScrapeReader(server.url) as reader:
        before = reader.scrape()
        (m,) = LocustRunner(settle_s=0.3).run_steps(server.url, target, [LoadStep(users=2, duration_s=2)])
        after = reader.scrape()
    echo = window_figures(before, after, "/echo")
    unbatched = window_figures(before, after, "/echo_unbatched")
    assert echo.requests > 10 and unbatched.requests > 10, (echo.requests, unbatched.requests)
    assert echo.requests == pytest.approx(unbatched.requests, rel=0.2), "the pool alternates them"
    assert set(echo.by_status) == {"200"} and set(unbatched.by_status) == {"200"}
    assert m.requests > 10 and m.successes == m.requests
    assert not _locust_children()


USER_LOCUSTFILE = """
from locust import HttpUser, constant, task


class EchoUser(HttpUser):
    wait_time = constant(0.01)

    @task
    def echo(self):
        self.client.post("/echo", json={"items": [1.0, 2.0]})
"""


def test_a_user_locustfile_is_measured_and_paced(tmp_path: Path) -> None:
    locustfile = tmp_path / "user_locustfile.py"
    locustfile.write_text(USER_LOCUSTFILE)
    spec = ServerSpec(service_spec("noop"), args={"max_batch_size": 4}, workers=1)
    steps = [LoadStep(users=2, duration_s=2), LoadStep(users=4, duration_s=3, rate=20.0)]
    with running_server(spec) as server:
        runner = LocustRunner(settle_s=0.5, locustfile=locustfile)
        closed, paced = runner.run_steps(server.url, "noop", steps)
    for m, report in zip((closed, paced), runner.last_reports, strict=True):
        assert m.requests > 10 and m.successes == m.requests, m
        assert report.server is not None
        assert report.server.requests == pytest.approx(m.requests, rel=0.15), "the hooks log every request"
    assert closed.rps > 40, "constant(0.01) on a no-op: far above the paced step"
    assert paced.rps == pytest.approx(20.0, rel=0.25), "the control file's rate paces the user's class"
    assert not _locust_children()
