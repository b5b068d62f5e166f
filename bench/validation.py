"""How well a server model predicts measured goodput: relative errors, rank correlation, feasibility."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tuner.servermodel import ServerModel
from tuner.simulator import max_goodput
from tuner.space import Config

Predictor = Callable[[ServerModel, Config], float]


@dataclass(frozen=True)
class ValidationRow:
    config: Config
    measured: float
    predicted: float


@dataclass(frozen=True)
class Validation:
    """How well a model predicts measured goodput."""

    rows: tuple[ValidationRow, ...]
    median_abs_error: float  # relative, over configs with measured goodput > 0
    mean_abs_error: float
    rank_correlation: float  # Spearman over all configs
    feasibility_agreement: float  # share of configs where both say zero or both say > 0

    def summary(self) -> str:
        return (
            f"{len(self.rows)} configs: median |error| {self.median_abs_error:.0%}, mean |error| "
            f"{self.mean_abs_error:.0%}, Spearman {self.rank_correlation:.2f}, "
            f"feasibility agreement {self.feasibility_agreement:.0%}"
        )


def simulated(model: ServerModel, config: Config) -> float:
    """The queueing simulator's goodput (the default predictor)."""
    return max_goodput(model, config).goodput_rps


def validate(
    model: ServerModel, measured: Sequence[tuple[Config, float]], predict: Predictor = simulated
) -> Validation:
    """Compare predicted with measured goodput per config (errors relative to the measurement)."""
    from scipy.stats import spearmanr

    if not measured:
        raise ValueError("validate needs at least one measured config")
    rows = tuple(ValidationRow(c, float(g), float(predict(model, c))) for c, g in measured)
    errors = [abs(r.predicted / r.measured - 1) for r in rows if r.measured > 0]
    agree = statistics.fmean(float((r.measured > 0) == (r.predicted > 0)) for r in rows)
    if len(rows) > 2:
        rho = spearmanr([r.measured for r in rows], [r.predicted for r in rows]).statistic
        rank = float(rho) if rho == rho else 0.0
    else:
        rank = float("nan")
    return Validation(
        rows,
        statistics.median(errors) if errors else float("nan"),
        statistics.fmean(errors) if errors else float("nan"),
        rank,
        agree,
    )
