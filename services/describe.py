"""Describe a BentoML service without serving it: its name, APIs, batching and OpenAPI document.

Run as a subprocess (`python -m services.describe TARGET --working-dir DIR`) so the user's code
and its imports (torch, models) never load into servetune's own process. Prints one JSON object:
`{"ok": true, "service": {...}}`, or `{"ok": false, "kind": ..., "message": ...}` with exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import traceback
from typing import Any

from pydantic import BaseModel


class ApiInfo(BaseModel):
    """One API of the service as its decorator declares it."""

    name: str
    route: str
    batchable: bool
    max_batch_size: int
    max_latency_ms: int
    is_stream: bool = False
    is_task: bool = False


class DependencyInfo(BaseModel):
    """A service served with the target, called through a `bentoml.depends` of `caller`."""

    name: str
    caller: str
    # BentoML's client from `caller` closes its session to this service after this many
    # requests or seconds (its `runner_connection`, else BentoML's default; None: never)
    session_max_requests: int | None = None
    session_max_age_s: float | None = None
    batchable_routes: list[str] = []


class RemoteDependencyInfo(BaseModel):
    """A `bentoml.depends(url=...)` or `bentoml.depends(deployment=...)` of `caller` (its field
    `attribute`): a service reached over the network, not started with the target."""

    caller: str
    attribute: str
    url: str | None = None
    deployment: str | None = None


class ServiceInfo(BaseModel):
    """What servetune needs to know to launch, load and tune a service."""

    name: str
    target: str
    working_dir: str
    apis: list[ApiInfo]
    workers: int | str | None = None  # the decorator's own value, if any
    resources: dict[str, Any] = {}
    uses_torch: bool = False
    openapi: dict[str, Any] = {}
    dependencies: list[DependencyInfo] = []
    remote_dependencies: list[RemoteDependencyInfo] = []

    def api(self, name: str) -> ApiInfo | None:
        wanted = name.strip("/")
        return next((a for a in self.apis if a.name == wanted or a.route.strip("/") == wanted), None)

    @property
    def batchable(self) -> list[ApiInfo]:
        return [a for a in self.apis if a.batchable]


def last_line(error: BaseException) -> str:
    """The last line of the error as Python prints it (`ModuleNotFoundError: No module named 'x'`)."""
    lines = "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def session_defaults() -> dict[str, Any]:
    """BentoML's default `runner_connection` where its client between services closes its
    sessions (BentoML >= 1.4.30: `SessionManager`); empty where it does not."""
    from pathlib import Path

    import yaml

    try:
        from _bentoml_impl.client.proxy2 import SessionManager  # noqa: F401
    except ImportError:
        return {}
    import bentoml._internal.configuration as configuration

    path = Path(configuration.__file__).parent / "v2" / "default_configuration.yaml"
    try:
        document = yaml.safe_load(path.read_text())
        defaults = document["services"]["runner_connection"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    return dict(defaults) if isinstance(defaults, dict) else {}


def dependencies_of(service: Any, defaults: dict[str, Any] | None = None) -> list[DependencyInfo]:
    """The services `bentoml serve` starts with `service`: its `bentoml.depends` on services (not
    on a URL or a deployment), nested ones too, each with the service that calls it."""
    defaults = session_defaults() if defaults is None else defaults
    found: dict[str, DependencyInfo] = {}
    for caller, _, dependency in _depends(service):
        served = dependency.on
        if _remote(dependency) or served.name in found:
            continue
        connection = {**defaults, **(dict(served.config or {}).get("runner_connection") or {})}
        requests, age = connection.get("max_requests"), connection.get("max_age")
        found[served.name] = DependencyInfo(
            name=served.name,
            caller=caller.name,
            session_max_requests=requests if isinstance(requests, int) else None,
            session_max_age_s=float(age) if isinstance(age, int | float) else None,
            batchable_routes=[m.route for m in served.apis.values() if m.batchable],
        )
    return list(found.values())


def remote_dependencies_of(service: Any) -> list[RemoteDependencyInfo]:
    """The `bentoml.depends` on a URL or a BentoCloud deployment of `service` and of the services
    it starts: the load a test sends reaches them, and nothing of servetune's starts them."""
    return [
        RemoteDependencyInfo(
            caller=caller.name, attribute=attribute, url=dependency.url, deployment=dependency.deployment
        )
        for caller, attribute, dependency in _depends(service)
        if _remote(dependency)
    ]


def _remote(dependency: Any) -> bool:
    return dependency.on is None or bool(dependency.url or dependency.deployment)


def _depends(service: Any) -> list[tuple[Any, str, Any]]:
    """(caller, its field, the `bentoml.depends`) for every dependency of `service` and of the
    services it starts, each service visited once."""
    found: list[tuple[Any, str, Any]] = []
    seen = {service.name}

    def visit(caller: Any) -> None:
        for attribute, dependency in caller.dependencies.items():
            found.append((caller, attribute, dependency))
            served = dependency.on
            if _remote(dependency) or served.name in seen:
                continue
            seen.add(served.name)
            visit(served)

    visit(service)
    return found


def describe(target: str, working_dir: str) -> ServiceInfo:
    """Import `target` from `working_dir` and read its APIs (raises on failure)."""
    from _bentoml_impl.loader import import_service
    from _bentoml_sdk import Service

    try:
        service = import_service(target, working_dir=working_dir)
    except (TypeError, AttributeError) as exc:
        if "_import_str" not in str(exc) and "__setattr__" not in str(exc):
            raise
        # BentoML tags what it imported with `_import_str`; anything but a service refuses that
        raise TypeError(f"{target} is not a BentoML service (no @bentoml.service)") from None
    if not isinstance(service, Service):
        raise TypeError(f"{target} is a {type(service).__name__}, not a BentoML service (@bentoml.service)")
    apis = [
        ApiInfo(
            name=name,
            route=method.route,
            batchable=bool(method.batchable),
            max_batch_size=int(method.max_batch_size),
            max_latency_ms=int(method.max_latency_ms),
            is_stream=bool(method.is_stream),
            is_task=bool(method.is_task),
        )
        for name, method in service.apis.items()
    ]
    config = dict(service.config or {})
    openapi: dict[str, Any] = {}
    with contextlib.suppress(Exception):  # the document is a help for synthetic load, not required
        openapi = json.loads(json.dumps(service.openapi_spec.asdict(), default=str))
    return ServiceInfo(
        name=service.name,
        target=target,
        working_dir=working_dir,
        apis=apis,
        workers=config.get("workers"),
        resources=dict(config.get("resources") or {}),
        uses_torch="torch" in sys.modules,
        openapi=openapi,
        dependencies=dependencies_of(service),
        remote_dependencies=remote_dependencies_of(service),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target")
    parser.add_argument("--working-dir", default=".")
    args = parser.parse_args(argv)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):  # user code may print on import
            info = describe(args.target, args.working_dir)
    except TypeError as exc:
        print(json.dumps({"ok": False, "kind": "not_a_service", "message": str(exc)}))
        return 2
    except BaseException as exc:  # any failure of user code is reported, not raised
        message = last_line(exc)
        if type(exc).__name__ == "ImportServiceError":  # BentoML's own words, then the cause's
            message = str(exc).strip().splitlines()[0]
            cause = exc.__cause__ or exc.__context__
            if cause is not None and (str(cause).strip() or last_line(cause)) not in message:
                message += f" ({last_line(cause)})"
        print(json.dumps({"ok": False, "kind": "import", "message": message}))
        return 2
    print(json.dumps({"ok": True, "service": info.model_dump()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
