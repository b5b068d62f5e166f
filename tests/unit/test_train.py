import pytest

from services.models.data import load_splits
from services.models.train import TrainConfig, evaluate, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def splits():  # type: ignore[no-untyped-def]
    return load_splits(seed=0)


@pytest.mark.slow
def test_default_recipe_reaches_the_accuracy_floor(splits) -> None:  # type: ignore[no-untyped-def]
    result = train(TrainConfig(epochs=25), splits)
    report = evaluate(result.net, splits.x_test, splits.y_test)
    assert report.accuracy >= 0.97
    assert report.macro_f1 >= 0.96
    assert sum(map(sum, report.confusion)) == len(splits.y_test)


def test_a_short_run_of_the_default_recipe_learns_the_digits(splits) -> None:  # type: ignore[no-untyped-def]
    """The fast stand-in for the floor test above: 3 epochs already land far above chance (0.1)."""
    result = train(TrainConfig(epochs=3), splits)
    report = evaluate(result.net, splits.x_test, splits.y_test)
    assert report.accuracy >= 0.9
    assert report.macro_f1 >= 0.85
    assert sum(map(sum, report.confusion)) == len(splits.y_test)
    assert sum(report.confusion[k][k] for k in range(10)) == round(report.accuracy * len(splits.y_test))


@pytest.mark.parametrize(
    ("optimizer", "lr"),
    [("gd", 0.5), ("sgd", 0.05), ("momentum", 0.02), ("adam", 2e-3), ("adagrad", 0.05), ("rmsprop", 1e-3)],
)
def test_each_optimizer_reduces_the_training_loss(splits, optimizer: str, lr: float) -> None:  # type: ignore[no-untyped-def]
    config = TrainConfig(optimizer=optimizer, lr=lr, epochs=4, arch="mlp", width=64, schedule="none")  # type: ignore[arg-type]
    history = train(config, splits).history
    assert history[-1].train_loss < history[0].train_loss * 0.9


def test_same_seed_gives_the_same_test_metrics(splits) -> None:  # type: ignore[no-untyped-def]
    config = TrainConfig(epochs=3, arch="mlp", width=32, augment=True, seed=7)
    a = evaluate(train(config, splits).net, splits.x_test, splits.y_test)
    b = evaluate(train(config, splits).net, splits.x_test, splits.y_test)
    assert a == b


def test_early_stopping_triggers_on_a_plateau_and_restores_the_best(splits) -> None:  # type: ignore[no-untyped-def]
    # lr ~ 0 forces a flat validation loss: the run must stop after `patience` epochs.
    config = TrainConfig(optimizer="sgd", lr=1e-12, epochs=50, patience=3, min_delta=1e-3, schedule="none")
    result = train(config, splits)
    assert result.stopped_early
    assert len(result.history) == 1 + config.patience
    assert result.best_epoch == 1
