"""`servetune serve` (foreground server, any service) and `servetune call` (client: the built-ins'
inputs as arguments, or any service's endpoint with a JSON body)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from pydantic import ValidationError
from rich.table import Table

from tuner.commands.console import console, fail
from tuner.commands.target import TARGET_HELP, Endpoint, ServiceArgs, WorkingDir

if TYPE_CHECKING:
    import numpy as np

    from core.serveconfig import ServeConfig
    from core.server import ServerSpec
    from services.client import ServetuneClient

SERVICE_HELP = "digits or embedding"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("call")(call)


def serve(
    service: Annotated[str, typer.Argument(help=TARGET_HELP, metavar="TARGET")] = "embedding",
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1")] = 3000,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    config: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON config file (e.g. a tuner winner, of a user's service too)"),
    ] = None,
    working_dir: WorkingDir = None,
    endpoint: Endpoint = None,
    service_arg: ServiceArgs = None,
    max_batch_size: Annotated[int | None, typer.Option(help="adaptive batching cap (> 1)")] = None,
    max_latency_ms: Annotated[int | None, typer.Option(help="batching deadline in ms")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads per worker")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs for the service")] = None,
    variant: Annotated[
        str | None, typer.Option(help="model variant: fp32, int8, pruned; your own service: name=value")
    ] = None,
    auth_token_file: Annotated[
        Path | None,
        typer.Option(help="file holding a bearer token the inference endpoints then require"),
    ] = None,
) -> None:
    """Run the service with `bentoml serve` in the foreground until Ctrl-C.

    A user's service (path/to/service.py:MyService) runs as written unless knobs are given; the
    batching knobs apply to its tuned (--endpoint) batchable API through servetune's adapter.
    With --auth-token-file, /predict, /encode, /info and the rest need `Authorization: Bearer
    <token>`; /metrics, /readyz, /livez, /healthz and the docs stay open. Only the file's path
    reaches the server (SERVETUNE_AUTH_TOKEN_FILE), never the token itself.
    """
    from core.server import BentoServer, ServerError

    overrides = {
        "max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms, "workers": workers,
        "threads": threads, "gpus": gpus, "variant": variant,
    }  # fmt: skip
    chosen = chosen_config(service, config, working_dir, endpoint, service_arg, overrides)
    spec = chosen.server_spec(port=port, host=host)
    if auth_token_file is not None:
        spec = with_auth(spec, auth_token_file)
    server = BentoServer(spec)
    console.print(f"serving {chosen.service} at [bold]{server.url}[/] with {chosen.model_dump()}")
    if spec.service.external:
        batching = spec.batching().get(spec.service.api)
        console.print(
            f"{spec.service.import_path} from {spec.working_dir}; /{spec.service.endpoint} "
            + (f"batching {batching}" if batching else "not batchable: no batching knobs")
        )
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
        from core.signals import stop_reason

        console.print(f"{stop_reason(exc)}: stopping the server and its workers")
    finally:
        server.stop()


def chosen_config(
    service: str,
    config: Path | None,
    working_dir: Path | None,
    endpoint: str | None,
    service_args: list[str] | None,
    overrides: dict[str, int | str | None],
) -> ServeConfig:
    """The config to serve: the file's (its user service registered first) or the service's
    base, with the knobs given on the command line; exits naming a bad option."""
    from core.serveconfig import ConfigFileError, ServeConfig, load_serve_config
    from tuner.commands.usertarget import resolve_service, resolve_winner_service

    if config is not None:
        resolve_winner_service(config, working_dir)
    else:
        service = resolve_service(service, working_dir, endpoint, service_args).key
    try:
        base = load_serve_config(config) if config else base_config(service)
        chosen = ServeConfig.model_validate(
            base.model_dump() | {k: v for k, v in overrides.items() if v is not None}
        )
    except ConfigFileError as exc:
        fail(str(exc))
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"{'--' + str(err['loc'][0]).replace('_', '-') if err['loc'] else 'service'}: {err['msg']}")
    check_user_knobs(chosen, overrides)
    return chosen


def base_config(service: str) -> ServeConfig:
    """servetune's defaults for a built-in service; a user's service as its code writes it."""
    from core.registry import service_spec
    from core.serveconfig import ServeConfig

    spec = service_spec(service)
    if not spec.external:
        return ServeConfig(service=service)
    written: dict[str, int] = {"workers": spec.written_workers}
    if spec.written_batching is not None:
        written["max_batch_size"] = max(2, spec.written_batching[0])  # BentoML needs > 1
        written["max_latency_ms"] = spec.written_batching[1]
    return ServeConfig(service=service, **written)


def check_user_knobs(chosen: ServeConfig, overrides: dict[str, int | str | None]) -> None:
    """Knobs a user's service cannot take: batching on a non-batchable API, a model variant."""
    from core.registry import service_spec

    spec = service_spec(chosen.service)
    if not spec.external:
        return
    if chosen.variant != "fp32" and "=" not in chosen.variant:
        fail(
            f"--variant: {spec.key} is your own service; its variants are name=value --arg pairs "
            f"(e.g. --variant model=small), got {chosen.variant!r}"
        )
    for knob in ("max_batch_size", "max_latency_ms"):
        if overrides.get(knob) is not None and not spec.batchable:
            fail(f"--{knob.replace('_', '-')}: /{spec.endpoint} of {spec.key} is not batchable")


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
    service: Annotated[
        str | None, typer.Argument(help="digits or embedding; omit it for any service with --endpoint")
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="sentences (embedding) or images as 64 comma-separated values (digits)"),
    ] = None,
    url: Annotated[str, typer.Option(help="service base URL")] = "http://127.0.0.1:3000",
    endpoint: Annotated[
        str | None, typer.Option(help="any service: the API to POST the --json body to, e.g. /encode")
    ] = None,
    body: Annotated[
        str | None, typer.Option("--json", help="any service: the request body as JSON ('-': stdin)")
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option(help="any service: the request body from a JSON file ('-': stdin)")
    ] = None,
    sample: Annotated[int, typer.Option(help="digits: send N held-out test images")] = 0,
    raw: Annotated[bool, typer.Option("--raw", help="digits/embedding: print the raw JSON answer")] = False,
    auth_token_file: Annotated[
        Path | None, typer.Option(help="file holding the service's bearer token")
    ] = None,
    save_array: Annotated[
        Path | None,
        typer.Option(help="ask for the binary answer (float32) and save it as a .npy file"),
    ] = None,
) -> None:
    """Call a running service and print its answer.

    Any service: `servetune call --endpoint /encode --json '{"sentences": ["hi"]}'` prints the
    JSON answer. The built-ins also take their inputs as arguments (`call embedding "a b"`).
    `--save-array vec.npy` asks for the compact binary answer (endpoints that offer one, such as
    /encode) and saves the float32 array.
    """
    import httpx

    from services.auth import TokenFileError, read_token
    from services.client import ServetuneClient, ServiceError

    token = None
    if auth_token_file is not None:
        try:
            token = read_token(auth_token_file)
        except TokenFileError as exc:
            fail(f"--auth-token-file: {exc}")
    generic = endpoint is not None or body is not None or json_file is not None
    payload = generic_request(service, inputs, endpoint, body, json_file) if generic else None
    if save_array is not None and payload is None:
        if service != "embedding" or not inputs:
            fail("--save-array: give --endpoint and --json, or embedding and its sentences")
        payload = ("/encode", {"sentences": list(inputs)})
    with ServetuneClient(url, token=token) as client:
        try:
            if save_array is not None and payload is not None:
                _save(client.call_array(*payload), save_array)
                return
            if payload is not None:
                answer: object = client.call(*payload)
            else:
                answer = _builtin_call(client, service, inputs or [], sample, raw)
        except ServiceError as exc:
            if exc.status_code < 400:  # answered, but not in the binary form --save-array asked for
                route = payload[0] if payload else "the endpoint"
                fail(f"--save-array: {route} has no binary answer: {exc.message}", code=1)
            verb = "refused" if exc.status_code < 500 else "failed on"
            fail(f"the service {verb} the request: {exc}", code=1)
        except httpx.HTTPError as exc:
            fail(f"cannot reach {url}: {exc}", code=1)
    if generic or raw:
        print(answer if isinstance(answer, str) else json.dumps(answer))


def _save(array: np.ndarray, path: Path) -> None:
    """Write `array` as a .npy file at exactly `path` (np.save would add the suffix)."""
    import numpy as np

    try:
        with path.open("wb") as handle:
            np.save(handle, array)
    except OSError as exc:
        fail(f"--save-array: cannot write {path}: {exc.strerror or exc}")
    shape = "x".join(str(n) for n in array.shape)
    console.print(f"saved a {shape} {array.dtype} array to {path}", highlight=False)


def _builtin_call(
    client: ServetuneClient, service: str | None, inputs: list[str], sample: int, raw: bool
) -> object:
    """Call digits or embedding with the inputs as arguments; print a table unless `raw`."""
    if service == "digits":
        images, truth = _digit_inputs(inputs, sample)
        answer: object = client.classify(images)
        if not raw:
            _print_digits(answer, truth)  # type: ignore[arg-type]
        return answer
    if service == "embedding":
        if not inputs:
            fail("inputs: give at least one sentence")
        answer = client.embed(inputs)
        if not raw:
            _print_embeddings(inputs, answer)
        return answer
    if service is None:
        fail("--endpoint: give the API and its --json (or --json-file) body, or a service: digits, embedding")
    fail(f"service: unknown service {service!r}; choose digits or embedding, or give --endpoint and --json")


def generic_request(
    service: str | None,
    inputs: list[str] | None,
    endpoint: str | None,
    body: str | None,
    json_file: Path | None,
) -> tuple[str, object]:
    """(route, body) of a call to any service; exits naming the bad option."""
    from core.registry import service_keys, service_spec

    if inputs:
        fail("inputs: with --json/--json-file/--endpoint the body comes from --json or --json-file")
    if endpoint is None:
        if service is None or service not in service_keys():
            fail("--endpoint: name the API to call, e.g. --endpoint /encode")
        endpoint = service_spec(service).route
    elif service is not None:
        fail(f"service: {service!r} is not needed with --endpoint; the URL names the service")
    try:
        return "/" + endpoint.strip("/"), read_body(body, json_file, sys.stdin)
    except BodyError as exc:
        fail(str(exc))


class BodyError(ValueError):
    """A request body that cannot be read or is not JSON; the message names the option."""


def read_body(text: str | None, path: Path | None, stdin: TextIO) -> object:
    """The JSON body from --json TEXT or --json-file PATH ('-' reads `stdin` for either)."""
    if text is not None and path is not None:
        raise BodyError("--json/--json-file: give the body one way, not both")
    if text is None and path is None:
        raise BodyError("--json: give the request body as JSON (or --json-file FILE)")
    option = "--json" if text is not None else "--json-file"
    if text == "-" or (path is not None and str(path) == "-"):
        text = stdin.read()
    elif path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise BodyError(f"--json-file: cannot read {path}: {exc.strerror or exc}") from None
    assert text is not None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if "\n" in text.strip() else f"column {exc.colno}"
        raise BodyError(f"{option}: not valid JSON ({exc.msg} at {where})") from None


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
