"""Hyperparameter search: a short seeded study, stored with its history, resumable."""

from __future__ import annotations

from pathlib import Path

import bentoml
import optuna
import pytest

from services.models.data import load_splits
from services.models.hpo import GRID, make_sampler, run_search
from services.models.store import load_digits_net
from services.models.train import TrainConfig, evaluate


def test_search_stores_best_with_history_and_resumes(tmp_path: Path) -> None:
    db = tmp_path / "hpo.db"
    base = TrainConfig(width=8, seed=3, epochs=3)  # 1-epoch trials; the best is retrained for 3
    first = run_search("tpe", trials=3, storage=db, study_name="t", base=base, trial_epochs=1)
    assert (first.trials_run, first.trials_total) == (3, 3)
    model = bentoml.models.get(first.stored.tag)
    meta = model.info.metadata
    hpo = meta["hpo"]
    assert isinstance(hpo, dict)
    assert [t["number"] for t in hpo["trials"]] == [0, 1, 2]
    assert max(t["value"] for t in hpo["trials"]) == hpo["best_value"]
    assert hpo["trial_epochs"] == 1
    hyper = meta["hyperparameters"]
    assert isinstance(hyper, dict)
    assert hyper["lr"] == first.best_params["lr"] and hyper["epochs"] == base.epochs, "retrained with base"
    # The stored test figures describe the stored network, and it learnt (chance is 0.1).
    data = load_splits(seed=base.seed)
    accuracy = evaluate(load_digits_net(model), data.x_test, data.y_test).accuracy
    assert meta["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)  # type: ignore[index]
    assert accuracy > 0.5

    resumed = run_search("tpe", trials=4, storage=db, study_name="t", base=base, trial_epochs=1)
    assert (resumed.trials_run, resumed.trials_total) == (1, 4)
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{db}")
    assert len(study.trials) == 4


@pytest.mark.slow
def test_a_default_sized_search_stores_a_model_at_the_accuracy_floor(tmp_path: Path) -> None:
    """The real recipe: default trial epochs and a full retrain (the fast test above: the mechanics)."""
    result = run_search("tpe", trials=4, storage=tmp_path / "hpo.db", study_name="full", base=TrainConfig())
    assert result.trials_total == 4
    assert result.best_value >= 0.95, "validation macro F1 of the best trial"
    assert result.stored.test.accuracy >= 0.97


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
