"""`servetune serve` (foreground server) and `servetune call` (client for both endpoints)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from tuner.commands.console import console, fail

if TYPE_CHECKING:
    from core.server import ServerSpec

SERVICE_HELP = "digits or embedding"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("call")(call)


def serve(
    service: Annotated[str, typer.Argument(help=SERVICE_HELP)] = "embedding",
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1")] = 3000,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    config: Annotated[Path | None, typer.Option(help="YAML/JSON config file (e.g. a tuner winner)")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="adaptive batching cap (> 1)")] = None,
    max_latency_ms: Annotated[int | None, typer.Option(help="batching deadline in ms")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads per worker")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs for the service")] = None,
    variant: Annotated[str | None, typer.Option(help="model variant: fp32, int8, pruned")] = None,
    auth_token_file: Annotated[
        Path | None,
        typer.Option(help="file holding a bearer token the inference endpoints then require"),
    ] = None,
) -> None:
    """Run the service with `bentoml serve` in the foreground until Ctrl-C.

    With --auth-token-file, /predict, /encode, /info and the rest need `Authorization: Bearer
    <token>`; /metrics, /readyz, /livez, /healthz and the docs stay open. Only the file's path
    reaches the server (SERVETUNE_AUTH_TOKEN_FILE), never the token itself.
    """
    from core.serveconfig import ConfigFileError, ServeConfig, load_serve_config
    from core.server import BentoServer, ServerError

    try:
        base = load_serve_config(config) if config else ServeConfig(service=service)
        overrides = {
            "max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms, "workers": workers,
            "threads": threads, "gpus": gpus, "variant": variant,
        }  # fmt: skip
        chosen = ServeConfig.model_validate(
            base.model_dump() | {k: v for k, v in overrides.items() if v is not None}
        )
    except ConfigFileError as exc:
        fail(str(exc))
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"{'--' + str(err['loc'][0]).replace('_', '-') if err['loc'] else 'service'}: {err['msg']}")
    spec = chosen.server_spec(port=port, host=host)
    if auth_token_file is not None:
        spec = with_auth(spec, auth_token_file)
    server = BentoServer(spec)
    console.print(f"serving {chosen.service} at [bold]{server.url}[/] with {chosen.model_dump()}")
    if auth_token_file is not None:
        console.print("bearer token required on the inference endpoints (--auth-token-file)")
    console.print(f"OpenAPI docs: {server.url}/  metrics: {server.url}/metrics  (Ctrl-C stops)")
    try:
        server.start()
        console.print("[green]ready[/]")
        code = server.wait()
        console.print(f"server exited with code {code}")
    except ServerError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP (tuner/cli.py): a requested stop, exit 0
        from core.processes import stop_reason

        console.print(f"{stop_reason(exc)}: stopping the server and its workers")
    finally:
        server.stop()


def with_auth(spec: ServerSpec, token_file: Path) -> ServerSpec:
    """`spec` with bearer auth on: the server gets the token file's path (checked here first)."""
    from services.auth import AUTH_TOKEN_FILE_ENV, TokenFileError, read_token

    try:
        read_token(token_file)
    except TokenFileError as exc:
        fail(f"--auth-token-file: {exc}")
    env = {**spec.extra_env, AUTH_TOKEN_FILE_ENV: str(token_file.resolve())}
    return dataclasses.replace(spec, extra_env=env)


def call(
    service: Annotated[str, typer.Argument(help=SERVICE_HELP)],
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="sentences (embedding) or images as 64 comma-separated values (digits)"),
    ] = None,
    url: Annotated[str, typer.Option(help="service base URL")] = "http://127.0.0.1:3000",
    sample: Annotated[int, typer.Option(help="digits: send N held-out test images")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw JSON answer")] = False,
    auth_token_file: Annotated[
        Path | None, typer.Option(help="file holding the service's bearer token")
    ] = None,
) -> None:
    """Call a running service and print its answer."""
    import httpx

    from services.auth import TokenFileError, read_token
    from services.client import ServetuneClient, ServiceError

    token = None
    if auth_token_file is not None:
        try:
            token = read_token(auth_token_file)
        except TokenFileError as exc:
            fail(f"--auth-token-file: {exc}")
    with ServetuneClient(url, token=token) as client:
        try:
            if service == "digits":
                images, truth = _digit_inputs(inputs or [], sample)
                answer: object = client.classify(images)
                if not as_json:
                    _print_digits(answer, truth)  # type: ignore[arg-type]
            elif service == "embedding":
                if not inputs:
                    fail("inputs: give at least one sentence")
                answer = client.embed(inputs)
                if not as_json:
                    _print_embeddings(inputs, answer)
            else:
                fail(f"service: unknown service {service!r}; choose digits or embedding")
        except ServiceError as exc:
            fail(f"the service refused the request: {exc}", code=1)
        except httpx.HTTPError as exc:
            fail(f"cannot reach {url}: {exc}", code=1)
    if as_json:
        print(json.dumps(answer))


def _digit_inputs(inputs: list[str], sample: int) -> tuple[list[list[float]], list[int] | None]:
    if sample > 0:
        from services.models.data import held_out_raw

        x, y = held_out_raw()
        return x[:sample].tolist(), [int(v) for v in y[:sample]]
    if not inputs:
        fail("inputs: give images as 64 comma-separated values, or --sample N")
    images = []
    for i, text in enumerate(inputs):
        try:
            images.append([float(v) for v in text.split(",")])
        except ValueError:
            fail(f"inputs[{i}]: not a comma-separated list of numbers")
    return images, None


def _print_digits(answer: list[dict[str, object]], truth: list[int] | None) -> None:
    table = Table("#", "label", "confidence", *(["true"] if truth else []))
    for i, pred in enumerate(answer):
        probs = pred["probabilities"]
        label = int(pred["label"])  # type: ignore[call-overload]
        row = [str(i), str(label), f"{probs[label]:.3f}"]  # type: ignore[index]
        if truth:
            row.append(str(truth[i]))
        table.add_row(*row)
    console.print(table)


def _print_embeddings(sentences: list[str], vectors: list[list[float]]) -> None:
    table = Table("sentence", "dim", "norm", "first values")
    for text, vec in zip(sentences, vectors, strict=True):
        norm = math.sqrt(sum(v * v for v in vec))
        table.add_row(text[:60], str(len(vec)), f"{norm:.3f}", ", ".join(f"{v:+.3f}" for v in vec[:4]))
    console.print(table)
    if len(vectors) >= 2:
        sims = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
        console.print("cosine to the first sentence: " + ", ".join(f"{s:.3f}" for s in sims))
