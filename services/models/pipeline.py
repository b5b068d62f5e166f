"""Train -> evaluate -> store, as one call used by the CLI and the demo."""

from __future__ import annotations

from dataclasses import dataclass

from services.models.data import CLASS_LABELS, load_splits
from services.models.store import save_digits
from services.models.train import EpochCallback, EvalReport, TrainConfig, evaluate, train


@dataclass(frozen=True)
class StoredModel:
    tag: str
    test: EvalReport
    validation: EvalReport
    best_epoch: int
    stopped_early: bool


def train_and_store(
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    extra_metadata: dict[str, object] | None = None,
) -> StoredModel:
    """Train digits with `config`, evaluate once on the test split, store with metadata."""
    data = load_splits(seed=config.seed)
    result = train(config, data, on_epoch=on_epoch)
    val = evaluate(result.net, data.x_val, data.y_val)
    test = evaluate(result.net, data.x_test, data.y_test)
    metadata: dict[str, object] = {
        "test": test.as_metadata(),
        "validation": val.as_metadata(),
        "confusion_matrix": test.confusion,
        "hyperparameters": config.model_dump(),
        "class_labels": CLASS_LABELS,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        **(extra_metadata or {}),
    }
    arch = {"arch": config.arch, "width": config.width, "dropout": config.dropout}
    tag = save_digits(result.net, arch, metadata, labels={"arch": config.arch})
    return StoredModel(tag, test, val, result.best_epoch, result.stopped_early)
