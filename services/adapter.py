"""Serve any BentoML service with servetune's knobs set from outside, without editing its code.

`bentoml serve servetune_adapter:service --working-dir <the user's project>` (core/server.py
copies this file as `servetune_adapter.py` into a folder of its own, first on PYTHONPATH, so a
project with packages named like servetune's imports its own) with the environment below loads
the user's service (as `bentoml serve <target>` would) and, in every process that
imports it (the arbiter and each worker of the target; a worker of a `bentoml.depends` service
only gets back the thread and GPU variables the launcher replaced, as they were before:
SERVETUNE_SERVICE_NAME names the target, SERVETUNE_PRIOR_ENV holds what they were):
- sets `max_batch_size` / `max_latency_ms` on the named batchable APIs (`APIMethod` attributes,
  read when the worker builds its batching dispatchers; tests/unit/test_adapter.py pins this);
- narrows CUDA_VISIBLE_DEVICES to this worker's GPU before the user's code imports torch
  (BentoML hands every worker the same list);
- sets torch's thread count when the service uses torch (BentoML sets none), at import and
  again after the service's `__init__`;
- starts the GPU metrics sampler (services/gpumetrics.py: utilisation and memory gauges, read in
  a background thread) in every worker placed on a GPU, once the service's `__init__` has run
  (SERVETUNE_GPU_METRICS=0: not started);
- writes one JSON line per worker (pid, worker index, threads, batching, devices, whether GPU
  metrics run) to SERVETUNE_EVIDENCE when set, once the service's `__init__` has run (torch is
  often imported there), so a launcher can prove the knobs took effect;
- trims the per-request path (bench/serving_efficiency.py measures each switch): uvicorn runs on
  uvloop + httptools when installed (SERVETUNE_UVLOOP=0: asyncio + h11), and BentoML's
  OpenTelemetry middleware, which creates a span per request even when no exporter is set, is
  left out unless tracing is configured or SERVETUNE_TRACING=1 (a cheap middleware keeps the
  X-BentoML-Request-ID header and the log's request id).

Inside a Bento (`servetune deploy`) this file is copied as `servetune_adapter.py` next to a
`servetune_adapter.env.json` holding the tuned environment; it fills in every variable the
environment does not set, so `bentoml serve <bento>` runs the knobs without any `--arg` or
exported variable (the container gets the same values as ENV). The working dir is then the
Bento's source folder: BentoML imports the service with that as the current folder. Its GPU
metrics need services/gpumetrics.py next to it as `servetune_gpumetrics.py` (without it the
Bento's workers export none).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import random
import sys
from collections.abc import Callable
from typing import Any

ENV_TARGET = "SERVETUNE_TARGET"  # "path/to/service.py:Class" or "package.module:Class"
ENV_WORKING_DIR = "SERVETUNE_WORKING_DIR"  # folder the target is imported from (default: cwd)
ENV_BATCHING = "SERVETUNE_BATCHING"  # JSON {"api name": {"max_batch_size": n, "max_latency_ms": m}}
ENV_THREADS = "SERVETUNE_THREADS"  # torch threads per worker
ENV_GPUS = "SERVETUNE_GPUS"  # GPUs handed to the service; workers are placed round-robin on them
ENV_EVIDENCE = "SERVETUNE_EVIDENCE"  # file each worker appends one JSON line to
ENV_UVLOOP = "SERVETUNE_UVLOOP"  # 0: uvicorn on asyncio + h11 even where uvloop/httptools exist
ENV_TRACING = "SERVETUNE_TRACING"  # 1: keep the OpenTelemetry middleware without an exporter
ENV_GPU_METRICS = "SERVETUNE_GPU_METRICS"  # 0: no GPU metrics sampler in the workers
ENV_SERVICE_NAME = "SERVETUNE_SERVICE_NAME"  # the target's service name: the knobs are its own
ENV_PRIOR = "SERVETUNE_PRIOR_ENV"  # JSON {variable: {"before": value or null, "set": value}}
PRIOR_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "CUDA_VISIBLE_DEVICES")
GPU_METRICS_MODULES = ("servetune_gpumetrics", "services.gpumetrics")  # a Bento's copy, the repo's
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

DEFAULTS_SUFFIX = ".env.json"  # next to this file: environment defaults (a built Bento's knobs)

Batching = dict[str, dict[str, int]]


class AdapterError(RuntimeError):
    """The environment asks for something the target service does not have."""


def read_batching(raw: str | None) -> Batching:
    """The batching overrides from their JSON text (empty when unset)."""
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise AdapterError(f"{ENV_BATCHING} must be a JSON object, got {raw!r}")
    return {str(k): {str(f): int(n) for f, n in v.items()} for k, v in value.items()}


def apply_batching(service: Any, batching: Batching) -> None:
    """Set the adaptive-batching parameters of the named APIs of a loaded service."""
    for name, params in batching.items():
        method = service.apis.get(name)
        if method is None:
            raise AdapterError(f"service {service.name} has no API {name!r}; it has {sorted(service.apis)}")
        if not method.batchable:
            raise AdapterError(f"API {name!r} of {service.name} is not batchable")
        for field in ("max_batch_size", "max_latency_ms"):
            if field in params:
                setattr(method, field, params[field])


def worker_gpu(gpus: int, worker_index: int | None, visible: list[str]) -> str | None:
    """The one device this worker keeps (round-robin by 1-based index), or None to leave all."""
    usable = visible[: max(0, gpus)] if gpus > 0 else []
    if not usable or worker_index is None:
        return None
    return usable[(worker_index - 1) % len(usable)]


def visible_devices(gpus: int) -> list[str]:
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return [str(i) for i in range(gpus)]
    return [d.strip() for d in raw.split(",") if d.strip()]


def place_worker(gpus: int, worker_index: int | None) -> None:
    device = worker_gpu(gpus, worker_index, visible_devices(gpus))
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device


def apply_threads(threads: int | None) -> int | None:
    """torch.set_num_threads in this process when the service imported torch; the count set."""
    if threads is None or "torch" not in sys.modules:
        return None
    torch = sys.modules["torch"]
    torch.set_num_threads(threads)
    return int(torch.get_num_threads())


def write_evidence(path: str | None, record: dict[str, Any]) -> None:
    """Append `record` to `path`; a file that cannot be written (a read-only root) is skipped:
    the evidence is for tests and reports, never a reason for a worker not to start."""
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError:
        return


def defaults_path(module_file: str = __file__) -> str:
    """`servetune_adapter.env.json` next to `servetune_adapter.py` (none next to services/adapter.py)."""
    return os.path.splitext(module_file)[0] + DEFAULTS_SUFFIX


def apply_defaults(path: str) -> dict[str, str]:
    """Set each variable of the JSON object in `path` the environment lacks; the ones set."""
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        values = json.load(handle)
    if not isinstance(values, dict):
        raise AdapterError(f"{path} must hold a JSON object of environment variables")
    applied = {str(k): str(v) for k, v in values.items() if str(k) not in os.environ}
    os.environ.update(applied)
    return applied


def after_init(service: Any, callback: Callable[[], None]) -> None:
    """Call `callback()` right after the service class's own `__init__` (BentoML instantiates it
    in each worker once the module is imported)."""
    inner = service.inner
    original = inner.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        callback()

    inner.__init__ = init


def start_gpu_metrics(gpus: int) -> Any:
    """This worker's GPU metrics sampler (services/gpumetrics.py, or the copy a Bento carries);
    None when the worker has no GPU, the switch is off, or the sampler does not start."""
    if gpus <= 0 or switched_off(ENV_GPU_METRICS):
        return None
    for name in GPU_METRICS_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return module.start_sampler()
    return None


def _start_worker(service: Any, worker_index: int, threads: int | None, gpus: int) -> None:
    sampler = start_gpu_metrics(gpus)
    _record_worker(service, worker_index, threads, gpu_metrics=sampler is not None)


def _record_worker(service: Any, worker_index: int, threads: int | None, gpu_metrics: bool = False) -> None:
    write_evidence(
        os.environ.get(ENV_EVIDENCE),
        {
            "pid": os.getpid(),
            "worker_index": worker_index,
            "service": service.name,
            "torch_threads": apply_threads(threads),
            "batching": {
                name: {"max_batch_size": m.max_batch_size, "max_latency_ms": m.max_latency_ms}
                for name, m in service.apis.items()
                if m.batchable
            },
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpu_metrics": gpu_metrics,
        },
    )


def switched_off(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in FALSE_WORDS


def use_plain_protocols() -> None:
    """Make uvicorn's "auto" choices fall back to asyncio and h11: it picks uvloop and httptools
    by importing them when it starts, after the service module is imported."""
    sys.modules["uvloop"] = None  # type: ignore[assignment]
    sys.modules["httptools"] = None  # type: ignore[assignment]


class RequestIdMiddleware:
    """Gives each HTTP request the random request id BentoML's tracing hook would have set."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            from bentoml._internal.context import trace_context

            trace_context.request_id = random.getrandbits(63) or 1
        await self.app(scope, receive, send)


def tracing_configured() -> bool:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return bool(BentoMLContainer.config.tracing.exporter_type.get())


def drop_idle_tracing() -> bool:
    """Leave BentoML's OpenTelemetry middleware out of every service app built in this process
    when no tracing exporter is configured; whether it was left out."""
    if tracing_configured() or os.environ.get(ENV_TRACING, "").strip() == "1":
        return False
    from _bentoml_impl.server.app import ServiceAppFactory
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.middleware import Middleware

    built = ServiceAppFactory.middlewares
    if not isinstance(built, property) or built.fget is None:
        return False  # BentoML changed: keep its middlewares as they are
    original = built.fget

    def middlewares(self: Any) -> list[Any]:
        kept = [m for m in original(self) if m.cls is not OpenTelemetryMiddleware]
        return [Middleware(RequestIdMiddleware), *kept]

    ServiceAppFactory.middlewares = property(middlewares)
    return True


def trim_serving_path() -> None:
    """The per-request savings above, in this process (before uvicorn and the app start)."""
    if switched_off(ENV_UVLOOP):
        use_plain_protocols()
    drop_idle_tracing()


def served_service(argv: list[str]) -> str | None:
    """The service this process serves: BentoML starts every service worker, the target's and
    each dependency's, with `--service-name NAME`; None in any other process (the arbiter)."""
    for index, arg in enumerate(argv):
        if arg == "--service-name" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--service-name="):
            return arg.split("=", 1)[1]
    return None


def serves_dependency(argv: list[str], target_name: str | None) -> bool:
    """Whether this process serves a service other than the target (a `bentoml.depends` one)."""
    served = served_service(argv)
    return bool(target_name) and served is not None and served != target_name


def prior_environment(before: dict[str, str], knobs: dict[str, str]) -> str:
    """The ENV_PRIOR value for variables `knobs` sets over `before` (a launcher's environment)."""
    return json.dumps(
        {name: {"before": before.get(name), "set": knobs[name]} for name in PRIOR_VARIABLES if name in knobs}
    )


def restore_prior_environment(raw: str | None, environ: dict[str, str] | None = None) -> list[str]:
    """Put back each variable the knobs set, as it was before (unset where it was), unless this
    process got another value since (BentoML's own per-worker allocation); the names restored."""
    if not raw:
        return []
    env = os.environ if environ is None else environ
    restored = []
    for name, values in json.loads(raw).items():
        if env.get(name) != values.get("set"):
            continue
        if values.get("before") is None:
            env.pop(name, None)
        else:
            env[name] = str(values["before"])
        restored.append(name)
    return restored


def load_target() -> Any:
    """Import the target service as `bentoml serve` would and apply the knobs; returns it."""
    from _bentoml_impl.loader import import_service
    from bentoml._internal.context import server_context

    target = os.environ.get(ENV_TARGET)
    if not target:
        raise AdapterError(f"{ENV_TARGET} is not set: nothing to serve")
    working_dir = os.environ.get(ENV_WORKING_DIR) or os.getcwd()
    if serves_dependency(sys.argv, os.environ.get(ENV_SERVICE_NAME)):
        # A dependency's process: its environment as before the knobs, no thread count, no GPU
        # placement, no worker hooks (its decorator rules it).
        restore_prior_environment(os.environ.get(ENV_PRIOR))
        return import_service(target, working_dir=working_dir)
    gpus = int(os.environ.get(ENV_GPUS) or 0)
    worker_index = server_context.worker_index
    place_worker(gpus, worker_index)
    service = import_service(target, working_dir=working_dir)
    batching = read_batching(os.environ.get(ENV_BATCHING))
    apply_batching(service, batching)
    raw_threads = os.environ.get(ENV_THREADS)
    threads = int(raw_threads) if raw_threads else None
    apply_threads(threads)  # torch imported at module level: set before the model loads
    if worker_index is not None:
        # Most services import torch in __init__ (it reads OMP_NUM_THREADS then): set the count
        # again once the instance exists, start its GPU metrics, and record what it runs with.
        after_init(service, lambda: _start_worker(service, worker_index, threads, gpus))
    return service


apply_defaults(defaults_path())
if os.environ.get(ENV_TARGET):
    trim_serving_path()
service = load_target() if os.environ.get(ENV_TARGET) else None
