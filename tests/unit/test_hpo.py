"""Hyperparameter search: a short seeded study, stored with its history, resumable."""

from __future__ import annotations

from pathlib import Path

import bentoml
import optuna

from services.models.hpo import GRID, make_sampler, run_search
from services.models.train import TrainConfig


def test_search_stores_best_with_history_and_resumes(tmp_path: Path) -> None:
    db = tmp_path / "hpo.db"
    base = TrainConfig(width=8, seed=3)
    first = run_search("tpe", trials=3, storage=db, study_name="t", base=base, trial_epochs=2)
    assert (first.trials_run, first.trials_total) == (3, 3)
    meta = bentoml.models.get(first.stored.tag).info.metadata
    hpo = meta["hpo"]
    assert isinstance(hpo, dict)
    assert [t["number"] for t in hpo["trials"]] == [0, 1, 2]
    assert max(t["value"] for t in hpo["trials"]) == hpo["best_value"]
    assert meta["hyperparameters"]["lr"] == first.best_params["lr"]  # type: ignore[index]
    assert 0.0 <= meta["test"]["accuracy"] <= 1.0  # type: ignore[index]

    resumed = run_search("tpe", trials=4, storage=db, study_name="t", base=base, trial_epochs=2)
    assert (resumed.trials_run, resumed.trials_total) == (1, 4)
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{db}")
    assert len(study.trials) == 4


def test_samplers_are_seeded() -> None:
    for name in ("tpe", "random"):
        a = optuna.create_study(sampler=make_sampler(name, 7))  # type: ignore[arg-type]
        b = optuna.create_study(sampler=make_sampler(name, 7))  # type: ignore[arg-type]
        pick_a = [a.ask().suggest_float("x", 0, 1) for _ in range(3)]
        pick_b = [b.ask().suggest_float("x", 0, 1) for _ in range(3)]
        assert pick_a == pick_b
    grid = optuna.create_study(sampler=make_sampler("grid", 0))
    trial = grid.ask()
    assert (
        trial.suggest_categorical("optimizer", ["sgd", "momentum", "adam", "adagrad", "rmsprop"])
        in GRID["optimizer"]
    )
