"""The demo's closing lines state an interval only when the winner was measured more than once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.capacity import CapacityFinding
from tuner.commands.console import console
from tuner.commands.demo import cut_by_budget, print_closing
from tuner.store import TrialRecord


def summary(runs: list[float], interval: list[float] | None) -> dict[str, Any]:
    return {
        "winner_key": "b64-l500-w2-t1-g0-fp32", "winner_goodput_rps": round(sum(runs) / len(runs), 1),
        "winner_goodput_runs": runs, "winner_interval_rps": interval, "slo_p95_ms": 200.0,
        "choice": None, "cores": 2, "naive_goodput_rps": 42.0, "bentoml_default_goodput_rps": None,
        "ratio": None, "ratio_over_bentoml_default": None, "stopped_because": "", "trials": 2,
        "finalist_runs": 0, "wall_seconds": 350.0, "load_average_before": [0.7, 0.5, 0.4],
        "load_average_after": [2.5, 1.5, 1.2], "inprocess_fp32_batch16_1thread_s": None,
        "report": "reports/demo/report.html",
    }  # fmt: skip


def closing(data: dict[str, Any]) -> str:
    with console.capture() as captured:
        print_closing(data, Path("reports/demo"))
    return " ".join(captured.get().split())


def test_one_run_is_said_to_have_no_interval() -> None:
    text = closing(summary([108.9], None))
    assert "108.9 good RPS, no interval (1 run)" in text and "95% interval" not in text


def test_repeated_runs_show_their_interval() -> None:
    text = closing(summary([90.6, 139.1], [0.0, 423.0]))
    assert "114.8 good RPS, 95% interval 0.0-423.0" in text


def test_a_baseline_cut_by_the_budget_is_a_lower_bound_and_its_ratio_is_flagged() -> None:
    data = summary([64.7, 64.7], [47.4, 82.0]) | {"ratio": 3.5, "naive_cut_by_budget": True}
    text = closing(data)
    assert "42.0 good RPS (at least: its search was cut by the time budget)" in text
    assert "the ratio over it may be too high" in text
    whole = closing(summary([64.7, 64.7], [47.4, 82.0]) | {"ratio": 3.5})
    assert "at least" not in whole and "may be too high" not in whole


def test_a_winner_whose_searches_the_budget_cut_is_a_lower_bound_and_its_ratios_are_flagged() -> None:
    data = summary([122.3, 121.9], [119.9, 124.3]) | {"ratio": 2.68, "winner_searches_cut_by_budget": 2}
    text = closing(data)
    assert "122.1 good RPS (at least: 2 of its 2 searches were cut by the time budget)" in text
    assert "the ratios may be too low" in text
    whole = closing(
        summary([122.3, 121.9], [119.9, 124.3]) | {"ratio": 2.68, "winner_searches_cut_by_budget": 0}
    )
    assert "at least" not in whole and "may be too low" not in whole


def baseline_stopped(converged: bool) -> TrialRecord:
    finding = CapacityFinding(
        mode="rate", knee=200.0, breach=206.0 if converged else None, goodput_rps=198.0,
        converged=converged, limited_by="budget", steps=7, resolution=0.05,
    )  # fmt: skip
    return TrialRecord(
        number=0, kind="baseline", label="bentoml-default", strategy="guided", key="k", config={},
        status="ok", score=198.0, goodput_rps=198.0, capacity=finding,
    )  # fmt: skip


def test_a_baseline_is_a_lower_bound_only_when_the_budget_cut_its_bracket_open() -> None:
    assert cut_by_budget(baseline_stopped(converged=False))
    assert not cut_by_budget(baseline_stopped(converged=True))  # only a recheck was cut
    assert not cut_by_budget(None)


def test_unfinished_trials_are_counted_apart() -> None:
    text = closing(summary([108.9], None) | {"unfinished_trials": 1})
    assert "2 trials, 1 of them unfinished (cut by the budget before any level met the SLO)" in text
    assert "unfinished" not in closing(summary([108.9], None))


def test_the_summary_compares_the_winner_with_each_baseline_of_a_fake_study(tmp_path: Path) -> None:
    from tests.fakes import FakeDeployer, FakeLoadRunner
    from tuner.commands.demo import demo_summary
    from tuner.finalists import mean_goodput_of
    from tuner.space import Machine, default_space
    from tuner.tuning import DEFAULT_LABEL, TuneOptions, run_tune

    deployer = FakeDeployer()
    options = TuneOptions(
        service="embedding", strategy="grid", trials=3, out=tmp_path, finalists=2, repeats=2, warmup_s=1,
        naive_baseline=True, default_baseline=True,
    )  # fmt: skip
    outcome = run_tune(options, FakeLoadRunner(deployer), default_space("embedding", Machine(2, 0)),
                       deployer=deployer)  # fmt: skip
    data = demo_summary(outcome, {}, 10.0, (0.5, 0.5, 0.5))
    default = next(b for b in outcome.baselines if b.label == DEFAULT_LABEL)
    expected = round(mean_goodput_of(default, outcome.result.finalists), 1)
    assert data["bentoml_default_goodput_rps"] == expected > 0
    winner = outcome.result.winner
    assert winner is not None
    unrounded = mean_goodput_of(default, outcome.result.finalists)
    assert data["ratio_over_bentoml_default"] == round(winner.mean_goodput / unrounded, 2)
    assert data["trials"] == 3 and data["unfinished_trials"] == 0
