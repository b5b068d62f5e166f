"""The service registry: one `ServiceSpec` per service says everything the other layers need.

Launching (`core.server`), load (`loadtests/`), profiling and search (`tuner/`) and deployment
(`deploy/`) look a service up here instead of keeping their own tables. Adding a service is one
`register(ServiceSpec(...))`. Callables that would pull in heavy modules (torch, the models)
are named as `"module:function"` and imported only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Packages every model service needs in a Bento (pinned to the installed versions at build time).
# The serving path every built-in service runs (services/responses.py, services/adapter.py).
SERVING_PACKAGES = ("bentoml", "pydantic", "numpy", "orjson", "uvloop", "httptools", "nvidia-ml-py")
COMMON_PACKAGES = (*SERVING_PACKAGES, "torch", "safetensors", "scikit-learn")
Priors = Mapping[str, Mapping[str, float]]  # device ("cpu"/"gpu") -> BatchTime fields


@dataclass(frozen=True)
class ServiceSpec:
    """What servetune knows about one BentoML service."""

    key: str  # the short name users type: `servetune tune <key>`
    import_path: str  # what `bentoml serve` takes: "services.digits:DigitsClassifier"
    bento_name: str  # the `@bentoml.service(name=...)` name (config overrides, metrics labels)
    endpoint: str  # the route of the API the tuner loads and tunes (without the leading slash)
    row_field: str | None = None  # the JSON field that carries the rows of a request (built-ins)
    rows: str | None = None  # "module:function" returning the pool of rows (built-ins)
    naive_endpoint: str | None = None  # the same work without adaptive batching, if the service has it
    model_base: str | None = None  # model store name of the fp32 model (variants live next to it)
    locust_user: str = "ServiceUser"  # the Locust user class in loadtests/locustfile.py
    packages: tuple[str, ...] = COMMON_PACKAGES  # pip packages a Bento of it needs
    priors: Priors = field(default_factory=dict)  # in-process batch-time priors for the profiler
    batch_runner: str | None = None  # "module:function" (variant, seed) -> run(n, repeat)
    variant_builder: str | None = None  # "module:function" building the compressed variants
    sample_response: Any = None  # one row of the endpoint's answer (in-process overhead estimate)
    tunable: bool = True  # offered to `servetune tune` / `serve` / `deploy`
    # Where the service comes from and what its code declares (a user's service: core/target.py).
    working_dir: str | None = None  # the folder `bentoml serve` imports from; None = servetune's own
    batchable: bool = True  # `endpoint` has adaptive batching (else no batching knobs)
    written_batching: tuple[int, int] | None = None  # its decorator's (max_batch_size, max_latency_ms)
    written_workers: int = 1  # its decorator's worker count
    routes: tuple[str, ...] = ()  # every API route, for `--endpoint` and mixed request files
    reads_knob_args: bool = True  # reads servetune's knobs with bentoml.use_arguments (built-ins)
    requests_file: str | None = None  # JSON Lines of request bodies to load it with (user traffic)
    synthetic_load: bool = False  # request bodies were made up from its OpenAPI schema
    service_args: tuple[tuple[str, str], ...] = ()  # extra `bentoml serve --arg name=value` pairs
    variant_args: tuple[str, ...] = ()  # a user's alternatives, each a `name=value` --arg (variants)
    api_name: str | None = None  # the tuned API's method name where it is not `endpoint` (route=...)

    @property
    def route(self) -> str:
        return "/" + self.endpoint

    @property
    def api(self) -> str:
        """The tuned API's name in the service (what its batching is set on)."""
        return self.api_name or self.endpoint

    @property
    def naive_route(self) -> str | None:
        return None if self.naive_endpoint is None else "/" + self.naive_endpoint

    def batches(self, endpoint: str | None = None) -> bool:
        """Whether `endpoint` (default: the tuned one) has adaptive batching: the naive
        endpoint has none; a route the spec does not describe counts as batching."""
        route = (endpoint or self.endpoint).lstrip("/")
        if route == self.endpoint:
            return self.batchable
        return route != self.naive_endpoint

    @property
    def takes_variants(self) -> bool:
        """Model variants apply: a stored model (fp32 and its compressed variants) or the user's
        `--variant-arg` alternatives."""
        return self.model_base is not None or bool(self.variant_args)

    @property
    def external(self) -> bool:
        """A user's own service (imported from its working dir), not one servetune ships."""
        return self.working_dir is not None

    def row_pool(self) -> Sequence[object]:
        """The rows one request's batch is drawn from (built-in services only)."""
        if self.rows is None:
            raise ValueError(f"service {self.key!r} has no built-in row pool; load it from a requests file")
        pool: Sequence[object] = resolve(self.rows)()
        return pool


def resolve(reference: str) -> Callable[..., Any]:
    """The callable a `"module:function"` reference names."""
    module, _, name = reference.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return found


def noop_rows() -> list[float]:
    """Numbers the no-op service echoes."""
    return [float(i % 97) for i in range(1000)]


_REGISTRY: dict[str, ServiceSpec] = {}


def register(spec: ServiceSpec) -> ServiceSpec:
    """Add (or replace) a service; returns it."""
    _REGISTRY[spec.key] = spec
    return spec


def unregister(key: str) -> None:
    _REGISTRY.pop(key, None)


def service_spec(key: str) -> ServiceSpec:
    """Look a service up by its short name, with a clear error for unknown names."""
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(f"unknown service {key!r}; choose one of {sorted(_REGISTRY)}") from None


def registered(key: str) -> ServiceSpec | None:
    """The service registered as `key`, None when there is none."""
    return _REGISTRY.get(key)


def service_keys(tunable_only: bool = False) -> list[str]:
    return sorted(k for k, s in _REGISTRY.items() if s.tunable or not tunable_only)


def by_model_base(model_base: str) -> ServiceSpec | None:
    """The service that serves the model stored as `model_base` (e.g. "minilm")."""
    return next((s for s in _REGISTRY.values() if s.model_base == model_base), None)


register(
    ServiceSpec(
        key="digits",
        import_path="services.digits:DigitsClassifier",
        bento_name="DigitsClassifier",
        endpoint="predict",
        row_field="images",
        rows="services.models.data:held_out_rows",
        model_base="digits",
        # in-process on this project's 2-core machine kind; the GPU row is a guess, not measured
        priors={
            "cpu": {"cpu0": 0.0003, "cpu1": 0.00003, "p0": 0.0, "p1": 0.7},
            "gpu": {"cpu0": 0.0001, "cpu1": 0.00001, "p0": 0.0, "p1": 0.5, "gpu0": 0.0002, "gpu1": 0.000005},
        },
        batch_runner="services.models.inprocess:digits_batch_runner",
        variant_builder="services.models.variantbuild:build_digits",
        sample_response={"label": 3, "probabilities": [0.1] * 10},
    )
)
register(
    ServiceSpec(
        key="embedding",
        import_path="services.embedding:TextEmbedding",
        bento_name="TextEmbedding",
        endpoint="encode",
        row_field="sentences",
        rows="services.models.sentences:load_sentences",
        naive_endpoint="encode_unbatched",
        model_base="minilm",
        packages=(*COMMON_PACKAGES, "sentence-transformers", "transformers"),
        # in-process on this project's 2-core machine kind (shipped sentence set, best of 3); the
        # GPU row is GPU-like (tokenising on CPU threads, launch + per-item device cost), not measured
        priors={
            "cpu": {"cpu0": 0.0076, "cpu1": 0.0062, "p0": 0.5, "p1": 0.8},
            "gpu": {"cpu0": 0.0005, "cpu1": 0.0004, "p0": 0.2, "p1": 0.6, "gpu0": 0.004, "gpu1": 0.0008},
        },
        batch_runner="services.models.inprocess:embedding_batch_runner",
        variant_builder="services.models.variantbuild:build_minilm",
        sample_response=[0.012345678] * 384,
    )
)
register(
    ServiceSpec(
        key="noop",
        import_path="services.noop:NoOp",
        bento_name="NoOp",
        endpoint="echo",
        row_field="items",
        rows="core.registry:noop_rows",
        naive_endpoint="echo_unbatched",
        packages=SERVING_PACKAGES,
        sample_response=1.0,
        tunable=False,
    )
)
