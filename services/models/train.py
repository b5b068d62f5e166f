"""The training recipe for digits: optimizers, LR decay, early stopping, evaluation."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
from torch import nn

from services.models.data import DigitsSplits, shift_augment
from services.models.nets import Arch, Init, build_net, initialise

OptimizerName = Literal["gd", "sgd", "momentum", "adam", "adagrad", "rmsprop"]
Schedule = Literal["none", "step", "cosine"]


class TrainConfig(BaseModel):
    """Hyperparameters of one training run; stored with the model as metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Arch = "cnn"
    width: int = Field(16, ge=2, le=512)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    init: Init = "kaiming"
    optimizer: OptimizerName = "adam"
    lr: float = Field(2e-3, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    batch_size: int = Field(64, ge=1, le=4096)
    epochs: int = Field(40, ge=1, le=1000)
    schedule: Schedule = "cosine"
    step_size: int = Field(10, ge=1)
    step_gamma: float = Field(0.5, gt=0.0, le=1.0)
    patience: int = Field(8, ge=1, description="epochs without val-loss improvement before stop")
    min_delta: float = Field(1e-4, ge=0.0)
    augment: bool = False
    seed: int = 0


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    lr: float


@dataclass
class TrainResult:
    net: nn.Module
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


@dataclass(frozen=True)
class EvalReport:
    accuracy: float
    macro_recall: float
    macro_f1: float
    confusion: list[list[int]]
    loss: float

    def as_metadata(self) -> dict[str, float]:
        return {
            "accuracy": round(self.accuracy, 6),
            "macro_recall": round(self.macro_recall, 6),
            "macro_f1": round(self.macro_f1, 6),
        }


EpochCallback = Callable[[EpochRecord], None]


def make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer named by the config; `gd` and `sgd` are plain SGD (full batch vs mini-batch)."""
    wd = config.weight_decay
    if config.optimizer in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=config.lr, weight_decay=wd)
    if config.optimizer == "momentum":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=wd,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=wd)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=config.lr, weight_decay=wd)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, momentum=0.0, weight_decay=wd)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """Multiplier of the base LR at a 0-based epoch."""
    if config.schedule == "step":
        return float(config.step_gamma ** (epoch // config.step_size))
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    return 1.0


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    return torch.Generator().manual_seed(seed)


def train(config: TrainConfig, data: DigitsSplits, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train with per-epoch validation and early stopping; restores the best checkpoint."""
    generator = seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    net = build_net(config.arch, config.width, config.dropout)
    initialise(net, config.init)
    optimizer = make_optimizer(config, list(net.parameters()))
    loss_fn = nn.CrossEntropyLoss()
    y_train = torch.from_numpy(data.y_train)
    batch_size = len(y_train) if config.optimizer == "gd" else config.batch_size

    result = TrainResult(net=net)
    best_loss = math.inf
    best_state = copy.deepcopy(net.state_dict())
    stale = 0
    for epoch in range(config.epochs):
        lr = config.lr * lr_factor(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x_np = shift_augment(data.x_train, rng) if config.augment else data.x_train
        x_train = torch.from_numpy(x_np)
        net.train()
        order = torch.randperm(len(y_train), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(net(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.item()) * len(idx)
        val = evaluate(net, data.x_val, data.y_val)
        record = EpochRecord(epoch + 1, total / len(order), val.loss, val.accuracy, lr)
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if val.loss < best_loss - config.min_delta:
            best_loss, stale, result.best_epoch = val.loss, 0, epoch + 1
            best_state = copy.deepcopy(net.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                result.stopped_early = True
                break
    net.load_state_dict(best_state)
    net.eval()
    return result


@torch.no_grad()
def predict_proba(net: nn.Module, x: np.ndarray) -> np.ndarray:
    """Class probabilities for normalised images (N, 64)."""
    net.eval()
    logits = net(torch.as_tensor(x, dtype=torch.float32))
    return torch.softmax(logits, dim=1).numpy()


def evaluate(net: nn.Module, x: np.ndarray, y: np.ndarray) -> EvalReport:
    """Accuracy, macro recall, macro F1, confusion matrix and mean loss (scikit-learn metrics)."""
    proba = predict_proba(net, x)
    pred = proba.argmax(axis=1)
    picked = np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)
    return EvalReport(
        accuracy=float(accuracy_score(y, pred)),
        macro_recall=float(recall_score(y, pred, average="macro", zero_division=0)),
        macro_f1=float(f1_score(y, pred, average="macro", zero_division=0)),
        confusion=confusion_matrix(y, pred, labels=list(range(10))).tolist(),
        loss=float(-np.log(picked).mean()),
    )
