"""Study outputs: an offline HTML report (inline SVG charts), JSON/CSV of every step, the winner file.

The report page is the Jinja2 template `tuner/templates/report.html.j2` (autoescaped); this module
computes what it shows: the tables' rows and the charts' marks, placed on scaled axes.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, cast

import jinja2
import yaml
from pydantic import TypeAdapter

from core.measurement import StepMeasurement
from core.registry import service_spec
from core.serveconfig import FinalistSummary, TargetRef, WinnerFile
from core.server import BATCHING_KNOBS
from tuner.capacity import CapacityFinding, LoadMode
from tuner.finalists import Choice, mean_goodput_of, rerun_of
from tuner.gpureport import GpuFigures, gpu_section, measured_on_gpu
from tuner.objective import SLO, Quantile, load_text
from tuner.store import TrialRecord
from tuner.study import Finalist, StudyResult

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")  # fmt: skip
STATUS_COLOUR = {"ok": "#2ca02c", "infeasible": "#ff7f0e", "failed": "#d62728", "unfinished": "#999"}
BREACH_COLOUR = "#d62728"
BASELINE_NAMES = {  # tuner.tuning's NAIVE_LABEL and DEFAULT_LABEL
    "naive": "Naive baseline (1 worker, no batching)",
    "bentoml-default": "BentoML's default batching (max batch 100, 60 s, 1 worker)",
    "as-written": "The service as written (its decorator's batching and workers)",
}
BASELINE_MARKS = {"naive": "N", "bentoml-default": "D", "as-written": "W"}
PANEL_LIMIT = 8  # configs drawn as latency-vs-load panels, besides the baselines


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows besides the records themselves."""

    service: str
    settings: dict[str, Any]
    space: dict[str, Any]
    baseline: TrialRecord | None = None  # the naive one
    wall_seconds: float | None = None
    baselines: list[TrialRecord] = field(default_factory=list)  # naive, BentoML default ...

    def all_baselines(self) -> list[TrialRecord]:
        """`baselines`, or the naive one alone when only it was given."""
        if self.baselines:
            return list(self.baselines)
        return [self.baseline] if self.baseline is not None else []

    def slo(self) -> SLO:
        return SLO(
            latency_ms=float(self.settings["slo_p95_ms"]),
            quantile=cast(Quantile, self.settings.get("quantile", "p95")),
            max_failure_ratio=float(self.settings.get("max_failure_ratio", 0.01)),
        )


# -- words ---------------------------------------------------------------------------------------
def level_text(value: float, mode: LoadMode) -> str:
    """A load level for people, as objective.load_text words a step."""
    return f"{value:.4g} RPS offered" if mode == "rate" else f"{value:.0f} users"


def capacity_text(finding: CapacityFinding | None) -> str:
    """What a capacity search found, in one line ("" for fixed steps)."""
    if finding is None:
        return ""
    if finding.knee is None:
        return f"no knee: {finding.note or 'no load met the SLO'} ({finding.steps} steps)"
    text = f"knee {level_text(finding.knee, finding.mode)}"
    if finding.breach is not None:
        text += f", bracket {finding.knee:.4g}-{finding.breach:.4g}"
    how = "converged" if finding.converged else f"limited by {finding.limited_by}"
    text += f" ({how}, {finding.steps} steps)"
    if finding.note and not finding.converged:
        text += f": {finding.note}"
    if finding.rough:
        text += (
            f"; rough: its step held {finding.knee_requests} requests where its latency quantile "
            f"wants {finding.requests_needed} (a longer --max-step-seconds gives a firmer knee)"
        )
    return text


def tied_keys(choice: Choice | None) -> list[str]:
    """The finalists statistically tied with the winner (the best mean among them when it lost)."""
    if choice is None:
        return []
    return [f.config.key for f in (choice.best_mean, *choice.tied) if f is not choice.winner]


def _first_line(text: str, width: int = 160) -> str:
    return text.splitlines()[0][:width] if text else ""


@dataclass(frozen=True)
class Comparison:
    """The winner against one baseline."""

    label: str
    name: str
    key: str  # as people read it (`Config.label`)
    status: str
    goodput_rps: float
    ratio: float | None  # winner mean goodput / baseline goodput (None: the baseline served none)
    capacity: str

    def row(self) -> tuple[str, ...]:
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        return (self.label, self.key, self.status, _fmt(self.goodput_rps), self.capacity, ratio)


def comparisons(
    winner: Finalist | None, baselines: Sequence[TrialRecord], finalists: Sequence[Finalist] = ()
) -> list[Comparison]:
    """One row per measured baseline, with the winner's ratio to it when there is a winner; a
    baseline re-measured as a finalist (it led) counts by the mean of its runs, as the winner."""
    rows = []
    for b in baselines:
        runs, goodput = rerun_of(b, finalists), mean_goodput_of(b, finalists)
        ratio = winner.mean_goodput / goodput if winner is not None and goodput > 0 else None
        capacity = capacity_text(b.capacity) or _first_line(b.reason)
        if runs is not None:
            searches = ", ".join(f"{v:.1f}" for v in runs.goodputs)
            capacity = f"mean of {len(runs.goodputs)} capacity searches ({searches}); {capacity}"
        name = BASELINE_NAMES.get(b.label, f"Baseline {b.label}")
        rows.append(Comparison(b.label, name, b.shown, b.status, goodput, ratio, capacity))
    return rows


# -- files ---------------------------------------------------------------------------------------
def step_rows(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One flat row per measured load step of every record (with GPU columns when any step
    carries a GPU figure)."""
    rows = []
    gpu = measured_on_gpu(records)
    for record in records:
        for index, step in enumerate(record.steps):
            rows.append({
                "trial": record.number, "kind": record.kind, "label": record.label, "key": record.key,
                "status": record.status, "step": index, "users": step.step.users, "rate": step.step.rate,
                "aborted": step.aborted, "duration_s": step.duration_s, "requests": step.requests,
                "successes": step.successes, "rps": step.rps, "goodput_rps": step.goodput_rps,
                "failure_ratio": step.failure_ratio, "client_p50_ms": step.client_p50_ms,
                "client_p95_ms": step.client_p95_ms, "client_p99_ms": step.client_p99_ms,
                "server_p95_ms": step.server_p95_ms, "server_p99_ms": step.server_p99_ms,
                "server_source": step.server_source, "valid": step.valid,
                "failures_by_status": json.dumps(step.failures_by_status),
            })  # fmt: skip
            if gpu:
                rows[-1].update(GpuFigures.of(step).columns())
    return rows


def write_steps(out: Path, records: Sequence[TrialRecord]) -> tuple[Path, Path]:
    rows = step_rows(records)
    csv_path, json_path = out / "steps.csv", out / "steps.json"
    with csv_path.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    # Strict JSON: a step with no successful request has an infinite latency, written as null.
    json_path.write_bytes(_RECORDS.dump_json(list(records), indent=1) + b"\n")
    return csv_path, json_path


_RECORDS = TypeAdapter(list[TrialRecord])


def rounded_interval(finalist: Finalist) -> list[float] | None:
    """A finalist's 95% interval for a file, None for a single run."""
    interval = finalist.repeated_interval
    return [round(v, 2) for v in interval] if interval is not None else None


def finalist_summary(finalist: Finalist) -> FinalistSummary:
    return FinalistSummary(
        key=finalist.config.key,
        mean_rps=round(finalist.mean_goodput, 2),
        stdev_rps=round(finalist.stdev, 2),
        interval_rps=rounded_interval(finalist),
        runs=len(finalist.goodputs),
    )


def winner_file(
    service: str,
    winner: Finalist,
    settings: dict[str, Any],
    choice: Choice | None = None,
    finalists: Sequence[Finalist] = (),
) -> WinnerFile:
    """The winner as the file `servetune serve --config` and `servetune deploy` read, with its
    95% interval, the finalists it was chosen from and those it is statistically tied with; for
    a user's service also where it lives (target, working_dir, endpoint, service_args)."""
    measured = winner.measured
    best = max(measured, key=lambda r: r.goodput_rps)
    rss = [r.rss_mb for r in measured if r.rss_mb]
    reference = TargetRef.of(service_spec(service))
    return WinnerFile(
        config=winner.config.serve_config(service),
        slo_p95_ms=float(settings["slo_p95_ms"]),
        max_failure_ratio=float(settings["max_failure_ratio"]),
        slo_quantile=settings.get("quantile", "p95"),
        goodput_rps=round(winner.mean_goodput, 2),
        p95_ms=best.latency_ms,
        rss_mb=round(max(rss), 1) if rss else None,
        cores=os.cpu_count() or 1,
        goodput_spread_rps=round(winner.spread, 2),
        goodput_measurements=[round(g, 2) for g in winner.goodputs],
        key=winner.config.key,
        goodput_stdev_rps=round(winner.stdev, 2) if winner.repeated_interval is not None else None,
        goodput_interval_rps=rounded_interval(winner),
        statistically_tied_with=tied_keys(choice) if choice is not None and choice.winner is winner else [],
        choice=choice.explain() if choice is not None and choice.winner is winner else "",
        finalists=[finalist_summary(f) for f in finalists],
        **(reference.model_dump() if reference is not None else {}),
    )


def write_winner(
    out: Path,
    service: str,
    winner: Finalist,
    settings: dict[str, Any],
    choice: Choice | None = None,
    finalists: Sequence[Finalist] = (),
) -> Path:
    path = out / "winner.yaml"
    document = winner_file(service, winner, settings, choice, finalists).model_dump(mode="json")
    spec = service_spec(service)
    if not spec.batches():  # placeholders nothing reads: left to their defaults
        for knob in BATCHING_KNOBS:
            document["config"].pop(knob, None)
    if spec.variant_args and "=" not in winner.config.variant:  # none of the user's alternatives: as written
        document["config"].pop("variant", None)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# -- SVG ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Line:
    """A straight line; `dash` is an SVG stroke-dasharray, `title` shows on hover."""

    kind: ClassVar[str] = "line"
    x1: float
    y1: float
    x2: float
    y2: float
    stroke: str
    dash: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class Text:
    """A label anchored at (x, y); `rotate` turns it -90 degrees around that point."""

    kind: ClassVar[str] = "text"
    x: float
    y: float
    text: str
    size: int
    anchor: str = "middle"
    rotate: bool = False


@dataclass(frozen=True)
class Rect:
    """A bar."""

    kind: ClassVar[str] = "rect"
    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str | None = None


@dataclass(frozen=True)
class Polyline:
    """A curve through `points`."""

    kind: ClassVar[str] = "polyline"
    points: tuple[tuple[float, float], ...]
    stroke: str
    title: str | None = None


@dataclass(frozen=True)
class Circle:
    """A point marker; with a `stroke` it is a ring around `fill`."""

    kind: ClassVar[str] = "circle"
    cx: float
    cy: float
    fill: str
    r: float = 2.5
    stroke: str | None = None
    title: str | None = None


Mark = Line | Text | Rect | Polyline | Circle


def tick_text(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.3g}"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 4, 5, 8 x 10^k that is >= `value` (round axis ends)."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    scale = 10.0 ** math.floor(math.log10(value))
    return next(m * scale for m in (1, 2, 2.5, 4, 5, 8, 10) if m * scale >= value * (1 - 1e-9))


@dataclass
class Chart:
    """A tiny plot area with linear axes: marks in SVG coordinates, drawn by the report template."""

    width: int = 720
    height: int = 300
    x_max: float = 1.0
    y_max: float = 1.0
    marks: list[Mark] = field(default_factory=list)
    left: ClassVar[int] = 60
    right: ClassVar[int] = 20
    top: ClassVar[int] = 20
    bottom: ClassVar[int] = 50

    def __post_init__(self) -> None:
        self.x_max = self.x_max or 1.0
        self.y_max = self.y_max or 1.0

    def x(self, value: float) -> float:
        return self.left + (self.width - self.left - self.right) * value / self.x_max

    def y(self, value: float) -> float:
        return self.height - self.bottom - (self.height - self.top - self.bottom) * value / self.y_max

    def axes(self, x_label: str, y_label: str, ticks: int = 5) -> None:
        x0, y0 = self.x(0), self.y(0)
        self.marks += [Line(x0, y0, self.width - self.right, y0, "#333"), Line(x0, y0, x0, self.top, "#333")]
        for i in range(ticks + 1):
            value = self.y_max * i / ticks
            self.marks += [
                Text(x0 - 6, self.y(value) + 4, tick_text(value), 10, anchor="end"),
                Line(x0, self.y(value), self.width - self.right, self.y(value), "#eee"),
            ]
        self.marks += [
            Text((self.width + self.left) / 2, self.height - 8, x_label, 12),
            Text(14, self.height / 2, y_label, 12, rotate=True),
        ]

    def x_ticks(self, ticks: int = 5) -> None:
        for i in range(ticks + 1):
            value = self.x_max * i / ticks
            self.marks.append(Text(self.x(value), self.y(0) + 14, tick_text(value), 10))


class SmallChart(Chart):
    """A chart for small multiples: narrower margins."""

    left: ClassVar[int] = 46
    right: ClassVar[int] = 12
    top: ClassVar[int] = 12
    bottom: ClassVar[int] = 36


def goodput_chart(records: Sequence[TrialRecord], baselines: Sequence[TrialRecord]) -> Chart:
    bars = list(records) + list(baselines)
    chart = Chart(x_max=max(1, len(bars)), y_max=max([r.goodput_rps for r in bars] + [1.0]) * 1.1)
    chart.axes("trial (in order; then the baselines: N naive, D BentoML default)", "goodput (good RPS)")
    slot = (chart.x(1) - chart.x(0)) * 0.8
    for i, record in enumerate(bars):
        colour = "#555" if record.kind == "baseline" else STATUS_COLOUR[record.status]
        top = chart.y(record.goodput_rps)
        title = f"{record.shown} {record.status}: {record.goodput_rps:.1f} RPS — {record.reason[:200]}"
        label = BASELINE_MARKS.get(record.label, "B") if record.kind == "baseline" else str(record.number)
        chart.marks += [
            Rect(chart.x(i) + slot * 0.1, top, slot, chart.y(0) - top, colour, title),
            Text(chart.x(i) + slot * 0.6, chart.y(0) + 14, label, 9),
        ]
    return chart


# -- latency vs offered load --------------------------------------------------------------------
@dataclass(frozen=True)
class RunNote:
    """One measurement drawn in a panel: its colour and what it found."""

    colour: str
    text: str


@dataclass
class Panel:
    """One config's latency-vs-offered-load curves (its trial, finalist runs, or a baseline)."""

    title: str
    chart: Chart
    runs: list[RunNote]


def _mode(records: Sequence[TrialRecord]) -> LoadMode:
    steps = [s for r in records for s in r.steps]
    return "rate" if steps and all(s.step.rate is not None for s in steps) else "users"


def _level(step: StepMeasurement, mode: LoadMode) -> float:
    return float(step.step.rate) if mode == "rate" and step.step.rate is not None else float(step.step.users)


def _groups(records: Sequence[TrialRecord], winner_key: str | None) -> tuple[list[list[TrialRecord]], int]:
    """Records with steps grouped per config (baselines per label, with their re-measurements
    when one led the finalists), the best `PANEL_LIMIT`
    configs first (the winner leading), then the baselines; and how many configs were left out."""
    configs: dict[str, list[TrialRecord]] = {}
    baselines: dict[str, list[TrialRecord]] = {}
    for r in records:
        if r.steps and r.kind == "baseline":
            baselines.setdefault(r.label, []).append(r)
        elif r.steps:
            configs.setdefault(r.key, []).append(r)
    for key, group in list(configs.items()):  # re-measurements of a baseline that led (no trial of it)
        owner = next((g for g in baselines.values() if g[0].key == key), None)
        if owner is not None and all(r.kind == "finalist" for r in group):
            owner.extend(configs.pop(key))
    ranked = sorted(
        configs.values(),
        key=lambda g: (g[0].key != winner_key, -max(r.goodput_rps for r in g), g[0].number),
    )
    return ranked[:PANEL_LIMIT] + list(baselines.values()), max(0, len(ranked) - PANEL_LIMIT)


def _step_title(step: StepMeasurement, slo: SLO, why: list[str]) -> str:
    text = (
        f"{load_text(step)}: {slo.quantile} {slo.latency_of(step):.0f} ms, {step.goodput_rps:.1f} good RPS, "
        f"failures {step.failure_ratio:.1%}"
    )
    if step.aborted:
        text += " — aborted early (over the abort bound)"
    if why:
        text += " — breached: " + "; ".join(why)
    return text


def _run_label(record: TrialRecord) -> str:
    return f"#{record.number} {record.label or record.kind}"


def latency_panel(group: Sequence[TrialRecord], slo: SLO, y_max: float) -> Panel:
    """The SLO-quantile latency of every step against the load offered to it (sorted by load),
    the SLO as a dashed red line and each run's knee as a dotted vertical line. A step that met
    the SLO is a filled dot, one that breached it a red ring, one aborted early a red cross."""
    mode = _mode(group)
    levels = [_level(s, mode) for r in group for s in r.steps]
    knees = [r.capacity.knee for r in group if r.capacity is not None and r.capacity.knee is not None]
    chart = SmallChart(width=340, height=220, x_max=nice_ceiling(max(levels + knees) * 1.05), y_max=y_max)
    chart.axes("offered load (RPS)" if mode == "rate" else "users (closed loop)", f"{slo.quantile} ms", 4)
    chart.x_ticks(4)
    slo_title = f"SLO {slo.quantile} ≤ {slo.latency_ms:.0f} ms"
    slo_y = chart.y(slo.latency_ms)
    chart.marks.append(Line(chart.x(0), slo_y, chart.x(chart.x_max), slo_y, BREACH_COLOUR, "6 4", slo_title))
    runs = []
    for i, record in enumerate(group):
        colour = "#000" if record.kind == "baseline" else PALETTE[i % len(PALETTE)]
        points: list[tuple[float, float]] = []
        markers: list[Mark] = []
        for step in sorted(record.steps, key=lambda s: _level(s, mode)):
            latency = slo.latency_of(step)
            x = chart.x(_level(step, mode))
            y = chart.y(min(latency, y_max) if math.isfinite(latency) else y_max)
            points.append((x, y))
            markers += _step_marker(x, y, colour, step, slo)
        chart.marks += [Polyline(tuple(points), colour, _run_label(record)), *markers]
        found = record.capacity
        if found is not None and found.knee is not None:
            x = chart.x(found.knee)
            knee_title = f"knee {level_text(found.knee, found.mode)} ({_run_label(record)})"
            chart.marks.append(Line(x, chart.y(0), x, chart.top, colour, "2 3", knee_title))
            if i == 0:
                chart.marks.append(Text(x + 3, chart.top + 8, "knee", 9, anchor="start"))
        words = capacity_text(found) or f"{record.goodput_rps:.1f} good RPS (fixed steps)"
        runs.append(RunNote(colour, f"{_run_label(record)} {record.status}: {words}"))
    head = group[0]
    title = f"{head.label} baseline: {head.shown}" if head.kind == "baseline" else head.shown
    return Panel(title, chart, runs)


def _step_marker(x: float, y: float, colour: str, step: StepMeasurement, slo: SLO) -> list[Mark]:
    why = slo.violations(step)
    title = _step_title(step, slo, why)
    if step.aborted:
        return [
            Line(x - 4, y - 4, x + 4, y + 4, BREACH_COLOUR, title=title),
            Line(x - 4, y + 4, x + 4, y - 4, BREACH_COLOUR, title=title),
        ]
    if why:
        return [Circle(x, y, "#fff", 3.5, BREACH_COLOUR, title)]
    return [Circle(x, y, colour, 3.0, title=title)]


def latency_panels(
    records: Sequence[TrialRecord], slo: SLO, winner_key: str | None = None
) -> tuple[list[Panel], int]:
    """The panels (sharing one latency scale) and the number of configs left out."""
    groups, left_out = _groups(records, winner_key)
    latencies = [slo.latency_of(s) for g in groups for r in g for s in r.steps]
    finite = [v for v in latencies if math.isfinite(v)]
    y_max = nice_ceiling(min(max([*finite, slo.latency_ms]) * 1.1, slo.latency_ms * 4))
    return [latency_panel(g, slo, y_max) for g in groups], left_out


def batch_chart(record: TrialRecord | None) -> Chart | str:
    """The winner's batch-size histogram, or a sentence saying why there is none."""
    if record is None or record.best_step is None or not record.steps:
        return "No batch-size data for the winner."
    hist: dict[str, float] = record.steps[record.best_step].batch_size_hist
    if not hist:
        return "The load runner reported no batch-size histogram for the winner."
    items = sorted(hist.items(), key=lambda kv: _as_float(kv[0]))
    chart = Chart(height=260, x_max=len(items), y_max=max(v for _, v in items) * 1.1 or 1.0)
    chart.axes("requests per batch (histogram bucket, upper bound)", "batches in the winning step")
    slot = (chart.x(1) - chart.x(0)) * 0.8
    for i, (size, count) in enumerate(items):
        top = chart.y(count)
        chart.marks += [
            Rect(chart.x(i) + slot * 0.1, top, slot, chart.y(0) - top, "#1f77b4", f"{size}: {count:.0f}"),
            Text(chart.x(i) + slot * 0.6, chart.y(0) + 14, size, 10),
        ]
    return chart


def _as_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


# -- HTML -----------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@cache
def _templates() -> jinja2.Environment:
    """The report templates shipped in tuner/templates, HTML-escaping every value."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tuner", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = _fmt
    return env


def finalist_rows(result: StudyResult) -> list[tuple[str, ...]]:
    """Config, role, mean, stdev, 95% interval, runs and goodputs of every finalist."""
    choice = result.choice
    tied = set(tied_keys(choice))
    rows: list[tuple[str, ...]] = []
    shown = list(result.finalists)
    if choice is not None:  # a kept baseline that won, or was tied with the winner, is shown too
        for picked in (choice.winner, choice.best_mean, *choice.tied):
            if all(picked is not f for f in shown):
                shown.append(picked)
    for f in shown:
        role = [f"the {f.first.label} baseline"] if f.first.kind == "baseline" else []
        if choice is not None and f is choice.winner:
            role.append("winner")
        if choice is not None and f is choice.best_mean:
            role.append("best mean")
        if f.config.key in tied:
            role.append("tied with the winner")
        low, high = f.interval
        rows.append((
            f.shown, ", ".join(role), _fmt(f.mean_goodput), _fmt(f.stdev), f"{low:.1f}-{high:.1f}",
            str(len(f.goodputs)), ", ".join(f"{g:.1f}" for g in f.goodputs),
        ))  # fmt: skip
    return rows


def render_html(result: StudyResult, inputs: ReportInputs) -> str:
    records = result.records
    trials = [r for r in records if r.kind == "trial"]
    slo = inputs.slo()
    winner = result.winner
    winner_record = None
    if winner is not None:
        measured = winner.measured
        winner_record = max(measured, key=lambda r: r.goodput_rps)
    baselines = inputs.all_baselines()
    by_strategy = Counter(r.strategy for r in trials)
    best_by_strategy: dict[str, float] = {}
    for r in trials:
        best_by_strategy[r.strategy] = max(best_by_strategy.get(r.strategy, 0.0), r.goodput_rps)
    trial_rows = [
        (r.number, r.kind, r.label or r.strategy, r.shown, r.status, _fmt(r.goodput_rps),
         _fmt(r.latency_ms, 0), _fmt(r.failure_ratio, 3), _fmt(r.cost_per_million, 4), _fmt(r.rss_mb, 0),
         _fmt(r.wall_s), capacity_text(r.capacity), _first_line(r.reason))
        for r in records
    ]  # fmt: skip
    mean_batch = None
    if winner_record is not None:
        rows, batches = winner_record.best_step_batches()
        if batches:
            mean_batch = {"rows_per_batch": rows / batches, "batches": batches}
    compared = comparisons(winner, baselines, result.finalists)
    drawn = list(records) + [b for b in baselines if b not in records]
    panels, left_out = latency_panels(drawn, slo, winner.config.key if winner is not None else None)
    tie_pool = []
    if result.choice is not None:
        tie_pool = [f.config.key for f in (result.choice.best_mean, *result.choice.tied)]
    template = _templates().get_template("report.html.j2")
    return template.render(
        service=inputs.service,
        settings=inputs.settings,
        slo_ms=slo.latency_ms,
        quantile=slo.quantile,
        winner=winner,
        winner_interval=winner.interval if winner is not None else None,
        choice=result.choice,
        tie_pool=tie_pool,
        stopped_because=result.stopped_because,
        comparisons=compared,
        comparison_rows=[c.row() for c in compared],
        trial_count=len(trials),
        wall=f"{inputs.wall_seconds:.0f} s" if inputs.wall_seconds else "-",
        goodput=goodput_chart(trials, baselines),
        panels=panels,
        panels_left_out=left_out,
        batches=batch_chart(winner_record),
        mean_batch=mean_batch,
        finalist_rows=finalist_rows(result),
        strategy_rows=[(k, v, _fmt(best_by_strategy[k])) for k, v in by_strategy.items()],
        trial_rows=trial_rows,
        gpu=gpu_section(drawn, winner.config if winner is not None else None, winner_record),
        space_json=json.dumps(inputs.space, indent=2),
    )


def write_report(out: Path, result: StudyResult, inputs: ReportInputs) -> Path:
    """Write report.html, steps.csv, steps.json and (when there is one) winner.yaml into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    extra = [b for b in inputs.all_baselines() if b not in result.records]  # the study holds them
    write_steps(out, list(result.records) + extra)
    if result.winner is not None:
        write_winner(out, inputs.service, result.winner, inputs.settings, result.choice, result.finalists)
    path = out / "report.html"
    path.write_text(render_html(result, inputs))
    return path
