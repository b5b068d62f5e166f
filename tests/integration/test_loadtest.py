"""The Locust runner against a real service: a short stepped run, parsed and cross-checked."""

from __future__ import annotations

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
