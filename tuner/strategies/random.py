"""Random search: legal configs in a seeded random order, without repeats."""

from __future__ import annotations

from tuner.history import TrialView
from tuner.space import Config
from tuner.strategies.base import StrategyBase


class RandomSearch(StrategyBase):
    """A seeded permutation of the legal configs."""

    name = "random"

    def ask(self, history: TrialView) -> Config | None:
        return self.random_unseen(history)
