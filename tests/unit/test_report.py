"""Study outputs from a fake study: HTML report, steps CSV/JSON, a winner file `serve --config` reads."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from xml.etree import ElementTree

from core.deployer import DeployError
from core.serveconfig import Config, load_serve_config, load_winner
from tests.fakes import FakeDeployer, FakeLoadRunner
from tuner.report import Chart, Circle, Line, Polyline, Rect, _templates
from tuner.space import Machine, default_space
from tuner.tuning import TuneOptions, run_tune

SVG = "{http://www.w3.org/2000/svg}"
FAILING_KEY = "b8-l100-w1-t1-g0-fp32"
MARKUP = "<script>alert('x')</script> & co"


def refuse_with_markup(config: Config) -> None:
    """A start failure whose message holds markup: the report must show it as text."""
    if config.key == FAILING_KEY:
        raise DeployError(f"{MARKUP} for {config.key}")


def test_outputs_of_a_fake_study(tmp_path: Path) -> None:
    deployer = FakeDeployer(on_deploy=refuse_with_markup)
    options = TuneOptions(
        service="embedding", strategy="grid", trials=6, out=tmp_path, finalists=2, repeats=2,
        users=(2, 4, 8, 16), step_s=5, warmup_s=1, naive_baseline=True, slo_ms=180.0,
    )  # fmt: skip
    space = default_space("embedding", Machine(2, 0))
    outcome = run_tune(options, FakeLoadRunner(deployer), space, deployer=deployer)
    assert outcome.baseline is not None and outcome.baseline.label == "naive"
    assert outcome.baseline.cfg.workers == 1 and outcome.baseline.cfg.threads == 2
    html = outcome.report.read_text()
    for heading in ("Goodput per trial", "Latency vs throughput", "batch sizes", "Trials by strategy"):
        assert heading in html
    assert html.count("<svg") == 2 and html.count("</svg>") == 2  # goodput, latency
    assert "<p>The load runner reported no batch-size histogram for the winner.</p>" in html  # fakes: none
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # offline
    winner = outcome.result.winner
    assert winner is not None
    assert f"<b>Winner:</b> <code>{winner.config.key}</code> — {winner.mean_goodput:.1f} good RPS" in html
    assert "SLO p95 &le; 180 ms" in html and "at p95 &le; 180 ms" in html
    ratio = winner.mean_goodput / outcome.baseline.goodput_rps
    assert f"the winner is <b>{ratio:.2f}x</b>" in html
    assert "<script>" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in html
    svgs = re.findall(r"<svg .*?</svg>", html, flags=re.S)
    assert all(ElementTree.fromstring(svg).tag == f"{SVG}svg" for svg in svgs), "well-formed SVG"
    trials = [r for r in outcome.result.records if r.kind == "trial"]
    bars = re.findall(r'<rect [^>]*fill="(#[0-9a-f]+)"><title>([^ ]+) ', html)
    assert [key for _, key in bars[: len(trials) + 1]] == [r.key for r in trials] + [outcome.baseline.key]
    assert bars[[r.key for r in trials].index(FAILING_KEY)][0] == "#d62728", "a failed trial is a red bar"
    rows = list(csv.DictReader((tmp_path / "steps.csv").open()))
    stored = json.loads((tmp_path / "steps.json").read_text())
    assert len(rows) == sum(len(r["steps"]) for r in stored)
    assert {r["kind"] for r in rows} == {"trial", "finalist", "baseline"}
    assert outcome.winner_file is not None
    winner = load_winner(outcome.winner_file)
    assert outcome.result.winner is not None
    assert winner.config == outcome.result.winner.config.serve_config("embedding")
    assert winner.goodput_rps == round(outcome.result.winner.mean_goodput, 2)
    assert load_serve_config(outcome.winner_file) == winner.config  # what `serve --config` reads
    failed = [r for r in outcome.result.records if r.status == "failed"]
    assert [r.key for r in failed] == [FAILING_KEY] and MARKUP in failed[0].reason


def test_no_winner_when_nothing_meets_the_slo(tmp_path: Path) -> None:
    deployer = FakeDeployer()
    options = TuneOptions(service="embedding", strategy="random", trials=3, out=tmp_path, finalists=1,
                          repeats=1, users=(2,), step_s=5, warmup_s=0, slo_ms=1.0)  # fmt: skip
    outcome = run_tune(options, FakeLoadRunner(deployer), default_space("embedding", Machine(2, 0)),
                       deployer=deployer)  # fmt: skip
    assert outcome.result.winner is None and outcome.winner_file is None
    assert not (tmp_path / "winner.yaml").exists()
    assert "No feasible config" in outcome.report.read_text()
    assert all("no step met the SLO" in r.reason for r in outcome.result.records)


def test_resume_through_run_tune_measures_only_what_is_missing(tmp_path: Path) -> None:
    space = default_space("embedding", Machine(2, 0))
    common = dict(service="embedding", strategy="tpe", out=tmp_path, finalists=1, repeats=1,
                  users=(2, 8), step_s=5, warmup_s=0)  # fmt: skip
    first = FakeDeployer()
    run_tune(TuneOptions(trials=3, **common), FakeLoadRunner(first), space, deployer=first)  # type: ignore[arg-type]
    second = FakeDeployer()
    outcome = run_tune(TuneOptions(trials=5, resume=True, **common), FakeLoadRunner(second), space,  # type: ignore[arg-type]
                       deployer=second)  # fmt: skip
    assert len(first.deployed) == 3 + 1
    assert len(outcome.result.trials) == 5
    assert not set(second.deployed[:2]) & set(first.deployed[:3])  # two new trials, none repeated
    winner = outcome.result.winner
    assert winner is not None and len(winner.repeats) == 1
    # the finalist re-run is only measured again when the top config changed
    changed = winner.config.key != first.deployed[3]
    assert len(second.deployed) == 2 + int(changed)


def test_a_chart_is_drawn_with_every_mark_and_escaped_labels() -> None:
    chart = Chart(width=200, height=120, x_max=4, y_max=10)
    chart.axes("requests <per> batch", "batches & more")
    chart.marks += [
        Rect(chart.x(1), chart.y(8), 20, chart.y(0) - chart.y(8), "#1f77b4", "16: 8"),
        Polyline(((chart.x(0), chart.y(0)), (chart.x(2), chart.y(5))), "#ff7f0e", "b16 <fast>"),
        Circle(chart.x(2), chart.y(5), "#ff7f0e"),
        Line(chart.x(0), chart.y(2), chart.x(4), chart.y(2), "#d62728", "6 4", "SLO"),
    ]
    svg = str(_templates().get_template("charts.svg.j2").module.svg(chart))
    root = ElementTree.fromstring(svg)
    assert (root.get("width"), root.get("viewBox")) == ("200", "0 0 200 120")
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert labels == ["0", "2", "4", "6", "8", "10", "requests <per> batch", "batches & more"]
    assert "requests &lt;per&gt; batch" in svg and "batches &amp; more" in svg
    (y_label,) = [t for t in root.iter(f"{SVG}text") if t.get("transform")]
    assert y_label.get("transform") == "rotate(-90 14.0 60.0)"
    (bar,) = root.iter(f"{SVG}rect")
    assert bar.attrib == {"x": "90.0", "y": "30.0", "width": "20.0", "height": "40.0", "fill": "#1f77b4"}
    assert bar.findtext(f"{SVG}title") == "16: 8"
    (curve,) = root.iter(f"{SVG}polyline")
    assert curve.get("points") == "60.0,70.0 120.0,45.0" and curve.findtext(f"{SVG}title") == "b16 <fast>"
    (dot,) = root.iter(f"{SVG}circle")
    assert (dot.get("cx"), dot.get("cy"), dot.get("r")) == ("120.0", "45.0", "2.5")
    slo = [line for line in root.iter(f"{SVG}line") if line.get("stroke-dasharray")]
    assert len(slo) == 1 and slo[0].get("stroke-dasharray") == "6 4"
    assert slo[0].findtext(f"{SVG}title") == "SLO"
