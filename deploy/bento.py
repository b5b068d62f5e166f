"""The Bento: a bentofile with the winner's knobs baked in as build-time `args`, and its build.

`bentoml build` stores `args` in the Bento (bento.yaml); `bentoml serve <bento>` and the
container hand them to `bentoml.use_arguments()`, so the service starts with the tuned
max_batch_size, max_latency_ms, threads, variant and the exact model tag. Workers and GPUs are
service configuration: they travel as BENTOML_CONFIG_OVERRIDES in the Bento's `envs` (the
generated Dockerfile sets them) and in the Kubernetes Deployment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from core.registry import service_spec
from core.server import REPO_ROOT, BentoServer, ServerSpec, main_bentoml_home
from deploy.context import RenderContext

CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


class BentoBuildError(RuntimeError):
    """`bentoml build` failed; carries the tail of its output."""


def bento_name(service: str) -> str:
    return f"servetune-{service}"


def pinned(package: str) -> str:
    """`name==version` of the installed package (local suffix like +cpu dropped), else the name."""
    try:
        return f"{package}=={version(package).split('+')[0]}"
    except PackageNotFoundError:
        return package


def bento_args(context: RenderContext) -> dict[str, Any]:
    """The knobs `bentoml.use_arguments()` sees, with the exact model tag pinned."""
    args = {k: v for k, v in context.winner.config.knob_args().items() if v is not None}
    args["model_tag"] = context.model_tag
    return args


def bentofile(context: RenderContext) -> dict[str, Any]:
    """The bentofile.yaml document for the winner's service."""
    service = context.winner.config.service
    envs = [
        {"name": "BENTOML_DO_NOT_TRACK", "value": "True"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        {"name": "BENTOML_CONFIG_OVERRIDES", "value": json.dumps(context.config_overrides())},
    ]
    python: dict[str, Any] = {
        "packages": [pinned(p) for p in context.target.packages],
        "lock_packages": False,  # locking resolves against an index: offline builds need it off
    }
    if context.sizing.gpus == 0:
        python["extra_index_url"] = [CPU_TORCH_INDEX]  # the CPU wheel, not the multi-GB CUDA build
    return {
        "service": context.target.import_path,
        "name": bento_name(service),
        "description": f"servetune {service} with tuned serving knobs",
        "labels": {
            "servetune.io/service": service,
            "servetune.io/slo": context.slo_text,
            "servetune.io/goodput-rps": f"{context.winner.goodput_rps:g}",
        },
        "include": ["services/**/*.py"],
        "exclude": ["**/__pycache__", "**/*.pyc"],
        "python": python,
        "envs": envs,
        "models": [context.model_tag],
        "args": bento_args(context),
    }


def build_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(BENTOML_DO_NOT_TRACK="True", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def build(bentofile_path: Path, build_ctx: Path = REPO_ROOT, timeout_s: float = 300.0) -> str:
    """Run `bentoml build -f <bentofile> <ctx>` (a subprocess: it imports the service); the tag."""
    cmd = [
        sys.executable, "-m", "bentoml", "build", "-f", str(bentofile_path),
        "--output", "tag", str(build_ctx),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            cmd, env=build_environment(), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BentoBuildError(f"bentoml build did not finish within {timeout_s:.0f}s") from exc
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise BentoBuildError(f"bentoml build failed (exit {done.returncode}):\n{output[-3000:]}")
    # `-o tag` prints `__tag__:<name>:<version>` on stdout
    for line in done.stdout.splitlines():
        if line.startswith("__tag__:"):
            return line.removeprefix("__tag__:").strip()
    raise BentoBuildError(f"bentoml build printed no tag:\n{output[-3000:]}")


def bento_path(tag: str) -> Path:
    """Where the store keeps a built Bento."""
    import bentoml

    return Path(bentoml.bentos.get(tag).path)


def export_dockerfile(tag: str, dest: Path) -> Path:
    """Copy the Dockerfile (and its entrypoint) BentoML generated for `tag` into `dest`."""
    docker_dir = bento_path(tag) / "env" / "docker"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Dockerfile", "entrypoint.sh"):
        shutil.copyfile(docker_dir / name, dest / name)
    return dest / "Dockerfile"


class BuiltBentoServer(BentoServer):
    """`bentoml serve <bento tag>` from the store: the knobs come from the Bento's build-time args.

    Like BentoServer (own BENTOML_HOME, free port, bounded log, process-group stop), with the
    store's `bentos` linked next to `models`. No `--arg` is passed, so what the service sees is
    what `bentoml build` baked in; workers/GPUs still come from BENTOML_CONFIG_OVERRIDES.
    """

    def __init__(self, tag: str, service: str, workers: int = 1, gpus: int = 0) -> None:
        super().__init__(ServerSpec(service=service_spec(service), workers=workers, gpus=gpus))
        self.tag = tag
        bentos = main_bentoml_home() / "bentos"
        bentos.mkdir(parents=True, exist_ok=True)
        (self.home / "bentos").symlink_to(bentos, target_is_directory=True)

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "bentoml", "serve", self.tag,
            "--host", self.spec.host, "--port", str(self.port),
        ]  # fmt: skip

    def stop(self, grace_s: float = 10.0) -> None:
        link = self.home / "bentos"
        if link.is_symlink():
            link.unlink()
        super().stop(grace_s)
