"""The Bento: a bentofile with the winner's knobs baked in as build-time `args`, and its build.

`bentoml build` stores `args` in the Bento (bento.yaml); `bentoml serve <bento>` and the
container hand them to `bentoml.use_arguments()`, so the service starts with the tuned
max_batch_size, max_latency_ms, threads, variant and the exact model tag. Workers and GPUs are
service configuration: they travel as BENTOML_CONFIG_OVERRIDES in the Bento's `envs` (the
generated Dockerfile sets them) and in the Kubernetes Deployment.

A user's own service (a winner with `target` / `working_dir`) is built from a copy of its
working dir with services/adapter.py added as `servetune_adapter.py`: the bentofile is the
user's own (include/exclude, python, docker, labels, envs kept) with `service` set to the adapter
and the knobs baked in as `envs` (the container's ENV) and in `servetune_adapter.env.json` next
to the adapter (so `bentoml serve <bento>` runs them too; a variable set outside wins).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from core.registry import service_spec
from core.server import REPO_ROOT, BentoServer, ServerSpec, main_bentoml_home
from deploy.context import RenderContext, dns_name
from services import adapter, gpumetrics

CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
ADAPTER_MODULE = "servetune_adapter"  # services/adapter.py as the Bento carries it
GPU_METRICS_FILE = "servetune_gpumetrics.py"  # services/gpumetrics.py: the adapter imports it by this name
ADAPTER_FILES = (f"{ADAPTER_MODULE}.py", f"{ADAPTER_MODULE}{adapter.DEFAULTS_SUFFIX}", GPU_METRICS_FILE)
USER_BENTOFILES = ("bentofile.yaml", "bentofile.yml")
# Never copied from a user's working dir into the build folder (caches, VCS, environments).
SKIPPED = (".git", ".hg", ".venv", "venv", "__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache",
           ".ruff_cache", "node_modules", ".ipynb_checkpoints")  # fmt: skip
ADAPTER_KNOBS = (adapter.ENV_TARGET, adapter.ENV_WORKING_DIR, adapter.ENV_BATCHING, adapter.ENV_THREADS,
                 adapter.ENV_GPUS, adapter.ENV_SERVICE_NAME, adapter.ENV_PRIOR)  # fmt: skip


class BentoBuildError(RuntimeError):
    """`bentoml build` failed; carries the tail of its output."""


def bento_name(service: str) -> str:
    return f"servetune-{dns_name(service)}"


# uvicorn picks these when installed, and the tuner measured with them: a Bento without them
# serves on asyncio + h11 (the serving-efficiency bench: x1.05 slower on MiniLM).
MEASURED_WITH = ("uvloop", "httptools")


def _package_name(requirement: str) -> str:
    """`uvloop` of `uvloop>=0.19; sys_platform != 'win32'`, lower case."""
    return re.split(r"[\s<>=!~;\[@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


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
    if context.external:
        return user_bentofile(context, read_user_bentofile(user_working_dir(context)))
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


def user_working_dir(context: RenderContext) -> Path:
    """The folder the user's service is imported from (as resolved for this deploy)."""
    folder = context.target.working_dir or context.winner.working_dir
    if folder is None:
        raise BentoBuildError(f"{context.target.key} has no working dir to build a Bento from")
    return Path(folder)


def read_user_bentofile(working_dir: Path) -> dict[str, Any]:
    """The user's own bentofile.yaml (or .yml) as a mapping; empty when there is none."""
    for name in USER_BENTOFILES:
        path = working_dir / name
        if path.is_file():
            try:
                document = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise BentoBuildError(f"cannot read {path}: {exc}") from exc
            if document is None:
                return {}
            if not isinstance(document, dict):
                raise BentoBuildError(f"{path}: expected a mapping")
            return document
    return {}


def adapter_env(context: RenderContext) -> dict[str, str]:
    """The environment the adapter serves the user's service with: target (relative to the
    Bento's source folder, the working dir inside it), batching, threads, GPUs, workers."""
    reference = context.winner.target_ref()
    if reference is None:
        raise BentoBuildError("the winner file names no target (a built-in service needs no adapter)")
    threads = str(context.sizing.threads_per_worker)
    knobs = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OMP_WAIT_POLICY": "PASSIVE"}
    return {
        adapter.ENV_TARGET: reference.target,
        adapter.ENV_SERVICE_NAME: context.winner.config.service,
        adapter.ENV_BATCHING: json.dumps(context.winner.config.server_spec().batching()),
        adapter.ENV_THREADS: threads,
        adapter.ENV_GPUS: str(context.sizing.gpus),
        **knobs,  # OMP_WAIT_POLICY as measured (core/server.py)
        adapter.ENV_PRIOR: adapter.prior_environment({}, knobs),  # a dependency's processes drop them
        "BENTOML_CONFIG_OVERRIDES": json.dumps(context.config_overrides()),
    }


def user_bentofile(context: RenderContext, user: dict[str, Any]) -> dict[str, Any]:
    """The user's bentofile with the adapter as the service and the knobs in `envs`."""
    service = context.winner.config.service
    knobs = {"BENTOML_DO_NOT_TRACK": "True", **adapter_env(context)}
    envs = [e for e in user.get("envs") or [] if isinstance(e, dict) and e.get("name") not in knobs]
    python = dict(user.get("python") or {"packages": [pinned("bentoml")]})
    python.setdefault("lock_packages", False)  # locking resolves against an index: offline needs it off
    listed = {_package_name(p) for p in python.get("packages") or [] if isinstance(p, str)}
    serving = [pinned(p) for p in MEASURED_WITH if p not in listed]
    python["packages"] = [*(python.get("packages") or []), *serving]
    document = {
        **user,
        "service": f"{ADAPTER_MODULE}:service",
        "name": bento_name(service),
        "description": user.get("description") or f"{service} with servetune's tuned serving knobs",
        "labels": {**(user.get("labels") or {}), **servetune_labels(context)},
        "exclude": [*(user.get("exclude") or []), "**/__pycache__", "**/*.pyc"],
        "python": python,
        "envs": [*envs, *({"name": k, "value": v} for k, v in knobs.items())],
    }
    if user.get("include"):
        document["include"] = [*user["include"], *ADAPTER_FILES]
    reference = context.winner.target_ref()
    args = {**(user.get("args") or {}), **(reference.service_args if reference is not None else {})}
    variant = context.winner.config.variant
    if "=" in variant:  # the winner is one of the user's alternatives: its --arg pair
        name, _, value = variant.partition("=")
        args[name] = value
    if args:
        document["args"] = args
    return document


def servetune_labels(context: RenderContext) -> dict[str, str]:
    return {
        "servetune.io/service": context.winner.config.service,
        "servetune.io/endpoint": context.route,
        "servetune.io/slo": context.slo_text,
        "servetune.io/goodput-rps": f"{context.winner.goodput_rps:g}",
    }


def prepare_build_dir(working_dir: Path, dest: Path, env: dict[str, str]) -> Path:
    """A copy of the user's working dir (without caches and VCS folders) plus the adapter and
    its environment defaults; `bentoml build` then applies the bentofile's include/exclude."""
    if not working_dir.is_dir():
        raise BentoBuildError(f"working_dir: {working_dir} is not a folder")
    shutil.copytree(working_dir, dest, ignore=shutil.ignore_patterns(*SKIPPED), symlinks=True)
    shutil.copyfile(adapter.__file__, dest / ADAPTER_FILES[0])
    (dest / ADAPTER_FILES[1]).write_text(json.dumps(env, indent=2) + "\n")
    shutil.copyfile(gpumetrics.__file__, dest / GPU_METRICS_FILE)
    return dest


def build_bento(context: RenderContext, bentofile_path: Path) -> str:
    """Build the winner's Bento: from the repository for a built-in service, else from a copy of
    the user's working dir with the adapter added (removed after the build); the tag."""
    if not context.external:
        return build(bentofile_path)
    with tempfile.TemporaryDirectory(prefix="servetune-bento-") as tmp:
        src = prepare_build_dir(user_working_dir(context), Path(tmp) / "src", adapter_env(context))
        return build(bentofile_path, src)


def build_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ADAPTER_KNOBS}
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

    def environment(self) -> dict[str, str]:
        """BentoServer's, less the adapter's knobs and thread counts: the Bento runs its own."""
        drop = {*ADAPTER_KNOBS, "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
        return {k: v for k, v in super().environment().items() if k not in drop}

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
