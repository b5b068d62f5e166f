"""Quick search: hill-climbing over neighbouring index values (after Triton Model Analyzer's quick mode)."""

from __future__ import annotations

from tuner.space import Config, SearchSpace
from tuner.strategies.base import StrategyBase


class QuickSearch(StrategyBase):
    """Start in the middle of every dimension, measure the neighbours of the best config so far,
    move to one that beats it by more than `min_gain` (relative; below that it is noise) as soon
    as it is found; restart at a random unseen config when stuck."""

    name = "quick"

    def __init__(
        self, space: SearchSpace, seed: int = 0, start: Config | None = None, min_gain: float = 0.03
    ) -> None:
        super().__init__(space, seed)
        self.min_gain = min_gain
        self.start = start if start is not None and start in space else self._middle()
        self.current: Config | None = None
        self.queue: list[Config] = []

    def _middle(self) -> Config:
        middle = [len(d) // 2 for d in self.space.dimensions]
        candidate = self.space.from_indices(middle)
        if candidate in self.space:
            return candidate
        target = middle

        def distance(config: Config) -> tuple[int, int]:
            # ties go to more processes: the single process is the first bottleneck measured
            steps = sum(abs(a - b) for a, b in zip(self.space.indices(config), target, strict=True))
            return steps, -config.workers

        return min(self.space.configs, key=distance)

    def _score(self, config: Config | None) -> float | None:
        return None if config is None else self.scores.get(config.key)

    def ask(self) -> Config | None:
        if not self.seen(self.start):
            return self.start
        while True:
            self.queue = [c for c in self.queue if not self.seen(c)]
            if self.queue:
                return self.queue.pop(0)
            if self.current is None:
                return None
            fresh = [c for c in self.space.neighbours(self.current) if not self.seen(c)]
            if fresh:
                self.queue = fresh
                continue
            restart = self.random_unseen()  # a local optimum: jump somewhere new
            if restart is None:
                return None
            self.queue = [restart]

    def tell(self, config: Config, score: float | None) -> None:
        super().tell(config, score)
        best = self._score(self.current)
        if score is not None and (best is None or score > best + abs(best) * self.min_gain):
            self.current = config
            self.queue = []
        elif self.current is None:
            self.current = config
