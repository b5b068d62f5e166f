"""Grid search: every legal config in the space's fixed order."""

from __future__ import annotations

from tuner.history import TrialView
from tuner.space import Config
from tuner.strategies.base import StrategyBase


class GridSearch(StrategyBase):
    """Walks the legal configs in product order, skipping those already measured."""

    name = "grid"

    def ask(self, history: TrialView) -> Config | None:
        left = self.unseen(history)
        return left[0] if left else None
