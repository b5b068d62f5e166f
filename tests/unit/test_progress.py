"""`servetune tune` progress and summary: plain lines off a terminal (no Live frames), the Live
view's step line, and the summary's intervals, tie, early stop and baseline ratios."""

from __future__ import annotations

import io
import statistics
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import tuner.commands.tune as tune_command
from core.measurement import LoadStep
from core.serveconfig import Config, load_winner
from tests.fakes import FakeDeployer, FakeLoadRunner, make_step
from tests.unit.test_report import BIG, study_result, tied_finalists
from tuner.capacity import CapacityFinding
from tuner.cli import app
from tuner.commands.tune import LiveView, PlainProgress, print_outcome, progress_view, record_line, step_text
from tuner.objective import SLO
from tuner.report import capacity_text
from tuner.space import Machine, default_space
from tuner.store import StudyStore, TrialRecord
from tuner.tuning import TuneOptions, TuneOutcome, run_tune


def capture(monkeypatch: pytest.MonkeyPatch, terminal: bool = False) -> io.StringIO:
    """Send the tune command's console to a buffer (a terminal or not)."""
    buffer = io.StringIO()
    monkeypatch.setattr(tune_command, "console", Console(file=buffer, force_terminal=terminal, width=100))
    return buffer


def test_piped_tune_prints_one_line_per_measurement_and_no_live_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployer = FakeDeployer()
    space = default_space("embedding", Machine(2, 0))

    def fake_run_tune(options: TuneOptions, **kw: Any) -> TuneOutcome:
        return run_tune(options, FakeLoadRunner(deployer), space, deployer=deployer, **kw)

    monkeypatch.setattr(tune_command, "run_tune", fake_run_tune)
    monkeypatch.setattr(tune_command, "console", Console(force_terminal=False, width=100))
    out = tmp_path / "study"
    result = CliRunner().invoke(app, [
        "tune", "embedding", "--strategy", "grid", "--trials", "3", "--finalists", "2", "--repeats", "1",
        "--warmup-seconds", "1", "--slo-p95-ms", "180", "--baseline", "--default-baseline", "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    records = StudyStore(out).records()
    assert [r.kind for r in records].count("trial") == 3 and len(records) == 3 + 2 + 2
    for r in records:
        kind = f"#{r.number} {r.label or r.kind} "
        (_,) = [line for line in lines if line.startswith(kind) and line.endswith(f"{r.shown}: started")]
        (ended,) = [line for line in lines if line.startswith(f"{kind}{r.shown}: {r.status},")]
        assert ended == record_line(r, "p95")
        assert r.capacity is not None and capacity_text(r.capacity) in ended and ", bracket " in ended
    (naive,) = [r for r in records if r.label == "naive"]
    assert naive.shown == "w1-t2-g0-fp32" != naive.key, "the unbatched endpoint takes no batching knobs"
    assert [line.split()[2] for line in lines if line.endswith(": started") and " trial " in line] == [
        "1/3", "2/3", "3/3",
    ]  # fmt: skip
    assert "best so far" not in result.output and "starting server" not in result.output
    winner = load_winner(out / "winner.yaml")

    # On this fake surface BentoML's default batching serves as much as the best tuned config.
    # A re-measured config's figure is the mean of its first measurement and its re-measurements
    # (a baseline that led the finalists too).
    def figure(key: str) -> float:
        return statistics.fmean(r.goodput_rps for r in records if r.key == key)

    for label in ("naive", "bentoml-default"):
        (baseline,) = [r for r in records if r.label == label]
        (line,) = [x for x in lines if x.startswith(f"{label} baseline ")]
        assert line.endswith(f"winner / {label} = {figure(winner.key) / figure(baseline.key):.2f}x")
    assert any(line.startswith("choice: " + winner.choice) for line in lines) and winner.choice


def test_a_plain_progress_line_names_the_knee_and_its_bracket() -> None:
    buffer = io.StringIO()
    progress = PlainProgress(12, SLO(180.0), Console(file=buffer, force_terminal=False, width=40))
    config = Config(16, 200, 2, 1)
    found = CapacityFinding(mode="rate", knee=160.4, breach=167.5, goodput_rps=160.0, converged=True,
                            limited_by="slo", steps=8, resolution=0.05)  # fmt: skip
    common: dict[str, Any] = {"key": config.key, "config": config.to_dict(), "wall_s": 41.6}
    ok = TrialRecord(number=4, status="ok", goodput_rps=160.04, latency_ms=106.2, capacity=found, **common)
    failed = TrialRecord(number=5, status="failed", reason="server did not start: port busy\nlog", **common)
    progress.trial_start(4, "trial", config.key)
    progress.trial_end(ok)
    progress.trial_start(5, "trial", config.key)
    progress.trial_end(failed)
    assert buffer.getvalue().splitlines() == [
        f"#4 trial 1/12 {config.key}: started",
        f"#4 trial {config.key}: ok, 160.0 good RPS, knee 160.4 RPS offered, bracket 160.4-167.5 "
        "(converged, 8 steps), p95 106 ms, 42 s",
        f"#5 trial 2/12 {config.key}: started",
        f"#5 trial {config.key}: failed, 0.0 good RPS, p95 - ms, 42 s - server did not start: port busy",
    ]  # one line each although the console is 40 columns wide


def test_the_live_view_only_on_a_terminal_and_its_step_line_shows_the_offered_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = TuneOptions(service="embedding", trials=3)
    capture(monkeypatch, terminal=False)
    assert isinstance(progress_view(options), PlainProgress)
    capture(monkeypatch, terminal=True)
    assert isinstance(progress_view(options), LiveView)
    slo = SLO(200.0)
    paced = make_step(LoadStep(users=48, duration_s=5.0, rate=120.0), 118.0, 150.0, 0.0)
    assert step_text(1, paced, slo).startswith("step 2: 120 RPS offered  118.0 RPS  p95 150 ms")
    closed = make_step(LoadStep(users=8, duration_s=5.0), 90.0, 150.0, 0.0)
    assert step_text(0, closed, slo).startswith("step 1: 8 users  90.0 RPS")


def test_the_summary_shows_intervals_the_tie_the_early_stop_and_the_baseline_ratios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = capture(monkeypatch)
    result = study_result(tied_finalists(), "time budget: 20 s left, a trial takes ~60 s")
    assert result.choice is not None and result.winner is not None
    naive_found = CapacityFinding(mode="rate", knee=50.0, breach=52.0, goodput_rps=50.0, converged=True,
                                  limited_by="slo", steps=6, resolution=0.05)  # fmt: skip
    none_found = CapacityFinding(mode="rate", knee=None, breach=0.2, goodput_rps=0.0, converged=False,
                                 limited_by="infeasible", steps=5, resolution=0.05,
                                 note="no load met the SLO down to 0.2")  # fmt: skip
    config = Config(2, 1000, 1, 2)
    common: dict[str, Any] = {"kind": "baseline", "key": config.key, "config": config.to_dict()}
    naive = TrialRecord(
        number=7, label="naive", status="ok", goodput_rps=50.0, capacity=naive_found, **common
    )
    default = TrialRecord(
        number=8, label="bentoml-default", status="infeasible", capacity=none_found, **common
    )
    outcome = TuneOutcome(result, naive, tmp_path, tmp_path / "report.html", tmp_path / "winner.yaml", 1.0,
                          {"quantile": "p95"}, [naive, default])  # fmt: skip
    print_outcome(outcome)
    lines = buffer.getvalue().splitlines()
    assert (
        f"finalist {BIG.key}: mean 105.0 good RPS, 95% interval 92.6-117.4, stdev 5.0 over 3 run(s) "
        "(100.0, 110.0, 105.0)"
    ) in lines
    assert (
        f"choice: {result.choice.explain()}" in lines and "statistically tied with" in result.choice.explain()
    )
    assert "stopped early: time budget: 20 s left, a trial takes ~60 s" in lines
    assert (
        f"naive baseline {config.key}: 50.0 good RPS, knee 50 RPS offered, bracket 50-52 "
        "(converged, 6 steps); winner / naive = 2.00x"
    ) in lines
    assert (
        f"bentoml-default baseline {config.key}: 0.0 good RPS, no knee: no load met the SLO down to 0.2 "
        "(5 steps); winner / bentoml-default = no ratio (it served no good RPS within the SLO)"
    ) in lines
    assert sum(line.startswith("  #") for line in lines) == len(result.records)  # the measurements
