"""Grid search: every legal config in the space's fixed order."""

from __future__ import annotations

from tuner.space import Config
from tuner.strategies.base import StrategyBase


class GridSearch(StrategyBase):
    """Walks the legal configs in product order, skipping those already measured."""

    name = "grid"

    def ask(self) -> Config | None:
        left = self.unseen()
        return left[0] if left else None
