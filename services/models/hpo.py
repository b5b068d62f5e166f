"""Hyperparameter search for digits with Optuna (TPE, random or grid), resumable via SQLite."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import torch

from services.models.data import DigitsSplits, load_splits
from services.models.pipeline import StoredModel, train_and_store
from services.models.train import EpochCallback, TrainConfig, evaluate, train

SamplerName = Literal["tpe", "random", "grid"]
DEFAULT_STORAGE = Path("~/.servetune/hpo.db")
TRIAL_EPOCHS = 10
TRIAL_PATIENCE = 3

# The grid sampler walks this lattice; TPE and random sample the ranges around it.
GRID: dict[str, list[Any]] = {
    "lr": [1e-3, 3e-3, 8e-3],
    "batch_size": [32, 64],
    "optimizer": ["momentum", "adam", "rmsprop"],
    "momentum": [0.9],
    "weight_decay": [0.0, 1e-4],
    "width": [16],
}
# Plain sgd/gd need far more epochs than a short trial gives; the recipe still offers them.
OPTIMIZERS = ["momentum", "adam", "adagrad", "rmsprop"]


@dataclass(frozen=True)
class SearchResult:
    stored: StoredModel
    best_params: dict[str, Any]
    best_value: float
    trials_run: int
    trials_total: int
    study_name: str


def make_sampler(name: SamplerName, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded Optuna sampler."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(GRID, seed=seed)
    raise ValueError(f"unknown sampler {name!r}: expected tpe, random or grid")


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """The search space: lr (log), batch size, optimizer, momentum, weight decay, width."""
    return {
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "optimizer": trial.suggest_categorical("optimizer", OPTIMIZERS),
        "momentum": trial.suggest_float("momentum", 0.5, 0.99),
        "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 1e-5, 1e-4, 1e-3]),
        "width": trial.suggest_categorical("width", [8, 16]),
    }


def config_from(params: dict[str, Any], base: TrainConfig, epochs: int, patience: int) -> TrainConfig:
    """A TrainConfig from trial params on top of `base`."""
    return base.model_copy(update={**params, "epochs": epochs, "patience": patience})


def storage_url(path: Path) -> str:
    """SQLite URL for a study file (its folder is created)."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def default_study_name(sampler: SamplerName, base: TrainConfig) -> str:
    return f"digits-{base.arch}-{sampler}-seed{base.seed}"


def history(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial's number, state, params and value (JSON-friendly)."""
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": None if t.value is None else round(float(t.value), 6),
        }
        for t in study.trials
    ]


def run_search(
    sampler: SamplerName = "tpe",
    trials: int = 20,
    storage: Path = DEFAULT_STORAGE,
    study_name: str | None = None,
    base: TrainConfig | None = None,
    trial_epochs: int = TRIAL_EPOCHS,
    on_trial: Callable[[int, float, float], None] | None = None,
    on_epoch: EpochCallback | None = None,
    threads: int = 1,
) -> SearchResult:
    """Run (or resume) a study up to `trials` finished trials; retrain the best, test once, store.

    Objective: validation macro F1 of a short run (early stopping on validation loss).
    The best configuration is retrained with the full `base.epochs`/`base.patience`, evaluated
    once on test and stored with the whole search history in its metadata.
    """
    base = base or TrainConfig()
    # One torch thread: the nets are tiny, and on a shared 2-core machine 2 OpenMP threads ran
    # a trial 10-20x slower than 1 (spinning threads competing with other processes).
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _search(sampler, trials, storage, study_name, base, trial_epochs, on_trial, on_epoch)
    finally:
        torch.set_num_threads(before)


def _search(
    sampler: SamplerName,
    trials: int,
    storage: Path,
    study_name: str | None,
    base: TrainConfig,
    trial_epochs: int,
    on_trial: Callable[[int, float, float], None] | None,
    on_epoch: EpochCallback | None,
) -> SearchResult:
    name = study_name or default_study_name(sampler, base)
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage_url(storage),
        sampler=make_sampler(sampler, base.seed),
        direction="maximize",
        load_if_exists=True,
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    missing = max(0, trials - len(done))
    data: DigitsSplits = load_splits(seed=base.seed)

    def objective(trial: optuna.Trial) -> float:
        config = config_from(suggest(trial), base, trial_epochs, TRIAL_PATIENCE)
        result = train(config, data)
        val = evaluate(result.net, data.x_val, data.y_val)
        trial.set_user_attr("val_accuracy", round(val.accuracy, 6))
        trial.set_user_attr("epochs_run", len(result.history))
        return val.macro_f1

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(trial.number, float(trial.value or 0.0), float(study.best_value))

    if missing:
        study.optimize(objective, n_trials=missing, callbacks=[callback])
    best = study.best_trial
    best_config = config_from(dict(best.params), base, base.epochs, base.patience)
    search_meta: dict[str, object] = {
        "hpo": {
            "sampler": sampler,
            "study": name,
            "storage": str(storage.expanduser()),
            "objective": "validation macro F1",
            "trial_epochs": trial_epochs,
            "best_trial": best.number,
            "best_value": round(float(best.value or 0.0), 6),
            "best_params": dict(best.params),
            "trials": history(study),
        }
    }
    stored = train_and_store(best_config, on_epoch=on_epoch, extra_metadata=search_meta)
    return SearchResult(
        stored=stored,
        best_params=dict(best.params),
        best_value=float(best.value or 0.0),
        trials_run=missing,
        trials_total=len(study.trials),
        study_name=name,
    )
