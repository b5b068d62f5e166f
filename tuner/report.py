"""Study outputs: an offline HTML report (inline SVG charts), JSON/CSV of every step, the winner file."""

from __future__ import annotations

import csv
import html
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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
    baseline: TrialRecord | None = None
    wall_seconds: float | None = None


# -- files ---------------------------------------------------------------------------------------
def step_rows(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One flat row per measured load step of every record."""
    rows = []
    for record in records:
        for index, step in enumerate(record.steps):
            rows.append({
                "trial": record.number, "kind": record.kind, "label": record.label, "key": record.key,
                "status": record.status, "step": index, "users": step["step"]["users"],
                "duration_s": step["duration_s"], "requests": step["requests"],
                "successes": step["successes"], "rps": step["rps"], "goodput_rps": step["goodput_rps"],
                "failure_ratio": step["failure_ratio"], "client_p50_ms": step["client_p50_ms"],
                "client_p95_ms": step["client_p95_ms"], "client_p99_ms": step["client_p99_ms"],
                "server_p95_ms": step.get("server_p95_ms"), "server_p99_ms": step.get("server_p99_ms"),
                "valid": step.get("valid", True),
                "failures_by_status": json.dumps(step.get("failures_by_status", {})),
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
def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


class Chart:
    """A tiny SVG plot area with linear axes."""

    def __init__(self, width: int = 720, height: int = 300, x_max: float = 1.0, y_max: float = 1.0) -> None:
        self.w, self.h = width, height
        self.left, self.right, self.top, self.bottom = 60, 20, 20, 50
        self.x_max = x_max or 1.0
        self.y_max = y_max or 1.0
        self.parts: list[str] = []

    def x(self, value: float) -> float:
        return self.left + (self.w - self.left - self.right) * value / self.x_max

    def y(self, value: float) -> float:
        return self.h - self.bottom - (self.h - self.top - self.bottom) * value / self.y_max

    def axes(self, x_label: str, y_label: str, ticks: int = 5) -> None:
        x0, y0 = self.x(0), self.y(0)
        self.parts.append(
            f'<line x1="{x0}" y1="{y0}" x2="{self.w - self.right}" y2="{y0}" stroke="#333"/>'
            f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{self.top}" stroke="#333"/>'
        )
        for i in range(ticks + 1):
            value = self.y_max * i / ticks
            self.parts.append(
                f'<text x="{x0 - 6}" y="{self.y(value) + 4:.1f}" font-size="10" text-anchor="end">'
                f"{value:.0f}</text>"
                f'<line x1="{x0}" y1="{self.y(value):.1f}" x2="{self.w - self.right}" '
                f'y2="{self.y(value):.1f}" stroke="#eee"/>'
            )
        self.parts.append(
            f'<text x="{(self.w + self.left) / 2}" y="{self.h - 8}" font-size="12" text-anchor="middle">'
            f"{_esc(x_label)}</text>"
            f'<text x="14" y="{self.h / 2}" font-size="12" text-anchor="middle" '
            f'transform="rotate(-90 14 {self.h / 2})">{_esc(y_label)}</text>'
        )

    def x_ticks(self, ticks: int = 5) -> None:
        for i in range(ticks + 1):
            value = self.x_max * i / ticks
            self.parts.append(
                f'<text x="{self.x(value):.1f}" y="{self.y(0) + 14}" font-size="10" text-anchor="middle">'
                f"{value:.0f}</text>"
            )

    def svg(self) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
            f'viewBox="0 0 {self.w} {self.h}">{"".join(self.parts)}</svg>'
        )


def goodput_chart(records: Sequence[TrialRecord], baseline: TrialRecord | None) -> str:
    bars = list(records) + ([baseline] if baseline else [])
    chart = Chart(x_max=max(1, len(bars)), y_max=max([r.goodput_rps for r in bars] + [1.0]) * 1.1)
    chart.axes("trial (in order; last bar = naive baseline when measured)", "goodput (good RPS)")
    slot = (chart.x(1) - chart.x(0)) * 0.8
    for i, record in enumerate(bars):
        colour = "#555" if record.kind == "baseline" else STATUS_COLOUR[record.status]
        top = chart.y(record.goodput_rps)
        chart.parts.append(
            f'<rect x="{chart.x(i) + slot * 0.1:.1f}" y="{top:.1f}" width="{slot:.1f}" '
            f'height="{chart.y(0) - top:.1f}" fill="{colour}"><title>{_esc(record.key)} '
            f"{record.status}: {record.goodput_rps:.1f} RPS — {_esc(record.reason[:200])}</title></rect>"
            f'<text x="{chart.x(i) + slot * 0.6:.1f}" y="{chart.y(0) + 14}" font-size="9" '
            f'text-anchor="middle">{"N" if record.kind == "baseline" else record.number}</text>'
        )
    return chart.svg()


def latency_chart(records: Sequence[TrialRecord], slo_ms: float) -> str:
    curves = [r for r in records if r.steps]
    rps = [s["rps"] for r in curves for s in r.steps] or [1.0]
    p95 = [_p95(s) for r in curves for s in r.steps] or [1.0]
    chart = Chart(height=360, x_max=max(rps) * 1.1, y_max=min(max(max(p95), slo_ms) * 1.1, slo_ms * 4))
    chart.axes("throughput (RPS, all responses)", "p95 latency (ms; server side when measured)")
    chart.x_ticks()
    chart.parts.append(
        f'<line x1="{chart.x(0)}" y1="{chart.y(slo_ms):.1f}" x2="{chart.x(chart.x_max):.1f}" '
        f'y2="{chart.y(slo_ms):.1f}" stroke="#d62728" stroke-dasharray="6 4"><title>SLO</title></line>'
    )
    for i, record in enumerate(curves):
        colour = "#000" if record.kind == "baseline" else PALETTE[i % len(PALETTE)]
        points = [(chart.x(s["rps"]), chart.y(min(_p95(s), chart.y_max))) for s in record.steps]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        chart.parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5">'
            f"<title>{_esc(record.label or record.key)}</title></polyline>"
        )
        for x, y in points:
            chart.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>')
    return chart.svg()


def _p95(step: dict[str, Any]) -> float:
    server = step.get("server_p95_ms")
    return float(server if server is not None else step["client_p95_ms"])


def batch_chart(record: TrialRecord | None) -> str:
    if record is None or record.best_step is None or not record.steps:
        return "<p>No batch-size data for the winner.</p>"
    hist: dict[str, float] = record.steps[record.best_step].get("batch_size_hist") or {}
    if not hist:
        return "<p>The load runner reported no batch-size histogram for the winner.</p>"
    items = sorted(hist.items(), key=lambda kv: _as_float(kv[0]))
    chart = Chart(height=260, x_max=len(items), y_max=max(v for _, v in items) * 1.1 or 1.0)
    chart.axes("requests per batch (histogram bucket, upper bound)", "batches in the winning step")
    slot = (chart.x(1) - chart.x(0)) * 0.8
    for i, (size, count) in enumerate(items):
        top = chart.y(count)
        chart.parts.append(
            f'<rect x="{chart.x(i) + slot * 0.1:.1f}" y="{top:.1f}" width="{slot:.1f}" '
            f'height="{chart.y(0) - top:.1f}" fill="#1f77b4"><title>{_esc(size)}: {count:.0f}</title></rect>'
            f'<text x="{chart.x(i) + slot * 0.6:.1f}" y="{chart.y(0) + 14}" font-size="10" '
            f'text-anchor="middle">{_esc(size)}</text>'
        )
    return chart.svg()


def _as_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


# -- HTML -----------------------------------------------------------------------------------------
def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


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
    summary = "<p>No feasible config was found.</p>"
    if winner is not None:
        summary = (
            f"<p><b>Winner:</b> <code>{_esc(winner.config.key)}</code> — {winner.mean_goodput:.1f} good RPS "
            f"(mean of {len(winner.goodputs)}, spread {winner.spread:.1f}) at p95 &le; {slo_ms:.0f} ms.</p>"
        )
        if inputs.baseline is not None and inputs.baseline.goodput_rps > 0:
            ratio = winner.mean_goodput / inputs.baseline.goodput_rps
            summary += (
                f"<p>Naive baseline ({_esc(inputs.baseline.label)}): "
                f"{inputs.baseline.goodput_rps:.1f} good RPS"
                f" &rarr; the winner is <b>{ratio:.2f}x</b> (measured in the same run).</p>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#f3f3f3}code{background:#f6f6f6}"
    )
    wall = f"{inputs.wall_seconds:.0f} s" if inputs.wall_seconds else "-"
    mean_batch = ""
    if winner_record is not None:
        rows, batches = winner_record.best_step_batches()
        if batches:
            mean_batch = (
                f"<p>Mean batch in that step: {rows / batches:.1f} requests ({batches:.0f} batches).</p>"
            )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>servetune study: {
        _esc(inputs.service)
    }</title>
<style>{style}</style></head><body>
<h1>servetune study — {_esc(inputs.service)}</h1>
{summary}
<p>Objective: {_esc(inputs.settings.get("objective"))}; SLO p95 &le; {
        slo_ms:.0f} ms, failure ratio (503 included)
&le; {_esc(inputs.settings.get("max_failure_ratio"))}; strategy {_esc(inputs.settings.get("strategy"))},
seed {_esc(inputs.settings.get("seed"))}; {len(trials)} trials; wall time {wall}.</p>
<h2>Goodput per trial</h2>{goodput_chart(trials, inputs.baseline)}
<p>green = feasible, orange = infeasible (no step met the SLO), red = failed (server did not start
or died).</p>
<h2>Latency vs throughput per measured config</h2>{latency_chart(records, slo_ms)}
<p>One line per measurement (black = naive baseline); dashed red = the SLO. Hover a line for its config.</p>
<h2>Winner's batch sizes</h2>{batch_chart(winner_record)}{mean_batch}
<h2>Finalists (re-measured)</h2>{_table(finalist_rows, ["config", "mean goodput", "stdev", "spread", "runs"])}
<h2>Trials by strategy</h2>{
        _table(
            [(k, v, _fmt(best_by_strategy[k])) for k, v in by_strategy.items()],
            ["strategy", "trials", "best goodput"],
        )
    }
<h2>All measurements</h2>{
        _table(
            trial_rows,
            [
                "#",
                "kind",
                "by",
                "config",
                "status",
                "goodput",
                "p95 ms",
                "fail ratio",
                "cost/1M",
                "RSS MB",
                "wall s",
                "why",
            ],
        )
    }
<h2>Search space</h2><pre>{_esc(json.dumps(inputs.space, indent=2))}</pre>
<p>Every load step is in steps.csv / steps.json next to this file.</p>
</body></html>
"""


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
