"""A user's own BentoML service as a registry entry: import path -> described -> ServiceSpec.

`servetune tune path/to/service.py:MyService` (or `pkg.module:MyService`) goes through
`resolve_target`: a built-in key is looked up; anything else is described in a subprocess
(`services/describe.py` run as a script, so the user's imports never load into servetune) and registered
as a ServiceSpec whose knobs reach the server through services/adapter.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from core.registry import ServiceSpec, register, service_keys, service_spec
from services.describe import ApiInfo, ServiceInfo
from services.knobs import USER_VARIANT_PATTERN

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # where servetune's own packages live
DESCRIBE_TIMEOUT_S = 300.0  # importing a user's service may load a large model


class TargetError(ValueError):
    """A target that cannot be served: it does not import, is not a service, or lacks the endpoint."""


def looks_like_import_path(name: str) -> bool:
    """`x.py:Cls`, `pkg.mod:Cls`, `path/x.py` or `pkg.mod` (a built-in key has none of : / . )."""
    return any(mark in name for mark in (":", "/", ".", os.sep))


def absolute_file_target(target: str) -> str:
    """`path/x.py:Cls` with the path made absolute when it names a file here (BentoML resolves
    a relative one against the working dir, which need not be the current folder)."""
    module, sep, attribute = target.partition(":")
    if module.endswith(".py") and Path(module).is_file():
        return str(Path(module).resolve()) + sep + attribute
    return target


def describe_target(target: str, working_dir: Path, timeout_s: float = DESCRIBE_TIMEOUT_S) -> ServiceInfo:
    """Import the service in a child Python and read its APIs; TargetError with the reason."""
    if not working_dir.is_dir():
        raise TargetError(f"--working-dir {working_dir} is not a folder")
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True", PYTHONUNBUFFERED="1")
    # The describer runs as a plain script (-P: neither its folder nor the cwd on the path), so
    # no package of servetune's is imported there before the user's own of the same name.
    describer = str(PACKAGE_ROOT / "services" / "describe.py")
    try:
        done = subprocess.run(
            [sys.executable, "-P", describer, target, "--working-dir", str(working_dir.resolve())],
            cwd=working_dir, env=env, capture_output=True, text=True, timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise TargetError(f"importing {target} took more than {timeout_s:.0f} s") from None
    answer = _last_json_line(done.stdout)
    if answer is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TargetError(f"cannot import {target}: {tail[0]}")
    if not answer.get("ok"):
        kind = answer.get("kind")
        if kind == "not_a_service":
            raise TargetError(str(answer.get("message")))
        raise TargetError(f"cannot import {target} from {working_dir}: {answer.get('message')}")
    return ServiceInfo.model_validate(answer["service"])


def _last_json_line(text: str) -> dict[str, object] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def choose_endpoint(info: ServiceInfo, endpoint: str | None) -> ApiInfo:
    """The named API, else the only batchable one, else the only one; TargetError listing them."""
    names = ", ".join(_api_text(a) for a in info.apis)
    if endpoint:
        found = info.api(endpoint)
        if found is None:
            raise TargetError(f"--endpoint {endpoint!r}: {info.name} has no such API; it has {names}")
        return found
    if not info.apis:
        raise TargetError(f"{info.name} has no APIs to load")
    candidates = info.batchable or info.apis
    if len(candidates) > 1:
        kind = "batchable APIs" if info.batchable else "APIs"
        raise TargetError(f"{info.name} has several {kind}; name one with --endpoint: {names}")
    return candidates[0]


def _api_text(api: ApiInfo) -> str:
    """`/name`, or `/v1/route (name)` where its route is its own, and whether it batches."""
    route = "/" + api.route.strip("/")
    text = route if route == "/" + api.name else f"{route} ({api.name})"
    return text + (" (batchable)" if api.batchable else "")


SESSION_REQUESTS_ADVISED = 1_000_000_000
SESSION_AGE_ADVISED_S = 1e9


def session_warnings(info: ServiceInfo) -> list[str]:
    """One line per dependency whose BentoML client closes its session, calls in flight with it,
    sooner than the advised settings."""
    warnings = []
    for dependency in info.dependencies:
        requests, age = dependency.session_max_requests, dependency.session_max_age_s
        if (requests is None or requests >= SESSION_REQUESTS_ADVISED) and (
            age is None or age >= SESSION_AGE_ADVISED_S
        ):
            continue
        limits = [f"{requests} requests"] if requests is not None else []
        limits += [f"{age:g} s"] if age is not None else []
        every = " or ".join(limits)
        warnings.append(
            f"{dependency.caller} calls {dependency.name} (bentoml.depends), and BentoML's client closes "
            f"its session to {dependency.name} every {every}, failing the calls in flight on it (HTTP "
            "500 under concurrent load; it came with the session refresh of BentoML 1.4.30, see its "
            f'issues #5540 and #5544). runner_connection={{"max_requests": {SESSION_REQUESTS_ADVISED}, '
            f'"max_age": {SESSION_AGE_ADVISED_S:g}}} in {dependency.name}\'s @bentoml.service avoids it; '
            "servetune leaves your code as written"
        )
    return warnings


def dependency_notes(info: ServiceInfo) -> list[str]:
    """One line per dependency with batchable APIs: its knobs are not the ones tuned."""
    return [
        f"{dependency.caller}'s dependency {dependency.name} has batchable APIs "
        f"({', '.join(dependency.batchable_routes)}); servetune tunes {info.name}'s knobs: "
        f"{dependency.name}'s batching, workers, threads and GPUs stay as written"
        for dependency in info.dependencies
        if dependency.batchable_routes
    ]


def remote_dependency_warnings(info: ServiceInfo) -> list[str]:
    """One line per `bentoml.depends` on a URL or a BentoCloud deployment: servetune does not
    start it, and the load tests reach it through the target."""
    warnings = []
    for remote in info.remote_dependencies:
        field = f"{remote.caller}.{remote.attribute}"
        if remote.url:
            where = f"calls {remote.url} ({field} = bentoml.depends(url=...))"
        else:
            where = (
                f"depends on the BentoCloud deployment {remote.deployment!r} ({field}), which BentoML "
                "looks up over the network when the server starts"
            )
        warnings.append(
            f"{remote.caller} {where}: servetune neither starts nor tunes it; the load tests send it "
            f"real traffic through {remote.caller}, and each config's capacity includes its answers"
        )
    return warnings


def written_workers(declared: int | str | None, cores: int | None = None) -> int:
    """The workers a service's decorator asks for: a count, or one per core for "cpu_count"
    (as BentoML reads it); 1 when it says nothing."""
    if isinstance(declared, int) and declared > 0:
        return declared
    if declared == "cpu_count":
        return cores or os.cpu_count() or 1
    return 1


def spec_from_info(
    info: ServiceInfo,
    api: ApiInfo,
    requests_file: Path | None = None,
    service_args: tuple[tuple[str, str], ...] = (),
    variant_args: tuple[str, ...] = (),
) -> ServiceSpec:
    """The registry entry of a described user service, loading `api`."""
    return ServiceSpec(
        key=info.name,
        import_path=info.target,
        bento_name=info.name,
        endpoint=api.route.strip("/"),
        api_name=api.name,
        packages=("bentoml",),
        working_dir=info.working_dir,
        batchable=api.batchable,
        written_batching=(api.max_batch_size, api.max_latency_ms) if api.batchable else None,
        written_workers=written_workers(info.workers),
        routes=tuple(a.route for a in info.apis),
        reads_knob_args=False,
        requests_file=str(requests_file.resolve()) if requests_file is not None else None,
        synthetic_load=requests_file is None,
        service_args=service_args,
        variant_args=variant_args,
    )


def resolve_target(
    target: str,
    working_dir: Path | None = None,
    endpoint: str | None = None,
    requests_file: Path | None = None,
    service_args: tuple[tuple[str, str], ...] = (),
    variant_args: tuple[str, ...] = (),
) -> tuple[ServiceSpec, ServiceInfo | None]:
    """A built-in service by key, or a user's service by import path (described and registered,
    returned with its description)."""
    if not looks_like_import_path(target):
        if variant_args:
            raise TargetError(f"--variant-arg is for your own services; {target} has its model variants")
        if target in service_keys():
            return service_spec(target), None
        raise TargetError(
            f"unknown service {target!r}: give a built-in one ({', '.join(service_keys(True))}) "
            "or an import path such as service.py:MyService"
        )
    if requests_file is not None and not requests_file.is_file():
        raise TargetError(f"--requests {requests_file}: no such file")
    folder = (working_dir or Path.cwd()).resolve()
    info = describe_target(absolute_file_target(target), folder)
    api = choose_endpoint(info, endpoint)
    if info.name in service_keys() and not service_spec(info.name).external:
        raise TargetError(f"{target}: the service name {info.name!r} is a built-in servetune service")
    for label in variant_args:
        if not re.match(USER_VARIANT_PATTERN, label):
            raise TargetError(f"--variant-arg {label!r}: expected name=value (an argument of the service)")
    unique = tuple(dict.fromkeys(variant_args))
    return register(spec_from_info(info, api, requests_file, service_args, unique)), info
