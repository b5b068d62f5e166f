"""The tiny ask/tell interface every search strategy implements, plus shared bookkeeping."""

from __future__ import annotations

import random
from typing import Protocol

from tuner.space import Config, SearchSpace


class SearchStrategy(Protocol):
    """Proposes configs (`ask`) and learns from their scores (`tell`); higher score is better.

    `ask` returns None when the strategy has nothing left to propose. `tell` gets None for a
    failed or infeasible trial. A strategy may propose a config it has been told about before;
    the study answers from its store without measuring again.
    """

    name: str

    def ask(self) -> Config | None: ...

    def tell(self, config: Config, score: float | None) -> None: ...


class StrategyBase:
    """Scores seen so far, an own seeded RNG, and the unseen legal configs."""

    name = "base"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.rng = random.Random(seed)
        self.scores: dict[str, float | None] = {}

    def tell(self, config: Config, score: float | None) -> None:
        self.scores[config.key] = score

    def seen(self, config: Config) -> bool:
        return config.key in self.scores

    def unseen(self) -> list[Config]:
        return [c for c in self.space.configs if c.key not in self.scores]

    def random_unseen(self) -> Config | None:
        left = self.unseen()
        return self.rng.choice(left) if left else None
