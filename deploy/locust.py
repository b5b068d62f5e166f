"""Distributed Locust for load-testing the cluster deployment with the tuner's own locustfile.

The locustfile travels in a ConfigMap (edit it without rebuilding); its imports (loadtests/,
services/ for the held-out payloads) come from a small image built from DIR/locust/Dockerfile.
The master serves the web UI on 8089 and waits for the workers on 5557.
"""

from __future__ import annotations

import ast
from typing import Any

from core.registry import service_spec
from deploy.bento import pinned
from deploy.context import HTTP_PORT, RenderContext
from deploy.k8s import container_security_context, metadata, pod_security_context, tmp_volume

Obj = dict[str, Any]

LOCUST_VERSION = "2.47.0"
LOCUST_UID = 1000  # the `locust` user of the official image
MOUNT = "/mnt/locust"
WEB_PORT = 8089
MASTER_PORT = 5557
USER_BASES = {"User", "HttpUser", "FastHttpUser"}


def user_classes(source: str) -> list[str]:
    """Names of classes in a locustfile that derive from a Locust user class (by base name)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            bases = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases}
            if bases & USER_BASES:
                names.append(node.name)
    return names


def pick_user_class(source: str, service: str) -> str | None:
    """The service's registered Locust user class when the file defines it, else None (Locust
    then runs every user class of the file)."""
    wanted = service_spec(service).locust_user
    return wanted if wanted in user_classes(source) else None


def _names(context: RenderContext) -> tuple[str, str, str]:
    base = f"{context.name}-locust"
    return f"{base}-master", f"{base}-worker", f"{base}-file"


def _locust_args(context: RenderContext, user_class: str | None, *role: str) -> list[str]:
    args = ["-f", f"{MOUNT}/locustfile.py", *role]
    return [*args, user_class] if user_class else args


def _pod(context: RenderContext, component: str, args: list[str], ports: list[Obj], cpu: str) -> Obj:
    volume, mount = tmp_volume()
    _, _, configmap = _names(context)
    container: Obj = {
        "name": "locust",
        "image": context.options.locust_image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": [
            {"name": "PYTHONPATH", "value": "/opt/servetune"},
            {"name": "HOME", "value": "/tmp"},
            {"name": "SERVETUNE_SERVICE", "value": context.winner.config.service},
        ],
        "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}, "limits": {"cpu": cpu, "memory": "1Gi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [mount, {"name": "locustfile", "mountPath": MOUNT, "readOnly": True}],
    }
    if ports:
        container["ports"] = ports
        container["readinessProbe"] = {"tcpSocket": {"port": ports[0]["name"]}, "periodSeconds": 5}
    return {
        "metadata": {"labels": context.labels(component)},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(LOCUST_UID),
            "containers": [container],
            "volumes": [volume, {"name": "locustfile", "configMap": {"name": configmap}}],
        },
    }


def objects(context: RenderContext, locustfile_source: str) -> dict[str, Obj]:
    """File name -> object, for DIR/k8s/locust/ (apply it only when you want to load-test)."""
    master, worker, configmap = _names(context)
    user_class = pick_user_class(locustfile_source, context.winner.config.service)
    host = f"http://{context.name}.{context.namespace}.svc:{HTTP_PORT}"
    workers = context.options.locust_workers
    master_args = _locust_args(
        context, user_class, "--master", "--host", host, "--expect-workers", str(workers)
    )
    worker_args = _locust_args(context, user_class, "--worker", "--master-host", master)
    master_ports = [
        {"name": "web", "containerPort": WEB_PORT, "protocol": "TCP"},
        {"name": "master", "containerPort": MASTER_PORT, "protocol": "TCP"},
    ]

    def deployment(name: str, component: str, replicas: int, pod: Obj) -> Obj:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(context, name, component),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": context.selector_labels(component)},
                "template": pod,
            },
        }

    return {
        "locustfile-configmap.yaml": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(context, configmap, "locust-master"),
            "data": {"locustfile.py": locustfile_source},
        },
        "master-deployment.yaml": deployment(
            master, "locust-master", 1, _pod(context, "locust-master", master_args, master_ports, "1")
        ),
        "master-service.yaml": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(context, master, "locust-master"),
            "spec": {
                "type": "ClusterIP",
                "selector": context.selector_labels("locust-master"),
                "ports": [
                    {"name": "web", "port": WEB_PORT, "targetPort": "web", "protocol": "TCP"},
                    {"name": "master", "port": MASTER_PORT, "targetPort": "master", "protocol": "TCP"},
                ],
            },
        },
        "worker-deployment.yaml": deployment(
            worker, "locust-worker", workers, _pod(context, "locust-worker", worker_args, [], "1")
        ),
    }


def dockerfile() -> str:
    """The Locust image: the official one plus the packages the locustfile imports."""
    packages = " ".join(f'"{pinned(p)}"' for p in ("numpy", "scikit-learn", "pydantic", "httpx"))
    return "\n".join(
        [
            "# Build from the repository root:",
            "#   docker build -f <DIR>/locust/Dockerfile -t servetune-locust:0.1.0 .",
            f"FROM locustio/locust:{LOCUST_VERSION}",
            "USER root",
            f"RUN pip install --no-cache-dir {packages}",
            f"COPY --chown={LOCUST_UID}:{LOCUST_UID} core /opt/servetune/core",
            f"COPY --chown={LOCUST_UID}:{LOCUST_UID} services /opt/servetune/services",
            f"COPY --chown={LOCUST_UID}:{LOCUST_UID} loadtests /opt/servetune/loadtests",
            "ENV PYTHONPATH=/opt/servetune",
            f"USER {LOCUST_UID}",
            "",
        ]
    )
