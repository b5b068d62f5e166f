"""Quick search: hill-climbing over neighbouring index values (after Triton Model Analyzer's quick mode)."""

from __future__ import annotations

from tuner.history import TrialView
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
        self.current_score: float | None = None
        self.queue: list[Config] = []
        self.read = 0  # trials of the history already followed

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

    def _follow(self, history: TrialView) -> None:
        """Move the centre along the trials measured since the last ask, in their order."""
        for record in history.trials(self.read):
            best, score = self.current_score, record.score
            if score is not None and (best is None or score > best + abs(best) * self.min_gain):
                self.current, self.current_score = record.cfg, score
                self.queue = []
            elif self.current is None:
                self.current, self.current_score = record.cfg, score
        self.read = len(history)

    def ask(self, history: TrialView) -> Config | None:
        self._follow(history)
        if not history.seen(self.start.key):
            return self.start
        while True:
            self.queue = [c for c in self.queue if not history.seen(c.key)]
            if self.queue:
                return self.queue.pop(0)
            if self.current is None:
                return None
            fresh = [c for c in self.space.neighbours(self.current) if not history.seen(c.key)]
            if fresh:
                self.queue = fresh
                continue
            restart = self.random_unseen(history)  # a local optimum: jump somewhere new
            if restart is None:
                return None
            self.queue = [restart]
