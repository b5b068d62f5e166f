"""The rendered Deployment's read-only root filesystem works: each service, run with the pod's
environment under a read-only root where only the pod's emptyDir mounts are writable, starts,
answers and exports its metrics.

Linux mount namespaces stand in for the container: `unshare --mount` (root only; skipped
elsewhere), `/` remounted read-only in that namespace alone, a fresh tmpfs on every emptyDir
mount path of the rendered pod, and the model store and the server's adapter folder
bind-mounted read-only (in the image both are part of the read-only Bento).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.polling import wait_until
from core.serveconfig import ServeConfig, WinnerFile
from core.server import REPO_ROOT, BentoServer
from deploy import k8s
from deploy.context import RenderContext
from deploy.plan import DeployOptions, size
from tests.integration.helpers import status_totals

pytestmark = pytest.mark.integration

READ_ONLY_MARK = "servetune: the root filesystem is read-only"
MOUNT_POINT = Path("/mnt")  # an existing folder to park the model store on before / turns read-only
REPO_PARK = Path("/srv")  # and one to park the checkout on (a checkout under /tmp is hidden by its tmpfs)
ADAPTER_PARK = Path("/opt")  # and the server's adapter folder (in its private home, under /tmp)
SCRIPT = f"""
set -eu
mount --bind "$RO_MODELS" {MOUNT_POINT}
mount --bind "$RO_REPO" {REPO_PARK}
mount --bind "$RO_ADAPTER" {ADAPTER_PARK}
mount -o remount,bind,ro /
for dir in $RO_WRITABLE; do mount -t tmpfs -o size=512m,mode=1777 tmpfs "$dir"; done
if touch "$RO_PROBE" 2>/dev/null; then echo "the root filesystem is writable"; exit 3; fi
echo "{READ_ONLY_MARK}"
mkdir -p "$RO_REPO"
mount --bind {REPO_PARK} "$RO_REPO"
mkdir -p "$RO_ADAPTER"
mount --bind {ADAPTER_PARK} "$RO_ADAPTER"
mount -o remount,bind,ro "$RO_ADAPTER"
mkdir -p "$BENTOML_HOME/models"
mount --bind {MOUNT_POINT} "$BENTOML_HOME/models"
mount -o remount,bind,ro "$BENTOML_HOME/models"
exec "$@"
"""


def can_unshare() -> bool:
    parks = all(folder.is_dir() for folder in (MOUNT_POINT, REPO_PARK, ADAPTER_PARK))
    if os.geteuid() != 0 or shutil.which("unshare") is None or not parks:
        return False
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    return subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0


def rendered_pod(service: str) -> dict[str, Any]:
    """The pod spec `servetune deploy` renders for a winner of `service`."""
    winner = WinnerFile(
        config=ServeConfig(service=service), slo_p95_ms=200.0, max_failure_ratio=0.01, goodput_rps=50.0
    )
    options = DeployOptions()
    context = RenderContext(winner, options, size(winner, options), f"servetune-{service}:x", "m:x")
    pod: dict[str, Any] = k8s.deployment(context)["spec"]["template"]["spec"]
    return pod


class ReadOnlyRootServer(BentoServer):
    """`bentoml serve` with the pod's environment, under a read-only root but its emptyDirs."""

    def __init__(self, service: str) -> None:
        super().__init__(ServeConfig(service=service).server_spec())
        pod = rendered_pod(service)
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        self.writable = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs]
        self.pod_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}

    def command(self) -> list[str]:
        namespace = ["unshare", "--mount", "--propagation", "private", "bash", "-c", SCRIPT, "bash"]
        return [*namespace, *super().command()]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env.update(self.pod_env)
        env.update(
            RO_MODELS=str((self.home / "models").resolve()),
            RO_REPO=str(REPO_ROOT),
            RO_ADAPTER=str(self.adapter_dir),
            RO_WRITABLE=" ".join(self.writable),
            RO_PROBE=f"/var/tmp/servetune-read-only-probe-{os.getpid()}",
        )
        return env


@pytest.fixture(scope="module")
def unshare_allowed() -> None:
    if not can_unshare():
        pytest.skip("needs root and `unshare --mount` (Linux mount namespaces)")


@pytest.fixture
def server(request: pytest.FixtureRequest, models_in_store: dict[str, str]) -> Iterator[ReadOnlyRootServer]:
    running = ReadOnlyRootServer(request.param)
    try:
        running.start(ready_timeout_s=120)
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("server", "route", "payload"),
    [
        ("digits", "/predict", {"images": [[0.0] * 64]}),
        ("embedding", "/encode", {"sentences": ["a read-only root filesystem"]}),
    ],
    indirect=["server"],
)
def test_the_service_serves_under_the_pods_read_only_root(
    unshare_allowed: None, server: ReadOnlyRootServer, route: str, payload: dict[str, Any]
) -> None:
    assert server.writable == [k8s.TMP_MOUNT]
    assert READ_ONLY_MARK in server.log.tail_text(200), server.log.tail_text()
    before = status_totals(server.url)
    for _ in range(3):
        response = httpx.post(f"{server.url}{route}", json=payload, timeout=60)
        assert response.status_code == 200, response.text[:300]
    # the workers' metric files (BENTOML_HOME/prometheus_multiproc_dir) are writable
    assert wait_until(lambda: (status_totals(server.url) - before)["200"] == 3, 10.0, interval_s=0.2)
    assert "Read-only file system" not in server.log.tail_text(200)
