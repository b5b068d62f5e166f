"""`servetune loadtest TARGET`: a stepped Locust load with client and server figures per step."""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from core.readers import METRICS_HELP, PROMETHEUS_TARGETS_HELP, PROMETHEUS_URL_HELP
from tuner.commands.console import console, fail
from tuner.commands.target import (
    TARGET_HELP,
    Endpoint,
    RequestsFile,
    ServiceArgs,
    ShuffleSeed,
    WorkingDir,
    resolve_cli_target,
)  # fmt: skip

if TYPE_CHECKING:
    from loadtests.runner import LoadReport


def register(app: typer.Typer) -> None:
    app.command("loadtest")(loadtest)


def _numbers(raw: str | None, name: str, kind: type[int] | type[float]) -> list[float]:
    if raw is None:
        return []
    try:
        values = [kind(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        fail(f"{name}: expected comma-separated numbers, got {raw!r}")
    if not values or any(v <= 0 for v in values):
        fail(f"{name}: every value must be > 0, got {raw!r}")
    return [float(v) for v in values]


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isinf(value) or math.isnan(value) else f"{value:.1f}"


def steps_table(reports: Sequence[LoadReport], title: str = "load steps") -> Table:
    """One row per step: client and server figures side by side, batch size histogram."""
    table = Table(title=title)
    for column in ["load", "RPS", "good RPS", "fail", "client p50/p95/p99 ms", "server p50/p95/p99 ms",
                   "in-prog", "batch sizes", "gen CPU", "ok"]:  # fmt: skip
        table.add_column(column, justify="left" if column in {"load", "batch sizes", "ok"} else "right")
    for report in reports:
        m = report.measurement
        load = f"{m.step.users} users" + (f" @ {m.step.rate:g}/s" if m.step.rate else "")
        fails = ", ".join(f"{k}:{v}" for k, v in sorted(m.failures_by_status.items())) or "0"
        batches = " ".join(f"{k}:{v:.0f}" for k, v in m.batch_size_hist.items()) or "-"
        notes = ("stable" if m.stable else "[yellow]unstable[/]") + (
            "" if m.valid else " [red]invalid: " + (m.invalid_text() or "flagged") + "[/]"
        )
        table.add_row(
            load, f"{m.rps:.1f}", f"{m.goodput_rps:.1f}", f"{m.failure_ratio:.1%} ({fails})",
            f"{_ms(m.client_p50_ms)} / {_ms(m.client_p95_ms)} / {_ms(m.client_p99_ms)}",
            f"{_ms(m.server_p50_ms)} / {_ms(m.server_p95_ms)} / {_ms(m.server_p99_ms)}",
            "-" if m.in_progress is None else f"{m.in_progress:.1f}", batches,
            f"{m.generator_cpu:.2f}", notes,
        )  # fmt: skip
    return table


def loadtest(
    service: Annotated[str, typer.Argument(help=TARGET_HELP + " (or noop)", metavar="TARGET")],
    users: Annotated[str | None, typer.Option(help="users per step, e.g. 4,8,16")] = None,
    rate: Annotated[str | None, typer.Option(help="requests/s per step (paced users), e.g. 50,100")] = None,
    steps: Annotated[
        int | None, typer.Option(help="repeat a single --users/--rate value this many times")
    ] = None,
    step_seconds: Annotated[float, typer.Option(help="measured seconds per step")] = 10.0,
    url: Annotated[str | None, typer.Option(help="load this running server instead of starting one")] = None,
    unbatched: Annotated[bool, typer.Option(help="load the non-batchable endpoint")] = False,
    working_dir: WorkingDir = None,
    endpoint: Endpoint = None,
    requests: RequestsFile = None,
    shuffle_seed: ShuffleSeed = None,
    service_arg: ServiceArgs = None,
    rows: Annotated[int, typer.Option(help="rows (images/sentences) per request")] = 1,
    processes: Annotated[int, typer.Option(help="Locust processes (more load than one core gives)")] = 1,
    workers: Annotated[int, typer.Option(help="server workers (local server)")] = 1,
    max_batch_size: Annotated[int | None, typer.Option(help="adaptive batching cap (local server)")] = None,
    max_latency_ms: Annotated[int | None, typer.Option(help="batching deadline ms (local server)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads per worker (local server)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the step reports as JSON")] = None,
    metrics: Annotated[str, typer.Option(help=METRICS_HELP)] = "scrape",
    prometheus_url: Annotated[str | None, typer.Option(help=PROMETHEUS_URL_HELP)] = None,
    prometheus_targets: Annotated[
        Path | None, typer.Option(help=PROMETHEUS_TARGETS_HELP + " (optional with --url)")
    ] = None,
) -> None:
    """Run a stepped load; print client and server figures per step.

    A user's service (path/to/service.py:MyService) is started through servetune's adapter with
    the batching knobs on its --endpoint and loaded with the --requests bodies (else bodies made
    up from its OpenAPI schema).
    """
    from pydantic import ValidationError

    from core.measurement import LoadStep
    from core.readers import reader_factory
    from core.registry import service_spec
    from core.server import ServerError
    from loadtests.runner import LoadRunError, LocustRunner, check_url
    from services.knobs import ServeKnobs

    pool_dir = Path(tempfile.mkdtemp(prefix="servetune-loadtest-"))
    atexit.register(shutil.rmtree, pool_dir, ignore_errors=True)
    if service == "noop" and any(v is not None for v in (working_dir, endpoint, requests, service_arg)):
        fail("--working-dir, --endpoint, --requests and --service-arg are for a user's service")
    if users is not None and rate is not None and "," in users:
        fail("--users: give one value when --rate sets the steps")
    user_values = _numbers(users, "--users", int)
    rate_values = _numbers(rate, "--rate", float)
    if not user_values and not rate_values:
        fail("--users or --rate: give the load of each step")
    if step_seconds <= 0:
        fail("--step-seconds: must be > 0")
    if rows < 1 or processes < 1 or workers < 1:
        fail("--rows, --processes and --workers must be >= 1")
    if rate_values:
        pool = int(user_values[0]) if user_values else None
        plan = [LoadStep(users=pool or max(1, math.ceil(r * 0.1)), duration_s=step_seconds, rate=r)
                for r in rate_values]  # fmt: skip
    else:
        plan = [LoadStep(users=int(u), duration_s=step_seconds) for u in user_values]
    if steps is not None:
        if steps < 1 or len(plan) != 1:
            fail("--steps: give >= 1 together with a single --users/--rate value")
        plan = plan * steps
    if service != "noop":  # the no-op service is registered but not offered to tune
        target = resolve_cli_target(
            service, working_dir, endpoint, requests, shuffle_seed, service_arg, pool_dir
        )
        service = target.key
    knobs = {"max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms, "threads": threads}
    try:
        ServeKnobs(**{k: v for k, v in knobs.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}")
    spec = service_spec(service)
    if spec.external and (max_batch_size is not None or max_latency_ms is not None) and not spec.batchable:
        fail(f"--max-batch-size/--max-latency-ms: /{spec.endpoint} of {spec.key} is not batchable")
    endpoint = spec.naive_endpoint if unbatched else spec.endpoint
    if endpoint is None:
        fail(f"--unbatched: {service} has no non-batchable endpoint")
    if url is not None:
        try:
            url = check_url(url, allow_remote=True)
        except ValueError as exc:
            fail(f"--url: {exc}")
    try:
        readers = reader_factory(
            metrics, prometheus_url, prometheus_targets, local_servers=url is None, say=console.print
        )
    except ValueError as exc:
        fail(str(exc))
    runner = LocustRunner(
        rows_per_request=rows, processes=processes, allow_remote=url is not None, metrics=readers
    )
    try:
        with _target(service, url, workers, knobs) as base:
            console.print(f"load {service} /{endpoint} at {base}: {len(plan)} steps of {step_seconds:g} s")
            reports = runner.run(base, service, plan, endpoint=endpoint, expected_workers=workers)
    except (ServerError, LoadRunError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: the `with` blocks stopped everything
        from core.signals import exit_code, stop_reason

        console.print(f"[yellow]interrupted by {stop_reason(exc)}[/]: Locust and the server are stopped")
        raise typer.Exit(exit_code(exc)) from None
    except ValueError as exc:
        fail(str(exc))
    console.print(steps_table(reports, title=f"{service} /{endpoint} load steps"))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = _finite([r.to_dict() for r in reports])
        json_out.write_text(json.dumps(payload, indent=2, allow_nan=False, default=str))
        console.print(f"wrote {json_out}")


def _finite(value: object) -> object:
    """inf/nan (no successful request) become null so the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@contextlib.contextmanager
def _target(service: str, url: str | None, workers: int, knobs: dict[str, int | None]) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from core.registry import service_spec
    from core.server import ServerSpec, running_server

    spec = ServerSpec(service_spec(service), args=knobs, workers=workers)
    console.print(f"starting {service} ({workers} worker(s), {knobs}) ...")
    with running_server(spec) as server:
        yield server.url
