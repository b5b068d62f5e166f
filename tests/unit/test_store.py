"""Stored trial records: typed steps survive the JSONL round trip; old-format lines still load."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

from core.measurement import Invalidity, InvalidReason, LoadStep, StepMeasurement
from tests.fakes import make_step
from tuner.store import StudyStore, TrialRecord, step_to_dict

# A line as the store wrote it before invalid-window reasons were an enum (inf stored as null).
OLD_LINE = {
    "number": 0, "kind": "trial", "label": "", "strategy": "random", "key": "b8-l200-w2-t1-g0-fp32",
    "config": {"max_batch_size": 8, "max_latency_ms": 200, "workers": 2, "threads": 1},
    "status": "ok", "score": 40.0, "goodput_rps": 40.0, "best_step": 0, "reason": "",
    "steps": [
        {"step": {"users": 4, "duration_s": 5.0, "rate": None}, "duration_s": 5.0, "requests": 200,
         "successes": 200, "failures_by_status": {}, "rps": 40.0, "goodput_rps": 40.0,
         "failure_ratio": 0.0, "client_p50_ms": 20.0, "client_p95_ms": 50.0, "client_p99_ms": 60.0,
         "server_p50_ms": 15.0, "server_p95_ms": 45.0, "server_p99_ms": None, "in_progress": 1.5,
         "batch_size_hist": {"1": 50.0, "2": 75.0}, "requests_per_worker": {"1": 190.0, "2": 10.0},
         "generator_cpu": 0.2, "stable": True, "valid": False,
         "invalid_reasons": ["worker 2 served 5% of the requests (fair share 50%)",
                             "load generator saturated (0.95 cores in one process)", "something else"]},
        {"step": {"users": 8, "duration_s": 5.0}, "duration_s": 5.0, "requests": 10, "successes": 0,
         "failures_by_status": {"503": 10}, "rps": 2.0, "goodput_rps": 0.0, "failure_ratio": 1.0,
         "client_p50_ms": None, "client_p95_ms": None, "client_p99_ms": None},
    ],
}  # fmt: skip


def _record(steps: list[StepMeasurement]) -> TrialRecord:
    return TrialRecord(number=3, key="k", config={}, status="ok", best_step=0, steps=steps)


def test_typed_steps_round_trip_through_the_jsonl_store(tmp_path: Path) -> None:
    step = replace(
        make_step(LoadStep(users=4, duration_s=5.0, rate=20.0), 40.0, 80.0, 0.1),
        valid=False,
        invalid=(Invalidity(InvalidReason.UNEVEN_WORKERS, "worker 2 served 5% (fair share 50%)"),),
        server_source="prometheus",
        batch_size_hist={"4": 12.0},
    )
    failed = replace(step, successes=0, client_p95_ms=math.inf, invalid=(), server_source=None)
    store = StudyStore(tmp_path)
    store.open({"service": "digits"}, resume=False)
    store.append(_record([step, failed]))
    (back,) = store.records()
    assert back.steps == [step, failed]
    assert isinstance(back.steps[0], StepMeasurement)
    assert back.steps[0].invalid[0].reason is InvalidReason.UNEVEN_WORKERS
    assert back.steps[1].client_p95_ms == math.inf, "no successful request stays +inf, not 0 or None"
    line = json.loads(store.path.read_text())
    assert line["steps"][0]["invalid"] == [
        {"reason": "uneven_workers", "detail": "worker 2 served 5% (fair share 50%)"}
    ]


def test_an_old_record_with_reason_strings_still_loads(tmp_path: Path) -> None:
    store = StudyStore(tmp_path)
    store.path.write_text(json.dumps(OLD_LINE) + "\n")
    (record,) = store.records()
    first, second = record.steps
    assert [i.reason for i in first.invalid] == [
        InvalidReason.UNEVEN_WORKERS, InvalidReason.GENERATOR_SATURATED, InvalidReason.OTHER
    ]  # fmt: skip
    assert first.invalid[0].detail.startswith("worker 2 served 5%")
    assert first.server_source is None and first.server_p99_ms is None
    assert second.client_p95_ms == math.inf and second.step == LoadStep(users=8, duration_s=5.0)
    assert record.best_step_figures() == first
    assert record.best_step_batches() == (200.0, 125.0)


def test_best_step_is_none_without_a_scored_step() -> None:
    step = make_step(LoadStep(users=2, duration_s=5.0), 10.0, 50.0, 0.0)
    assert _record([step]).best_step_figures() == step
    unscored = TrialRecord(number=0, key="k", config={}, status="infeasible", steps=[step])
    assert unscored.best_step_figures() is None and unscored.best_step_batches() == (0.0, 0.0)


def test_study_dicts_become_typed_steps() -> None:
    step = replace(
        make_step(LoadStep(users=2, duration_s=5.0), 10.0, 50.0, 0.0),
        invalid=(Invalidity(InvalidReason.GENERATOR_SATURATED, "0.97 cores"),),
    )
    record = TrialRecord(number=0, key="k", config={}, status="ok", steps=[step_to_dict(step)])
    assert record.steps == [step]
