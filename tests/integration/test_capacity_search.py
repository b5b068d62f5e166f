"""The capacity search for real: `bentoml serve` of the no-op service, paced Locust load."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from core.deployer import LocalBentoDeployer
from tuner.capacity import CapacityRules
from tuner.objective import SLO
from tuner.space import Config
from tuner.trial import CapacityPlan, TrialRunner
from tuner.tuning import real_load_runner

pytestmark = pytest.mark.integration


def _children(word: str) -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if word in " ".join(p.cmdline())]


def test_the_search_brackets_the_no_op_services_knee(tmp_path: Path) -> None:
    """A tight SLO (p95 <= 25 ms, above the idle server's 12-17 ms jitter) puts the no-op
    service's knee within one Locust process's reach on a small machine; where the machine is
    fast enough that Locust runs out first, the search must say that the generator, not the
    server, was the limit."""
    slo = SLO(latency_ms=25.0)
    rules = CapacityRules(resolution=0.1, min_step_s=1.5, max_step_s=6.0, max_steps=14)
    deployer = LocalBentoDeployer("noop", tmp_path / "logs")
    runner = TrialRunner(deployer, real_load_runner(1.0, 0.3), CapacityPlan(rules, probe_s=1.5), slo, "noop")
    measured = runner.measure(Config(8, 5, 1, 1))
    assert measured.ok, measured.reason
    found = measured.capacity
    trace = [(round(s.step.rate or 0), round(slo.latency_of(s)), s.failure_ratio) for s in measured.steps]
    assert found is not None and found.steps == len(measured.steps) >= 2
    met = [s for s in measured.steps if not slo.violations(s)]
    breached = [s for s in measured.steps if slo.violations(s)]
    assert met, "the first paced step is well under the knee"
    for step in measured.steps:
        assert step.step.rate is not None and step.step.abort_above_ms == 2 * slo.latency_ms
        assert step.duration_s >= 1.0 or step.aborted
    assert any(step.kept_rate for step in met), trace  # paced users sent what was asked
    # A step counts when it met the SLO at a level that stands met (a confirmation can overturn
    # a pass, and a level judged on pooled failures can stand breached after a step that met).
    assert len(found.counted) == len(measured.steps)
    held = [s for s, ok in zip(measured.steps, found.counted, strict=True) if ok]
    if not held:  # a loaded machine: each level that met the SLO once failed when measured again
        assert found.knee is None and found.goodput_rps == 0.0, trace
        assert found.limited_by in ("step_cap", "infeasible") and found.note, trace
        assert not _children("locust") and not _children("bentoml")
        return
    assert all(not slo.violations(s) and not s.aborted for s in held), trace
    if found.limited_by != "generator":
        assert found.knee == pytest.approx(max(s.step.rate or 0.0 for s in held)), trace
    assert found.goodput_rps == pytest.approx(max(s.sustained_rps for s in held))
    if found.limited_by == "slo":
        assert found.converged and found.breach is not None
        assert found.breach / found.knee - 1 <= rules.resolution + 1e-9
        breach_rates = [s.step.rate or 0.0 for s in breached]
        assert any(r == pytest.approx(found.breach) for r in breach_rates), trace
        met_rates = [s.step.rate or 0.0 for s in met]
        for rate in breach_rates:  # a lower breach stands only if a recheck overturned it
            assert rate >= found.breach - 1e-9 or any(r == pytest.approx(rate) for r in met_rates), trace
    elif found.limited_by == "step_cap":  # a noisy machine can keep a bracket from closing
        assert found.steps >= rules.max_steps and found.note, trace  # repeats may run past it
    else:
        assert found.limited_by in ("generator", "max_load"), trace
        assert found.note
    assert not _children("locust") and not _children("bentoml")
