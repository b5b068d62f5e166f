"""bench/search_efficiency.py: it runs tuner's real Study on surfaces and writes labelled rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.presets import SURFACES, small_cpu_surface
from bench.search_efficiency import BUDGETS, evaluate, main, quantile, simulated_source, tune_defaults
from bench.surface_study import run_study
from tuner.strategies.grid import GridSearch
from tuner.strategies.random import RandomSearch
from tuner.study import Study

SURFACE = small_cpu_surface(requests=300)


def test_the_bench_writes_one_labelled_row_per_strategy_budget_and_surface(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rows.json"
    assert main(["--surface", "cpu-2core", "--seeds", "2", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    rows = [r for r in document["rows"] if r["surface"] == "cpu-2core"]
    strategies = {r["strategy"] for r in rows}
    assert {"grid", "random", "tpe", "quick", "guided"} <= strategies
    assert len(rows) == len(strategies) * len(BUDGETS)
    assert [r["strategy"] for r in rows if r["default"]] == [document["default_strategy"]] * len(BUDGETS)
    for row in rows:
        assert 0 <= row["p10_ratio"] <= row["median_ratio"] <= 1
        assert row["pick"] == document["pick"] == "finalists"
        assert row["guided_sample"] == "out-of-sample"
    drawn = [s["hidden"] for s in document["surfaces"]["cpu-2core"]["seeds"]]
    assert len(drawn) == 2 and drawn[0] != drawn[1]
    recorded = document["surfaces"].get("minilm-2core")
    if recorded is not None:  # the shipped recorded surface: guided's tie-break was designed on it
        assert recorded["guided_sample"] == "in-sample" and "tie-break" in recorded["why"]
    assert "cpu-2core: 48 configs" in capsys.readouterr().out


def test_the_centre_surfaces_are_labelled_in_sample(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    args = ["--surface", "cpu-2core", "--hidden", "centre", "--no-recorded", "--strategy", "grid"]
    assert main([*args, "--seeds", "1", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    assert {r["guided_sample"] for r in document["rows"]} == {"in-sample"}
    assert set(document["surfaces"]) == {"cpu-2core"}


def test_a_run_is_the_study_with_the_finalist_rule_of_tune() -> None:
    _, finalists, repeats = tune_defaults()
    study = run_study(
        SURFACE, GridSearch(SURFACE.space, 0), seed=0, trials=5, finalists=finalists, repeats=repeats
    )
    grid_order = [c.key for c in SURFACE.space.configs]
    feasible = [r for r in study.result.trials if r.score is not None]
    assert study.deployed[:5] == grid_order[:5]
    assert len(study.deployed) == 5 + min(finalists, len(feasible)) * repeats
    assert study.winner is not None and study.result.winner is not None
    assert study.winner == study.result.winner.config
    first, *again = [r.goodput_rps for r in study.result.records if r.key == study.winner.key]
    assert len(again) == repeats and len({first, *again}) == repeats + 1  # every repeat is a new draw


def test_measurements_are_common_to_every_strategy_and_differ_by_seed() -> None:
    grid = run_study(SURFACE, GridSearch(SURFACE.space, 0), seed=3, trials=12, finalists=0, repeats=0)
    rand = run_study(SURFACE, RandomSearch(SURFACE.space, 3), seed=3, trials=12, finalists=0, repeats=0)
    by_grid = {r.key: r.score for r in grid.result.trials}
    shared = [r for r in rand.result.trials if r.key in by_grid]
    assert shared, "seeded random should share a config with the first 12 of the grid"
    assert all(r.score == by_grid[r.key] for r in shared)
    other_seed = run_study(SURFACE, GridSearch(SURFACE.space, 0), seed=4, trials=12, finalists=0, repeats=0)
    assert {r.key: r.score for r in other_seed.result.trials} != by_grid


def test_the_bench_scores_what_the_studys_finalist_rule_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break the study's finalist selection and the bench's figures follow: it keeps no copy."""
    source = simulated_source(SURFACES["cpu-2core"], "cpu-2core", "centre", 0.08)
    rows, _ = evaluate("cpu-2core", source, 1, ["grid"])
    assert any(r["median_ratio"] > 0 for r in rows if r["pick"] == "finalists")
    monkeypatch.setattr(Study, "select_finalists", lambda self: [])
    rows, _ = evaluate("cpu-2core", source, 1, ["grid"])
    assert all(r["median_ratio"] == 0 for r in rows if r["pick"] == "finalists")


def test_quantiles_are_numpys_linear_ones() -> None:
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.10) == pytest.approx(1.4)
