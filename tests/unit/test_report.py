"""Study outputs from a fake study: HTML report, steps CSV/JSON, a winner file `serve --config` reads."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml
from scipy import stats

from core.deployer import DeployError
from core.measurement import LoadStep, StepMeasurement
from core.registry import register, service_spec, unregister
from core.serveconfig import Config, ConfigFileError, load_serve_config, load_winner
from tests.fakes import FakeDeployer, FakeLoadRunner, make_step
from tuner.capacity import CapacityFinding
from tuner.finalists import Finalist, choose
from tuner.objective import SLO
from tuner.report import (
    Chart,
    Circle,
    Line,
    Polyline,
    Rect,
    ReportInputs,
    _templates,
    finalist_rows,
    latency_panel,
    render_html,
    write_steps,
    write_winner,
)
from tuner.space import Machine, default_space
from tuner.store import TrialKind, TrialRecord
from tuner.study import StudyResult
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
    for heading in ("Goodput per trial", "Latency vs offered load", "batch sizes", "Trials by strategy"):
        assert heading in html
    measured = {r.label if r.kind == "baseline" else r.key for r in outcome.result.records if r.steps}
    assert html.count('<figure class="panel">') == len(measured) == 6  # 5 trials with steps + naive
    assert html.count("<svg") == html.count("</svg>") == 1 + len(measured)  # goodput + one per config
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
    assert [key for _, key in bars[: len(trials) + 1]] == [r.shown for r in trials] + [outcome.baseline.shown]
    assert bars[[r.key for r in trials].index(FAILING_KEY)][0] == "#d62728", "a failed trial is a red bar"
    rows = list(csv.DictReader((tmp_path / "steps.csv").open()))
    stored = json.loads((tmp_path / "steps.json").read_text())
    assert len(rows) == sum(len(r["steps"]) for r in stored)
    assert len(stored) == len(outcome.result.records), "the baseline is written once"
    assert {r["rate"] for r in rows} == {""} and {r["aborted"] for r in rows} == {"False"}  # closed loop
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


SETTINGS = {"slo_p95_ms": 200.0, "max_failure_ratio": 0.01, "quantile": "p95", "objective": "goodput",
            "strategy": "grid", "seed": 0}  # fmt: skip
RED = "#d62728"


def svg_of(chart: Chart) -> ElementTree.Element:
    return ElementTree.fromstring(str(_templates().get_template("charts.svg.j2").module.svg(chart)))


def panels(html: str) -> dict[str, ElementTree.Element]:
    """Each latency-vs-load panel's SVG by its caption title."""
    found = re.findall(r'<figure class="panel">(<svg .*?</svg>)<figcaption><b>(.*?)</b>', html, flags=re.S)
    return {title: ElementTree.fromstring(svg) for svg, title in found}


def titled(root: ElementTree.Element, tag: str, prefix: str) -> list[ElementTree.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if (e.findtext(f"{SVG}title") or "").startswith(prefix)]


def test_capacity_report_draws_each_config_against_the_offered_load(tmp_path: Path) -> None:
    deployer = FakeDeployer()
    options = TuneOptions(
        service="embedding", strategy="grid", trials=4, out=tmp_path, finalists=2, repeats=2, warmup_s=1,
        naive_baseline=True, default_baseline=True, slo_ms=180.0,
    )  # fmt: skip
    outcome = run_tune(options, FakeLoadRunner(deployer), default_space("embedding", Machine(2, 0)),
                       deployer=deployer)  # fmt: skip
    records = [r for r in outcome.result.records if r.steps]
    assert all(r.capacity is not None and r.capacity.knee is not None for r in records)
    groups: dict[str, list[TrialRecord]] = {}
    baseline_titles = {r.key: f"{r.label} baseline: {r.shown}" for r in records if r.kind == "baseline"}
    trial_keys = {r.key for r in records if r.kind == "trial"}
    for r in records:
        led = r.kind == "finalist" and r.key in baseline_titles and r.key not in trial_keys
        title = baseline_titles[r.key] if r.kind == "baseline" or led else r.key  # a baseline that led
        groups.setdefault(title, []).append(r)
    html = outcome.report.read_text()
    drawn = panels(html)
    assert sorted(drawn) == sorted(groups) and len(groups) == 4 + 2  # every config, both baselines
    slo = SLO(180.0)
    for title, root in drawn.items():
        group = groups[title]
        (slo_line,) = titled(root, "line", "SLO")
        assert slo_line.findtext(f"{SVG}title") == "SLO p95 ≤ 180 ms"
        assert slo_line.get("stroke-dasharray") == "6 4" and slo_line.get("y1") == slo_line.get("y2")
        knees = titled(root, "line", "knee ")
        assert sorted(k.findtext(f"{SVG}title") or "" for k in knees) == sorted(
            f"knee {r.capacity.knee:.4g} RPS offered (#{r.number} {r.label or r.kind})"
            for r in group
            if r.capacity is not None and r.capacity.knee is not None
        )
        circles = list(root.iter(f"{SVG}circle"))
        met = [c for c in circles if c.get("stroke") is None]
        rings = [c for c in circles if c.get("stroke") == RED]
        steps = [s for r in group for s in r.steps]
        assert len(met) == sum(1 for s in steps if not slo.violations(s)) > 0
        assert len(rings) == sum(1 for s in steps if slo.violations(s)) > 0
        slo_y = float(slo_line.get("y1") or "nan")
        assert all(float(c.get("cy") or "nan") >= slo_y for c in met), "met steps lie below the SLO line"
        assert all(float(c.get("cy") or "nan") < slo_y for c in rings), "breaches lie above it"
        assert all(k.get("x1") in {c.get("cx") for c in met} for k in knees), "a knee is a step that met"
    winner = outcome.result.winner
    assert winner is not None and len(outcome.baselines) == 2
    for baseline in outcome.baselines:
        # a baseline that led the finalists counts by the mean of its runs, as the winner does
        reruns = [f for f in outcome.result.finalists if f.first is baseline and f.repeats]
        figure = reruns[0].mean_goodput if reruns else baseline.goodput_rps
        assert f"the winner is <b>{winner.mean_goodput / figure:.2f}x</b>" in html
    assert "Naive baseline" in html and "BentoML&#39;s default batching" in html
    rows = list(csv.DictReader((tmp_path / "steps.csv").open()))
    offered = sorted(s.step.rate or 0.0 for r in records for s in r.steps)
    assert sorted(float(r["rate"]) for r in rows) == pytest.approx(offered)
    assert {r["aborted"] for r in rows} == {"False"}


def rate_step(rate: float, p95: float, aborted: bool = False) -> StepMeasurement:
    step = make_step(LoadStep(users=max(1, round(rate)), duration_s=2.0, rate=rate), rate, p95, 0.0)
    return dataclasses.replace(step, aborted=aborted)


def test_steps_that_breach_or_abort_are_drawn_apart_from_those_that_met_the_slo() -> None:
    found = CapacityFinding(mode="rate", knee=80.0, breach=120.0, goodput_rps=80.0, converged=False,
                            limited_by="step_cap", steps=4, resolution=0.05)  # fmt: skip
    record = TrialRecord(
        number=3, key="k", config=Config().to_dict(), status="ok", capacity=found,
        steps=[rate_step(40, 50), rate_step(160, 900, aborted=True), rate_step(120, 260), rate_step(80, 120)],
    )  # fmt: skip
    panel = latency_panel([record], SLO(200.0), y_max=800.0)
    root = svg_of(panel.chart)
    chart = panel.chart
    cross = titled(root, "line", "160 RPS offered")
    assert len(cross) == 2 and all(c.get("stroke") == RED for c in cross)
    assert all("aborted early" in (c.findtext(f"{SVG}title") or "") for c in cross)
    assert {float(c.get("x1") or 0) + 4 for c in cross} == {round(chart.x(160), 1)}
    (ring,) = [c for c in root.iter(f"{SVG}circle") if c.get("stroke") == RED]
    assert ring.get("cx") == f"{chart.x(120):.1f}" and ring.get("fill") == "#fff"
    assert "breached: p95 260 ms > 200 ms" in (ring.findtext(f"{SVG}title") or "")
    met = [c for c in root.iter(f"{SVG}circle") if c.get("stroke") is None]
    assert [c.get("cx") for c in met] == [f"{chart.x(40):.1f}", f"{chart.x(80):.1f}"]
    (knee,) = titled(root, "line", "knee")
    assert (
        knee.get("x1") == f"{chart.x(80):.1f}"
        and knee.findtext(f"{SVG}title") == "knee 80 RPS offered (#3 trial)"
    )
    (curve,) = root.iter(f"{SVG}polyline")
    xs = [float(p.split(",")[0]) for p in (curve.get("points") or "").split()]
    assert xs == sorted(xs) and len(xs) == 4, "the curve runs along the offered load"
    assert (
        panel.runs[0].text
        == "#3 trial ok: knee 80 RPS offered, bracket 80-120 (limited by step_cap, 4 steps)"
    )


def run(number: int, config: Config, goodput: float, kind: TrialKind = "finalist") -> TrialRecord:
    return TrialRecord(number=number, kind=kind, key=config.key, config=config.to_dict(), status="ok",
                       score=goodput, goodput_rps=goodput, latency_ms=150.0, rss_mb=300.0)  # fmt: skip


def finalist(number: int, config: Config, goodputs: list[float]) -> Finalist:
    """The trial measured goodputs[0]; its re-measurements the rest."""
    repeats = [run(10 * (number + 1) + i, config, g) for i, g in enumerate(goodputs[1:])]
    return Finalist(config, run(number, config, goodputs[0], "trial"), repeats)


BIG, SMALL, SLOW = Config(16, 200, 2, 1), Config(16, 200, 1, 1), Config(8, 100, 1, 1)


def tied_finalists() -> list[Finalist]:
    """BIG has the best mean, SMALL's interval overlaps it and uses half the cores; SLOW is apart."""
    return [
        finalist(0, BIG, [100, 110, 105]),
        finalist(1, SMALL, [104, 96, 100]),
        finalist(2, SLOW, [50, 52, 51]),
    ]


def study_result(finalists: list[Finalist], stopped_because: str = "") -> StudyResult:
    choice = choose(finalists, cores=2)
    records = [f.first for f in finalists] + [r for f in finalists for r in f.repeats]
    return StudyResult(records, finalists, choice.winner if choice else None, choice=choice,
                       stopped_because=stopped_because)  # fmt: skip


def t95(values: list[float]) -> tuple[float, float]:
    mean, sem = statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def test_finalists_intervals_and_a_tie_are_reported(tmp_path: Path) -> None:
    finalists = tied_finalists()
    result = study_result(finalists, "time budget: 20 s left, a trial takes ~60 s")
    choice = result.choice
    assert choice is not None and choice.is_tie and choice.winner.config == SMALL
    html = render_html(result, ReportInputs("embedding", SETTINGS, {}, wall_seconds=12.0))
    for f in finalists:
        low, high = t95(f.goodputs)
        (row,) = re.findall(rf"<tr><td>{f.config.key}</td>.*?</tr>", html)
        stdev = statistics.stdev(f.goodputs)
        assert (
            f"<td>{f.mean_goodput:.1f}</td><td>{stdev:.1f}</td><td>{low:.1f}-{high:.1f}</td><td>3</td>" in row
        )
    assert "92.6-117.4" in html  # BIG: 105 +- 4.303 x 5 / sqrt(3)
    assert f"{choice.explain()}." in html and "statistically tied with " + BIG.key in html
    assert "<b>Statistically tied:</b> " + ", ".join([BIG.key, SMALL.key]) in html
    assert '<p class="stopped"><b>Stopped early:</b> time budget: 20 s left, a trial takes ~60 s</p>' in html

    apart = study_result([finalists[0], finalists[2]])
    assert apart.choice is not None and not apart.choice.is_tie
    html = render_html(apart, ReportInputs("embedding", SETTINGS, {}))
    assert "statistically tied" not in html.lower() and "Stopped early" not in html
    assert "no other finalist&#39;s interval overlaps it" in html


def test_the_winner_file_carries_the_interval_the_tie_and_the_finalists(tmp_path: Path) -> None:
    finalists = tied_finalists()
    result = study_result(finalists)
    assert result.winner is not None and result.choice is not None
    path = write_winner(tmp_path, "embedding", result.winner, SETTINGS, result.choice, finalists)
    winner = load_winner(path)
    low, high = t95([104, 96, 100])
    assert winner.config == SMALL.serve_config("embedding") and winner.goodput_rps == 100.0
    assert winner.goodput_interval_rps == [round(low, 2), round(high, 2)]
    assert winner.goodput_stdev_rps == 4.0
    assert winner.statistically_tied_with == [BIG.key]
    assert winner.choice == result.choice.explain() and "statistically tied" in winner.choice
    assert [(f.key, f.mean_rps, f.stdev_rps, f.runs) for f in winner.finalists] == [
        (BIG.key, 105.0, 5.0, 3), (SMALL.key, 100.0, 4.0, 3), (SLOW.key, 51.0, 1.0, 3),
    ]  # fmt: skip
    assert winner.finalists[0].interval_rps == [round(v, 2) for v in t95([100, 110, 105])]
    assert load_serve_config(path) == winner.config  # what `serve --config` reads


def test_a_winner_measured_once_claims_no_interval(tmp_path: Path) -> None:
    """One capacity search has no spread: the winner file carries no interval and no stdev for
    it (not a zero-width "95% interval"), nor for a finalist measured once."""
    alone = [finalist(0, BIG, [108.9]), finalist(1, SMALL, [84.5])]
    result = study_result(alone)
    assert result.winner is not None and result.winner.repeated_interval is None
    winner = load_winner(write_winner(tmp_path, "embedding", result.winner, SETTINGS, result.choice, alone))
    assert winner.goodput_rps == 108.9 and winner.goodput_measurements == [108.9]
    assert winner.goodput_interval_rps is None and winner.goodput_stdev_rps is None
    summaries = [(f.key, f.interval_rps, f.runs) for f in winner.finalists]
    assert summaries == [(BIG.key, None, 1), (SMALL.key, None, 1)]


def test_the_winner_file_of_a_non_batchable_endpoint_has_no_batching_knobs(tmp_path: Path) -> None:
    """A user's API without adaptive batching: the file carries no max_batch_size and
    max_latency_ms (placeholders nothing reads), and reads back as the config that was measured."""
    plain = "plain-api"
    register(dataclasses.replace(service_spec("noop"), key=plain, batchable=False, written_batching=None))
    try:
        config = Config(workers=2, threads=1)
        alone = [finalist(0, config, [940.0, 945.0])]
        result = study_result(alone)
        assert result.winner is not None
        path = write_winner(tmp_path, plain, result.winner, SETTINGS, result.choice, alone)
        written = yaml.safe_load(path.read_text())["config"]
        assert "max_batch_size" not in written and "max_latency_ms" not in written
        assert written["workers"] == 2 and written["threads"] == 1
        assert load_winner(path).config == config.serve_config(plain) == load_serve_config(path)
        batched = yaml.safe_load(write_winner(tmp_path, "noop", result.winner, SETTINGS).read_text())
        assert batched["config"]["max_batch_size"] == config.max_batch_size
    finally:
        unregister(plain)


def test_the_winner_file_of_a_service_as_written_among_variant_args_names_no_variant(tmp_path: Path) -> None:
    """With `--variant-arg`, `fp32` stands for none of the alternatives (no --arg): the file
    leaves the variant out, reads back as the measured config, and names an alternative that won."""
    own = "own-variants"
    register(dataclasses.replace(service_spec("noop"), key=own, variant_args=("size=small", "size=large")))
    try:
        for config, written in (
            (Config(workers=2, threads=1), None),
            (Config(variant="size=large"), "size=large"),
        ):
            alone = [finalist(0, config, [940.0, 945.0])]
            result = study_result(alone)
            assert result.winner is not None
            path = write_winner(tmp_path, own, result.winner, SETTINGS, result.choice, alone)
            assert yaml.safe_load(path.read_text())["config"].get("variant") == written
            assert load_winner(path).config == config.serve_config(own)
    finally:
        unregister(own)


def test_an_old_winner_file_without_the_new_fields_still_loads(tmp_path: Path) -> None:
    document = {
        "config": {"service": "embedding", "max_batch_size": 16, "max_latency_ms": 200, "workers": 1},
        "slo_p95_ms": 200.0, "goodput_rps": 50.0, "p95_ms": 150.0, "cores": 2,
        "goodput_spread_rps": 1.5, "goodput_measurements": [49.0, 51.0], "key": "b16-l200-w1-tauto-g0-fp32",
    }  # fmt: skip
    path = tmp_path / "winner.yaml"
    path.write_text(yaml.safe_dump(document))
    winner = load_winner(path)
    assert winner.goodput_rps == 50.0 and winner.config.max_batch_size == 16
    assert winner.goodput_interval_rps is None and winner.goodput_stdev_rps is None
    assert winner.statistically_tied_with == [] and winner.choice == "" and winner.finalists == []
    assert winner.goodput_measurements == [49.0, 51.0]
    path.write_text(yaml.safe_dump({**document, "goodput_interval_rps": [1.0, 2.0, 3.0]}))
    with pytest.raises(ConfigFileError, match="goodput_interval_rps"):
        load_winner(path)


def test_steps_json_is_strict_json_when_a_step_served_nothing(tmp_path: Path) -> None:
    """A step with no successful request has an infinite latency: null in the file, which
    strict readers (jq, browsers, `json.loads` refusing constants) accept."""
    step = dataclasses.replace(make_step(LoadStep(users=4, duration_s=2), 0.0, 0.0, 1.0),
                               client_p95_ms=math.inf, server_p95_ms=math.nan)  # fmt: skip
    record = TrialRecord(number=0, key="b8-l50-w1-t1-g0-fp32", config={}, status="infeasible", steps=[step])
    _, json_path = write_steps(tmp_path, [record])

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in steps.json")

    (stored,) = json.loads(json_path.read_text(), parse_constant=refuse)
    assert stored["steps"][0]["client_p95_ms"] is None and stored["steps"][0]["server_p95_ms"] is None
    assert stored["steps"][0]["requests"] == step.requests


def test_a_deployable_baseline_that_beats_every_tuned_config_is_the_winner(tmp_path: Path) -> None:
    """BentoML's default batching measured best: the winner file keeps it, and the naive
    baseline (another endpoint, not deployable as the tuned one) is never the winner."""
    from tests.fakes import smooth_surface
    from tuner.tuning import DEFAULT_LABEL, NAIVE_LABEL, bentoml_default_config, naive_config

    best_key = bentoml_default_config(2).key
    naive_key = naive_config(2).key

    def surface(config: Config, users: float) -> tuple[float, float, float]:
        rps, p95, failures = smooth_surface(config, users)
        if config.key in (best_key, naive_key):  # four times the capacity of any tuned config
            rps, p95, failures = smooth_surface(config, users / 4)
            rps *= 4
        return rps, p95, failures

    def outcome_with(default_baseline: bool) -> Any:
        deployer = FakeDeployer()
        options = TuneOptions(
            service="embedding", strategy="random", trials=3, out=tmp_path / str(default_baseline),
            finalists=1, repeats=1, naive_baseline=True, default_baseline=default_baseline,
        )  # fmt: skip
        space = default_space("embedding", Machine(2, 0))
        return run_tune(options, FakeLoadRunner(deployer, surface), space, deployer=deployer)

    kept = outcome_with(True)
    winner = kept.result.winner
    assert winner is not None and winner.first.label == DEFAULT_LABEL and winner.config.key == best_key
    assert kept.result.choice is not None and kept.result.choice.kept_baseline == DEFAULT_LABEL
    assert load_winner(kept.winner_file).config == bentoml_default_config(2).serve_config("embedding")
    assert "bentoml-default baseline" in kept.report.read_text()
    rows = finalist_rows(kept.result)
    assert [row[0] for row in rows].count(best_key) == 1 and "the bentoml-default baseline" in rows[-1][1]
    tuned = outcome_with(False)
    assert tuned.result.winner is not None and tuned.result.winner.first.kind == "trial"
    assert {b.label for b in tuned.baselines} == {NAIVE_LABEL}
