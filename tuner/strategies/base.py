"""The one-method interface every search strategy implements, plus shared helpers."""

from __future__ import annotations

import random
from typing import Protocol

from tuner.history import TrialView
from tuner.space import Config, SearchSpace


class SearchStrategy(Protocol):
    """Proposes the next config to measure; higher score is better.

    `ask` reads the study's trial history (the study owns it and appends every measurement;
    a strategy keeps no copy of the scores) and returns None when it has nothing left to
    propose. A config the history already holds is answered from it, never measured again.
    """

    name: str

    def ask(self, history: TrialView) -> Config | None: ...


class StrategyBase:
    """An own seeded RNG and the legal configs the history does not hold yet."""

    name = "base"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.rng = random.Random(seed)

    def unseen(self, history: TrialView) -> list[Config]:
        return [c for c in self.space.configs if not history.seen(c.key)]

    def random_unseen(self, history: TrialView) -> Config | None:
        left = self.unseen(history)
        return self.rng.choice(left) if left else None
