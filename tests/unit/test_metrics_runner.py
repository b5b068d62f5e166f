"""The runner's pure parts: request log, client quantiles, stability and worker-spread rules."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from core.measurement import Invalidity, InvalidReason
from loadtests.runner import (
    EventLog,
    LoadTarget,
    check_url,
    client_figures,
    failure_slices,
    spread,
    uneven_workers,
)


def test_event_log_reads_appended_lines_across_processes_and_partial_writes(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events")
    (tmp_path / "events.11").write_text("10.5 3.0 200\n11.5 4.0 503\n12.")
    (tmp_path / "events.12").write_text("10.9 9.0 200\n")
    log.poll()
    assert [e[0] for e in log.window(0, 100)] == [10.5, 10.9, 11.5]
    with (tmp_path / "events.11").open("a") as f:
        f.write("25 5.0 200\n")
    log.poll()
    assert log.window(12, 13) == [(12.25, 5.0, "200")]
    assert len(log.window(10.5, 11.5)) == 2, "the window is [start, end)"


def test_client_figures_count_failures_and_take_quantiles_of_successes() -> None:
    events = [(float(i), float(i + 1), "200") for i in range(100)] + [(0.0, 0.1, "503")] * 10
    fig = client_figures(events)
    assert fig.requests == 110 and fig.successes == 100
    assert fig.by_status == {"200": 100, "503": 10}
    assert fig.p50_ms == pytest.approx(50.5)
    assert fig.p99_ms == pytest.approx(99.01)
    assert math.isnan(client_figures([(0.0, 0.1, "503")]).p95_ms), "no success -> nan"


def test_failure_slices_count_failures_in_equal_runs_of_requests_in_completion_order() -> None:
    events = [(float(i), 1.0, "503" if 40 <= i < 46 else "200") for i in range(200)]
    slices = failure_slices(events)
    assert slices == ((0, 25), (6, 25)) + ((0, 25),) * 6  # the burst sits in the second slice
    assert client_figures(events).failure_slices == slices
    assert [n for _, n in failure_slices(events[:45])] == [11, 11, 12, 11]  # near-equal runs
    assert failure_slices(events[:19]) == ()  # too few requests for two slices


def test_stability_spread() -> None:
    assert spread([100, 105, 95]) == pytest.approx(0.1)
    assert spread([100, 100, 100]) == 0
    assert spread([0, 0, 0]) == 0


def test_uneven_workers_flags_a_starved_worker() -> None:
    (starved,) = uneven_workers({"1": 394}, workers=2)
    assert starved == Invalidity(
        InvalidReason.UNEVEN_WORKERS, "worker 2 served 0% of the requests (fair share 50%)"
    )
    assert uneven_workers({"1": 60, "2": 40}, workers=2) == []
    assert uneven_workers({"1": 80, "2": 20}, workers=2)[0].detail.startswith("worker 2 served 20%")
    assert uneven_workers({"1": 5}, workers=2) == [], "too few rows to judge"
    assert uneven_workers({"1": 500}, workers=1) == []


def test_urls_and_services_are_checked() -> None:
    assert check_url("http://127.0.0.1:3000/", allow_remote=False) == "http://127.0.0.1:3000"
    with pytest.raises(ValueError, match="not on this machine"):
        check_url("http://example.com:3000", allow_remote=False)
    assert check_url("http://example.com:3000", allow_remote=True) == "http://example.com:3000"
    with pytest.raises(ValueError, match="url must look like"):
        check_url("127.0.0.1:3000", allow_remote=False)
    assert LoadTarget.of("embedding", "encode_unbatched").route == "/encode_unbatched"
    assert LoadTarget.of("embedding").route == "/encode"
    with pytest.raises(ValueError, match="unknown service"):
        LoadTarget.of("nope")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["loadtest", "nope", "--users", "2"], "unknown service 'nope'"),
        (["loadtest", "noop"], "--users or --rate"),
        (["loadtest", "noop", "--users", "2,x"], "--users: expected comma-separated numbers"),
        (["loadtest", "noop", "--users", "0"], "--users: every value must be > 0"),
        (["loadtest", "noop", "--users", "2", "--max-batch-size", "1"], "--max-batch-size"),
        (["loadtest", "digits", "--users", "2", "--unbatched"], "--unbatched"),
        (["loadtest", "noop", "--users", "2", "--url", "ftp://x"], "--url"),
        # checked before a user's service is read (this one does not exist)
        (["loadtest", "/nowhere/service.py:S", "--users", "2,x"], "--users: expected comma-separated"),
        (["loadtest", "/nowhere/service.py:S", "--rate", "5", "--step-seconds", "0"], "--step-seconds"),
    ],
)
def test_loadtest_cli_names_the_bad_field(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from tuner.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_the_abort_rule_judges_the_latency_the_slo_judges(tmp_path: Path) -> None:
    """A slow client (its own queueing) must not abort a step the server answers within bounds;
    without server figures the client's p95 decides."""
    from core.measurement import LoadStep
    from core.metrics import WindowFigures
    from loadtests.runner import SubWindow, _overloaded

    log = EventLog(tmp_path / "events")
    (tmp_path / "events.1").write_text("".join(f"{10 + i / 100:.2f} 300.0 200\n" for i in range(50)))
    sub = SubWindow(10.0, 11.0, None, 0.1, 0.1)
    step = LoadStep(users=10, duration_s=5.0, rate=50.0, abort_above_ms=200.0)
    fast_server = WindowFigures.from_counts(1.0, {"200": 50}, p50_ms=40.0, p95_ms=90.0, p99_ms=95.0,
        in_progress=None, batch_size_hist={}, requests_per_worker={}, batches_per_worker={})  # fmt: skip
    assert not _overloaded(step, log, sub, fast_server)
    assert _overloaded(step, log, sub, None)
    slow_server = replace(fast_server, p95_ms=250.0)
    assert _overloaded(step, log, sub, slow_server)
