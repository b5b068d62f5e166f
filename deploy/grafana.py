"""A Grafana dashboard for the tuned service: traffic, latency vs SLO, errors, batching, pod resources
(and, for a GPU winner, a GPU row: utilisation per GPU, memory per worker against the GPU's).

Queries use the Grafana variables `$namespace` and `$__rate_interval`; `dashboard_queries()`
lists every expression so the tests can parse each one with promtool.
"""

from __future__ import annotations

import json
import math
from typing import Any

from deploy.context import CONTAINER_NAME, RenderContext
from deploy.k8s import monitoring_metadata
from deploy.prometheus import (
    DURATION,
    GPU_BUSY_ALERT_RATIO,
    GPU_MEMORY_ALERT_RATIO,
    GPU_MEMORY_TOTAL,
    GPU_MEMORY_USED,
    REQUESTS,
    gpu_selector,
    gpu_utilization,
)

Obj = dict[str, Any]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def _target(expr: str, legend: str, ref: str) -> Obj:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def _panel(
    panel_id: int,
    title: str,
    targets: list[tuple[str, str]],
    unit: str,
    grid: tuple[int, int],
    threshold: float | None = None,
) -> Obj:
    x, y = grid
    defaults: Obj = {"unit": unit}
    if threshold is not None:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": threshold}],
        }
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": 12, "h": 8},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }


def panels(context: RenderContext) -> list[Obj]:
    sel = f'namespace="$namespace", runner_name="{context.target.bento_name}", endpoint="{context.route}"'
    svc = f'namespace="$namespace", runner_name="{context.target.bento_name}"'
    pods = f'namespace="$namespace", pod=~"{context.name}-.*", container="{CONTAINER_NAME}"'
    winner, sizing = context.winner, context.sizing

    def quantile(q: float) -> str:
        return f"histogram_quantile({q}, sum by (le) (rate({DURATION}{{{sel}}}[{RATE}])))"

    batch = "bentoml_service_adaptive_batch_size"
    return [
        _panel(
            1,
            "Requests per second",
            [
                (f"sum(rate({REQUESTS}{{{sel}}}[{RATE}]))", "total"),
                (f"sum by (pod) (rate({REQUESTS}{{{sel}}}[{RATE}]))", "{{pod}}"),
                (f"vector({sizing.target_rps_per_pod:g})", "HPA target per pod"),
                (f"vector({winner.goodput_rps:g})", "measured capacity per pod"),
            ],
            "reqps",
            (0, 0),
        ),
        _panel(
            2,
            f"Latency p50 / p95 / p99 (SLO {context.slo_text})",
            [
                (quantile(0.5), "p50"),
                (quantile(0.95), "p95"),
                (quantile(0.99), "p99"),
            ],
            "s",
            (12, 0),
            threshold=context.slo_seconds,
        ),
        _panel(
            3,
            "Error ratio by status",
            [
                (
                    f"sum by (http_response_code) (rate({REQUESTS}{{{sel}}}[{RATE}]))\n"
                    f"/ ignoring (http_response_code) group_left\nsum(rate({REQUESTS}{{{sel}}}[{RATE}]))",
                    "{{http_response_code}}",
                ),
            ],
            "percentunit",
            (0, 8),
            threshold=winner.max_failure_ratio,
        ),
        _panel(
            4,
            "Requests in progress",
            [
                (f"sum by (pod) (bentoml_service_request_in_progress{{{sel}}})", "{{pod}}"),
            ],
            "short",
            (12, 8),
        ),
        _panel(
            5,
            f"Adaptive batch size (max_batch_size {winner.config.max_batch_size})",
            [
                (f"histogram_quantile(0.5, sum by (le) (rate({batch}_bucket{{{svc}}}[{RATE}])))", "p50"),
                (f"histogram_quantile(0.95, sum by (le) (rate({batch}_bucket{{{svc}}}[{RATE}])))", "p95"),
                (
                    f"sum(rate({batch}_sum{{{svc}}}[{RATE}])) / sum(rate({batch}_count{{{svc}}}[{RATE}]))",
                    "mean",
                ),
            ],
            "short",
            (0, 16),
            threshold=winner.config.max_batch_size,
        ),
        _panel(
            6,
            f"CPU per pod (request {sizing.cpu_request}, limit {sizing.cpu_limit} cores)",
            [
                (f"sum by (pod) (rate(container_cpu_usage_seconds_total{{{pods}}}[{RATE}]))", "{{pod}}"),
            ],
            "short",
            (12, 16),
            threshold=sizing.cpu_request,
        ),
        _panel(
            7,
            f"Memory per pod (request {sizing.memory_request_mi} MiB)",
            [
                (f"sum by (pod) (container_memory_working_set_bytes{{{pods}}})", "{{pod}}"),
            ],
            "bytes",
            (0, 24),
            threshold=sizing.memory_request_mi * 1024 * 1024,
        ),
    ]


def gpu_panels(context: RenderContext, above: list[Obj]) -> list[Obj]:
    """A GPU row below the panels `above`: utilisation per GPU, each worker's GPU memory against
    the GPU's; none for a CPU winner."""
    config = context.winner.config
    if config.gpus == 0:
        return []
    top = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in above)
    first = max(p["id"] for p in above) + 1
    sel = gpu_selector(context, "$namespace")
    per_gpu = math.ceil(config.workers / config.gpus)
    row = {"id": first, "type": "row", "title": f"GPU ({config.gpus} per pod, variant {config.variant})",
           "collapsed": False, "gridPos": {"x": 0, "y": top, "w": 24, "h": 1}, "panels": []}  # fmt: skip
    utilization = _panel(
        first + 1,
        f"GPU utilisation per GPU (alert above {GPU_BUSY_ALERT_RATIO:.0%} for 10m)",
        [(gpu_utilization(sel, by="pod, gpu"), "{{pod}} gpu {{gpu}}")],
        "percentunit",
        (0, top + 1),
        threshold=GPU_BUSY_ALERT_RATIO,
    )
    utilization["fieldConfig"]["defaults"].update({"min": 0, "max": 1})
    memory = _panel(
        first + 2,
        f"GPU memory per worker vs total ({per_gpu} worker(s) per GPU; alert above "
        f"{GPU_MEMORY_ALERT_RATIO:.0%} of total for 5m)",
        [
            (f"max by (pod, gpu, pid) ({GPU_MEMORY_USED}{{{sel}}})", "{{pod}} gpu {{gpu}} worker {{pid}}"),
            (f"sum by (pod, gpu) ({GPU_MEMORY_USED}{{{sel}}})", "{{pod}} gpu {{gpu}} all workers"),
            (f"max by (pod, gpu) ({GPU_MEMORY_TOTAL}{{{sel}}})", "{{pod}} gpu {{gpu}} total"),
        ],
        "bytes",
        (12, top + 1),
    )
    return [row, utilization, memory]


def dashboard(context: RenderContext) -> Obj:
    """The dashboard JSON model (import it in Grafana or provision it from a ConfigMap)."""
    base = panels(context)
    return {
        "uid": f"{context.name}"[:40],
        "title": f"servetune / {context.name}",
        "tags": ["servetune", "bentoml"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
                {
                    "name": "namespace",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": f"label_values({REQUESTS}, namespace)", "refId": "namespace"},
                    "current": {"text": context.namespace, "value": context.namespace},
                    "refresh": 2,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": [*base, *gpu_panels(context, base)],
    }


def dashboard_queries(board: Obj) -> list[str]:
    """Every PromQL expression in a dashboard (panel targets)."""
    return [target["expr"] for panel in board.get("panels", []) for target in panel.get("targets", [])]


def dashboard_configmap(context: RenderContext, board: Obj) -> Obj:
    """The dashboard as a ConfigMap the Grafana sidecar (kube-prometheus-stack) picks up."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": monitoring_metadata(context, f"{context.name}-dashboard", grafana_dashboard="1"),
        "data": {f"{context.name}.json": json.dumps(board, indent=2)},
    }
