"""`servetune serve` (foreground server) and `servetune call` (client for both endpoints)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from tuner.commands.console import console, fail

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
) -> None:
    """Run the service with `bentoml serve` in the foreground until Ctrl-C."""
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
    server = BentoServer(chosen.server_spec(port=port, host=host))
    console.print(f"serving {chosen.service} at [bold]{server.url}[/] with {chosen.model_dump()}")
    console.print(f"OpenAPI docs: {server.url}/docs  metrics: {server.url}/metrics  (Ctrl-C stops)")
    try:
        server.start()
        console.print("[green]ready[/]")
        code = server.wait()
        console.print(f"server exited with code {code}")
    except ServerError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        server.stop()


def call(
    service: Annotated[str, typer.Argument(help=SERVICE_HELP)],
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="sentences (embedding) or images as 64 comma-separated values (digits)"),
    ] = None,
    url: Annotated[str, typer.Option(help="service base URL")] = "http://127.0.0.1:3000",
    sample: Annotated[int, typer.Option(help="digits: send N held-out test images")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw JSON answer")] = False,
) -> None:
    """Call a running service and print its answer."""
    import httpx

    from services.client import ServetuneClient, ServiceError

    with ServetuneClient(url) as client:
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
