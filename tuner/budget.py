"""A wall-clock budget for a study: fewer trials rather than an overrun.

Costs are estimated from the measurements this study already made (their wall time), never
from constants tuned to one machine: before its first trial the study cannot know, so it
always runs at least `min_trials`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

REPEAT_SHARE = 0.8  # a finalist run vs a trial, until one was measured (server start dominates)


@dataclass
class TimeBudget:
    """`seconds` from creation; `None` seconds means no budget."""

    seconds: float | None
    min_trials: int = 2
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    stopped_because: str = ""

    def __post_init__(self) -> None:
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"a time budget must be > 0 s, got {self.seconds}")
        self.started = self.clock()

    def remaining(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (self.clock() - self.started)

    @staticmethod
    def estimate(walls: Sequence[float], fallback: float | None = None) -> float | None:
        """The cost of one more measurement like `walls` (their median), else `fallback`."""
        return statistics.median(walls) if walls else fallback

    def affords_trial(self, trials_done: int, trial_walls: Sequence[float], reserve_s: float) -> bool:
        """One more trial fits, with `reserve_s` kept for what comes after the search."""
        if self.seconds is None or trials_done < self.min_trials:
            return True
        trial_s = self.estimate(trial_walls) or 0.0
        left = self.remaining()
        if left >= trial_s + reserve_s:
            return True
        self.stopped_because = (
            f"time budget: {left:.0f} s left, a trial takes ~{trial_s:.0f} s and the finalists' "
            f"re-measurements need ~{reserve_s:.0f} s"
        )
        return False

    def affords(self, cost_s: float | None) -> bool:
        """One more measurement of about `cost_s` fits."""
        return self.seconds is None or cost_s is None or self.remaining() >= cost_s
