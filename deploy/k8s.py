"""Kubernetes objects for the tuned service: Namespace, Deployment, Service, HPA, PDB, NetworkPolicy,
ServiceMonitor, and with auth on a Secret holding the bearer token.

Plain dicts (dumped as YAML by render.py), so the tests can validate exactly what is written.

Read-only root filesystem: what BentoML 1.4 writes while serving is all under /tmp, one emptyDir
(tests/integration/test_readonly_root.py runs both services with this pod's environment under a
read-only root where only the pod's emptyDirs are writable: they start, answer, count metrics):
- $BENTOML_HOME (/tmp/bentoml here): `prometheus_multiproc_dir` (every worker's metric files,
  wiped at each start), and the empty `tmp`, `envs`, `bentos` folders BentoML creates;
- $TMPDIR (/tmp): `bentoml-uds-*` (the Unix sockets between the server and its workers),
  `bentoml-client-*`, and torch's `torchinductor_<user>` cache;
- HOME and XDG_CACHE_HOME point into /tmp too, for libraries that cache under the home folder.
The Bento itself (code, model files) is only read.
"""

from __future__ import annotations

import json
from typing import Any

from deploy.context import BENTO_UID, CONTAINER_NAME, HTTP_PORT, RenderContext
from deploy.plan import quantity
from services.auth import AUTH_TOKEN_FILE_ENV, PLACEHOLDER_TOKEN

Obj = dict[str, Any]

# The custom metric prometheus-adapter serves (see prometheus.adapter_values).
RPS_METRIC = "servetune_inference_requests_per_second"
TMP_MOUNT = "/tmp"
WRITABLE_HOME = "/tmp/bentoml"  # BENTOML_HOME: its prometheus_multiproc_dir must be writable
AUTH_MOUNT = "/var/run/secrets/servetune"
AUTH_KEY = "token"  # the Secret's key, and the file name under AUTH_MOUNT


def metadata(context: RenderContext, name: str, component: str = "inference", **extra: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": context.namespace, "labels": context.labels(component)}
    meta.update(extra)
    return meta


def monitoring_metadata(context: RenderContext, name: str, **labels: str) -> Obj:
    """Metadata of objects a Prometheus Operator / Grafana sidecar selects by label."""
    meta = metadata(context, name)
    meta["labels"] = {**meta["labels"], **labels, **context.options.monitoring_labels}
    return meta


def namespace(context: RenderContext) -> Obj:
    """The namespace, enforcing the `restricted` Pod Security Standard our pods meet."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": context.namespace,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
    }


def pod_security_context(uid: int) -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Obj:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }


def tmp_volume() -> tuple[Obj, Obj]:
    """The writable scratch volume of a read-only root filesystem: (volume, mount)."""
    return (
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "tmp", "mountPath": TMP_MOUNT},
    )


def resources(context: RenderContext) -> Obj:
    sizing = context.sizing
    requests: Obj = {"cpu": quantity(sizing.cpu_request), "memory": f"{sizing.memory_request_mi}Mi"}
    limits: Obj = {"cpu": quantity(sizing.cpu_limit), "memory": f"{sizing.memory_limit_mi}Mi"}
    if sizing.gpus > 0:
        requests["nvidia.com/gpu"] = sizing.gpus
        limits["nvidia.com/gpu"] = sizing.gpus
    return {"requests": requests, "limits": limits}


def _probe(path: str, period_s: int, failures: int, timeout_s: int = 2) -> Obj:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failures,
    }


def auth_secret_name(context: RenderContext) -> str:
    return f"{context.name}-auth"


def auth_secret(context: RenderContext) -> Obj:
    """The bearer token as a Secret. It holds a placeholder the user replaces (the services refuse
    to start with it): servetune never writes a real token into the manifests."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(
            context,
            auth_secret_name(context),
            annotations={
                "servetune.io/replace": f"put a random token (>= 16 characters) in stringData.{AUTH_KEY}, "
                f"or: kubectl -n {context.namespace} create secret generic {auth_secret_name(context)} "
                f"--from-file={AUTH_KEY}=PATH",
            },
        ),
        "type": "Opaque",
        "stringData": {AUTH_KEY: PLACEHOLDER_TOKEN},
    }


def auth_volume(context: RenderContext) -> tuple[Obj, Obj]:
    """The Secret as a read-only file for the services' bearer auth: (volume, mount)."""
    return (
        {
            "name": "auth-token",
            "secret": {
                "secretName": auth_secret_name(context),
                "defaultMode": 0o440,  # owner root, group = fsGroup (the Bento user)
                "items": [{"key": AUTH_KEY, "path": AUTH_KEY}],
            },
        },
        {"name": "auth-token", "mountPath": AUTH_MOUNT, "readOnly": True},
    )


def deployment(context: RenderContext) -> Obj:
    """The inference Deployment; replicas are left to the HPA (no spec.replicas)."""
    volume, mount = tmp_volume()
    volumes, mounts = [volume], [mount]
    winner = context.winner
    env = [
        {"name": "BENTOML_CONFIG_OVERRIDES", "value": json.dumps(context.config_overrides())},
        {"name": "BENTOML_HOME", "value": WRITABLE_HOME},
        {"name": "BENTOML_DO_NOT_TRACK", "value": "True"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        {"name": "HOME", "value": TMP_MOUNT},
        {"name": "XDG_CACHE_HOME", "value": f"{TMP_MOUNT}/.cache"},
    ]
    if context.options.auth:
        secret_volume, secret_mount = auth_volume(context)
        volumes.append(secret_volume)
        mounts.append(secret_mount)
        env.append({"name": AUTH_TOKEN_FILE_ENV, "value": f"{AUTH_MOUNT}/{AUTH_KEY}"})
    container: Obj = {
        "name": CONTAINER_NAME,
        "image": context.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": resources(context),
        # BentoML answers /livez once the HTTP server runs and /readyz once the workers loaded
        # the model (4-6 s measured): the startup probe covers loading, then liveness takes over.
        "startupProbe": _probe("/livez", period_s=2, failures=60),
        "readinessProbe": _probe("/readyz", period_s=5, failures=3),
        "livenessProbe": _probe("/livez", period_s=10, failures=3),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    pod_spec: Obj = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(BENTO_UID),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": volumes,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": context.selector_labels()},
            }
        ],
    }
    if context.sizing.gpus > 0:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    knobs = winner.config
    annotations = {
        "servetune.io/bento": context.bento_tag,
        "servetune.io/knobs": json.dumps(knobs.model_dump(), sort_keys=True),
        "servetune.io/slo": context.slo_text,
        "servetune.io/measured-goodput-rps": f"{winner.goodput_rps:g}",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(context, context.name, annotations=annotations),
        "spec": {
            "selector": {"matchLabels": context.selector_labels()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": context.labels(),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(HTTP_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def service(context: RenderContext) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(context, context.name),
        "spec": {
            "type": "ClusterIP",
            "selector": context.selector_labels(),
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def network_policy(context: RenderContext) -> Obj:
    """Ingress to the inference pods only on the Service's port (TCP 3000), which also carries the
    /metrics scrape and the probes' traffic (kubelet probes are not subject to NetworkPolicy)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(context, context.name),
        "spec": {
            "podSelector": {"matchLabels": context.selector_labels()},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": HTTP_PORT}]}],
        },
    }


def hpa(context: RenderContext) -> Obj:
    """autoscaling/v2 HPA: RPS per pod (custom metric) with CPU utilisation as the fallback."""
    sizing = context.sizing
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(
            context,
            context.name,
            annotations={"servetune.io/sizing": "; ".join(sizing.explain())},
        ),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": context.name},
            "minReplicas": sizing.min_replicas,
            "maxReplicas": sizing.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": RPS_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": quantity(sizing.target_rps_per_pod),
                        },
                    },
                },
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": sizing.cpu_target_utilization,
                        },
                    },
                },
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 30},
                        {"type": "Pods", "value": 2, "periodSeconds": 30},
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
            },
        },
    }


def pdb(context: RenderContext) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(context, context.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": context.selector_labels()}},
    }


def service_monitor(context: RenderContext) -> Obj:
    """Prometheus Operator scrape config. honorLabels keeps BentoML's own `endpoint` label
    (the API route), which the operator's target label of the same name would otherwise rename."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": monitoring_metadata(context, context.name),
        "spec": {
            "selector": {"matchLabels": context.selector_labels()},
            "namespaceSelector": {"matchNames": [context.namespace]},
            "endpoints": [
                {"port": "http", "path": "/metrics", "interval": "15s", "honorLabels": True},
            ],
        },
    }


def inference_objects(context: RenderContext) -> dict[str, Obj]:
    """File name -> object, for DIR/k8s/."""
    objects = {
        "00-namespace.yaml": namespace(context),
        "deployment.yaml": deployment(context),
        "service.yaml": service(context),
        "networkpolicy.yaml": network_policy(context),
        "hpa.yaml": hpa(context),
        "pdb.yaml": pdb(context),
    }
    if context.options.auth:
        # Its own folder: `kubectl apply -f DIR/k8s/` (not recursive) must never overwrite the
        # token the user put in the Secret with this placeholder.
        objects["auth/secret.yaml"] = auth_secret(context)
    return objects
