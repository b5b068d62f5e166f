"""Soak: serve one embedding config at a fraction of its capacity for N minutes; report drift.

    .venv/bin/python bench/soak.py --minutes 10 --json bench/results/soak.json
        [--winner reports/demo/winner.yaml [--winner-capacity] | --config FILE|k=v,...]
        [--capacity RPS] [--load 0.8] [--slo-ms 200]

One `bentoml serve` of the config (the tuner's winner file, or `--config`: a serving-config file
or inline knobs such as `max_batch_size=16,max_latency_ms=200,workers=2,threads=1`) and one
Locust process for the whole run, the realistic load: the shipped English sentences, one per
request, paced users at a fixed arrival rate (LoadStep(rate=...)).
1. Capacity: measured on this server (default) with a stepped paced load, rates growing x1.3
   from `--start-rate` until a step breaches the SLO (p95 > --slo-ms, failures > 1% or goodput
   < 90% of the offered rate); capacity = the best goodput of a step that did not. Or taken from
   the winner file's goodput_rps (`--winner-capacity`) or given (`--capacity`). The JSON says which.
2. Soak: `--load` (0.8) x capacity offered for `--minutes`, after a 15 s warm-up that is not
   reported; one row per minute: goodput, client p50/p95/p99 (2xx), server p95/p99 (histogram),
   errors by status, RSS per worker and of the whole server (median of samples every 2 s).
Totals: `errors_non_shed` (every non-2xx but 503, connection errors included), `shed_503`,
`rss_growth_ratio` (total RSS, last minute / first), `p95_drift_ratio` (client p95, last minute /
first). Targets: 0 non-shed errors, RSS growth <= 1.10, p95 drift <= 1.20.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.errors import format_validation_error
from core.measurement import LoadStep, StepMeasurement
from core.serveconfig import ConfigFileError, ServeConfig, load_serve_config, load_winner
from core.server import BentoServer, running_server
from core.signals import exit_code, stop_reason, stop_signals
from loadtests.runner import LoadReport, LocustRunner

SERVICE = "embedding"
MAX_FAILURE_RATIO = 0.01
RSS_TARGET = 1.10
P95_TARGET = 1.20
GROWTH = 1.3
WARMUP_S = 15.0
DEFAULT_WINNER = Path("reports/demo/winner.yaml")


@dataclass(frozen=True)
class MinuteRow:
    """What one minute of the soak measured."""

    minute: int
    seconds: float
    offered_rps: float
    requests: int
    successes: int
    goodput_rps: float
    errors_by_status: dict[str, int]
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    server_p95_ms: float | None
    server_p99_ms: float | None
    rss_mb_per_worker: dict[str, float]
    rss_mb_total: float | None


@dataclass
class RssSamples:
    """RSS of the server process and each worker (by worker index), sampled in the background."""

    server: BentoServer
    interval_s: float = 2.0
    samples: list[RssSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        workers = {}
        for index, proc in self.server.workers():
            with contextlib.suppress(psutil.Error):  # a worker that just died: no sample
                workers[str(index)] = proc.memory_info().rss / 2**20
        total = sum(workers.values())
        if self.server.process is not None:
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(self.server.process.pid).memory_info().rss / 2**20
        self.samples.append((time.time(), workers, total))

    def run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> RssSamples:
        self.sample()
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def window(self, start: float, end: float) -> tuple[dict[str, float], float | None]:
        return rss_window(self.samples, start, end)


# -- pure parts (unit-tested) ---------------------------------------------------------------------


RssSample = tuple[float, dict[str, float], float]  # (time, MB per worker index, MB of the whole server)


def rss_window(
    samples: Sequence[RssSample], start: float, end: float
) -> tuple[dict[str, float], float | None]:
    """Median RSS per worker and of the total over the samples taken in [start, end]."""
    inside = [s for s in samples if start <= s[0] <= end]
    if not inside:
        return {}, None
    indices = sorted({i for _, workers, _ in inside for i in workers})
    per_worker = {i: statistics.median(w[i] for _, w, _ in inside if i in w) for i in indices}
    return per_worker, statistics.median(t for _, _, t in inside)


def users_for(rate: float) -> int:
    """Paced users for an arrival rate: enough that a 400 ms answer does not slow the pacing, and
    enough connections that the kernel spreads them over the workers."""
    return max(16, math.ceil(rate * 0.4))


def rate_ladder(start: float, growth: float = GROWTH, steps: int = 24) -> list[float]:
    return [round(start * growth**i, 1) for i in range(steps)]


def breached(m: StepMeasurement, slo_ms: float) -> bool:
    """The step cannot be sustained: p95 over the SLO, too many failures, or it fell behind."""
    offered = m.step.rate or 0.0
    return m.client_p95_ms > slo_ms or m.failure_ratio > MAX_FAILURE_RATIO or m.goodput_rps < 0.9 * offered


def capacity_of(steps: Sequence[StepMeasurement], slo_ms: float) -> float | None:
    """The best goodput of a step that was not breached (None: even the first one was)."""
    passing = [m.goodput_rps for m in steps if not breached(m, slo_ms)]
    return max(passing) if passing else None


def is_shed(status: str) -> bool:
    return status == "503"


def ratio(last: float | None, first: float | None) -> float | None:
    if last is None or first is None or first <= 0:
        return None
    return round(last / first, 4)


def summarize(rows: Sequence[MinuteRow]) -> dict[str, Any]:
    """The soak's totals, drift ratios and targets from its per-minute rows."""
    if not rows:
        raise ValueError("a soak needs at least one minute")
    errors: dict[str, int] = {}
    for row in rows:
        for status, count in row.errors_by_status.items():
            errors[status] = errors.get(status, 0) + count
    seconds = sum(r.seconds for r in rows)
    successes = sum(r.successes for r in rows)
    non_shed = sum(n for s, n in errors.items() if not is_shed(s))
    rss_growth = ratio(rows[-1].rss_mb_total, rows[0].rss_mb_total)
    p95_drift = ratio(rows[-1].p95_ms, rows[0].p95_ms)
    return {
        "minutes": len(rows),
        "offered_rps": rows[0].offered_rps,
        "errors_non_shed": non_shed,
        "shed_503": sum(n for s, n in errors.items() if is_shed(s)),
        "rss_growth_ratio": rss_growth,
        "p95_drift_ratio": p95_drift,
        "max_p95_ratio": ratio(
            max((r.p95_ms for r in rows if r.p95_ms is not None), default=None), rows[0].p95_ms
        ),
        "total": {
            "seconds": round(seconds, 1),
            "requests": sum(r.requests for r in rows),
            "successes": successes,
            "goodput_rps": round(successes / seconds, 2) if seconds > 0 else 0.0,
            "errors_by_status": dict(sorted(errors.items())),
        },
        "targets": {"errors_non_shed": 0, "rss_growth_ratio": RSS_TARGET, "p95_drift_ratio": P95_TARGET},
        "targets_met": {
            "errors_non_shed": non_shed == 0,
            "rss_growth_ratio": rss_growth is not None and rss_growth <= RSS_TARGET,
            "p95_drift_ratio": p95_drift is not None and p95_drift <= P95_TARGET,
        },
    }


def minute_row(minute: int, report: LoadReport, rss: RssSamples | None, offered: float) -> MinuteRow:
    """One row from a runner LoadReport (and the RSS samples of its window)."""
    m: StepMeasurement = report.measurement
    client = report.client
    per_worker, total = rss.window(report.window_start, report.window_end) if rss else ({}, None)
    return MinuteRow(
        minute=minute,
        seconds=round(m.duration_s, 2),
        offered_rps=round(offered, 2),
        requests=client.requests,
        successes=client.successes,
        goodput_rps=round(m.goodput_rps, 2),
        errors_by_status=dict(sorted(m.failures_by_status.items())),
        p50_ms=_finite(client.p50_ms),
        p95_ms=_finite(client.p95_ms),
        p99_ms=_finite(client.p99_ms),
        server_p95_ms=_finite(m.server_p95_ms),
        server_p99_ms=_finite(m.server_p99_ms),
        rss_mb_per_worker={k: round(v, 1) for k, v in per_worker.items()},
        rss_mb_total=None if total is None else round(total, 1),
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 2)


def parse_knobs(text: str) -> ServeConfig:
    """`--config`: a serving-config file, or inline `key=value,...` knobs of the embedding service."""
    path = Path(text)
    if path.exists():
        return load_serve_config(path)
    knobs: dict[str, Any] = {"service": SERVICE}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigFileError(f"--config: expected a file or key=value pairs, got {part!r}")
        knobs[key.strip()] = value.strip()
    try:
        return ServeConfig.model_validate(knobs)
    except ValidationError as exc:
        raise ConfigFileError(f"--config: {format_validation_error(exc)}") from exc


# -- the run ----------------------------------------------------------------------------------------


def table(rows: Sequence[MinuteRow]) -> str:
    indices = sorted({i for r in rows for i in r.rss_mb_per_worker})
    head = ["min", "offered", "good/s", "p50", "p95", "p99", "srv p95", "errors", "503"]
    head += [f"RSS w{i}" for i in indices] + ["RSS total"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]

    def fmt(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for r in rows:
        non_shed = sum(n for s, n in r.errors_by_status.items() if not is_shed(s))
        shed = r.errors_by_status.get("503", 0)
        cells = [str(r.minute), fmt(r.offered_rps), fmt(r.goodput_rps), fmt(r.p50_ms), fmt(r.p95_ms),
                 fmt(r.p99_ms), fmt(r.server_p95_ms), str(non_shed), str(shed)]  # fmt: skip
        cells += [fmt(r.rss_mb_per_worker.get(i), 0) for i in indices] + [fmt(r.rss_mb_total, 0)]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def choose_config(args: argparse.Namespace) -> tuple[ServeConfig, str, float | None, float]:
    """(config, where it came from, the winner's goodput or None, the SLO in ms)."""
    winner = args.winner
    if winner is None and args.config is None and DEFAULT_WINNER.exists():
        winner = DEFAULT_WINNER
    if winner is not None:
        w = load_winner(winner)
        if w.config.service != SERVICE:
            raise SystemExit(f"{winner}: a winner for {w.config.service!r}; the soak serves {SERVICE!r}")
        return w.config, f"winner file {winner}", w.goodput_rps, args.slo_ms or w.slo_p95_ms
    if args.config is None:
        raise SystemExit(f"no {DEFAULT_WINNER}: give --winner PATH or --config FILE|knobs")
    config = parse_knobs(args.config)
    if config.service != SERVICE:
        raise SystemExit(f"--config: a config for {config.service!r}; the soak serves {SERVICE!r}")
    return config, f"--config {args.config}", None, args.slo_ms or 200.0


def ensure_minilm() -> None:
    from services.models.minilm import import_minilm
    from services.models.store import MINILM, has_model

    if not has_model(MINILM):
        print(f"imported MiniLM as {import_minilm()}", flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    config, source, winner_goodput, slo_ms = choose_config(args)
    ensure_minilm()
    t0, started_at = time.monotonic(), time.time()
    load_before = os.getloadavg()
    print(f"soak of {config.key} ({source}), SLO p95 <= {slo_ms:.0f} ms", flush=True)
    with running_server(config.server_spec(), ready_timeout_s=180) as server:
        capacity_steps: list[dict[str, Any]] = []
        if args.capacity is not None:
            capacity, capacity_source = args.capacity, "given (--capacity)"
        elif args.winner_capacity:
            if winner_goodput is None:
                raise SystemExit("--winner-capacity needs --winner")
            capacity, capacity_source = winner_goodput, "the winner file's goodput_rps"
        else:
            ladder = [LoadStep(users_for(r), args.step_s, rate=r) for r in rate_ladder(args.start_rate)]
            probe = LocustRunner(settle_s=1.0, max_extend=1.0)
            measured = probe.run_steps(server.url, SERVICE, ladder, stop_after=lambda m: breached(m, slo_ms))
            for m in measured:
                capacity_steps.append({
                    "offered_rps": m.step.rate, "users": m.step.users, "goodput_rps": round(m.goodput_rps, 2),
                    "p95_ms": _finite(m.client_p95_ms), "failure_ratio": round(m.failure_ratio, 4),
                    "breached": breached(m, slo_ms),
                })  # fmt: skip
                print(f"  capacity step {capacity_steps[-1]}", flush=True)
            found = capacity_of(measured, slo_ms)
            if found is None:
                raise SystemExit(f"even {args.start_rate}/s breaches the SLO: lower --start-rate")
            capacity = found
            capacity_source = (
                f"measured: paced steps x{GROWTH} from {args.start_rate}/s, {args.step_s:g} s each"
            )
        offered = round(args.load * capacity, 1)
        users = users_for(offered)
        print(f"capacity {capacity:.1f}/s ({capacity_source}); offering {offered}/s with {users} users "
              f"for {args.minutes} min", flush=True)  # fmt: skip
        steps = [LoadStep(users, WARMUP_S, rate=offered)]
        steps += [LoadStep(users, 60.0, rate=offered) for _ in range(args.minutes)]
        runner = LocustRunner(settle_s=0.5, max_extend=1.0)
        with RssSamples(server) as rss:
            reports = runner.run(server.url, SERVICE, steps, expected_workers=config.workers)[1:]
            rows = [
                minute_row(minute, report, rss, offered) for minute, report in enumerate(reports, start=1)
            ]
    summary = summarize(rows)
    result = {
        **summary,
        "config": config.model_dump(),
        "config_source": source,
        "slo_p95_ms": slo_ms,
        "capacity_rps": round(capacity, 2),
        "capacity_source": capacity_source,
        "capacity_steps": capacity_steps,
        "load_fraction": args.load,
        "users": users,
        "per_minute": [asdict(r) for r in rows],
        "started_at": started_at,
        "wall_s": round(time.monotonic() - t0, 1),
        "cores": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    print(table(rows))
    met = summary["targets_met"]
    print(
        f"offered {summary['offered_rps']}/s for {summary['minutes']} min: goodput "
        f"{summary['total']['goodput_rps']}/s, non-shed errors {summary['errors_non_shed']} "
        f"({'ok' if met['errors_non_shed'] else 'MISSED'}), 503 {summary['shed_503']}, RSS growth "
        f"{summary['rss_growth_ratio']} ({'ok' if met['rss_growth_ratio'] else 'MISSED'}), p95 drift "
        f"{summary['p95_drift_ratio']} ({'ok' if met['p95_drift_ratio'] else 'MISSED'})"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--winner", type=Path, default=None, help=f"winner file (default {DEFAULT_WINNER})")
    parser.add_argument("--config", default=None, help="serving-config file or k=v,... knobs")
    parser.add_argument("--winner-capacity", action="store_true", help="capacity = the winner's goodput_rps")
    parser.add_argument("--capacity", type=float, default=None, help="capacity in RPS (skip measuring)")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of capacity offered")
    parser.add_argument("--slo-ms", type=float, default=None, help="p95 SLO (default: winner's or 200)")
    parser.add_argument("--start-rate", type=float, default=10.0, help="first capacity step, RPS")
    parser.add_argument("--step-s", type=float, default=8.0, help="seconds per capacity step")
    args = parser.parse_args(argv)
    if args.minutes < 1 or not 0 < args.load <= 1:
        parser.error("--minutes >= 1 and 0 < --load <= 1")
    try:
        with stop_signals():  # SIGTERM/SIGHUP stop the server and Locust as Ctrl-C does
            result = run(args)
    except ConfigFileError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt as exc:
        print(f"interrupted by {stop_reason(exc)}: the server and Locust are stopped", file=sys.stderr)
        return exit_code(exc)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(result["targets_met"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
