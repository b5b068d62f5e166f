"""`servetune deploy WINNER --out DIR`: Bento, Kubernetes, Prometheus rules, Grafana, Locust."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from core.server import REPO_ROOT
from tuner.commands.console import console, fail

if TYPE_CHECKING:
    from deploy.render import Rendered

DEFAULT_LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)


def _store_model(service: str, variant: str) -> tuple[str | None, float]:
    """(exact tag of the variant's latest model in the store or None, its size in MB)."""
    import bentoml

    from core.registry import service_spec
    from services.models.store import model_name

    base = service_spec(service).model_base
    if base is None:
        return None, 0.0
    try:
        model = bentoml.models.get(f"{model_name(base, variant)}:latest")
    except bentoml.exceptions.NotFound:
        return None, 0.0
    size = sum(p.stat().st_size for p in Path(model.path).rglob("*") if p.is_file())
    return str(model.tag), size / 1e6


def deploy(
    winner_file: Annotated[Path, typer.Argument(help="the tuner's winner file (YAML/JSON)")],
    out: Annotated[Path, typer.Option("--out", help="directory to write the artefacts into")],
    build: Annotated[bool, typer.Option(help="run `bentoml build` and export its Dockerfile")] = True,
    peak_rps: Annotated[float | None, typer.Option(help="expected peak RPS of the whole service")] = None,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace")] = "servetune",
    name: Annotated[str | None, typer.Option(help="Deployment name (default servetune-<service>)")] = None,
    image: Annotated[str | None, typer.Option(help="container image (default: the bento tag)")] = None,
    min_replicas: Annotated[int, typer.Option(help="floor for the HPA's minReplicas")] = 2,
    max_replicas: Annotated[int | None, typer.Option(help="HPA maxReplicas (default derived)")] = None,
    safety_factor: Annotated[float, typer.Option(help="share of measured goodput per pod")] = 0.7,
    locustfile: Annotated[
        Path, typer.Option(help="locustfile for the Locust ConfigMap")
    ] = DEFAULT_LOCUSTFILE,
    locust_workers: Annotated[int, typer.Option(help="Locust worker replicas")] = 2,
    monitor_label: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE label for ServiceMonitor/PrometheusRule (repeatable)"),
    ] = None,
    auth: Annotated[
        bool,
        typer.Option(help="bearer-token auth: a Secret (placeholder to fill) mounted as the token file"),
    ] = False,
    k8s_version: Annotated[str, typer.Option(help="Kubernetes version to validate against")] = "1.30.0",
    validate: Annotated[bool, typer.Option(help="validate manifests, rules and dashboard")] = False,
    working_dir: Annotated[
        Path | None,
        typer.Option(help="your service's folder, when it is no longer where the winner file says"),
    ] = None,
) -> None:
    """Render deployment artefacts sized from the winner's measured per-replica capacity.

    For your own service (a winner file with `target` and `working_dir`) the Bento is built from
    a copy of its working dir, with your bentofile.yaml's include/exclude/python kept and the
    tuned knobs baked in through servetune's adapter.
    """
    from core.serveconfig import ConfigFileError, load_winner
    from deploy import bento
    from deploy.context import RenderContext
    from deploy.plan import DeployOptions, SizingError, size
    from deploy.render import render_all, write_bentofile
    from tuner.commands.usertarget import resolve_winner_service

    user_service = resolve_winner_service(winner_file, working_dir)
    if user_service is None and working_dir is not None:
        fail(f"--working-dir: {winner_file} names no target of your own service (a built-in one)")
    try:
        winner = load_winner(winner_file)
    except ConfigFileError as exc:
        fail(str(exc))
    labels: dict[str, str] = {}
    for item in monitor_label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--monitor-label: expected KEY=VALUE, got {item!r}")
        labels[key] = value
    try:
        options = DeployOptions(
            namespace=namespace, name=name, image=image, peak_rps=peak_rps, min_replicas=min_replicas,
            max_replicas=max_replicas, safety_factor=safety_factor, locust_workers=locust_workers,
            k8s_version=k8s_version, monitoring_labels=labels, auth=auth,
        )  # fmt: skip
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}")
    if not locustfile.is_file():
        fail(f"--locustfile: {locustfile} not found")
    service, variant = winner.config.service, winner.config.variant
    model_tag, model_mb = _store_model(service, variant)
    if user_service is not None:
        model_tag = ""  # the user's code loads its own model; the Bento pins none
    elif model_tag is None:
        if build:
            fail(
                f"config.variant: no {service} model ({variant}) in the BentoML store to build a Bento "
                "from; train/import it first or use --no-build"
            )
        from core.registry import service_spec
        from services.models.store import model_name

        model_tag = f"{model_name(service_spec(service).model_base or service, variant)}:latest"
    try:
        sizing = size(winner, options, model_mb)
    except SizingError as exc:
        fail(str(exc))
    context = RenderContext(winner, options, sizing, f"{bento.bento_name(service)}:latest", model_tag)
    if build:
        console.print("building the Bento (bentoml build, package locking off) ...")
        try:
            tag = bento.build_bento(context, write_bentofile(context, out))
        except bento.BentoBuildError as exc:
            fail(str(exc), code=1)
        context = RenderContext(winner, options, sizing, tag, model_tag)
        bento.export_dockerfile(tag, out / "bento")
        console.print(f"built Bento [bold]{tag}[/]; Dockerfile in {out / 'bento'}")
    try:
        rendered = render_all(context, out, locustfile.read_text())
    except bento.BentoBuildError as exc:  # the user's bentofile.yaml cannot be read
        fail(str(exc))
    for line in sizing.explain():
        console.print(f"  {line}")
    console.print(f"wrote {len(rendered.all())} files under [bold]{out}[/]")
    if auth:
        secret = out / "k8s" / "auth" / "secret.yaml"
        console.print(
            f"auth: put a random token in {secret} (or create the Secret with kubectl) and apply it "
            "first; the pods refuse the placeholder"
        )
    console.print(f"next: bentoml containerize {context.bento_tag}  &&  kubectl apply -f {out / 'k8s'}")
    if validate:
        _validate(rendered, options.k8s_version)


def _validate(rendered: Rendered, k8s_version: str) -> None:
    """Run the offline validators on what was written; exit 1 on any problem."""
    from deploy.grafana import dashboard_queries
    from deploy.validate import (
        PromtoolMissing,
        check_promql,
        check_rules,
        substitute_grafana,
        validate_manifests,
    )

    try:
        problems = validate_manifests([*rendered.k8s, *rendered.crds], k8s_version)
    except ImportError as exc:
        fail(f"--validate needs kubernetes-validate (pip install -e '.[dev]'): {exc}", code=1)
    for where, found in problems.items():
        console.print(f"[red]invalid[/] {where}: {'; '.join(found)}")
    try:
        assert rendered.rules is not None and rendered.dashboard is not None
        ok, output = check_rules(rendered.rules)
        if not ok:
            problems["rules"] = [output]
            console.print(f"[red]promtool check rules failed[/]:\n{output}")
        board = json.loads(rendered.dashboard.read_text())
        bad = check_promql([substitute_grafana(q) for q in dashboard_queries(board)])
        for expr, error in bad.items():
            problems[f"dashboard: {expr}"] = [error]
            console.print(f"[red]dashboard query does not parse[/]: {expr}: {error}")
    except PromtoolMissing as exc:
        fail(str(exc), code=1)
    if problems:
        fail(f"{len(problems)} artefact(s) failed validation", code=1)
    console.print(f"[green]valid[/]: manifests (Kubernetes {k8s_version}), rules and dashboard PromQL")
