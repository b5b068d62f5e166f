"""Study outputs: an offline HTML report (inline SVG charts), JSON/CSV of every step, the winner file.

The report page is the Jinja2 template `tuner/templates/report.html.j2` (autoescaped); this module
computes what it shows: the tables' rows and the charts' marks, placed on scaled axes.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import jinja2
import yaml

from core.measurement import StepMeasurement
from core.serveconfig import WinnerFile
from tuner.store import TrialRecord
from tuner.study import Finalist, StudyResult

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")  # fmt: skip
STATUS_COLOUR = {"ok": "#2ca02c", "infeasible": "#ff7f0e", "failed": "#d62728"}


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows besides the records themselves."""

    service: str
    settings: dict[str, Any]
    space: dict[str, Any]
    baseline: TrialRecord | None = None  # the naive one
    wall_seconds: float | None = None
    baselines: list[TrialRecord] = field(default_factory=list)  # naive, BentoML default ...


# -- files ---------------------------------------------------------------------------------------
def step_rows(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One flat row per measured load step of every record."""
    rows = []
    for record in records:
        for index, step in enumerate(record.steps):
            rows.append({
                "trial": record.number, "kind": record.kind, "label": record.label, "key": record.key,
                "status": record.status, "step": index, "users": step.step.users,
                "duration_s": step.duration_s, "requests": step.requests,
                "successes": step.successes, "rps": step.rps, "goodput_rps": step.goodput_rps,
                "failure_ratio": step.failure_ratio, "client_p50_ms": step.client_p50_ms,
                "client_p95_ms": step.client_p95_ms, "client_p99_ms": step.client_p99_ms,
                "server_p95_ms": step.server_p95_ms, "server_p99_ms": step.server_p99_ms,
                "server_source": step.server_source, "valid": step.valid,
                "failures_by_status": json.dumps(step.failures_by_status),
            })  # fmt: skip
    return rows


def write_steps(out: Path, records: Sequence[TrialRecord]) -> tuple[Path, Path]:
    rows = step_rows(records)
    csv_path, json_path = out / "steps.csv", out / "steps.json"
    with csv_path.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    json_path.write_text(json.dumps([r.model_dump() for r in records], indent=1) + "\n")
    return csv_path, json_path


def winner_file(service: str, winner: Finalist, settings: dict[str, Any]) -> WinnerFile:
    """The winner as the file `servetune serve --config` and `servetune deploy` read."""
    measured = winner.repeats or [winner.first]
    best = max(measured, key=lambda r: r.goodput_rps)
    rss = [r.rss_mb for r in measured if r.rss_mb]
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
    )


def write_winner(out: Path, service: str, winner: Finalist, settings: dict[str, Any]) -> Path:
    path = out / "winner.yaml"
    document = winner_file(service, winner, settings).model_dump(mode="json")
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
    """A point marker."""

    kind: ClassVar[str] = "circle"
    cx: float
    cy: float
    fill: str
    r: float = 2.5


Mark = Line | Text | Rect | Polyline | Circle


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
                Text(x0 - 6, self.y(value) + 4, f"{value:.0f}", 10, anchor="end"),
                Line(x0, self.y(value), self.width - self.right, self.y(value), "#eee"),
            ]
        self.marks += [
            Text((self.width + self.left) / 2, self.height - 8, x_label, 12),
            Text(14, self.height / 2, y_label, 12, rotate=True),
        ]

    def x_ticks(self, ticks: int = 5) -> None:
        for i in range(ticks + 1):
            value = self.x_max * i / ticks
            self.marks.append(Text(self.x(value), self.y(0) + 14, f"{value:.0f}", 10))


def goodput_chart(records: Sequence[TrialRecord], baseline: TrialRecord | None) -> Chart:
    bars = list(records) + ([baseline] if baseline else [])
    chart = Chart(x_max=max(1, len(bars)), y_max=max([r.goodput_rps for r in bars] + [1.0]) * 1.1)
    chart.axes("trial (in order; last bar = naive baseline when measured)", "goodput (good RPS)")
    slot = (chart.x(1) - chart.x(0)) * 0.8
    for i, record in enumerate(bars):
        colour = "#555" if record.kind == "baseline" else STATUS_COLOUR[record.status]
        top = chart.y(record.goodput_rps)
        title = f"{record.key} {record.status}: {record.goodput_rps:.1f} RPS — {record.reason[:200]}"
        label = "N" if record.kind == "baseline" else str(record.number)
        chart.marks += [
            Rect(chart.x(i) + slot * 0.1, top, slot, chart.y(0) - top, colour, title),
            Text(chart.x(i) + slot * 0.6, chart.y(0) + 14, label, 9),
        ]
    return chart


def latency_chart(records: Sequence[TrialRecord], slo_ms: float) -> Chart:
    curves = [r for r in records if r.steps]
    rps = [s.rps for r in curves for s in r.steps] or [1.0]
    p95 = [_p95(s) for r in curves for s in r.steps] or [1.0]
    chart = Chart(height=360, x_max=max(rps) * 1.1, y_max=min(max(max(p95), slo_ms) * 1.1, slo_ms * 4))
    chart.axes("throughput (RPS, all responses)", "p95 latency (ms; server side when measured)")
    chart.x_ticks()
    slo_y = chart.y(slo_ms)
    chart.marks.append(Line(chart.x(0), slo_y, chart.x(chart.x_max), slo_y, "#d62728", "6 4", "SLO"))
    for i, record in enumerate(curves):
        colour = "#000" if record.kind == "baseline" else PALETTE[i % len(PALETTE)]
        points = [(chart.x(s.rps), chart.y(min(_p95(s), chart.y_max))) for s in record.steps]
        chart.marks.append(Polyline(tuple(points), colour, record.label or record.key))
        chart.marks += [Circle(x, y, colour) for x, y in points]
    return chart


def _p95(step: StepMeasurement) -> float:
    server = step.server_p95_ms
    return float(server if server is not None else step.client_p95_ms)


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


def render_html(result: StudyResult, inputs: ReportInputs) -> str:
    records = result.records
    trials = [r for r in records if r.kind == "trial"]
    slo_ms = float(inputs.settings["slo_p95_ms"])
    winner = result.winner
    winner_record = None
    if winner is not None:
        measured = winner.repeats or [winner.first]
        winner_record = max(measured, key=lambda r: r.goodput_rps)
    by_strategy = Counter(r.strategy for r in trials)
    best_by_strategy: dict[str, float] = {}
    for r in trials:
        best_by_strategy[r.strategy] = max(best_by_strategy.get(r.strategy, 0.0), r.goodput_rps)
    trial_rows = [
        (r.number, r.kind, r.label or r.strategy, r.key, r.status, _fmt(r.goodput_rps), _fmt(r.latency_ms, 0),
         _fmt(r.failure_ratio, 3), _fmt(r.cost_per_million, 4), _fmt(r.rss_mb, 0), _fmt(r.wall_s),
         r.reason.splitlines()[0][:160] if r.reason else "")
        for r in records
    ]  # fmt: skip
    finalist_rows = [
        (f.config.key, _fmt(f.mean_goodput), _fmt(f.stdev), _fmt(f.spread),
         ", ".join(f"{g:.1f}" for g in f.goodputs))
        for f in result.finalists
    ]  # fmt: skip
    baseline_ratio = None
    if winner is not None and inputs.baseline is not None and inputs.baseline.goodput_rps > 0:
        baseline_ratio = winner.mean_goodput / inputs.baseline.goodput_rps
    mean_batch = None
    if winner_record is not None:
        rows, batches = winner_record.best_step_batches()
        if batches:
            mean_batch = {"rows_per_batch": rows / batches, "batches": batches}
    template = _templates().get_template("report.html.j2")
    return template.render(
        service=inputs.service,
        settings=inputs.settings,
        slo_ms=slo_ms,
        winner=winner,
        baseline=inputs.baseline,
        baseline_ratio=baseline_ratio,
        trial_count=len(trials),
        wall=f"{inputs.wall_seconds:.0f} s" if inputs.wall_seconds else "-",
        goodput=goodput_chart(trials, inputs.baseline),
        latency=latency_chart(records, slo_ms),
        batches=batch_chart(winner_record),
        mean_batch=mean_batch,
        finalist_rows=finalist_rows,
        strategy_rows=[(k, v, _fmt(best_by_strategy[k])) for k, v in by_strategy.items()],
        trial_rows=trial_rows,
        space_json=json.dumps(inputs.space, indent=2),
    )


def write_report(out: Path, result: StudyResult, inputs: ReportInputs) -> Path:
    """Write report.html, steps.csv, steps.json and (when there is one) winner.yaml into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    records = list(result.records) + ([inputs.baseline] if inputs.baseline else [])
    write_steps(out, records)
    if result.winner is not None:
        write_winner(out, inputs.service, result.winner, inputs.settings)
    path = out / "report.html"
    path.write_text(render_html(result, inputs))
    return path
