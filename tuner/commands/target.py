"""The `TARGET` argument every command takes: a built-in service, or a user's service by import path.

A user's service is described (core/target.py), registered, and given a request pool: the
`--requests` file (checked line by line now, not in the middle of a trial), or bodies made up
from its OpenAPI schema when there is none (said out loud: that load is synthetic).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from core.registry import ServiceSpec
from core.registry import register as register_service
from tuner.commands.console import err_console, fail

if TYPE_CHECKING:
    from loadtests.requests import Request
    from services.describe import ServiceInfo

TARGET_HELP = (
    "a built-in service (digits, embedding) or your own BentoML service as `bentoml serve` takes it: "
    "path/to/service.py:MyService or package.module:MyService"
)
WorkingDir = Annotated[
    Path | None, typer.Option(help="folder the service is imported from (default: the current folder)")
]
Endpoint = Annotated[
    str | None, typer.Option(help="API to load and tune (default: the service's only batchable API)")
]
RequestsFile = Annotated[
    Path | None,
    typer.Option(
        help='JSON Lines of request bodies (or {"endpoint": ..., "body": ...} to mix endpoints); '
        "default: bodies made up from the service's OpenAPI schema"
    ),
]
ShuffleSeed = Annotated[
    int | None, typer.Option(help="replay --requests shuffled with this seed (default: in file order)")
]
VariantArgs = Annotated[
    list[str] | None,
    typer.Option(
        "--variant-arg",
        help="an alternative to search over: name=value passed to the service (bentoml --arg); "
        "repeat it for each (e.g. --variant-arg model=small --variant-arg model=large)",
    ),
]
ServiceArgs = Annotated[
    list[str] | None, typer.Option("--service-arg", help="name=value passed to the service (bentoml --arg)")
]


def write_requests(requests: Sequence[Request], path: Path) -> Path:
    """A requests file in the `--requests` format (endpoints spelled out): read_requests_file reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"endpoint": r.route, "body": json.loads(r.body)}) + "\n" for r in requests]
    path.write_text("".join(lines))
    return path


def parse_service_args(pairs: list[str] | None) -> tuple[tuple[str, str], ...]:
    found = []
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            fail(f"--service-arg: expected name=value, got {pair!r}")
        found.append((name.strip(), value))
    return tuple(found)


def warn_about_dependencies(info: ServiceInfo | None) -> None:
    """Say, before anything is measured, which dependencies BentoML's client will fail calls to,
    which are reached over the network, and whose knobs are not tuned."""
    from core.target import dependency_notes, remote_dependency_warnings, session_warnings

    if info is None:
        return
    for warning in [*session_warnings(info), *remote_dependency_warnings(info)]:
        err_console.print(f"warning: {warning}", highlight=False)
    for note in dependency_notes(info):
        err_console.print(f"note: {note}", highlight=False)


def resolve_cli_target(
    target: str,
    working_dir: Path | None = None,
    endpoint: str | None = None,
    requests: Path | None = None,
    shuffle_seed: int | None = None,
    service_args: list[str] | None = None,
    pool_dir: Path | None = None,
    variant_args: list[str] | None = None,
) -> ServiceSpec:
    """The registry entry for `target`; exits with a one-line error naming what is wrong."""
    from core.target import TargetError, resolve_target
    from loadtests.requests import RequestsFileError, SchemaError, ordered, read_requests_file

    try:
        spec, info = resolve_target(
            target,
            working_dir,
            endpoint,
            requests,
            parse_service_args(service_args),
            tuple(variant_args or ()),
        )
    except TargetError as exc:
        fail(str(exc))
    if not spec.external:
        if endpoint is not None and endpoint.strip("/") != spec.endpoint:
            fail(f"--endpoint: the built-in service {spec.key} is tuned on /{spec.endpoint}")
        if requests is not None:
            return _builtin_with_requests(spec, requests, shuffle_seed, pool_dir)
        return spec
    assert info is not None
    warn_about_dependencies(info)
    folder = pool_dir or Path.cwd()
    if requests is not None:
        try:
            pool = read_requests_file(requests, spec.route, spec.routes)
        except RequestsFileError as exc:
            fail(str(exc))
        if shuffle_seed is None:
            return spec
        shuffled = write_requests(ordered(pool, shuffle_seed), folder / "requests-shuffled.jsonl")
        return register_service(dataclasses.replace(spec, requests_file=str(shuffled)))
    from loadtests.requests import request_schema, synthetic_requests

    try:
        schema = request_schema(info.openapi, spec.route, spec.api)
        made = synthetic_requests(schema, spec.route, components=info.openapi.get("components"))
    except SchemaError as exc:
        fail(f"{spec.key}: no --requests given and {exc}; {exc.fix}")
    path = write_requests(made, folder / "synthetic-requests.jsonl")
    err_console.print(
        f"note: no --requests file: loading {spec.route} with {len(made)} bodies made up from its OpenAPI "
        f"schema ({path}); this is a synthetic load, not your traffic",
        highlight=False,
    )
    return register_service(dataclasses.replace(spec, requests_file=str(path), synthetic_load=True))


def _builtin_with_requests(
    spec: ServiceSpec, requests: Path, shuffle_seed: int | None, pool_dir: Path | None
) -> ServiceSpec:
    """A built-in service loaded from a requests file instead of its own rows."""
    from loadtests.requests import RequestsFileError, ordered, read_requests_file

    try:
        pool = read_requests_file(requests, spec.route, spec.routes or None)
    except RequestsFileError as exc:
        fail(str(exc))
    path = requests.resolve()
    if shuffle_seed is not None:
        path = write_requests(
            ordered(pool, shuffle_seed), (pool_dir or Path.cwd()) / "requests-shuffled.jsonl"
        )
    return register_service(dataclasses.replace(spec, requests_file=str(path)))
