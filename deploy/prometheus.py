"""Prometheus rules (recording + SLO alerts with the tuner's SLO) and prometheus-adapter rules.

Series are selected by `namespace` (added by the ServiceMonitor or the usual kubernetes-pods
relabelling), BentoML's `runner_name` (the service class) and `endpoint` (the API route).
Failures are 5xx answers, 503 deadline shedding included, as in the tuner's objective.
"""

from __future__ import annotations

from typing import Any

from core.registry import service_keys, service_spec
from deploy.context import RenderContext
from deploy.k8s import RPS_METRIC, monitoring_metadata

Obj = dict[str, Any]

REQUESTS = "bentoml_service_request_total"
DURATION = "bentoml_service_request_duration_seconds_bucket"
WINDOW = "5m"
# Gauges every service worker exports when it has a GPU, labelled `gpu` (the device index);
# memory used is per worker process (a `pid` label: prometheus multiprocess mode "liveall").
GPU_UTILIZATION = "servetune_gpu_utilization_ratio"
GPU_MEMORY_USED = "servetune_gpu_memory_used_bytes"
GPU_MEMORY_TOTAL = "servetune_gpu_memory_total_bytes"
GPU_MEMORY_ALERT_RATIO = 0.9  # the pod's workers' memory on one GPU / that GPU's memory, for 5m
GPU_BUSY_ALERT_RATIO = 0.95  # utilisation pinned above this for 10m


def record_names(context: RenderContext) -> dict[str, str]:
    """Names of the recording rules (the dashboard and alerts use them)."""
    return {
        "rps": "servetune:requests:rate1m",
        "rps_per_pod": "servetune:requests_per_pod:rate1m",
        "error_ratio": f"servetune:errors:ratio_rate{WINDOW}",
        "p50": f"servetune:request_duration_seconds:p50_{WINDOW}",
        "p95": f"servetune:request_duration_seconds:p95_{WINDOW}",
        "p99": f"servetune:request_duration_seconds:p99_{WINDOW}",
    }


def recording_rules(context: RenderContext) -> list[Obj]:
    sel = context.selector
    names = record_names(context)
    by = "namespace, runner_name"

    def quantile(q: float) -> str:
        return f"histogram_quantile({q}, sum by ({by}, le) (rate({DURATION}{{{sel}}}[{WINDOW}])))"

    return [
        {"record": names["rps"], "expr": f"sum by ({by}) (rate({REQUESTS}{{{sel}}}[1m]))"},
        {"record": names["rps_per_pod"], "expr": f"sum by ({by}, pod) (rate({REQUESTS}{{{sel}}}[1m]))"},
        {
            "record": names["error_ratio"],
            "expr": (
                f'sum by ({by}) (rate({REQUESTS}{{{sel}, http_response_code=~"5.."}}[{WINDOW}]))\n'
                f"/\nsum by ({by}) (rate({REQUESTS}{{{sel}}}[{WINDOW}]))"
            ),
        },
        {"record": names["p50"], "expr": quantile(0.5)},
        {"record": names["p95"], "expr": quantile(0.95)},
        {"record": names["p99"], "expr": quantile(0.99)},
    ]


def alert_rules(context: RenderContext) -> list[Obj]:
    """SLO alerts with the tuner's numbers: p95 (or p99, as tuned) over the SLO, failure ratio over its bound,
    pods past the measured per-replica capacity (the HPA is not keeping up or is at max)."""
    winner = context.winner
    names = record_names(context)
    ns = f'namespace="{context.namespace}", runner_name="{context.target.bento_name}"'
    labels = {"service": context.name}
    return [
        {
            "alert": "ServetuneLatencySLOBreached",
            "expr": f"{names[context.slo_quantile]}{{{ns}}} > {context.slo_seconds:g}",
            "for": "10m",
            "labels": {**labels, "severity": "page"},
            "annotations": {
                "summary": f"{context.name}: latency above the SLO ({context.slo_text})",
                "description": (
                    f"{context.slo_quantile} over 5m is {{{{ $value | humanizeDuration }}}}; the tuner sized "
                    f"this service for {context.slo_text}."
                ),
            },
        },
        {
            "alert": "ServetuneErrorRatioHigh",
            "expr": f"{names['error_ratio']}{{{ns}}} > {winner.max_failure_ratio:g}",
            "for": "5m",
            "labels": {**labels, "severity": "page"},
            "annotations": {
                "summary": f"{context.name}: more than {winner.max_failure_ratio:.2%} of requests fail",
                "description": "5xx ratio (503 load shedding included) is {{ $value | humanizePercentage }}.",
            },
        },
        {
            "alert": "ServetunePodOverMeasuredCapacity",
            "expr": f"{names['rps_per_pod']}{{{ns}}} > {winner.goodput_rps:g}",
            "for": "10m",
            "labels": {**labels, "severity": "warning"},
            "annotations": {
                "summary": f"{context.name}: a pod serves more than the {winner.goodput_rps:g} RPS "
                "one replica sustained in tuning",
                "description": "Pod {{ $labels.pod }} at {{ $value | humanize }} RPS: check the HPA "
                "(maxReplicas reached, or the custom RPS metric missing).",
            },
        },
    ]


def gpu_selector(context: RenderContext, namespace: str | None = None) -> str:
    """PromQL label matchers for the service's pods (the GPU gauges carry no BentoML labels)."""
    return f'namespace="{namespace or context.namespace}", pod=~"{context.name}-.*"'


def gpu_memory_ratio(selector: str) -> str:
    """Per pod and GPU: the memory all its workers use on that GPU / the GPU's memory."""
    by = "namespace, pod, gpu"
    return (
        f"sum by ({by}) ({GPU_MEMORY_USED}{{{selector}}})\n"
        f"/\nmax by ({by}) ({GPU_MEMORY_TOTAL}{{{selector}}})"
    )


def gpu_utilization(selector: str, by: str = "namespace, pod, gpu") -> str:
    """Per pod and GPU: the device's utilisation (max: every worker on a GPU reports the same)."""
    return f"max by ({by}) ({GPU_UTILIZATION}{{{selector}}})"


def gpu_alert_rules(context: RenderContext) -> list[Obj]:
    """GPU memory near full (CUDA out of memory next) and GPU pinned busy (the GPU is the
    bottleneck); none for a CPU winner."""
    if context.winner.config.gpus == 0:
        return []
    sel = gpu_selector(context)
    labels = {"service": context.name, "severity": "warning"}
    return [
        {
            "alert": "ServetuneGpuMemoryHigh",
            "expr": f"{gpu_memory_ratio(sel)}\n> {GPU_MEMORY_ALERT_RATIO:g}",
            "for": "5m",
            "labels": labels,
            "annotations": {
                "summary": f"{context.name}: GPU memory above {GPU_MEMORY_ALERT_RATIO:.0%} of the device",
                "description": "The workers of pod {{ $labels.pod }} use {{ $value | humanizePercentage }} "
                "of GPU {{ $labels.gpu }}'s memory: a larger batch or another worker may fail with "
                "CUDA out of memory.",
            },
        },
        {
            "alert": "ServetuneGpuSaturated",
            "expr": f"{gpu_utilization(sel)} > {GPU_BUSY_ALERT_RATIO:g}",
            "for": "10m",
            "labels": labels,
            "annotations": {
                "summary": f"{context.name}: a GPU busy above {GPU_BUSY_ALERT_RATIO:.0%} for 10 minutes",
                "description": "GPU {{ $labels.gpu }} of pod {{ $labels.pod }} is "
                "{{ $value | humanizePercentage }} busy: the GPU is the bottleneck; check that the HPA "
                "can add pods (maxReplicas).",
            },
        },
    ]


def rule_groups(context: RenderContext) -> list[Obj]:
    groups = [
        {"name": f"{context.name}.recording", "interval": "30s", "rules": recording_rules(context)},
        {"name": f"{context.name}.slo", "rules": alert_rules(context)},
    ]
    gpu = gpu_alert_rules(context)
    if gpu:
        groups.append({"name": f"{context.name}.gpu", "rules": gpu})
    return groups


def rules_file(context: RenderContext) -> Obj:
    """A Prometheus rule file (`rule_files:`), checked with `promtool check rules`."""
    return {"groups": rule_groups(context)}


def prometheus_rule(context: RenderContext) -> Obj:
    """The same groups as a Prometheus Operator PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": monitoring_metadata(context, context.name),
        "spec": {"groups": rule_groups(context)},
    }


def adapter_values(context: RenderContext) -> Obj:
    """prometheus-adapter (Helm values) rule serving the HPA's RPS-per-pod custom metric.

    Only inference routes count (probes and /metrics do not): the built-ins' and this service's
    tuned route; for the built-ins alone the rule is the same, so deploying several needs it once.
    """
    builtin = {
        service_spec(key).route for key in service_keys(tunable_only=True) if not service_spec(key).external
    }
    routes = "|".join(sorted(builtin | {context.route}))
    return {
        "rules": {
            "custom": [
                {
                    "seriesQuery": f'{REQUESTS}{{namespace!="",pod!=""}}',
                    "resources": {
                        "overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
                    },
                    "name": {"matches": f"^{REQUESTS}$", "as": RPS_METRIC},
                    "metricsQuery": (
                        f'sum(rate(<<.Series>>{{<<.LabelMatchers>>, endpoint=~"{routes}"}}[1m])) '
                        "by (<<.GroupBy>>)"
                    ),
                }
            ]
        }
    }
