"""bench/search_efficiency.py on the small simulated surface: the loop rules and the JSON rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.search_efficiency import BUDGETS, main, pick_finalists, pick_measured, run_search
from tuner.simulate import small_cpu_surface
from tuner.space import Config
from tuner.strategies.grid import GridSearch


def test_the_bench_writes_one_row_per_strategy_budget_and_surface(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rows.json"
    assert main(["--surface", "cpu-2core", "--seeds", "2", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    rows = [r for r in document["rows"] if r["surface"] == "cpu-2core"]
    strategies = {r["strategy"] for r in rows}
    assert {"grid", "random", "tpe", "quick", "guided"} <= strategies
    assert len(rows) == len(strategies) * len(BUDGETS)
    assert document["default_strategy"] in strategies
    for row in rows:
        assert {"strategy", "surface", "n_configs", "budget_fraction", "median_ratio", "p10_ratio"} <= set(
            row
        )
        assert 0 <= row["p10_ratio"] <= row["median_ratio"] <= 1
        assert row["pick"] == document["pick"] == "finalists"
    assert "cpu-2core: 48 configs" in capsys.readouterr().out


def test_the_loop_never_measures_a_config_twice() -> None:
    surface = small_cpu_surface(requests=300)
    measured: list[str] = []

    def measure(config: Config, repeat: int) -> float | None:
        measured.append(config.key)
        return float(len(measured))

    trials = run_search(GridSearch(surface.space, 0), surface.space, measure, len(surface.space) + 3)
    assert len(trials) == len(surface.space) == len(set(measured)) == len(measured)


def test_the_picks_use_the_noisy_values_and_the_finalists_their_repeats() -> None:
    a, b, c = Config(8, 100, 1, 1), Config(16, 100, 1, 1), Config(32, 100, 1, 1)
    trials = [(a, 10.0), (b, 12.0), (c, None)]
    assert pick_measured(trials) == b
    repeats = {a.key: 11.0, b.key: 5.0}
    assert pick_finalists(trials, lambda config, r: repeats[config.key]) == a
    assert pick_measured([(c, None)]) is None
