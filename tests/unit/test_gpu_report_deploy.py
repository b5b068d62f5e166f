"""GPU figures where people see them: the study report, the progress lines, the Grafana dashboard
and the Prometheus alerts; and none of it for a CPU-only study or a CPU winner."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from core.measurement import StepMeasurement
from core.serveconfig import Config
from deploy import grafana, prometheus
from deploy.render import render_all
from deploy.validate import check_promql, check_rules, promtool, substitute_grafana, validate_object
from tests.unit.test_deploy_render import LOCUSTFILE, make_context, needs_promtool  # noqa: F401
from tests.unit.test_report import SETTINGS, rate_step
from tuner.commands.tune import record_line
from tuner.finalists import Finalist, choose
from tuner.objective import SLO, Objective
from tuner.report import ReportInputs, render_html, step_rows
from tuner.store import TrialRecord
from tuner.study import StudyResult

GIB = 2**30
TOTAL = 80 * GIB
GPU_CONFIG = Config(16, 100, 3, 1, 2, "fp16")  # 3 workers round-robin on 2 GPUs: 2 share one
CPU_CONFIG = Config(16, 100, 2, 1)
GPU_METRICS = (prometheus.GPU_UTILIZATION, prometheus.GPU_MEMORY_USED, prometheus.GPU_MEMORY_TOTAL)


def gpu_step(rate: float, p95: float, utilization: float, peak_bytes: int) -> StepMeasurement:
    return dataclasses.replace(
        rate_step(rate, p95),
        gpu_utilization=utilization,
        gpu_memory_peak_bytes=peak_bytes,
        gpu_memory_total_bytes=TOTAL,
    )


def measured(number: int, config: Config, steps: list[StepMeasurement]) -> TrialRecord:
    """A trial scored as the study scores one: its knee is the best step that met the SLO."""
    outcome = Objective(SLO(200.0)).evaluate(config, steps)
    return TrialRecord(
        number=number, key=config.key, config=config.to_dict(), status="ok", score=outcome.score,
        goodput_rps=outcome.goodput_rps, latency_ms=outcome.latency_ms, best_step=outcome.best_step,
        steps=steps,
    )  # fmt: skip


def gpu_study() -> StudyResult:
    """A GPU config whose knee (80 RPS, the second step) is at 73% utilisation, 2.25 GiB, next
    to a CPU config measured without GPU figures."""
    steps = [gpu_step(40, 50, 0.31, 3 * GIB // 2), gpu_step(80, 120, 0.73, 9 * GIB // 4),
             gpu_step(120, 260, 0.96, 3 * GIB)]  # fmt: skip
    gpu = measured(0, GPU_CONFIG, steps)
    cpu = measured(1, CPU_CONFIG, [rate_step(30, 80), rate_step(60, 300)])
    return study([gpu, cpu])


def study(records: list[TrialRecord]) -> StudyResult:
    finalists = [Finalist(r.cfg, r, []) for r in records]
    choice = choose(finalists, cores=2)
    assert choice is not None
    return StudyResult(records, finalists, choice.winner, choice=choice)


def gpu_section(html: str) -> str:
    (section,) = re.findall(r"<h2>GPU utilisation and memory</h2>(.*?)<h2>", html, flags=re.S)
    return section


def test_the_report_shows_gpu_figures_at_each_knee_and_the_winners_placement() -> None:
    result = study_gpu = gpu_study()
    assert study_gpu.winner is not None and study_gpu.winner.config == GPU_CONFIG
    section = gpu_section(render_html(result, ReportInputs("embedding", SETTINGS, {})))
    (row,) = re.findall(r"<tr><td>0</td>.*?</tr>", section)
    assert "<td>80 RPS offered</td><td>73%</td><td>2.25 GiB</td><td>80.00 GiB</td><td>3%</td>" in row
    assert "96%" not in section and "31%" not in section, "the knee step's figures, not another step's"
    assert CPU_CONFIG.key not in section, "a CPU config without GPU figures has no GPU row"
    assert "3 worker(s) on 2 GPU(s): 2 worker(s) per GPU, variant fp16" in section
    knee = "at its knee step GPU utilisation 73%, peak worker GPU memory 2.25 GiB of 80.00 GiB (3%)"
    assert knee in section


def test_a_cpu_winner_in_a_gpu_study_is_said_to_run_on_cpu() -> None:
    gpu = measured(0, GPU_CONFIG, [gpu_step(40, 50, 0.5, GIB)])
    cpu = measured(1, CPU_CONFIG, [rate_step(90, 80)])
    result = study([gpu, cpu])
    assert result.winner is not None and result.winner.config == CPU_CONFIG
    section = gpu_section(render_html(result, ReportInputs("embedding", SETTINGS, {})))
    assert "The winner runs on CPU (no GPU), variant fp32." in section
    assert "<td>40 RPS offered</td><td>50%</td><td>1.00 GiB</td>" in section


def test_a_cpu_only_report_says_nothing_about_gpus() -> None:
    records = [measured(0, CPU_CONFIG, [rate_step(30, 80), rate_step(60, 120)])]
    html = render_html(study(records), ReportInputs("embedding", SETTINGS, {}))
    assert "<b>Winner:</b>" in html
    assert "gpu" not in html.lower()
    assert not [k for row in step_rows(records) for k in row if k.startswith("gpu")]


def test_steps_csv_carries_the_gpu_columns_of_a_gpu_study() -> None:
    rows = step_rows(gpu_study().records)
    assert [r["gpu_utilization"] for r in rows] == [0.31, 0.73, 0.96, None, None]
    assert rows[1]["gpu_memory_peak_bytes"] == 9 * GIB // 4 and rows[1]["gpu_memory_total_bytes"] == TOTAL


def test_the_progress_line_adds_gpu_utilisation_only_when_known() -> None:
    gpu, cpu = gpu_study().records
    assert ", gpu util 73%, " in record_line(gpu, "p95")
    assert "gpu" not in record_line(cpu, "p95")


# -- deploy ----------------------------------------------------------------------------------------
def test_a_gpu_winner_gets_a_gpu_row_whose_queries_parse(needs_promtool: None) -> None:  # noqa: F811
    board = grafana.dashboard(make_context(gpus=2))
    row, utilization, memory = board["panels"][-3:]
    assert row["type"] == "row" and row["title"] == "GPU (2 per pod, variant fp32)"
    below = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"][:-3])
    assert row["gridPos"]["y"] == below and utilization["gridPos"]["y"] == memory["gridPos"]["y"] == below + 1
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    pods = 'namespace="$namespace", pod=~"servetune-digits-.*"'
    assert [t["expr"] for t in utilization["targets"]] == [
        f"max by (pod, gpu) (servetune_gpu_utilization_ratio{{{pods}}})"
    ]
    assert utilization["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert [t["expr"] for t in memory["targets"]] == [
        f"max by (pod, gpu, pid) (servetune_gpu_memory_used_bytes{{{pods}}})",
        f"sum by (pod, gpu) (servetune_gpu_memory_used_bytes{{{pods}}})",
        f"max by (pod, gpu) (servetune_gpu_memory_total_bytes{{{pods}}})",
    ]
    assert memory["fieldConfig"]["defaults"]["unit"] == "bytes"
    queries = grafana.dashboard_queries(board)
    assert check_promql([substitute_grafana(q) for q in queries]) == {}


def test_the_dashboard_names_the_workers_per_gpu() -> None:
    titles = [p["title"] for p in grafana.dashboard(make_context(gpus=1))["panels"]]
    assert any("2 worker(s) per GPU" in t for t in titles)  # make_context: 2 workers
    titles = [p["title"] for p in grafana.dashboard(make_context(gpus=2))["panels"]]
    assert any("1 worker(s) per GPU" in t for t in titles)


def test_a_cpu_winner_has_no_gpu_panels_or_alerts() -> None:
    context = make_context()
    text = json.dumps(grafana.dashboard(context)) + json.dumps(prometheus.rules_file(context))
    assert not [m for m in GPU_METRICS if m in text] and "GPU" not in text
    assert [g["name"] for g in prometheus.rule_groups(context)] == [
        "servetune-digits.recording",
        "servetune-digits.slo",
    ]


def gpu_alerts(rules: Path) -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(rules.read_text())["groups"]
    (gpu,) = [g for g in groups if g["name"] == "servetune-digits.gpu"]
    return {r["alert"]: r for r in gpu["rules"]}


def test_gpu_alerts_pass_promtool_and_the_crd_schema(tmp_path: Path, needs_promtool: None) -> None:  # noqa: F811
    context = make_context(gpus=1)
    rules = render_all(context, tmp_path, LOCUSTFILE).rules
    assert rules is not None
    ok, output = check_rules(rules)
    assert ok, output
    alerts = gpu_alerts(rules)
    assert sorted(alerts) == ["ServetuneGpuMemoryHigh", "ServetuneGpuSaturated"]
    memory, busy = alerts["ServetuneGpuMemoryHigh"], alerts["ServetuneGpuSaturated"]
    assert memory["for"] == "5m" and memory["expr"].endswith("> 0.9")
    assert all(m in memory["expr"] for m in GPU_METRICS[1:])
    assert busy["for"] == "10m" and busy["expr"].endswith("> 0.95") and GPU_METRICS[0] in busy["expr"]
    assert validate_object(prometheus.prometheus_rule(context), "1.30.0") == []


POD = "servetune-digits-5d8f7-x2x9q"


def series(metric: str, values: str, gpu: str, pod: str = POD, **labels: str) -> dict[str, str]:
    matchers = {"namespace": "ml-prod", "pod": pod, "gpu": gpu, **labels}
    text = ", ".join(f'{k}="{v}"' for k, v in matchers.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


def firing(alert: dict[str, Any], gpu: str, value: str) -> dict[str, Any]:
    """The alert as promtool reports it for `gpu` of POD, its annotations templated with `value`."""
    annotations = {
        key: text.replace("{{ $labels.pod }}", POD).replace("{{ $labels.gpu }}", gpu)
        .replace("{{ $value | humanizePercentage }}", value)
        for key, text in alert["annotations"].items()
    }  # fmt: skip
    labels = {**alert["labels"], "alertname": alert["alert"], "namespace": "ml-prod", "pod": POD, "gpu": gpu}
    return {"exp_labels": labels, "exp_annotations": annotations}


def test_gpu_alerts_fire_on_full_memory_and_a_pinned_gpu(tmp_path: Path, needs_promtool: None) -> None:  # noqa: F811
    """promtool's rule unit test on synthetic series: two workers share GPU 0 (40 + 55 of 100
    GiB: 95%), GPU 1 is half used and half busy, GPU 0 is 97% busy; another service's pod at
    99% is not this service's alert. Memory fires after 5 minutes, utilisation after 10."""
    rules = render_all(make_context(gpus=2), tmp_path, LOCUSTFILE).rules
    assert rules is not None
    alerts = gpu_alerts(rules)
    used, total, busy = prometheus.GPU_MEMORY_USED, prometheus.GPU_MEMORY_TOTAL, prometheus.GPU_UTILIZATION
    inputs = [
        series(used, f"{40 * GIB}x15", "0", pid="101"), series(used, f"{55 * GIB}x15", "0", pid="102"),
        series(used, f"{50 * GIB}x15", "1", pid="103"), series(total, f"{100 * GIB}x15", "0"),
        series(total, f"{100 * GIB}x15", "1"), series(busy, "0.97x15", "0"), series(busy, "0.5x15", "1"),
        series(used, f"{99 * GIB}x15", "0", pod="other-5d8f7-abcde", pid="7"),
        series(total, f"{100 * GIB}x15", "0", pod="other-5d8f7-abcde"),
        series(busy, "0.99x15", "0", pod="other-5d8f7-abcde"),
    ]  # fmt: skip
    memory, saturated = "ServetuneGpuMemoryHigh", "ServetuneGpuSaturated"
    checks = [
        {"eval_time": "4m", "alertname": memory, "exp_alerts": []},
        {"eval_time": "6m", "alertname": memory, "exp_alerts": [firing(alerts[memory], "0", "95%")]},
        {"eval_time": "9m", "alertname": saturated, "exp_alerts": []},
        {"eval_time": "11m", "alertname": saturated, "exp_alerts": [firing(alerts[saturated], "0", "97%")]},
    ]
    spec = tmp_path / "gpu-test.yml"
    spec.write_text(yaml.safe_dump({
        "rule_files": [str(rules)], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": inputs, "alert_rule_test": checks}],
    }))  # fmt: skip
    command = [promtool(), "test", "rules", str(spec)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
