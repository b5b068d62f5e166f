"""A wall-clock budget for a study: fewer trials rather than an overrun.

Costs are estimated from the measurements this study already made (their wall time), never
from constants tuned to one machine: before its first trial the study cannot know, so the
first trial always runs. Up to `min_trials` trials may eat into the finalists' reserve, but
never into the time the leader's first re-measurement needs (`keep_s`): a winner measured
twice, with an interval, is worth more than one more config measured once. The study also ends
each capacity search early enough for the measurements it must still run (`Study._deadline`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

REPEAT_SHARE = 0.8  # a finalist run vs a trial, until one was measured (server start dominates)
# Room kept per measurement still to come, over the longest first verdict timed so far: later
# ones take longer (a demo on a 3x slower VM: 19.9 s, then 21.7 s, and a teardown not yet timed).
RESERVE_MARGIN = 1.25


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

    def affords_trial(
        self, trials_done: int, trial_walls: Sequence[float], reserve_s: float, keep_s: float = 0.0
    ) -> bool:
        """One more trial fits, with `reserve_s` kept for what comes after the search (only
        `keep_s`, the leader's first re-measurement, while fewer than `min_trials` ran)."""
        if self.seconds is None or trials_done == 0:
            return True
        trial_s = self.estimate(trial_walls) or 0.0
        left = self.remaining()
        mandatory = trials_done < self.min_trials
        kept = keep_s if mandatory else reserve_s
        if left >= trial_s + kept:
            return True
        after = (
            f"the leader's first re-measurement needs ~{kept:.0f} s"
            if mandatory
            else f"the finalists' re-measurements need ~{kept:.0f} s"
        )
        after = f" and {after}" if kept > 0 else ""
        state = f"{left:.0f} s left" if left >= 0.5 else f"spent ({-left:.0f} s over)"
        self.stopped_because = f"time budget: {state}, a trial takes ~{trial_s:.0f} s{after}"
        return False

    def affords(self, cost_s: float | None) -> bool:
        """One more measurement of about `cost_s` fits."""
        return self.seconds is None or cost_s is None or self.remaining() >= cost_s
