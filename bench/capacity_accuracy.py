"""Capacity search accuracy: the knee the tuner's search finds against a fine reference sweep.

    .venv/bin/python -m bench.capacity_accuracy [--json PATH] [--only embedding|noop]
        [--case NAME ...] [--searches 3] [--requests 400] [--passes 2] [--low 0.8] [--high 1.4]
        [--noop-slo-ms 25]
    .venv/bin/python -m bench.capacity_accuracy --rescore RUN.json --json PATH
        (score a recorded run again from its recorded windows and findings; nothing is measured)

Per config, the search runs `--searches` times (3) interleaved with the reference passes:
search, pass 1, search, pass 2, search (the capacity measured on these shared VMs drifts by
10-20% within minutes, and interleaving lays that drift on both sides). Each search and each pass
runs on a fresh `bentoml serve`, as every search of the tuner does: one server's capacity depends
on the load it had before (a one-worker config searched right after a pass that ended in an
overload served up to twice what its first search found). The searched knee is the mean of the
searches, what the tuner reports for a finalist (its trial's search and its re-measurements,
which re-bracket around the first knee); each single search's error is kept too.
1. the search, exactly as the tuner runs it: `TrialRunner.measure` with `TuneOptions.plan()` (a
   3 s closed-loop probe, then the capacity search over paced arrival rates, resolution 5%) and
   `real_load_runner` with the tuner's defaults; searched knee = `CapacityFinding.goodput_rps`
   (goodput of the best step that met the SLO);
2. the reference sweep on the same (warm) server: offered rates 2.5% apart
   (geometric) from `--low` to `--high` x the searched knee rate, ascending, `--passes` passes,
   fixed windows (no stretching, no abort) long enough for `--requests` requests, users = rate x
   2 x the SLO (as `LoadPlan.rates`), each step judged by `SLO` after `adapt_s` (5 s) at its
   rate (BentoML's dispatcher sheds for seconds after a rise, until it refits: `bench/transient.py`);
   each pass starts with 5 s unscored at its lowest rate (warm-up) and stops after two steps in
   a row that miss the SLO.
   Reference knee (`reference_knee`): per pass, the highest swept rate at which monotone fits
   of that pass's windows (isotonic regression of the failure ratio and of the judged latency on
   the rate, weighted by requests: `fitted_knee`) meet the SLO, with the best goodput of its
   windows at or below that rate; the reference is the mean over the passes, as the searched
   figure is over the searches. The rates reach 1.4x above (a pass stops after two misses in a
   row, so rates above the knee cost nothing). When a pass's knee is the highest rate, or one
   has none, the whole comparison (searches interleaved with passes) runs again from its last
   search, over rates widened by 8 on that side (above) or 4 (below), or further, to `--low` x
   the lowest (`--high` x the highest) knee that comparison's searches found, twice at most; the row
   counts the last comparison (`compare`), and keeps the earlier ones' figures in
   `earlier_comparisons`; `every_search_rel_error` scores each search of every comparison once
   against the counted reference. A knee still at an edge is reported as such. The JSON is
   written after each row (`partial` until the run ends).
   `pass_spread` and `search_spread` (max / min - 1 of the passes' and the searches' figures)
   show how far two measurements of one config fall apart on this machine; `noise_floor` is the
   |rel_error| that spread alone gives two means of 3 and 2 fresh servers, were the search exact.
   `strict_reference_rps` keeps the earlier rule as a diagnostic: the highest rate that every
   pass met with every lower rate met too. Near a shedding knee one window in ~30 misses by a
   few 503s at rates that the windows above it meet, and that rule stopped there (biased low).
rel_error = searched / reference - 1 (signed); the summary takes medians/maxima of |rel_error|.
A pass climbs from a light start and stops after two misses, so it measures what a server holds
before it has been overloaded; a search overloads it to find its knee. For a config whose
batching dispatcher latches after an overload (MiniLM b8-l100: `bench/dispatcher_history.py`)
the search can come out below the reference beyond its resolution (b8-l100's searches came
out 12% below it in two of three runs of 2026-12-01; in the third they were 10% above a
reference whose two passes fell 31% apart).

SLOs: MiniLM ("embedding") p95 <= 200 ms and failures (503 included) <= 1%. No-op (b32-l100,
one worker, one thread): p95 <= 25 ms (`--noop-slo-ms`), failures <= 1%. Measured on 2 shared
cores before choosing: its one worker saturates at ~550-1000 RPS (it drifts between runs) while
the Locust process used <= 0.45 cores at up to 1500 RPS and was never flagged saturated; at
200 ms, paced users = 0.4 x rate (~400) fell behind the asked rate near the knee (tail stalls),
so the search stopped on its "generator" rule instead of bisecting; at 15 ms the bound sat inside
the p95 jitter of the unloaded server (12-17 ms). 25 ms is a histogram bucket bound, above that
jitter, and keeps the users at ~0.05 x rate. Every step records the generator's CPU and the
saturation flag (a flagged step is invalid and fails the SLO).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.runfacts import write_json
from core.deployer import Deployment, LocalBentoDeployer
from core.measurement import InvalidReason, LoadStep, StepMeasurement
from tuner.capacity import CapacityFinding, CapacityRules
from tuner.objective import SLO
from tuner.space import Config
from tuner.trial import LoadPlan, Measurement, TrialRunner
from tuner.tuning import TuneOptions, real_load_runner

EMBEDDING_SLO_MS = 200.0
NOOP_SLO_MS = 25.0
RATIO = 1.025  # neighbouring swept rates
# Rates added on a side when the knee is at that edge; above costs nothing where the knee is
# lower (a pass stops after two misses in a row), below costs a step each.
WIDEN_BY: dict[Literal["below", "above"], int] = {"below": 4, "above": 8}
MAX_WIDEN = 2
STOP_AFTER_MISSES = 2  # a sweep pass ends after this many windows in a row missed the SLO
MIN_STEP_S = 2.0
MEDIAN_TARGET = 0.05  # the targets for |rel_error| over the configs of one run
MAX_TARGET = 0.10
REQUEST_MARGIN = 1.1  # step length = margin x requests / rate, so a window holds the requests


@dataclass(frozen=True)
class Case:
    """One config of one service under its SLO."""

    service: str
    config: Config
    slo_ms: float

    @property
    def name(self) -> str:
        return f"{self.service}:{self.config.key}"


def cases(noop_slo_ms: float, only: str | None = None, names: Sequence[str] = ()) -> list[Case]:
    """Three MiniLM configs (1 worker x 2 threads, 2 x 1 latency-bound, 2 x 1 with a 50 ms
    batching deadline that sheds 503s) and the no-op service; of those, the ones `names` starts
    (`embedding:b16-l200-w2-t1` names one) when it names any."""
    found = [
        Case("embedding", Config(8, 100, 1, 2), EMBEDDING_SLO_MS),
        Case("embedding", Config(16, 200, 2, 1), EMBEDDING_SLO_MS),
        Case("embedding", Config(32, 50, 2, 1), EMBEDDING_SLO_MS),
        Case("noop", Config(32, 100, 1, 1), noop_slo_ms),
    ]
    chosen = [c for c in found if (only is None or c.service == only)]
    if names:
        unknown = [n for n in names if not any(c.name.startswith(n) for c in chosen)]
        if unknown:
            raise ValueError(
                f"no such case: {', '.join(unknown)} (cases: {', '.join(c.name for c in chosen)})"
            )
        chosen = [c for c in chosen if any(c.name.startswith(n) for n in names)]
    return chosen


# ---- pure parts -----------------------------------------------------------------------------


def sweep_rates(center: float, low: float = 0.8, high: float = 1.2, ratio: float = RATIO) -> list[float]:
    """Rates `ratio` apart (geometric, through `center`) from about `low` to `high` x `center`."""
    if not center > 0 or not 0 < low <= 1 <= high or not ratio > 1:
        raise ValueError("need center > 0, 0 < low <= 1 <= high, ratio > 1")
    k_low = round(math.log(low) / math.log(ratio))
    k_high = round(math.log(high) / math.log(ratio))
    return [center * ratio**k for k in range(k_low, k_high + 1)]


def widen(
    rates: Sequence[float], side: Literal["below", "above"], count: int = 4, reach: float | None = None
) -> list[float]:
    """`count` new rates beyond the lowest (below) or highest (above) one, at the same ratio, or
    as many more as it takes to get to `reach` on that side."""
    ordered = sorted(set(rates))
    ratio = ordered[1] / ordered[0] if len(ordered) > 1 else RATIO
    edge = ordered[0] if side == "below" else ordered[-1]
    if reach is not None and reach > 0:
        beyond = math.log(edge / reach if side == "below" else reach / edge) / math.log(ratio)
        count = max(count, math.ceil(beyond - 1e-9))
    if side == "below":
        return [edge / ratio**k for k in range(count, 0, -1)]
    return [edge * ratio**k for k in range(1, count + 1)]


def step_seconds(rate: float, requests: int, min_s: float = MIN_STEP_S) -> float:
    """A step long enough for `requests` at `rate` (with a margin), at least `min_s`."""
    return max(min_s, REQUEST_MARGIN * requests / rate)


def sweep_step(rate: float, slo: SLO, requests: int) -> LoadStep:
    """The paced step for `rate`, users sized as `LoadPlan.rates` does (rate x 2 x the SLO)."""
    return LoadPlan.rates([rate], step_seconds(rate, requests), slo).steps[0]


@dataclass(frozen=True)
class SweepPoint:
    """One measured step of the reference sweep."""

    rate: float
    pass_index: int
    goodput_rps: float
    latency_ms: float  # the quantile the SLO judges
    client_p95_ms: float
    sent_rps: float
    failure_ratio: float
    requests: int
    met: bool
    generator_peak: bool  # the runner flagged the generator as saturated
    generator_cpu: float
    why: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepPoint:
        """A window as `to_dict` wrote it (figures rounded)."""
        return cls(
            rate=data["rate"], pass_index=data["pass"], goodput_rps=data["goodput_rps"],
            latency_ms=data["latency_ms"], client_p95_ms=data["client_p95_ms"], sent_rps=data["sent_rps"],
            failure_ratio=data["failure_ratio"], requests=data["requests"], met=data["met"],
            generator_peak=data["generator_saturated"], generator_cpu=data["generator_cpu"],
            why=data.get("why", ""),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": round(self.rate, 2), "pass": self.pass_index, "goodput_rps": round(self.goodput_rps, 2),
            "latency_ms": round(self.latency_ms, 1), "client_p95_ms": round(self.client_p95_ms, 1),
            "sent_rps": round(self.sent_rps, 1), "failure_ratio": round(self.failure_ratio, 4),
            "requests": self.requests, "met": self.met, "generator_saturated": self.generator_peak,
            "generator_cpu": round(self.generator_cpu, 2), "why": self.why,
        }  # fmt: skip


def sweep_point(rate: float, pass_index: int, measured: StepMeasurement, slo: SLO) -> SweepPoint:
    """A measured step judged by the SLO."""
    why = slo.violations(measured)
    return SweepPoint(
        rate=rate, pass_index=pass_index, goodput_rps=measured.sustained_rps,
        latency_ms=slo.latency_of(measured), client_p95_ms=measured.client_p95_ms,
        sent_rps=measured.rps, failure_ratio=measured.failure_ratio,
        requests=measured.requests, met=not why,
        generator_peak=bool(measured.flagged(InvalidReason.GENERATOR_SATURATED)),
        generator_cpu=measured.generator_cpu, why="; ".join(why),
    )  # fmt: skip


Edge = Literal["below", "above"]


@dataclass(frozen=True)
class Knee:
    """The reference knee of a sweep (`rate` None: even the lowest swept rate failed)."""

    rate: float | None
    goodput_rps: float
    edge: Edge | None  # the knee is at this end of the swept rates (widen there)


def strict_knee(points: Sequence[SweepPoint], passes: int | None = None, lenient: bool = False) -> Knee:
    """Highest swept rate at which every pass met the SLO, and every pass of every lower rate
    did too; its goodput is the mean over its passes. A rate with fewer than `passes` points
    counts as failed. `edge`: "above" when every rate passed, "below" when the lowest failed.
    `lenient` (a diagnostic, not the reference): one pass meeting the SLO is enough per rate,
    and the goodput is the mean of the passes that met it."""
    by_rate: dict[float, list[SweepPoint]] = {}
    for point in points:
        by_rate.setdefault(point.rate, []).append(point)
    if not by_rate:
        return Knee(None, 0.0, "below")
    need = passes or max(len(p) for p in by_rate.values())
    rates = sorted(by_rate)
    knee: float | None = None
    for rate in rates:
        here = by_rate[rate]
        met = any(p.met for p in here) if lenient else len(here) >= need and all(p.met for p in here)
        if not met:
            break
        knee = rate
    if knee is None:
        return Knee(None, 0.0, "below")
    goodput = statistics.fmean(p.goodput_rps for p in by_rate[knee] if p.met)
    return Knee(knee, goodput, "above" if knee == rates[-1] else None)


def fitted_knee(points: Sequence[SweepPoint], slo: SLO) -> Knee:
    """The reference knee: the highest swept rate at which monotone fits over every pass's points
    meet the SLO. The failure ratio and the judged latency are each fitted non-decreasing in the
    rate (isotonic regression, each point weighted by its requests), so one window's few shed
    requests are weighed against its neighbours' instead of ending the sweep there (the strict
    rule's first-miss stop is biased low: over ~30 windows near the knee, one stray miss is
    likely). A generator-saturated window says nothing about the server: left out, and a rate
    with no other window is no candidate. Its goodput is the best window's at or below the knee,
    as a search's is its best step's at a level that stands met (a window whose paced users
    fell behind the rate for a moment served less than its rate, and the knee's own window
    can be that one)."""
    from sklearn.isotonic import IsotonicRegression

    valid = [p for p in points if not p.generator_peak]
    if not valid:
        return Knee(None, 0.0, "below")
    rates = [p.rate for p in valid]
    weights = [max(1, p.requests) for p in valid]
    cap = 10.0 * slo.latency_ms  # a window with no success has no finite latency
    latencies = [min(cap, p.latency_ms) if math.isfinite(p.latency_ms) else cap for p in valid]
    failures = [p.failure_ratio for p in valid]
    failure = IsotonicRegression(increasing=True).fit(rates, failures, sample_weight=weights)
    latency = IsotonicRegression(increasing=True).fit(rates, latencies, sample_weight=weights)
    swept = sorted(set(rates))
    fitted_failure, fitted_latency = failure.predict(swept), latency.predict(swept)
    knee: float | None = None
    for rate, fail, late in zip(swept, fitted_failure, fitted_latency, strict=True):
        if fail > slo.max_failure_ratio + 1e-12 or late > slo.latency_ms:
            break
        knee = rate
    if knee is None:
        return Knee(None, 0.0, "below")
    goodput = max(p.goodput_rps for p in valid if p.rate <= knee)
    return Knee(knee, goodput, "above" if knee == swept[-1] else None)


def reference_knee(points: Sequence[SweepPoint], slo: SLO) -> Knee:
    """The reference: each pass's `fitted_knee`, averaged (rate and goodput), as the searched
    figure averages the searches; each pass is one measurement of a capacity that drifts between
    them, and pooling passes let a pass that stopped early leave only the other's windows above
    it. `edge`: "below" when some pass has no knee, "above" when some pass's knee is the highest
    swept rate."""
    indices = sorted({p.pass_index for p in points})
    knees = [fitted_knee([p for p in points if p.pass_index == i], slo) for i in indices]
    if not knees or any(k.rate is None for k in knees):
        return Knee(None, 0.0, "below")
    top = max(p.rate for p in points)
    edge: Edge | None = "above" if any(k.rate == top for k in knees) else None
    rate = statistics.fmean(k.rate for k in knees if k.rate is not None)
    return Knee(rate, statistics.fmean(k.goodput_rps for k in knees), edge)


def pass_knees(points: Sequence[SweepPoint], slo: SLO | None = None) -> list[float | None]:
    """Each pass's knee alone (its goodput; None if none): `fitted_knee` given an SLO, else the
    strict rule."""
    indices = sorted({p.pass_index for p in points})
    passes = [[p for p in points if p.pass_index == i] for i in indices]
    knees = [fitted_knee(ps, slo) if slo is not None else strict_knee(ps, passes=1) for ps in passes]
    return [k.goodput_rps if k.rate is not None else None for k in knees]


def spread(values: Sequence[float | None]) -> float | None:
    """max / min - 1 of measurements of one figure (None with fewer than two)."""
    found = [v for v in values if v is not None and v > 0]
    return max(found) / min(found) - 1.0 if len(found) >= 2 else None


def noise_floor(searches: Sequence[float], passes: Sequence[float | None], reference: float) -> float | None:
    """The |rel_error| to expect from the spread of repeated measurements alone, were the search
    exact: E|mean(searches) - mean(passes)| / reference for normal errors whose variances are the
    sample variances of the searches and of the passes (each on its own fresh server), i.e.
    sqrt(2/pi) x sqrt(var_s / n_s + var_p / n_p). None with fewer than two of either."""
    found = [p for p in passes if p is not None]
    if len(searches) < 2 or len(found) < 2 or reference <= 0:
        return None
    variance = statistics.variance(searches) / len(searches) + statistics.variance(found) / len(found)
    return math.sqrt(2.0 / math.pi) * math.sqrt(variance) / reference


def _rounded(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def rel_error(searched: float, reference: float) -> float | None:
    """searched / reference - 1 (None when there is no reference)."""
    return searched / reference - 1.0 if reference > 0 else None


def _rps(values: Sequence[float | None]) -> list[float | None]:
    """Figures in requests/s, rounded to 2 decimals (None kept)."""
    return [round(v, 2) if v is not None else None for v in values]


def every_search(row: dict[str, Any]) -> dict[str, Any]:
    """A widened row's searches of every comparison, each once (a comparison starts from the
    last search of the one before), against the counted reference: the row itself drops the
    earlier comparisons' searches, and those are the extreme first searches that set a sweep
    off-centre, so this figure shows what dropping them flattered."""
    earlier = [c["search_rps_each"] for c in row.get("earlier_comparisons", [])]
    chained = [*earlier, row["search_rps_each"]]
    every = [*chained[0], *(v for c in chained[1:] for v in c[1:])]
    error = rel_error(statistics.fmean(every), row["reference_rps"]) if every else None
    return {"every_search_rps": every, "every_search_rel_error": _rounded(error)}


def _single_search_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The same statistics over every single search (what one trial alone reports), and against
    the strict reference rule (a diagnostic), and how far repeated measurements of one config
    fell apart (pass_spread: the reference passes' knees; search_spread: the searches'), the
    noise any comparison of two measurements on this machine carries."""
    single = [abs(e) for r in rows for e in r.get("single_search_rel_errors", []) if e is not None]
    strict = [abs(r["strict_rel_error"]) for r in rows if r.get("strict_rel_error") is not None]
    return {
        "single_search_median_rel_error": round(statistics.median(single), 4) if single else None,
        "single_search_max_rel_error": round(max(single), 4) if single else None,
        "strict_median_rel_error": round(statistics.median(strict), 4) if strict else None,
        "strict_max_rel_error": round(max(strict), 4) if strict else None,
        **{f"median_{key}": _median_of(rows, key) for key in ("pass_spread", "search_spread", "noise_floor")},
    }


def _median_of(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    found = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(found), 4) if found else None


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median and max of |rel_error| over the rows that have one; how many lack one."""
    errors = [abs(r["rel_error"]) for r in rows if r.get("rel_error") is not None]
    return {
        "median_rel_error": round(statistics.median(errors), 4) if errors else None,
        "max_rel_error": round(max(errors), 4) if errors else None,
        "mean_signed_rel_error": (
            round(statistics.fmean(r["rel_error"] for r in rows if r.get("rel_error") is not None), 4)
            if errors
            else None
        ),
        "rows_without_reference": len(rows) - len(errors),
        **_single_search_summary(rows),
        "targets": {"median_rel_error": MEDIAN_TARGET, "max_rel_error": MAX_TARGET},
        "met": bool(errors)
        and len(errors) == len(rows)
        and statistics.median(errors) <= MEDIAN_TARGET
        and max(errors) <= MAX_TARGET,
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The per-config table for people."""
    head = f"{'config':<40} {'searched':>9} {'reference':>9} {'rel.err':>8} {'search s':>9} {'ref s':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        err = "-" if r["rel_error"] is None else f"{r['rel_error']:+.1%}"
        lines.append(
            f"{r['config']:<40} {r['searched_rps']:>9.1f} {r['reference_rps']:>9.1f} {err:>8} "
            f"{r['search_s']:>9.0f} {r['reference_s']:>7.0f}"
        )
    return "\n".join(lines)


# ---- the real run ---------------------------------------------------------------------------


@dataclass
class Running:
    """A Deployer over a server that is already up (`bench/transient.py` searches on its own server)."""

    deployment: Deployment

    def deploy(self, config: Config) -> AbstractContextManager[Deployment]:
        return contextlib.nullcontext(self.deployment)


def search_steps(
    steps: Sequence[StepMeasurement], slo: SLO, counted: Sequence[bool] = ()
) -> list[dict[str, Any]]:
    """The search's scored steps for the JSON (`counted`: the finding's, when it has one)."""
    counts = list(counted) if len(counted) == len(steps) else [None] * len(steps)
    return [
        {
            "rate": round(m.step.rate, 2) if m.step.rate is not None else None,
            "users": m.step.users,
            "duration_s": round(m.duration_s, 2),
            "goodput_rps": round(m.goodput_rps, 2),
            "latency_ms": round(slo.latency_of(m), 1),
            "client_p95_ms": round(m.client_p95_ms, 1),
            "sent_rps": round(m.rps, 1),
            "failure_ratio": round(m.failure_ratio, 4),
            "requests": m.requests,
            "met": not slo.violations(m),
            "aborted": m.aborted,
            "stable": m.stable,
            "generator_cpu": round(m.generator_cpu, 2),
            "generator_saturated": bool(m.flagged(InvalidReason.GENERATOR_SATURATED)),
            "counted": count,
            "failure_slices": [list(pair) for pair in m.failure_slices],
        }
        for m, count in zip(steps, counts, strict=True)
    ]


class MissRun:
    """A sweep pass's stop rule: True once `limit` scored windows in a row missed the SLO (the
    pass's first step, its unscored warm-up, is never counted)."""

    def __init__(self, slo: SLO, limit: int) -> None:
        self.slo, self.limit, self.misses, self.seen = slo, limit, 0, 0

    def __call__(self, measured: StepMeasurement) -> bool:
        self.seen += 1
        if self.seen == 1:
            return False
        self.misses = self.misses + 1 if self.slo.violations(measured) else 0
        return self.misses >= self.limit


def sweep(
    url: str, case: Case, slo: SLO, rates: Sequence[float], passes: int, requests: int, first_pass: int = 0,
    stop_after_misses: int = STOP_AFTER_MISSES,
) -> list[SweepPoint]:  # fmt: skip
    """`passes` ascending passes over `rates`, fixed windows, one Locust process each. A pass
    starts with an unscored `adapt_s` warm-up at its lowest rate (BentoML's dispatcher trains
    its latency model on a fresh server's first requests, and sheds after an overload), each rate runs
    `adapt_s` before its window (the dispatcher sheds after a rise until it refits), and a pass
    ends after `stop_after_misses` windows in a row missed the SLO (one stray miss does not end
    it: the fitted reference weighs it against the windows above)."""
    from loadtests.runner import LocustRunner

    ordered = sorted(rates)
    warm_up = adapt = CapacityRules().adapt_s
    points: list[SweepPoint] = []
    for index in range(first_pass, first_pass + passes):
        warm = sweep_step(ordered[0], slo, requests)
        steps = [LoadStep(users=warm.users, duration_s=warm_up, rate=warm.rate)]
        steps += [sweep_step(rate, slo, requests) for rate in ordered]
        measured = LocustRunner(max_extend=1.0, settle_s=adapt).run_steps(
            url, case.service, steps, stop_after=MissRun(slo, stop_after_misses),
            expected_workers=case.config.workers,
        )  # fmt: skip
        points += [sweep_point(rate, index, m, slo) for rate, m in zip(ordered, measured[1:], strict=False)]
    return points


class Searched(NamedTuple):
    """One capacity search: its finding and its measured steps."""

    finding: CapacityFinding
    measured: Measurement


@dataclass(frozen=True)
class Comparison:
    """Searches interleaved with reference passes over one set of rates (search, pass, search,
    ...): the machine's drift over that span falls on both sides alike."""

    points: list[SweepPoint]
    searched: list[Searched]
    reference_s: float
    widened: Literal["below", "above"] | None = None  # why it was run: the last one's knee edge

    @property
    def searches(self) -> list[CapacityFinding]:
        return [s.finding for s in self.searched]

    @property
    def measures(self) -> list[Measurement]:
        return [s.measured for s in self.searched]


def compare(
    first: Searched,
    search: Callable[[], Searched],
    one_pass: Callable[[Sequence[float], int], tuple[list[SweepPoint], float]],
    rates: Sequence[float],
    slo: SLO,
    passes: int,
    searches: int,
    low: float = 0.8,
    high: float = 1.4,
) -> list[Comparison]:
    """Interleaved comparisons, the last one counted. When its reference knee is at an edge of
    the swept rates, the comparison is run again over wider rates, from its last search on (at
    most `MAX_WIDEN` times): passes over only the new rates, after the last search, would put the
    machine's later drift on the reference alone, and a fresh server's first rate high. The
    rates widen by `WIDEN_BY`, or on to `low` x the lowest (`high` x the highest) knee its
    searches found: in one run a config's capacity halved within minutes (searches 111 -> 43-57/s)
    and two widenings of four rates never reached it, so that row had no reference."""
    done: list[Comparison] = []
    widened: Literal["below", "above"] | None = None
    while True:
        searched, reference_s = [first], 0.0
        points: list[SweepPoint] = []
        for index in range(passes):
            more, took = one_pass(rates, index)
            points, reference_s = points + more, reference_s + took
            if len(searched) < searches:
                searched.append(search())
        done.append(Comparison(points, searched, reference_s, widened))
        edge = reference_knee(points, slo).edge
        if edge is None or len(done) > MAX_WIDEN:
            return done
        knees = [s.finding.knee for s in searched if s.finding.knee]
        reach = (low * min(knees) if edge == "below" else high * max(knees)) if knees else None
        wider = widen(rates, edge, WIDEN_BY[edge], reach)
        if edge == "below" and wider[0] < 0.2:
            return done
        print(f"the reference knee is at the {edge} edge: compared again over wider rates", flush=True)
        rates, first, widened = sorted({*rates, *wider}), searched[-1], edge


def measure_case(case: Case, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Search, then sweep around the searched knee, alternating (search, pass, search, pass,
    search: the drift of the machine falls on both), each on a fresh server as every search of
    the tuner is: one server's capacity depends on the load it had before (after an overload
    the batching dispatcher of a one-worker config served twice the rate it shed at before)."""
    options = TuneOptions(service=case.service, slo_ms=case.slo_ms)
    slo, plan = options.slo(), options.plan()
    load = real_load_runner(options.max_extend, options.settle_s)
    deployer = LocalBentoDeployer(case.service, work / "logs", options.ready_timeout_s)
    runner = TrialRunner(deployer, load, plan, slo, case.service)
    load_before = os.getloadavg()
    starts: list[float] = []
    alive: list[bool] = []

    def search(hint: float | None) -> tuple[CapacityFinding, Measurement, float]:
        t0 = time.monotonic()
        measured = runner.measure(case.config, hint=hint)
        if not measured.ok or measured.capacity is None:
            raise RuntimeError(f"{case.name}: the search failed: {measured.reason}")
        found, took = measured.capacity, time.monotonic() - t0
        alive.append(measured.ok)
        print(
            f"{case.name}: search {found.goodput_rps:.1f} good RPS (knee rate {found.knee}, breach "
            f"{found.breach}, {found.limited_by}, {found.steps} steps, {took:.0f} s with its server's start)",
            flush=True,
        )
        return found, measured, took

    def one_pass(rates: Sequence[float], index: int) -> tuple[list[SweepPoint], float]:
        """One reference pass on a fresh server; its points and its sweep time."""
        t0 = time.monotonic()
        with deployer.deploy(case.config) as deployment:
            t1 = time.monotonic()
            starts.append(t1 - t0)
            points = sweep(deployment.url, case, slo, rates, 1, args.requests, first_pass=index)
            alive.append(deployment.alive())
            return points, time.monotonic() - t1

    finding, measured, search_s = search(None)
    center = finding.knee or max((m.goodput_rps for m in measured.steps), default=1.0)
    segments = compare(
        Searched(finding, measured), lambda: Searched(*search(finding.knee)[:2]), one_pass,
        sweep_rates(center, args.low, args.high), slo, args.passes, args.searches, args.low, args.high,
    )  # fmt: skip
    counted = segments[-1]
    points, searches, measures = counted.points, counted.searches, counted.measures
    reference_s = sum(s.reference_s for s in segments)
    widened = [s.widened for s in segments[1:] if s.widened is not None]
    scores = scored(points, searches, slo, args.passes)
    print(
        f"{case.name}: reference {scores['reference_rps']} good RPS at {scores['reference_knee_rate']} "
        f"offered ({reference_s:.0f} s); mean of {len(searches)} searches {scores['searched_rps']}, rel "
        f"error {scores['rel_error']}; single searches {scores['single_search_rel_errors']}",
        flush=True,
    )
    by_rate: dict[float, list[SweepPoint]] = {}
    for p in points:
        by_rate.setdefault(p.rate, []).append(p)
    row = {
        "config": case.name,
        "search_s": round(search_s, 1),
        "reference_s": round(reference_s, 1),
        "slo": {
            "latency_ms": slo.latency_ms,
            "quantile": slo.quantile,
            "max_failure_ratio": slo.max_failure_ratio,
        },
        "reference_server_start_s": [round(v, 1) for v in starts],
        "server_alive_after": all(alive),
        "searched_knee_rate": finding.knee,
        "searched_breach_rate": finding.breach,
        **scores,
        "finding": finding.model_dump(),
        "findings": [f.model_dump() for f in searches],
        "search_steps": search_steps(measures[0].steps, slo, searches[0].counted),
        "search_steps_each": [
            search_steps(m.steps, slo, f.counted) for f, m in zip(searches, measures, strict=True)
        ],
        "sweep_rates": [round(r, 2) for r in sorted(by_rate)],
        "widened": widened,
        "earlier_comparisons": [
            {
                "edge": later.widened,
                "search_rps_each": [round(f.goodput_rps, 2) for f in s.searches],
                "pass_knees_rps": _rps(pass_knees(s.points, slo)),
                "sweep_rates": [round(r, 2) for r in sorted({p.rate for p in s.points})],
                "sweep": [p.to_dict() for p in s.points],
            }
            for s, later in itertools.pairwise(segments)
        ],
        "min_sweep_requests": min(p.requests for p in points),
        "sweep_generator_saturated_steps": sum(p.generator_peak for p in points),
        "sweep": [[p.to_dict() for p in by_rate[r]] for r in sorted(by_rate)],
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    return {**row, **every_search(row)}


def scored(
    points: Sequence[SweepPoint], searches: Sequence[CapacityFinding], slo: SLO, passes: int
) -> dict[str, Any]:
    """A row's figures that follow from its sweep's windows and its searches' findings."""
    knee = reference_knee(points, slo)
    searched = statistics.fmean(f.goodput_rps for f in searches)
    error = rel_error(searched, knee.goodput_rps)
    single = [rel_error(f.goodput_rps, knee.goodput_rps) for f in searches]
    strict = strict_knee(points, passes)
    lenient = strict_knee(points, passes, lenient=True)
    knees = [f.knee for f in searches]
    fitted = pass_knees(points, slo)
    return {
        "searched_rps": round(searched, 2),
        "search_rps_each": [round(f.goodput_rps, 2) for f in searches],
        "single_search_rel_errors": [_rounded(e) for e in single],
        "reference_rps": round(knee.goodput_rps, 2),
        "rel_error": _rounded(error),
        "reference_knee_rate": round(knee.rate, 2) if knee.rate is not None else None,
        "reference_edge": knee.edge,
        "rate_rel_error": (
            _rounded(rel_error(statistics.fmean(k or 0.0 for k in knees), knee.rate))
            if all(knees) and knee.rate
            else None
        ),
        "strict_reference_rps": round(strict.goodput_rps, 2),
        "strict_rel_error": _rounded(rel_error(searched, strict.goodput_rps)),
        "pass_knees_rps": _rps(fitted),
        "strict_pass_knees_rps": _rps(pass_knees(points)),
        "pass_spread": _rounded(spread(fitted)),
        "search_spread": _rounded(spread([f.goodput_rps for f in searches])),
        "noise_floor": _rounded(noise_floor([f.goodput_rps for f in searches], fitted, knee.goodput_rps)),
        "lenient_reference_rps": round(lenient.goodput_rps, 2),
        "lenient_rel_error": _rounded(rel_error(searched, lenient.goodput_rps)),
        "sweep_met_fraction": round(sum(p.met for p in points) / len(points), 3) if points else None,
    }


def rescore(result: dict[str, Any]) -> dict[str, Any]:
    """A recorded run's rows and summary scored again from their recorded windows and findings
    (`--rescore`: the reference rule changed after the run; the measurements did not)."""
    rows = []
    for row in result["rows"]:
        slo = SLO(
            latency_ms=row["slo"]["latency_ms"], quantile=row["slo"]["quantile"],
            max_failure_ratio=row["slo"]["max_failure_ratio"],
        )  # fmt: skip
        points = [SweepPoint.from_dict(window) for windows in row["sweep"] for window in windows]
        searches = [CapacityFinding.model_validate(f) for f in row["findings"]]
        passes = len({p.pass_index for p in points})
        scored_row = {**row, **scored(points, searches, slo, passes)}
        rows.append({**scored_row, **every_search(scored_row)})
    return {**result, "rows": rows, **summarize(rows)}


def search_method() -> str:
    """How the search ran, from the tuner's own defaults (they may change under this bench)."""
    options = TuneOptions(service="embedding")
    return (
        f"TrialRunner.measure with TuneOptions(service, slo_ms).plan() = {options.plan().describe()}, "
        f"real_load_runner(max_extend={options.max_extend}, settle_s={options.settle_s})"
    )


def code_version() -> dict[str, Any]:
    """The commit the run started from and whether the search's modules differed from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "tuner", "core", "loadtests")
    return {"commit": git("rev-parse", "HEAD"), "search_code_modified": bool(dirty)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=("embedding", "noop"))
    parser.add_argument(
        "--case", action="append", default=[], help="a case to run, by the start of its name "
        "(embedding:b16-l200-w2-t1); repeat for several; default: every case",
    )  # fmt: skip
    parser.add_argument("--requests", type=int, default=400, help="requests per sweep step (at least)")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument(
        "--searches", type=int, default=3, help="capacity searches, interleaved with the passes (the "
        "tuner's finalist: its trial's search and 2 re-measurements)",
    )  # fmt: skip
    parser.add_argument("--low", type=float, default=0.8)
    parser.add_argument("--high", type=float, default=1.4)
    parser.add_argument("--noop-slo-ms", type=float, default=NOOP_SLO_MS)
    parser.add_argument("--rescore", type=Path, help="a recorded run's JSON to score again (no load)")
    args = parser.parse_args(argv)
    if args.rescore is not None:
        rescored = rescore(json.loads(args.rescore.read_text()))
        rescored["rescored_from"] = str(args.rescore)
        print(table(rescored["rows"]))
        print(f"median |rel error| {rescored['median_rel_error']}, max {rescored['max_rel_error']}")
        write_json(args.json, rescored)
        return 0
    try:
        chosen = cases(args.noop_slo_ms, args.only, args.case)
    except ValueError as exc:
        parser.error(f"--case: {exc}")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    from tuner.commands.demo import ensure_models

    ensure_models()
    load_before, t0 = os.getloadavg(), time.monotonic()
    code = code_version()
    rows = []
    with tempfile.TemporaryDirectory(prefix="servetune-capacity-accuracy-") as work:
        for case in chosen:
            rows.append(measure_case(case, Path(work), args))
            # A run stopped part-way (it takes about an hour) keeps the rows it finished.
            write_json(args.json, {"rows": rows, "partial": True, "code": code, **summarize(rows)})
    print(table(rows))
    summary = summarize(rows)
    result: dict[str, Any] = {
        "rows": rows,
        **summary,
        "cores": os.cpu_count(),
        "code": code,
        "wall_seconds": round(time.monotonic() - t0),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "method": {
            "search": search_method(),
            "searched": f"mean goodput of {args.searches} capacity searches (the first, then re-brackets "
            "around its knee as a finalist's re-measurement does), interleaved with the reference passes",
            "reference": "each pass and each search on a fresh server, passes interleaved with the searches; "
            f"rates {RATIO - 1:.1%} apart from "
            f"{args.low}x to {args.high}x the searched knee rate, {args.passes} ascending passes, "
            f">= {args.requests} requests per step, fixed windows, each after "
            f"{CapacityRules().adapt_s:g} s at its rate",
            "reference_knee": "per pass, the highest swept rate at which isotonic (non-decreasing, "
            "request-weighted) fits of the pass's failure ratios and judged latencies meet the SLO, with "
            "the best goodput of its windows at or below it; mean over the passes (strict_reference_rps, "
            "a diagnostic: highest rate met by every "
            f"pass, every lower rate met by every pass); a pass stops after {STOP_AFTER_MISSES} misses "
            "in a row",
            "rel_error": "searched_rps / reference_rps - 1; median/max over |rel_error|",
        },
    }
    print(
        f"median |rel error| {summary['median_rel_error']}, max {summary['max_rel_error']}, "
        f"wall {result['wall_seconds']} s, load {result['load_average_before']} -> "
        f"{result['load_average_after']}"
    )
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
