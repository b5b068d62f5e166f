"""bench/capacity_accuracy_runs.py: pooling recorded accuracy runs per config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.capacity_accuracy_runs import main, mean_interval, pool, row_errors, run_met, table


def run(errors: dict[str, float | None], floors: float | None = 0.05) -> dict[str, Any]:
    return {
        "code": {"commit": "abcdef0123"},
        "rows": [{"config": c, "rel_error": e, "noise_floor": floors} for c, e in errors.items()],
    }


RUNS = {
    "a.json": run({"x": 0.04, "y": -0.12}),
    "b.json": run({"x": 0.02, "y": 0.10}),
    "c.json": run({"x": 0.03, "y": 0.05, "z": None}),
}


def test_rows_are_grouped_per_config_in_run_order_without_reference_less_rows() -> None:
    grouped = row_errors(RUNS)
    assert sorted(grouped) == ["x", "y"]
    assert [e.run for e in grouped["y"]] == ["a.json", "b.json", "c.json"]
    assert [e.rel_error for e in grouped["y"]] == [-0.12, 0.10, 0.05]
    assert grouped["x"][0].commit == "abcdef0"


def test_mean_interval_is_student_t_and_needs_two_values() -> None:
    low, high = mean_interval([0.0, 0.2]) or (0.0, 0.0)
    # mean 0.1, sd 0.1414, t(0.975, 1) = 12.706: half width 12.706 * 0.1414 / sqrt(2) = 1.2706
    assert low == pytest.approx(0.1 - 1.2706, abs=1e-3)
    assert high == pytest.approx(0.1 + 1.2706, abs=1e-3)
    assert mean_interval([0.1]) is None


def test_pool_reports_bias_spread_and_targets_per_config() -> None:
    pooled = pool(RUNS)
    y = pooled["configs"]["y"]
    assert y["mean_rel_error"] == pytest.approx(0.01)
    assert y["mean_abs_rel_error"] == pytest.approx(0.09)
    assert y["within_max_target"] == 2  # -12% is out
    low, high = y["mean_interval_95"]
    assert low < y["mean_rel_error"] < high
    assert pooled["rows"] == 6 and pooled["rows_within_max_target"] == 5
    assert pooled["median_abs_error_over_noise_floor"] == pytest.approx(0.9)  # median of |e| / 0.05
    # a: max 12% over; b: median of 2% and 10% is 6% over; c: the row without a reference
    assert [r["met"] for r in pooled["runs"]] == [False, False, False]
    assert pooled["runs_met_both_targets"] == 0


def test_a_run_meets_both_targets_only_with_every_row_scored() -> None:
    assert run_met(run({"x": 0.04, "y": -0.09, "z": 0.01}))
    assert not run_met(run({"x": 0.04, "y": -0.09, "z": None}))
    assert not run_met(run({"x": 0.06, "y": -0.07}))
    assert not run_met({**run({"x": 0.01, "y": 0.02}), "partial": True})  # stopped part-way


def test_rows_without_a_noise_floor_are_left_out_of_the_ratio() -> None:
    pooled = pool({"a.json": run({"x": 0.04}, floors=None)})
    assert pooled["median_abs_error_over_noise_floor"] is None
    assert pooled["configs"]["x"]["sd_rel_error"] is None
    assert pooled["configs"]["x"]["mean_interval_95"] is None


def test_table_and_cli_write_the_pooled_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = []
    for name, data in RUNS.items():
        path = tmp_path / name
        path.write_text(json.dumps(data))
        paths.append(str(path))
    out = tmp_path / "pooled.json"
    assert main([*paths, "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["configs"]["x"]["rel_errors"] == [0.04, 0.02, 0.03]
    printed = capsys.readouterr().out
    assert "5 of 6 rows within 10%" in printed
    assert "-12.0%" in table(written)
