"""What a rise in load does to a batching server: hold a rate and judge it window by window.

    .venv/bin/python -m bench.transient [--json PATH] [--config b16-l200-w2-t1] [--windows 12]
        [--window-s 3] [--fractions 0.8,0.9,1.0] [--endpoint encode_unbatched]

One `bentoml serve` of MiniLM: the tuner's capacity search finds the knee, then each fraction
of the knee rate is held for `--windows` consecutive windows of `--window-s` (one Locust process,
no settle), after `--rest-s` at half that rate. Per window: the SLO's latency, the failure ratio
(503 shed included) and the verdict. Why it exists: BentoML's batching dispatcher sheds requests
for seconds after the load rises, until it refits its latency model (every 5 s), at rates it then
holds without a failure; the capacity search and the accuracy bench's reference therefore judge
a level only after `CapacityRules.adapt_s` at it. This shows the transient that rule is for.
`--endpoint encode_unbatched` (with the naive `--config b2-l1000-w1-t2`: its batching knobs are
placeholders nothing reads) holds the same rises on the endpoint without a dispatcher.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capacity_accuracy import Running
from core.deployer import LocalBentoDeployer
from core.measurement import LoadStep, StepMeasurement
from tuner.objective import SLO
from tuner.space import Config
from tuner.trial import TrialRunner
from tuner.tuning import TuneOptions, real_load_runner

SLO_MS = 200.0


def window_rows(measured: Sequence[StepMeasurement], slo: SLO) -> list[dict[str, Any]]:
    """One row per held window: latency, failure ratio, requests and the SLO verdict."""
    return [
        {
            "window": index,
            "latency_ms": round(slo.latency_of(m), 1),
            "failure_ratio": round(m.failure_ratio, 4),
            "shed_503": m.failures_by_status.get("503", 0),
            "requests": m.requests,
            "met": not slo.violations(m),
        }
        for index, m in enumerate(measured)
    ]


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The first window against the rest: the transient is what only the first ones show."""
    rest = rows[1:]
    return {
        "first_met": bool(rows[0]["met"]) if rows else None,
        "first_failure_ratio": rows[0]["failure_ratio"] if rows else None,
        "rest_met_fraction": round(sum(r["met"] for r in rest) / len(rest), 3) if rest else None,
        "rest_max_failure_ratio": max((r["failure_ratio"] for r in rest), default=None),
    }


def parse_config(label: str) -> Config:
    """`b16-l200-w2-t1` -> Config (fp32, no GPU)."""
    parts = {p[0]: int(p[1:]) for p in label.split("-")}
    return Config(parts["b"], parts["l"], parts["w"], parts["t"], 0, "fp32")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--config", default="b16-l200-w2-t1", help="MiniLM config, bB-lL-wW-tT")
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--rest-s", type=float, default=5.0, help="seconds at half the rate before a hold")
    parser.add_argument("--fractions", default="0.8,0.9,1.0", help="of the searched knee rate")
    parser.add_argument("--endpoint", help="route to load (default: the batchable one)")
    args = parser.parse_args(argv)
    fractions = [float(f) for f in args.fractions.split(",")]
    from loadtests.runner import LocustRunner

    config = parse_config(args.config)
    options = TuneOptions(service="embedding", slo_ms=SLO_MS)
    slo = options.slo()
    started = time.monotonic()
    load_before = os.getloadavg()
    holds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="servetune-transient-") as tmp:
        deployer = LocalBentoDeployer("embedding", Path(tmp) / "logs", options.ready_timeout_s)
        with deployer.deploy(config) as deployment:
            load = real_load_runner(options.max_extend, options.settle_s)
            measured = TrialRunner(Running(deployment), load, options.plan(), slo, "embedding").measure(
                config, endpoint=args.endpoint
            )
            found = measured.capacity
            if found is None or found.knee is None:
                print(f"the search found no knee: {measured.reason}", file=sys.stderr)
                return 1
            print(f"searched knee {found.knee:.1f}/s ({found.goodput_rps:.1f} good RPS)", flush=True)
            for fraction in fractions:
                rate = found.knee * fraction
                users = max(1, int(rate * 2 * SLO_MS / 1000.0) + 1)
                rest = LoadStep(users=users, duration_s=args.rest_s, rate=rate / 2)
                held = [LoadStep(users=users, duration_s=args.window_s, rate=rate)] * args.windows
                steps = LocustRunner(max_extend=1.0, settle_s=0.0).run_steps(
                    deployment.url,
                    "embedding",
                    [rest, *held],
                    endpoint=args.endpoint,
                    expected_workers=config.workers,
                )
                rows = window_rows(steps[1:], slo)
                holds.append({"fraction": fraction, "rate": round(rate, 2), "windows": rows, **summary(rows)})
                cells = " | ".join(f"{r['latency_ms']:.0f} ms/{r['failure_ratio']:.1%}" for r in rows)
                print(f"hold {fraction:.2f} x knee = {rate:.1f}/s: {cells}", flush=True)
    result = {
        "config": f"embedding:{config.key}",
        "endpoint": args.endpoint or "batchable",
        "slo": {
            "latency_ms": slo.latency_ms,
            "quantile": slo.quantile,
            "max_failure_ratio": slo.max_failure_ratio,
        },
        "searched_knee_rate": round(found.knee, 2),
        "window_s": args.window_s,
        "holds": holds,
        "cores": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "wall_seconds": round(time.monotonic() - started),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
