"""Small networks for the 8x8 digits: a CNN (default) and an MLP."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from services.models.data import IMAGE_SIDE, N_CLASSES, N_PIXELS

Arch = Literal["cnn", "mlp"]
Init = Literal["default", "xavier", "kaiming", "orthogonal"]


class DigitsCNN(nn.Module):
    """Two 3x3 conv layers, one max-pool, two linear layers; input (N, 64) in [0, 1]."""

    def __init__(self, width: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * (IMAGE_SIDE // 2) ** 2, 64),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(64, N_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, IMAGE_SIDE, IMAGE_SIDE)))


class DigitsMLP(nn.Module):
    """Two hidden layers of `width` units; input (N, 64) in [0, 1]."""

    def __init__(self, width: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(N_PIXELS, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, N_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.view(-1, N_PIXELS))


def build_net(arch: Arch, width: int, dropout: float = 0.1) -> nn.Module:
    """The network named by `arch` with `width` channels (cnn) or units (mlp)."""
    if arch == "cnn":
        return DigitsCNN(width, dropout)
    if arch == "mlp":
        return DigitsMLP(width, dropout)
    raise ValueError(f"unknown arch {arch!r}: expected 'cnn' or 'mlp'")


def initialise(net: nn.Module, scheme: Init) -> None:
    """Re-initialise conv/linear weights with `scheme` (biases to zero); 'default' keeps torch's."""
    if scheme == "default":
        return
    for module in net.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif scheme == "kaiming":
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
            elif scheme == "orthogonal":
                nn.init.orthogonal_(module.weight)
            else:
                raise ValueError(f"unknown init {scheme!r}")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
