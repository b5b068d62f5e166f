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
    """A service the target calls through `bentoml.depends`, served with it."""

    name: str
    session_max_requests: int | None = None  # its `runner_connection.max_requests`, if set
    batchable_routes: list[str] = []


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
    # Requests after which BentoML's client to a dependency closes its session, calls in flight
    # on it included (BentoML >= 1.4.30); None where this BentoML does not.
    client_session_requests: int | None = None

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


def client_session_requests() -> int | None:
    """The default `max_requests` of BentoML's client between services, where it has one."""
    import inspect

    try:
        from _bentoml_impl.client.proxy2 import AsyncClient
    except ImportError:
        return None
    parameter = inspect.signature(AsyncClient.__init__).parameters.get("max_requests")
    return parameter.default if parameter is not None and isinstance(parameter.default, int) else None


def dependencies_of(service: Any) -> list[DependencyInfo]:
    """The services served with `service` (its `bentoml.depends` on local services, nested too)."""
    found = []
    for name, dependency in service.all_services(exclude_urls=True).items():
        if dependency is service:
            continue
        connection = dict(dependency.config or {}).get("runner_connection") or {}
        limit = connection.get("max_requests")
        kept = limit if isinstance(limit, int) else None
        routes = [method.route for method in dependency.apis.values() if method.batchable]
        found.append(DependencyInfo(name=name, session_max_requests=kept, batchable_routes=routes))
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
        client_session_requests=client_session_requests(),
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
