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


def rule_groups(context: RenderContext) -> list[Obj]:
    return [
        {"name": f"{context.name}.recording", "interval": "30s", "rules": recording_rules(context)},
        {"name": f"{context.name}.slo", "rules": alert_rules(context)},
    ]


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
