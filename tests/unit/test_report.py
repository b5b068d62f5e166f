"""Study outputs from a fake study: HTML report, steps CSV/JSON, a winner file `serve --config` reads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from core.serveconfig import load_serve_config, load_winner
from tests.fakes import FakeDeployer, FakeLoadRunner
from tuner.space import Machine, default_space
from tuner.tuning import TuneOptions, run_tune


def test_outputs_of_a_fake_study(tmp_path: Path) -> None:
    deployer = FakeDeployer(fail_keys={"b8-l100-w1-t1-g0-fp32"})
    options = TuneOptions(
        service="embedding", strategy="grid", trials=6, out=tmp_path, finalists=2, repeats=2,
        users=(2, 4, 8, 16), step_s=5, warmup_s=1, naive_baseline=True,
    )  # fmt: skip
    space = default_space("embedding", Machine(2, 0))
    outcome = run_tune(options, FakeLoadRunner(deployer), space, deployer=deployer)
    assert outcome.baseline is not None and outcome.baseline.label == "naive"
    assert outcome.baseline.cfg.workers == 1 and outcome.baseline.cfg.threads == 2
    html = outcome.report.read_text()
    for heading in ("Goodput per trial", "Latency vs throughput", "batch sizes", "Trials by strategy"):
        assert heading in html
    assert html.count("<svg") >= 2
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # offline
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
    assert failed and "fake start failure" in failed[0].reason


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
