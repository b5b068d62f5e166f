"""Finalists: the top configs re-measured; their 95% intervals; the winner and its ties.

The winner is the best mean score. Finalists whose 95% interval overlaps the best one's, and one
of whose runs reached the best one's lowest, are statistically tied with it; among those the one
using the fewest resources wins (cores, i.e. workers x threads, then GPUs, then the more accurate
variant), and the tie is named. (Two runs give a t interval with 1 degree of freedom, 12.7
standard errors wide each side: alone, it called a config tied with one that beat it by 3x on
every run, and a cheaper one would have won.) Baselines
the user could keep as they are (the service as written, BentoML's default batching) compete
on the same rules: a tuned config that measured worse than one of them is not recommended.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

from tuner.space import Config
from tuner.store import TrialRecord

CONFIDENCE = 0.95
# The order of model variants by how close they stay to the fp32 model's output.
VARIANT_FIDELITY = ("fp32", "bf16", "fp16", "pruned", "int8")


@dataclass
class Finalist:
    """A top config re-measured `r` times; ranked on the mean goodput (or score) of all its
    capacity searches: the trial's and the re-measurements'."""

    config: Config
    first: TrialRecord
    repeats: list[TrialRecord]

    @property
    def shown(self) -> str:
        """Its config as people read it (`Config.label`)."""
        return self.first.shown

    @property
    def measured(self) -> list[TrialRecord]:
        return [self.first, *self.repeats]

    @property
    def scores(self) -> list[float]:
        return [r.score if r.score is not None else float("-inf") for r in self.measured]

    @property
    def goodputs(self) -> list[float]:
        return [r.goodput_rps for r in self.measured]

    @property
    def mean_score(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def mean_goodput(self) -> float:
        return statistics.fmean(self.goodputs)

    @property
    def spread(self) -> float:
        return max(self.goodputs) - min(self.goodputs)

    @property
    def stdev(self) -> float:
        return statistics.stdev(self.goodputs) if len(self.goodputs) > 1 else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """95% t-interval of the mean goodput (the point itself for a single run), from 0 up."""
        low, high = t_interval(self.goodputs)
        return (max(0.0, low), high)

    @property
    def repeated_interval(self) -> tuple[float, float] | None:
        """`interval` when there are at least 2 runs; one run has none to claim."""
        return self.interval if len(self.goodputs) >= 2 else None

    @property
    def interval_text(self) -> str:
        """ "95% interval a-b", or why there is none (one run has no spread to speak of)."""
        if len(self.goodputs) < 2:
            return "no interval: 1 run (no re-measurement fitted)"
        low, high = self.interval
        return f"95% interval {low:.1f}-{high:.1f}"

    @property
    def score_interval(self) -> tuple[float, float]:
        return t_interval(self.scores)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean of `values` (n=1: a zero-width interval)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return (float("-inf"), float("-inf"))
    mean = statistics.fmean(finite)
    if len(finite) < 2:
        return (mean, mean)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(finite) - 1)) * statistics.stdev(finite)
    half /= math.sqrt(len(finite))
    return (mean - half, mean + half)


def resources(config: Config, cores: int | None = None) -> tuple[int, int, int]:
    """What a config uses, smallest first: cores (workers x threads), GPUs, variant fidelity."""
    fidelity = VARIANT_FIDELITY.index(config.variant) if config.variant in VARIANT_FIDELITY else 99
    return (config.workers * config.threads_per_worker(cores), config.gpus, fidelity)


@dataclass(frozen=True)
class Choice:
    """The winner, the best-mean finalist, and the finalists tied with the best mean."""

    winner: Finalist
    best_mean: Finalist
    tied: tuple[Finalist, ...]  # besides the best mean, overlapping its interval and its runs
    contenders: int = 1  # finalists with a score, the winner included
    baselines: int = 0  # of the contenders, deployable baselines ranked with the finalists
    repeated: int = 0  # of the contenders, those measured more than once (with an interval)
    apart: tuple[Finalist, ...] = ()  # inside its interval, but every run under its lowest

    @property
    def is_tie(self) -> bool:
        return bool(self.tied)

    @property
    def kept_baseline(self) -> str:
        """The label of the baseline that won ("" when a tuned config did)."""
        first = self.winner.first
        return (first.label or "baseline") if first.kind == "baseline" else ""

    def explain(self) -> str:
        """One sentence for the report and the CLI."""
        mean = self.winner.mean_goodput
        text = f"{self.winner.shown}: mean {mean:.1f} good RPS, {self.winner.interval_text}"
        if self.kept_baseline:
            text += f", the {self.kept_baseline} baseline: no tuned config measured better, so it is kept"
        if self.contenders < 2:
            return text + " (the only finalist)"
        if not self.tied and not self.repeated:
            return text + " (the best mean; with one run each, there is no interval to judge a tie by)"
        if not self.tied and self.apart:
            names = ", ".join(f.shown for f in self.apart)
            apart = f"every run of {names} measured under the winner's lowest run"
            return text + f" ({apart}: no tie, though the intervals overlap)"
        if not self.tied:
            others = "finalist's or deployable baseline's" if self.baselines else "finalist's"
            return text + f" (no other {others} interval overlaps it)"
        others = ", ".join(f.shown for f in (self.best_mean, *self.tied) if f is not self.winner)
        if self.winner is self.best_mean:
            return text + f"; statistically tied with {others}, and it uses no more resources"
        return (
            text + f"; statistically tied with {others} (best mean "
            f"{self.best_mean.mean_goodput:.1f}): chosen because it uses fewer resources"
        )


def choose(
    finalists: Sequence[Finalist], cores: int | None = None, kept: Sequence[Finalist] = ()
) -> Choice | None:
    """The best mean score; among finalists statistically tied with it, the cheapest. `kept`:
    measured baselines the user could deploy as they are, ranked with the finalists (a baseline
    re-measured as a finalist is among `finalists`)."""
    ranked = [f for f in (*finalists, *kept) if math.isfinite(f.mean_score)]
    if not ranked:
        return None
    best = max(ranked, key=lambda f: f.mean_score)
    best_low, best_high = best.score_interval
    overlapping = [
        f
        for f in ranked
        if f is not best and f.score_interval[1] >= best_low and f.score_interval[0] <= best_high
    ]
    tied = tuple(f for f in overlapping if max(f.scores) >= min(best.scores))
    apart = tuple(f for f in overlapping if max(f.scores) < min(best.scores))
    pool = [best, *tied]
    winner = min(pool, key=lambda f: (*resources(f.config, cores), -f.mean_score))
    baselines = sum(1 for f in ranked if f.first.kind == "baseline")
    repeated = sum(1 for f in ranked if f.repeated_interval is not None)
    return Choice(winner, best, tied, len(ranked), baselines, repeated, apart)


def rerun_of(record: TrialRecord | None, finalists: Sequence[Finalist]) -> Finalist | None:
    """The finalist that re-measured `record` (a baseline that led the finalists), if any."""
    return next((f for f in finalists if record is not None and f.first is record and f.repeats), None)


def mean_goodput_of(record: TrialRecord | None, finalists: Sequence[Finalist]) -> float:
    """A baseline's figure: the mean of its runs when it was re-measured (as the winner's is)."""
    runs = rerun_of(record, finalists)
    if runs is not None:
        return runs.mean_goodput
    return record.goodput_rps if record is not None else 0.0
