"""Capacity search: the highest offered load at which one config still meets the SLO.

Pure logic, no server and no Locust: `CapacitySearch` proposes the next `LoadStep` and is told
what it measured. It brackets the knee (start from a probe's figure, grow geometrically until a
step breaches the SLO, or shrink until one meets it), then bisects the bracket geometrically until
`hi / lo - 1 <= resolution`. Above a level that met the SLO near its latency bound, the growth
shrinks with the headroom left (`CapacityRules.growth_headroom`). Every proposed level stays
inside the bracket and never exceeds `growth` times the highest level that met the SLO, so a badly
overloaded step is never followed by a heavier one. A converged bracket's breach is measured once
more (`rechecks`): a hiccup of a shared machine (a stalled second, a garbage collection) fails a
short step that the server could hold, and a breach that does not repeat is dropped and the search
goes on above it. Its knee is measured once more too (`confirms`): a lucky step (a quiet spell of
a shared machine, a few 503s fewer than the bound allows) passes a level the server cannot hold,
and a level that passed was never measured again, so the search kept it and reported its goodput.
A knee that fails its confirmation stands as a breach and the search goes on below it. Above a
breach that did not repeat, the search climbs only from a level that met the SLO twice: that
breach had converged the bracket, and one re-measurement climbed past it on single passes to 1.5x
the knee that its config's other searches and a reference sweep agreed on (a climb, which rises
one resolution step at a time, does not: measuring each level twice cost MiniLM b32-l50's climb 5
of its 14 steps, and it stopped 26% under its reference). A level's verdict is its latest
measurement: the knee is the highest level that stands met, the breach the lowest that stands
breached, and the goodput is the best step that met the SLO at a level that still stands.
A re-measurement near a known knee (`climb`) rises from just under it in steps of the resolution
(by `growth` once well over it, then bisecting) and stops at the first breach that repeats (or
at any breach once its `rechecks` are spent); its knee is not confirmed after that breach
(BentoML's dispatcher sheds after an overload at loads it held before: MiniLM b16-l200 failed 25%
of a knee it had met with none, once its breach had been rechecked).
When a search's first level breaches, the levels it shrinks through before one meets the SLO
are measured again before they bound its knee: a fresh server can miss the SLO for its first
seconds of heavy load at levels it then holds, and a shared machine's hiccup at the first level
would otherwise cap a bracketing search's knee under that level for good.
A step that breaks only the failure bound, by an excess that chance could give, is measured
again at once, and its level is judged on the failures of all its steps: on 200 requests one
failure is half the bound, and a knee set by 3 failures against 2 was noise (BentoML's dispatcher
sheds a few requests now and then at loads it holds). Chance is a one-sided binomial test at the
bound (3-5 failures in 200 requests at a 1% bound), on counts divided by the failures'
dispersion over the step (`failure_dispersion`): 503s that come in one burst are one event,
not independent ones (the dispatcher sheds a burst when one batch runs long), so 8 failures in
one slice of a step are weaker evidence than 8 spread over it. A level stays undecided while its
pooled failures are over the bound and could still be chance, up to `failure_repeats` repeats
(which may run past `max_steps`).
Server errors (HTTP 5xx other than 503 shedding) over the failure bound at two levels 2x apart,
with the latency within the SLO, end the search (`errors`): they do not fall with the load, and
shrinking further would only find a level that passes on a lucky short sample.
Each step lasts long enough to hold the requests its quantile needs (`min_requests`), within
`[min_step_s, max_step_s]`. A level is judged after the server has adapted to it: when the
load rises, or after a step that shed requests, it first runs unscored for `adapt_s` (BentoML's
dispatcher sheds for seconds after a rise, until it refits its latency model, at loads it then
holds; judged in that transient, a short step's verdict depended on where the refit fell).
After a step that shed or was cut short, a light load lets the dispatcher forget the overload
(and, with `approach_s`, after one that shed, a load just under the next level lets it refit
near that level).

The load level is an arrival rate (requests/s, paced users: open loop as long as the server
answers within `horizon_factor` x the SLO) or, with `mode="users"`, closed-loop users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

from pydantic import BaseModel, Field
from scipy.stats import binomtest

from core.measurement import InvalidReason, LoadStep, StepMeasurement
from tuner.objective import SLO, load_text

LoadMode = Literal["rate", "users"]
Limit = Literal["slo", "generator", "step_cap", "infeasible", "max_load", "budget", "errors"]
QUANTILE_OF = {"p95": 0.95, "p99": 0.99}
DISPATCHER_REFIT_S = 5.0  # BentoML's batching dispatcher refits its latency model this often
TAIL_SAMPLES = 10  # requests expected above the judged quantile in one step
ERRORS_SPAN = 2.0  # server errors at two levels this far apart do not come from the load
# A closed loop with twice the users serves about twice as much from a server that is not busy
# all the time (batching, waiting), and about as much from one that is.
SATURATION_GAIN = 1.3
CLIMB_SPAN = 1.3  # a climb this far over its start (0.9x its hint: 1.17x) rises by `factor`


class Undecided(NamedTuple):
    """A level whose failures so far could be chance: measured again, judged on all its steps."""

    level: float
    failures: int
    requests: int
    slices: tuple[tuple[int, int], ...]  # (failures, requests) per slice of its steps
    repeats: int = 0  # steps measured again so far

    @classmethod
    def of(cls, level: float, measured: StepMeasurement) -> Undecided:
        return cls(level, _failures(measured), measured.requests, _slices(measured))

    def add(self, measured: StepMeasurement) -> Undecided:
        """Pooled with one more step at the level."""
        return self._replace(
            failures=self.failures + _failures(measured),
            requests=self.requests + measured.requests,
            slices=self.slices + _slices(measured),
            repeats=self.repeats + 1,
        )


@dataclass(frozen=True)
class CapacityRules:
    """How the search steps; every figure is relative or derived from a measurement."""

    mode: LoadMode = "rate"
    resolution: float = 0.05  # stop once the bracket is this narrow, relative to its low end
    growth: float = 2.0  # bracketing factor
    # Above a level that met the SLO with less latency headroom than this share of the bound,
    # the growth shrinks in proportion to the headroom left (0: always `growth`).
    growth_headroom: float = 0.5
    min_step_s: float = 2.0
    max_step_s: float = 15.0
    max_steps: int = 14  # searched steps after the probe
    abort_factor: float = 2.0  # a sub-window p95 above this x the SLO ends a step early
    horizon_factor: float = 2.0  # paced users = rate x this x the SLO latency
    min_rate: float = 0.2  # requests/s below which a config is infeasible
    rechecks: int = 1  # times a converged bracket's breach is measured again
    confirms: int = 1  # times a converged bracket's knee is measured again (0: no confirmations)
    # A level is run unscored for this long before it is judged when the load rises to it, or
    # after a step that shed requests (503): BentoML's batching dispatcher fits its latency
    # model on its last 50 batches, refreshed every 5 s, and until it refits at the new load it
    # sheds requests the server can serve (a rise: 3-4% of the first 3 s at loads it then holds
    # for 30 s with none; an overload: it keeps shedding at loads it can hold).
    adapt_s: float = DISPATCHER_REFIT_S
    # After a step that shed requests or was cut short as overloaded, the server first runs
    # unscored for `recover_s` at `recover_fraction` of the next level. BentoML's dispatcher
    # refits its latency model only from the batches it dispatches; after an overload with a
    # tight max_latency it can shed every request at loads it served before (digits b8-l50:
    # 100% 503 for 50 s at 535/s, after passing 491/s), until a light load lets it refit.
    # A light load the server still fails is run again, lighter, up to `recover_attempts` times.
    # Spanning two of the dispatcher's refits (11 s) let MiniLM b8-l100 stop shedding after an
    # overload (`bench/dispatcher_history.py`), but in one accuracy run (capacity-accuracy-s31)
    # b16-l200's searches fell 11.5% below its reference (three runs at 6 s: 4.5-7.6% above it).
    recover_s: float = 6.0
    recover_fraction: float = 0.25
    recover_attempts: int = 3
    # With `approach_s` > 0, after a step that shed, the server then runs unscored for
    # `approach_s` at `approach_fraction` of the next level before it adapts at that level: the
    # dispatcher refits near the load it is judged at, as when the load climbs to it. After the
    # light load alone, MiniLM b8-l100 at a searched knee shed 3.6-12.4% where a light start shed
    # 0.8-4.1%; with 10 s at 0.85x, 0.2-5.0% (`bench/dispatcher_history.py`, `overload-lead`).
    # Off by default: in one accuracy run (capacity-accuracy-s32) it gave b8-l100 +6.0% and
    # b16-l200 +0.2%, but median 8.9% and max 15.1% overall, and it doubled a digits study's
    # searches (an integration test: 351 -> 708 s) and left `make demo` less for its trials.
    approach_s: float = 0.0
    approach_fraction: float = 0.85
    max_users: int = 2000  # the load generator's bound on concurrent requests
    # A re-measurement near a known knee climbs to it in steps of the resolution (see
    # `CapacitySearch.climb`) instead of bracketing it with the repeat growth.
    climb_repeats: bool = True
    # A step that breaks only the failure bound, with a one-sided binomial p-value at the bound of
    # at least this, could have been unlucky: its level is measured again and judged on all its
    # steps' failures (0: judge every step alone).
    failure_alpha: float = 0.05
    failure_repeats: int = 3  # most times one undecided level is measured again

    def __post_init__(self) -> None:
        if not 0 < self.resolution < 1:
            raise ValueError(f"resolution must be in (0, 1), got {self.resolution}")
        if not self.growth > 1 + self.resolution:
            raise ValueError(f"growth must be > 1 + resolution, got {self.growth}")
        if not 0 <= self.growth_headroom < 1:
            raise ValueError(f"growth_headroom must be in [0, 1), got {self.growth_headroom}")
        if not 0 < self.min_step_s <= self.max_step_s:
            raise ValueError("need 0 < min_step_s <= max_step_s")
        if self.max_steps < 1 or self.max_users < 1:
            raise ValueError("max_steps and max_users must be >= 1")
        if self.rechecks < 0 or self.confirms < 0:
            raise ValueError("rechecks and confirms must be >= 0")
        if self.recover_s < 0 or not 0 < self.recover_fraction < 1 or self.recover_attempts < 1:
            raise ValueError("need recover_s >= 0, recover_fraction in (0, 1), recover_attempts >= 1")
        if self.approach_s < 0 or not 0 < self.approach_fraction < 1:
            raise ValueError("need approach_s >= 0 and approach_fraction in (0, 1)")
        if not 0 <= self.failure_alpha < 1:
            raise ValueError(f"failure_alpha must be in [0, 1), got {self.failure_alpha}")
        if self.failure_repeats < 1:
            raise ValueError(f"failure_repeats must be >= 1, got {self.failure_repeats}")

    def min_requests(self, quantile: str) -> int:
        """Requests one step needs so that ~10 of them lie above the quantile (p95: 200, p99: 1000)."""
        return math.ceil(TAIL_SAMPLES / (1.0 - QUANTILE_OF.get(quantile, 0.95)) - 1e-9)


class CapacityFinding(BaseModel):
    """What a capacity search found (stored with the trial record)."""

    mode: LoadMode
    knee: float | None  # highest level that stands met (requests/s or users)
    breach: float | None  # lowest level that stands breached
    goodput_rps: float  # sustained good RPS of the best step that met the SLO (at a level that stands)
    converged: bool  # the bracket is within the resolution
    limited_by: Limit
    steps: int
    resolution: float
    note: str = ""
    # Per scored step: it met the SLO at a level whose verdict stands met (a level judged on
    # pooled failures can stand breached after a step that met the SLO alone). Empty in records
    # written before it (`counted_mask` then rebuilds it from the steps).
    counted: list[bool] = Field(default_factory=list)
    # Requests in the step that gave `goodput_rps`, and how many a step wants for its quantile:
    # a slow service's steps reach `max_step_s` first, and a p95 of 40 requests rests on the two
    # slowest. None in records written before it.
    knee_requests: int | None = None
    requests_needed: int | None = None
    # What the probe served where its light twin found the server busy all the time
    # (`saturated_rps`): the growth went no higher. None: not saturated, or not probed so.
    saturation_rps: float | None = None

    @property
    def rough(self) -> bool:
        """The knee's step held under half the requests its quantile wants (<= 5 above a p95)."""
        if self.knee_requests is None or self.requests_needed is None:
            return False
        return 2 * self.knee_requests < self.requests_needed


@dataclass
class CapacitySearch:
    """Ask with `next_step()`, report with `tell()`; `finding()` when `done`."""

    slo: SLO
    rules: CapacityRules
    start: float
    per_user_rps: float | None = None  # users mode: expected goodput of one user (sizes steps)
    growth: float | None = None  # overrides rules.growth (narrow re-measurements)
    # Near a known knee (a re-measurement): rise in steps of the resolution and stop at the
    # first breach that repeats (any breach once `rules.rechecks` are spent); its knee is not
    # measured again after that breach.
    climb: bool = False
    lo: float | None = None
    hi: float | None = None
    breaches: list[float] = field(default_factory=list)  # levels that breached (and stand)
    rechecked: int = 0
    confirmed: int = 0
    verdicts: dict[float, list[bool]] = field(default_factory=dict)  # per level: met, in order
    passed: list[StepMeasurement] = field(default_factory=list)
    told: list[tuple[float, StepMeasurement]] = field(default_factory=list)
    limited_by: Limit | None = None
    note: str = ""
    _pending: float | None = None
    _undecided: Undecided | None = None  # measured again next
    # The rate at which the probes found the server busy all the time (`saturated_rps`): an
    # open-loop rate at it cannot be held, so the growth goes no higher than it.
    saturation: float | None = None
    # Levels that breached before any level met the SLO, not measured since
    _unproven: set[float] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.start > 0:
            raise ValueError(f"start must be > 0, got {self.start}")
        self.start = self._level(self.start)

    @property
    def factor(self) -> float:
        return self.growth if self.growth is not None else self.rules.growth

    def stop(self, why: Limit, note: str) -> None:
        """End the search from outside (e.g. the study's time budget ran out)."""
        self.limited_by, self.note = why, note

    @property
    def done(self) -> bool:
        return self.limited_by is not None

    def _level(self, value: float) -> float:
        if self.rules.mode == "users":
            return float(max(1, round(value)))
        return max(self.rules.min_rate, value)

    def max_level(self) -> float:
        if self.rules.mode == "users":
            return float(self.rules.max_users)
        return self.rules.max_users / (self.rules.horizon_factor * self.slo.latency_ms / 1000.0)

    def next_level(self) -> float | None:
        """The next level to measure, or None (and `limited_by` set) when the search is over."""
        if self.done:
            return None
        level = self._propose()
        if level is not None and self._undecided is None and len(self.told) >= self.rules.max_steps:
            self.limited_by = "step_cap"
            self.note = f"stopped after {self.rules.max_steps} steps"
            return None
        return level

    def _propose(self) -> float | None:
        """The level the rules ask for next (None, with `limited_by` set, when they ask none)."""
        if not self.told:
            return min(self.start, self.max_level())
        if self._undecided is not None:
            return self._undecided.level
        if self.hi is None:  # no breach stands: grow
            assert self.lo is not None
            if self.lo >= self.max_level():
                self.limited_by = "max_load"
                self.note = f"met the SLO at the generator's largest load ({self.lo:.4g})"
                return None
            if (
                self.rules.confirms
                and not self.climb
                and self._dropped_a_breach()
                and self._passes(self.lo) < 2
            ):
                return self.lo  # above a breach that did not repeat, grow from confirmed levels only
            return min(self._above(self.lo), self.max_level())
        if self.lo is None:  # nothing met the SLO yet: shrink
            level = self._level(self.hi / self.factor)
            if level >= self.hi or self.hi <= self._floor():
                self.limited_by = "infeasible"
                self.note = f"no load met the SLO down to {self.hi:.4g}"
                return None
            return level
        if self.hi in self._unproven:
            return self.hi
        if self._converged():
            return self._settle()
        level = self._level(math.sqrt(self.lo * self.hi))
        if not self.lo < level < self.hi:  # users: the bracket is one user wide
            return self._settle()
        return level

    def _above(self, level: float) -> float:
        """The next level up: `factor` x `level`, or, when climbing, one resolution step (at least
        one user) until the climb is `CLIMB_SPAN` over its start: a hint that far under the knee
        (a faster server than the one it came from) would spend the step cap in resolution steps
        (MiniLM b32-l50 climbed 44.8 -> 63.1/s through 14 steps and never breached), so the climb
        grows by `factor` from there and bisects below the breach it meets."""
        if not self.climb or level >= self.start * CLIMB_SPAN:
            grown = self._level(level * self._growth_from(level))
            if (
                self.saturation is not None
                and level * (1.0 + self.rules.resolution) < self.saturation < grown
            ):
                return self._level(self.saturation)  # one that meets it was a noisy probe: grow on
            return grown
        up = self._level(level * (1.0 + self.rules.resolution))
        return up if up > level else level + 1.0

    def _growth_from(self, level: float) -> float:
        """`factor`, shrunk in proportion to the latency headroom the met `level` left once that
        is under `rules.growth_headroom` of the bound (down to two resolution steps). Latency
        that climbs with the load is a queue filling up: BentoML's default batching met 95.2/s
        at p95 166 of 200 ms, was doubled to 190/s, and after that overload held only 73/s.
        Latency that stays low up to the knee keeps the full `factor`."""
        latency = self._latency_at(level)
        if latency is None or self.rules.growth_headroom <= 0:
            return self.factor
        headroom = 1.0 - latency / self.slo.latency_ms
        share = _clamp(headroom / self.rules.growth_headroom, 0.0, 1.0)
        least = min(self.factor, 1.0 + 2.0 * self.rules.resolution)
        return max(least, 1.0 + (self.factor - 1.0) * share)

    def _latency_at(self, level: float) -> float | None:
        """The judged latency quantile of the latest step at `level` that met the SLO."""
        for told_level, measured in reversed(self.told):
            if told_level == level and self._met(measured):
                return self.slo.latency_of(measured)
        return None

    def _settle(self) -> float | None:
        """A converged bracket: recheck its breach, then (unless climbing) confirm its knee, then
        stop."""
        assert self.lo is not None and self.hi is not None
        if self.rechecked < self.rules.rechecks:
            self.rechecked += 1
            return self.hi
        if self.climb:
            self.limited_by = "slo"
            return None
        if self.confirmed < self.rules.confirms and self._passes(self.lo) < 2:
            self.confirmed += 1
            return self.lo
        self.limited_by = "slo"
        return None

    def _passes(self, level: float) -> int:
        return self.verdicts.get(level, []).count(True)

    def _dropped_a_breach(self) -> bool:
        """A level breached once, then met the SLO on a recheck."""
        return any(False in seen and seen[-1] for seen in self.verdicts.values())

    def _floor(self) -> float:
        return 1.0 if self.rules.mode == "users" else self.rules.min_rate

    def _converged(self) -> bool:
        assert self.lo is not None and self.hi is not None
        if self.rules.mode == "users" and self.hi - self.lo <= 1:
            return True
        return self.hi / self.lo - 1.0 <= self.rules.resolution * (1.0 + 1e-9)

    def next_step(self) -> LoadStep | None:
        """The LoadStep for the next level (None when done)."""
        level = self.next_level()
        self._pending = level
        if level is None:
            return None
        return self.step_for(level)

    def step_for(self, level: float) -> LoadStep:
        quantile_requests = self.rules.min_requests(self.slo.quantile)
        abort = self.rules.abort_factor * self.slo.latency_ms
        if self.rules.mode == "users":
            expected = level * (self.per_user_rps or 1.0)
            duration = _clamp(quantile_requests / expected, self.rules.min_step_s, self.rules.max_step_s)
            return LoadStep(users=int(level), duration_s=duration, abort_above_ms=abort)
        horizon_s = self.rules.horizon_factor * self.slo.latency_ms / 1000.0
        users = int(_clamp(math.ceil(level * horizon_s), 1, self.rules.max_users))
        duration = _clamp(quantile_requests / level, self.rules.min_step_s, self.rules.max_step_s)
        return LoadStep(users=users, duration_s=duration, rate=level, abort_above_ms=abort)

    def tell(self, measured: StepMeasurement) -> None:
        """Record the step proposed last."""
        level = self._pending if self._pending is not None else self._level_of(measured)
        self._pending = None
        self.told.append((level, measured))
        if self.rules.mode == "users" and measured.successes > 0 and measured.step.users > 0:
            self.per_user_rps = measured.goodput_rps / measured.step.users
        met = self._met(measured)
        undecided, self._undecided = self._undecided, None
        if undecided is not None and undecided.level == level and self._met_but_failures(measured):
            pooled = undecided.add(measured)
            met = pooled.failures <= self.slo.max_failure_ratio * pooled.requests
            if not met and pooled.repeats < self.rules.failure_repeats and self._could_be_chance(pooled):
                self._undecided = pooled
                return
            self._note_pooled(pooled, met)
        elif not met and self._met_but_failures(measured):
            first = Undecided.of(level, measured)
            if self._could_be_chance(first):
                self._undecided = first
                return
        if met:
            self.passed.append(measured)
        if self._generator_limited(measured):
            self.limited_by = "generator"
            self.note = _generator_note(measured)
        else:
            before = self.verdicts.setdefault(level, [])
            if before and before[-1] != met:
                self.note = (
                    f"a breach at {level:.4g} did not repeat on a recheck"
                    if met
                    else f"a pass at {level:.4g} did not hold on a confirmation"
                )
            self._prove(level, met)
            before.append(met)
            self._rebracket()
            if not met:
                self._stop_on_lasting_errors(level, measured)

    def _prove(self, level: float, met: bool) -> None:
        """The first level that meets the SLO leaves the breaches the search shrank through
        unproven, to be measured again before they bound the knee (a fresh server thrown at 0.9x
        a knee can miss the SLO for 10-20 s at loads it then holds: the no-op service's climb
        breached 1860, 1617, 1406 and 1223/s and met 1063/s, where a reference sweep met every
        rate up to 2066/s). A bracketing search shrinks by `growth` (x2), so a stale breach
        can cap its knee far under the server's (a fake of capacity 100 that missed its first
        three steps, 80, 40 and 20/s: knee 38.3)."""
        self._unproven.discard(level)
        if met and not any(True in seen for seen in self.verdicts.values()):
            self._unproven = {lv for lv, seen in self.verdicts.items() if seen and lv != level}

    def _met_but_failures(self, measured: StepMeasurement) -> bool:
        """The step met every part of the SLO but, perhaps, its failure bound."""
        return not measured.aborted and not self.slo.violations(replace(measured, failure_ratio=0.0))

    def _could_be_chance(self, undecided: Undecided) -> bool:
        """A service exactly at the failure bound would fail this many of these requests with a
        probability of at least `failure_alpha`, with the counts divided by their dispersion."""
        bound, alpha = self.slo.max_failure_ratio, self.rules.failure_alpha
        if alpha <= 0 or bound <= 0 or undecided.requests <= 0:
            return False
        dispersion = failure_dispersion(undecided.slices)
        requests = max(1, round(undecided.requests / dispersion))
        failures = min(requests, round(undecided.failures / dispersion))
        return bool(binomtest(failures, requests, bound, alternative="greater").pvalue >= alpha)

    def _note_pooled(self, pooled: Undecided, met: bool) -> None:
        """Name a level judged on more than one step in the finding's note."""
        again = "again" if pooled.repeats == 1 else f"{pooled.repeats} more times"
        self.note = (
            f"the failures at {pooled.level:.4g} could be chance; measured {again}: "
            f"{pooled.failures} in {pooled.requests} ({pooled.failures / pooled.requests:.1%}, "
            f"{'within' if met else 'over'} the bound)"
        )

    def _stop_on_lasting_errors(self, level: float, measured: StepMeasurement) -> None:
        """End the search when server errors (HTTP 5xx other than 503 shedding) broke the failure
        bound at this level, with its latency within the SLO, and at a level `ERRORS_SPAN` x
        higher too: errors that do not fall with the load are the service's, not a capacity
        limit, and a lower level would only pass on a lucky short sample."""
        bound = self.slo.max_failure_ratio
        if error_ratio(measured) <= bound or self.slo.latency_of(measured) > self.slo.latency_ms:
            return
        higher = [(lv, m) for lv, m in self.told[:-1] if lv >= ERRORS_SPAN * level and error_ratio(m) > bound]
        if not higher:
            return
        above, seen = higher[-1]
        codes = ", ".join(sorted(c for c in measured.failures_by_status if _is_error(c)))
        self.limited_by = "errors"
        self.note = (
            f"the service failed {error_ratio(measured):.1%} of requests with HTTP {codes} at "
            f"{level:.4g} (its latency within the SLO there) and {error_ratio(seen):.1%} at "
            f"{above:.4g}: errors that do not fall with the load, not a capacity limit"
        )

    def _rebracket(self) -> None:
        """The bracket from each level's latest verdict."""
        standing = {level: seen[-1] for level, seen in self.verdicts.items()}
        self.breaches = sorted(level for level, met in standing.items() if not met)
        self.lo = max((level for level, met in standing.items() if met), default=None)
        self.hi = min((b for b in self.breaches if self.lo is None or b > self.lo), default=None)

    def _met(self, measured: StepMeasurement) -> bool:
        # An aborted step was cut short as overloaded: a breach, whatever its short window says.
        return not self.slo.violations(measured) and not measured.aborted

    def _level_of(self, measured: StepMeasurement) -> float:
        return _level_of_step(measured.step, self.rules.mode)

    def _generator_limited(self, measured: StepMeasurement) -> bool:
        """The generator, not the server, held the load back: saturated, or busy and short of
        the rate while the server answered within the SLO (an idle generator short of the rate
        was held back by the server's stalls: paced users wait for their answer)."""
        if measured.flagged(InvalidReason.GENERATOR_SATURATED):
            return True
        if measured.kept_rate or measured.fell_behind:  # an idle generator: the server held it back
            return False
        latency_ok = self.slo.latency_of(measured) <= self.slo.latency_ms
        return latency_ok and measured.failure_ratio <= self.slo.max_failure_ratio

    @property
    def last_shed(self) -> bool:
        """The last step told missed the SLO and the server shed requests (503) in it: a
        shedding server (BentoML's batching dispatcher) needs time to forget the overload."""
        if not self.told or self._undecided is not None:
            return False
        last = self.told[-1][1]
        return bool(self.slo.violations(last)) and last.failures_by_status.get("503", 0) > 0

    def adapts_before(self, step: LoadStep) -> bool:
        """Whether `step` is preceded by an unscored `adapt_s` step at its level: after a step
        that shed requests, when the load rises from the last step's level, and before a climb's
        first level (a jump from the light probe to just under the knee: MiniLM b8-l100 shed 17%
        of its first step at 0.9x a knee it then climbed past on another server)."""
        if self.rules.adapt_s <= 0:
            return False
        if not self.told:
            return self.climb
        return self.last_shed or _level_of_step(step, self.rules.mode) > self.told[-1][0]

    def adapt_step(self, before: LoadStep) -> LoadStep:
        """`before` (the next scored step), unscored and `adapt_s` long, with its abort rule: a
        level that overloads the server while it adapts is a breach without more ado."""
        return replace(before, duration_s=self.rules.adapt_s)

    def recovers_before(self) -> bool:
        """Whether the next level is preceded by an unscored light-load `recover_s` step: the
        last step shed requests, or was cut short as overloaded."""
        if self.rules.recover_s <= 0 or not self.told:
            return False
        return self.last_shed or self.told[-1][1].aborted

    def recovery_step(self, before: LoadStep, attempt: int = 0) -> LoadStep:
        """A light load for `recover_s`, never cut short: `recover_fraction` of `before`'s level,
        halved on each further `attempt` (a lighter load lets a latched dispatcher refit sooner)."""
        fraction = self.rules.recover_fraction * 0.5**attempt
        level = self._level(fraction * _level_of_step(before, self.rules.mode))
        return replace(self.step_for(level), duration_s=self.rules.recover_s, abort_above_ms=None)

    def approaches_before(self) -> bool:
        """Whether the light load is followed by an unscored `approach_s` step: the last step
        shed requests (a batching dispatcher to refit)."""
        return self.rules.approach_s > 0 and self.recovers_before() and self.last_shed

    def approach_step(self, before: LoadStep) -> LoadStep:
        """After the light load: `approach_fraction` of `before`'s level for `approach_s`, never
        cut short, so the server refits near the level before it adapts to it."""
        level = self._level(self.rules.approach_fraction * _level_of_step(before, self.rules.mode))
        return replace(self.step_for(level), duration_s=self.rules.approach_s, abort_above_ms=None)

    def unscored_s(self, step: LoadStep) -> float:
        """Seconds of unscored load that come before `step` (its first light load counted)."""
        rules = self.rules
        recovery = rules.recover_s if self.recovers_before() else 0.0
        approach = rules.approach_s if self.approaches_before() else 0.0
        return recovery + approach + (rules.adapt_s if self.adapts_before(step) else 0.0)

    def tell_recovery(self, measured: StepMeasurement, attempt: int = 0) -> bool:
        """Record a light load; True when the server served it within the failure bound. A
        server slow to recover is named in the finding's note."""
        served = measured.failure_ratio <= self.slo.max_failure_ratio
        if not served:
            self.note = (
                f"after an overload the server still failed {measured.failure_ratio:.0%} of a light "
                f"load ({load_text(measured)}) for {measured.duration_s:.0f} s"
            )
        elif attempt:
            self.note = f"after an overload the server served again only at {load_text(measured)}"
        return served

    def tell_adapt(self, measured: StepMeasurement) -> bool:
        """Record an adapt step; True when it was cut short as overloaded, which is then the
        verdict of the level it adapted to (a breach), and the scored step is not run."""
        if not measured.aborted or self._pending is None:
            return False
        self.tell(measured)
        return True

    def finding(self) -> CapacityFinding:
        # A step that met the SLO at a level that stands breached (a pass that did not hold on
        # a confirmation) is no capacity; a generator-limited last step that met it still is.
        counted = self._counted()
        held = [m for (_, m), ok in zip(self.told, counted, strict=True) if ok]
        best = max(held, key=lambda m: m.sustained_rps, default=None)
        converged = self.lo is not None and self.hi is not None and self._converged()
        return CapacityFinding(
            mode=self.rules.mode,
            knee=self.lo,
            breach=self.hi,
            goodput_rps=best.sustained_rps if best is not None else 0.0,
            converged=converged,
            limited_by=self.limited_by or "step_cap",
            steps=len(self.told),
            resolution=self.rules.resolution,
            note=self.note,
            counted=counted,
            knee_requests=best.requests if best is not None else None,
            requests_needed=self.rules.min_requests(self.slo.quantile),
            saturation_rps=self.saturation,
        )

    def _counted(self) -> list[bool]:
        """Per told step: it met the SLO and its level's latest verdict is a pass. A level with no
        verdict stands by its latest step (a generator-limited step), unless it is undecided."""
        levels, met = [level for level, _ in self.told], [self._met(m) for _, m in self.told]
        latest = dict(zip(levels, met, strict=True))  # each level's latest step
        pending = self._undecided.level if self._undecided is not None else None

        def stands(level: float) -> bool:
            if self.verdicts.get(level):
                return self.verdicts[level][-1]
            return level != pending and latest[level]

        return [ok and stands(level) for level, ok in zip(levels, met, strict=True)]


def _failures(measured: StepMeasurement) -> int:
    return measured.requests - measured.successes


def _slices(measured: StepMeasurement) -> tuple[tuple[int, int], ...]:
    """The step's (failures, requests) slices; the whole step as one when it has none."""
    return measured.failure_slices or ((_failures(measured), measured.requests),)


def failure_dispersion(slices: Sequence[tuple[int, int]]) -> float:
    """How much more the failures vary between slices than independent failures would: Pearson's
    chi-square over the slices / (slices - 1), at least 1 (1 with too little to tell)."""
    failures = sum(f for f, _ in slices)
    requests = sum(n for _, n in slices)
    if len(slices) < 2 or requests <= 0 or failures in (0, requests):
        return 1.0
    share = failures / requests
    chi_square = sum((f - n * share) ** 2 / (n * share * (1 - share)) for f, n in slices if n > 0)
    return max(1.0, chi_square / (len(slices) - 1))


def error_ratio(measured: StepMeasurement) -> float:
    """The share of a step's requests that failed with a server error other than shedding."""
    errors = sum(n for code, n in measured.failures_by_status.items() if _is_error(code))
    return errors / measured.requests if measured.requests else 0.0


def _is_error(status: str) -> bool:
    return status.startswith("5") and status != "503"


def counted_steps(levels: Sequence[float], met: Sequence[bool]) -> list[bool]:
    """Which steps of a search count as capacity: each one that met the SLO at a level whose
    latest step met it too (a later breach at the same level overturns an earlier pass)."""
    latest = dict(zip(levels, met, strict=True))
    return [ok and latest[level] for level, ok in zip(levels, met, strict=True)]


def counted_mask(steps: Sequence[StepMeasurement], slo: SLO, mode: LoadMode) -> list[bool]:
    """`counted_steps` for a search's recorded steps (an aborted step is a breach): records
    written before `CapacityFinding.counted`, which also knows the levels judged on pooled steps."""
    levels = [_level_of_step(s.step, mode) for s in steps]
    met = [not slo.violations(s) and not s.aborted for s in steps]
    return counted_steps(levels, met)


def _level_of_step(step: LoadStep, mode: LoadMode) -> float:
    return float(step.rate) if mode == "rate" and step.rate is not None else float(step.users)


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _generator_note(measured: StepMeasurement) -> str:
    saturated = measured.flagged(InvalidReason.GENERATOR_SATURATED)
    if saturated:
        return "the load generator could not go higher: " + "; ".join(i.detail for i in saturated)
    return (
        f"the load generator sent {measured.rps:.1f}/s of the {measured.step.rate:.1f}/s asked "
        "while the server met the SLO: the capacity is at least the last level that met it"
    )


def saturated_rps(light: StepMeasurement | None, probe: StepMeasurement | None) -> float | None:
    """What the `probe` (a closed loop) served when its `light` twin, with half the users, served
    more than 1 / `SATURATION_GAIN` of it: the server was busy all the time, so that is about its
    throughput, and the knee of an open-loop rate lies under it (a one-worker unbatched MiniLM
    server: 50.6/s served, knee 44-46/s; the s45 demo's x2 growth went to 81/s). A server whose
    throughput grows with its users (batching, waiting on I/O) gives None."""
    if light is None or probe is None or light.goodput_rps <= 0 or probe.goodput_rps <= 0:
        return None
    return probe.goodput_rps if probe.goodput_rps < SATURATION_GAIN * light.goodput_rps else None


def start_level(probe: StepMeasurement | None, mode: LoadMode, hint: float | None = None) -> float:
    """Where the search starts: below a known knee (`hint`), else at 80% of what the probe
    served (rate) or the probe's users."""
    if hint is not None and hint > 0:
        return hint * 0.9
    if probe is None:
        return 1.0
    if mode == "users":
        return float(probe.step.users)
    return max(0.8 * probe.goodput_rps, 1.0)
