"""The study loop: ask -> deploy -> load -> read -> score -> record, then the finalists.

The study owns the trial history; the strategy reads it (a `TrialView`) on every ask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.measurement import StepMeasurement
from core.registry import registered
from tuner.budget import REPEAT_SHARE, RESERVE_MARGIN, TimeBudget
from tuner.capacity import counted_mask
from tuner.finalists import Choice, Finalist, choose
from tuner.history import TrialHistory
from tuner.objective import Objective
from tuner.space import Config, SearchSpace
from tuner.store import TrialKind, TrialRecord
from tuner.strategies.base import SearchStrategy
from tuner.trial import Measurement, TrialRunner


class TrialSink(Protocol):
    """Where finished records are kept as they end (`StudyStore`; a list in benchmarks)."""

    def append(self, record: TrialRecord, /) -> None: ...


@dataclass
class StudyEvents:
    """Hooks for a live view; every one is optional."""

    # (number, kind or label, the config as people read it: `Config.label`)
    trial_start: Callable[[int, str, str], None] | None = None
    step: Callable[[int, StepMeasurement], None] | None = None
    trial_end: Callable[[TrialRecord], None] | None = None


@dataclass
class StudyResult:
    records: list[TrialRecord]
    finalists: list[Finalist] = field(default_factory=list)
    winner: Finalist | None = None
    asked_duplicates: int = 0
    illegal: int = 0
    choice: Choice | None = None
    stopped_because: str = ""  # why the search ended before `n_trials` (the time budget)

    @property
    def trials(self) -> list[TrialRecord]:
        return [r for r in self.records if r.kind == "trial"]


class Study:
    """Runs `n_trials` new measurements chosen by the strategy, then re-measures the finalists."""

    def __init__(
        self,
        space: SearchSpace,
        strategy: SearchStrategy,
        objective: Objective,
        runner: TrialRunner,
        store: TrialSink,
        n_trials: int,
        finalists_k: int = 3,
        finalists_r: int = 3,
        events: StudyEvents | None = None,
        budget: TimeBudget | None = None,
        cores: int | None = None,
    ) -> None:
        self.space = space
        self.strategy = strategy
        self.objective = objective
        self.runner = runner
        self.store = store
        self.n_trials = n_trials
        self.finalists_k = finalists_k
        self.finalists_r = finalists_r
        self.events = events or StudyEvents()
        self.budget = budget or TimeBudget(None)
        self.cores = cores
        self.history = TrialHistory()
        # Baselines the caller will measure before `run`: the budget keeps room for them.
        self.baselines_ahead = 0
        # Measured baselines the user could deploy as they are (the service as written, BentoML's
        # default batching): candidates of the final choice, so no tuned config that measured
        # worse than one of them is recommended.
        self.keepable: list[TrialRecord] = []
        self._live_first_s: float | None = None  # the running measurement's first verdict
        self.result_duplicates = 0
        self.result_illegal = 0
        self._spec = registered(runner.service)  # None for a fake runner's made-up service

    @property
    def records(self) -> list[TrialRecord]:
        """Every finished measurement in order (trials, finalist repeats, baselines)."""
        return self.history.records

    # -- one measurement -------------------------------------------------------------------
    def measure(self, config: Config, kind: TrialKind, label: str = "", **runner_kw: Any) -> TrialRecord:
        """Measure one config now, score it and store the record at once. Under a time budget its
        capacity search ends (after its first level) where the measurements the study must
        still run would no longer fit (`_deadline`)."""
        number = self.history.next_number()
        self._live_first_s = None
        started = self.budget.clock()
        if self.budget.seconds is not None:
            runner_kw.setdefault("time_left", self._deadline(kind))
        shown = config.label(self._spec, runner_kw.get("endpoint"))
        if self.events.trial_start:
            self.events.trial_start(number, label or kind, shown)
        hook = self.events.step

        def on_step(index: int, step: StepMeasurement) -> None:
            if self._live_first_s is None:
                self._live_first_s = self.budget.clock() - started
            if hook is not None:
                hook(index, step)

        measured: Measurement = self.runner.measure(config, on_step=on_step, **runner_kw)
        record = self._record(number, kind, label, config, shown, measured)
        self.store.append(record)
        self.history.append(record)
        if self.events.trial_end:
            self.events.trial_end(record)
        return record

    def _deadline(self, kind: TrialKind) -> Callable[[], float]:
        """Seconds a measurement of `kind` starting now may load: the budget's remainder less its
        own teardown and a first verdict's time for each measurement the study must still run,
        and no more than an even share of the remainder with those (first come, first served,
        the s45 demo's two baselines took 199 of its 272 s and its one trial got a single step).
        What a measurement leaves of its share goes to the ones after it."""
        later = self._mandatory_after(kind)
        started, share = self.budget.clock(), self.budget.remaining() / (1 + later)

        def left() -> float:
            teardown = self._teardown_s()
            reserved = self.budget.remaining() - teardown - later * self._verdict_reserve()
            return min(reserved, share - (self.budget.clock() - started) - teardown)

        return left

    def _mandatory_after(self, kind: TrialKind) -> int:
        """Measurements still to come that the budget must fit: the baselines not yet measured,
        the first trial, and the leader's first re-measurement (its winner's interval; once trials
        ran and nothing met the SLO, there is no leader to re-measure)."""
        records = self.history.records
        kinds = {r.kind for r in records}
        later = self.baselines_ahead
        if kind != "trial" and self.n_trials > 0 and "trial" not in kinds:
            later += 1
        leader = "trial" not in kinds or any(r.status == "ok" for r in records)
        if (
            kind != "finalist"
            and self.finalists_k
            and self.finalists_r
            and "finalist" not in kinds
            and leader
        ):
            later += 1
        return later

    def _teardown_s(self) -> float:
        """Seconds from a search's last step to its server being gone (this study's median)."""
        found = [
            r.wall_s - r.last_verdict_s
            for r in self.history.records
            if r.last_verdict_s is not None and r.wall_s >= r.last_verdict_s
        ]
        return TimeBudget.estimate(found) or 0.0

    def _verdict_reserve(self) -> float:
        """Seconds kept for one measurement still to come: the longest first verdict of this
        study (the one running now included, once it has one) and a teardown, with a margin."""
        firsts = [r.first_verdict_s for r in self.history.records if r.first_verdict_s is not None]
        if self._live_first_s is not None:
            firsts.append(self._live_first_s)
        return RESERVE_MARGIN * ((max(firsts) if firsts else 0.0) + self._teardown_s())

    def _record(
        self, number: int, kind: TrialKind, label: str, config: Config, shown: str, measured: Measurement
    ) -> TrialRecord:
        common: dict[str, Any] = {
            "number": number, "kind": kind, "label": label, "strategy": self.strategy.name,
            "key": config.key, "shown_key": shown, "config": config.to_dict(),
            "rss_mb": measured.rss_mb,
            "wall_s": measured.wall_s, "first_verdict_s": measured.first_verdict_s,
            "last_verdict_s": measured.last_verdict_s,
            "started_at": measured.started_at,
            "steps": list(measured.steps), "capacity": measured.capacity,
        }  # fmt: skip
        if not measured.ok:
            return TrialRecord(status="failed", reason=measured.reason, **common)
        counted = None
        if measured.capacity is not None:
            counted = measured.capacity.counted
            if len(counted) != len(measured.steps):
                counted = counted_mask(measured.steps, self.objective.slo, measured.capacity.mode)
        outcome = self.objective.evaluate(config, measured.steps, counted)
        reason, status = outcome.reason, "ok" if outcome.feasible else "infeasible"
        if not outcome.feasible and _cut_before_a_pass(measured):
            assert measured.capacity is not None
            status = "unfinished"
            reason = (
                f"unfinished: {measured.capacity.note}; nothing is known of this config yet (a longer "
                f"--time-budget, or --resume, measures it)\n{reason}"
            )
        return TrialRecord(
            status=status,
            score=outcome.score,
            goodput_rps=outcome.goodput_rps,
            latency_ms=outcome.latency_ms,
            failure_ratio=outcome.failure_ratio,
            cost_per_million=outcome.cost_per_million,
            best_step=outcome.best_step,
            reason=reason,
            **common,
        )

    def baseline(self, config: Config, label: str, keepable: bool = False, **runner_kw: Any) -> TrialRecord:
        """Measure a reference config once per study (kept in the store, so resume skips it).
        A `keepable` one (deployable as it is) is a candidate of the final choice too."""
        self.baselines_ahead = max(0, self.baselines_ahead - 1)
        stored = [r for r in self._finished("baseline") if r.label == label]
        record = stored[0] if stored else self.measure(config, "baseline", label, **runner_kw)
        if keepable:
            self.keepable.append(record)
        return record

    # -- the loop ------------------------------------------------------------------------
    def resume(self, records: list[TrialRecord]) -> None:
        """Start from stored records: the strategy reads them, nothing is measured again."""
        if self.history.count():
            raise ValueError("resume a study before it measures anything")
        for record in records:
            self.history.append(record)

    def search(self) -> None:
        """Ask for configs until `n_trials` distinct configs have been measured (or the time
        budget would not fit another trial and the finalists' re-measurements; for the first
        `min_trials`, the leader's first re-measurement).

        A config the history holds is not measured again (counted as a duplicate ask); one
        outside the space is refused (noted in the history, counted as illegal).
        """
        view = self.history.view()
        asks_left = 50 * max(1, self.n_trials) + len(self.space)
        while len(self.history) < self.n_trials and asks_left > 0:
            # With no feasible trial yet there is no finalist to re-measure: another trial is worth more.
            leader = any(r.score is not None for r in self.history.trials())
            repeats = leader and bool(self.finalists_k and self.finalists_r)
            keep = (self._first_repeat_cost() or 0.0) if repeats else 0.0
            reserve = self._reserve() if leader else 0.0
            tried = sum(1 for r in self.history.records if r.kind == "trial")  # unfinished ones too
            if not self.budget.affords_trial(tried, self._walls("trial"), reserve, keep):
                break
            asks_left -= 1
            config = self.strategy.ask(view)
            if config is None:
                break
            if self.history.trial(config.key) is not None:
                self.result_duplicates += 1
                continue
            if config not in self.space:
                self.result_illegal += 1
                self.history.refuse(config)
                continue
            self.measure(config, "trial")

    def _finished(self, kind: TrialKind) -> list[TrialRecord]:
        """The records of `kind` that measured something (an unfinished one is measured again)."""
        return [r for r in self.history.records if r.kind == kind and not r.unfinished]

    def _walls(self, kind: TrialKind) -> list[float]:
        return [r.wall_s for r in self.history.records if r.kind == kind and r.wall_s > 0]

    def _repeat_cost(self) -> float | None:
        trial = TimeBudget.estimate(self._walls("trial"))
        return TimeBudget.estimate(self._walls("finalist"), trial * REPEAT_SHARE if trial else None)

    def _first_repeat_cost(self) -> float | None:
        """Seconds a re-measurement needs before the budget may stop it (it stops only once a
        level met the SLO): its server start, probe and first level, as this study's searches
        took them, and its teardown; a whole re-measurement until one was timed so."""
        firsts = [
            r.first_verdict_s
            for r in self.history.records
            if r.kind in ("trial", "finalist") and r.first_verdict_s is not None
        ]
        first = TimeBudget.estimate(firsts)
        return first + self._teardown_s() if first is not None else self._repeat_cost()

    def _reserve(self) -> float:
        """Seconds the finalists' re-measurements will take."""
        return self.finalists_k * self.finalists_r * (self._repeat_cost() or 0.0)

    def select_finalists(self) -> list[Finalist]:
        """Re-measure the top-k feasible configs r times each (skipping repeats already stored),
        one round over all finalists at a time so a tight budget leaves them equally measured.
        The deployable baselines rank with the trials: one that leads competes for the winner
        and is measured again as a finalist is, or a lucky single run would win the choice."""
        candidates = sorted(
            (r for r in (*self.history.trials(), *self.keepable) if r.score is not None),
            key=lambda r: (-(r.score or 0.0), r.number),
        )
        ranked: list[TrialRecord] = []
        for record in candidates:  # a config once, by its best record
            if all(r.key != record.key for r in ranked):
                ranked.append(record)
        ranked = ranked[: max(1, self.finalists_k)]  # no finalists asked: the best alone, not re-measured
        repeats = {
            first.key: [r for r in self._finished("finalist") if r.key == first.key] for first in ranked
        }
        for round_ in range(self.finalists_r if self.finalists_k > 0 else 0):
            for first in ranked:
                if len(repeats[first.key]) > round_:
                    continue
                # The first round only needs a re-measurement's start: a budget-bounded search then
                # ends at the budget with what it measured, and every finalist gets an interval.
                cost = self._first_repeat_cost() if round_ == 0 else self._repeat_cost()
                if not self.budget.affords(cost):
                    self.budget.stopped_because = self.budget.stopped_because or (
                        f"time budget: {len(self._walls('finalist'))} finalist re-measurements fitted"
                    )
                    break
                hint = first.capacity.knee if first.capacity is not None else None
                repeat = self.measure(first.cfg, "finalist", hint=hint)
                if repeat.unfinished:  # it measured nothing, and the budget is spent
                    break
                repeats[first.key].append(repeat)
        return [Finalist(first.cfg, first, repeats[first.key]) for first in ranked]

    def run(self) -> StudyResult:
        self.search()
        finalists = self.select_finalists()
        kept = [Finalist(r.cfg, r, []) for r in self.keepable if all(f.first is not r for f in finalists)]
        choice = choose(finalists, self.cores, kept)
        winner = choice.winner if choice is not None else None
        return StudyResult(
            self.records, finalists, winner, self.result_duplicates, self.result_illegal, choice,
            self.budget.stopped_because,
        )  # fmt: skip


def _cut_before_a_pass(measured: Measurement) -> bool:
    """The time budget ended the measurement's capacity search before any level met the SLO."""
    found = measured.capacity
    return found is not None and found.limited_by == "budget" and found.knee is None
