"""The service of a command that needs no request pool (serve, deploy): a built-in key or a user's
service by import path, or the user's service a winner/config file names (`target`,
`working_dir`, `endpoint`, `service_args`), described and registered before the file validates.
"""

from __future__ import annotations

from pathlib import Path

from core.registry import ServiceSpec
from tuner.commands.console import fail
from tuner.commands.target import parse_service_args, warn_about_dependencies


def resolve_service(
    target: str,
    working_dir: Path | None = None,
    endpoint: str | None = None,
    service_args: list[str] | None = None,
) -> ServiceSpec:
    """The registry entry for `target`; exits with a one-line error naming what is wrong."""
    from core.target import TargetError, resolve_target

    try:
        pairs = parse_service_args(service_args)
        spec, info = resolve_target(target, working_dir, endpoint, service_args=pairs)
    except TargetError as exc:
        fail(str(exc))
    warn_about_dependencies(info)
    if not spec.external and endpoint is not None and endpoint.strip("/") != spec.endpoint:
        fail(f"--endpoint: the built-in service {spec.key} serves /{spec.endpoint}")
    return spec


def resolve_winner_service(path: Path, working_dir: Path | None = None) -> ServiceSpec | None:
    """Register the user's service the file at `path` names (None when it names none: a built-in
    one); `working_dir` replaces the file's own (the project moved, or another machine)."""
    from core.serveconfig import ConfigFileError, peek_target
    from core.target import TargetError, resolve_target

    try:
        reference = peek_target(path)
    except ConfigFileError as exc:
        fail(str(exc))
    if reference is None:
        return None
    folder = (working_dir or Path(reference.working_dir)).resolve()
    if not folder.is_dir():
        fail(
            f"--working-dir: {path} names working_dir {reference.working_dir}, which is not a folder "
            "here; give the service's folder with --working-dir"
        )
    try:
        spec, info = resolve_target(
            reference.import_path(folder), folder, reference.endpoint, service_args=reference.arg_pairs()
        )
    except TargetError as exc:
        fail(f"{path}: target {reference.target}: {exc}")
    warn_about_dependencies(info)
    return spec
