"""Record a real performance surface: every config of a space measured with real `bentoml serve`
and Locust, `--repeats` times (each repeat a fresh server), plus in-process profiles taken before each repeat.

    .venv/bin/python bench/record_surface.py [--space bench/surfaces/minilm-2core.space.yaml]
        [--repeats 2] [--out bench/surfaces/minilm-2core.json]
        [--work bench/surfaces/minilm-2core-capacity.work]

Each repeat is a `servetune tune --strategy grid` study over the whole space with the tuner's own
load plan: a capacity search per config (paced arrival rates, p95 <= 200 ms, <= 1% failures, 5%
resolution); a config's goodput is its search's finding (the best step's successful RPS at a
level that stands met), 0 when no load met the SLO. Interrupted? Rerun: the studies resume (the
work folder is per repeat; git keeps each repeat's `study.json` and `trials.jsonl`, so a
recording can be continued from another clone). The result is what
`bench.surface.RecordedSurface.load` reads.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.surface import write_recorded
from tuner.commands.demo import DEMO_SLO_MS, ensure_models
from tuner.profile import Profile, pooled_profile, profile_service
from tuner.space import load_space
from tuner.tuning import TuneOptions, run_tune

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", type=Path, default=HERE / "surfaces" / "minilm-2core.space.yaml")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "surfaces" / "minilm-2core.json")
    parser.add_argument("--work", type=Path, default=HERE / "surfaces" / "minilm-2core-capacity.work")
    args = parser.parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    space = load_space(args.space)
    ensure_models()
    t0, load_before = time.monotonic(), os.getloadavg()
    plan = TuneOptions(service=space.service).plan().describe()
    profiles: list[Profile] = []
    goodput: dict[str, list[float]] = {c.key: [] for c in space.configs}
    for repeat in range(args.repeats):
        # This VM's speed drifts within the hour: profile next to each repeat, keep all points.
        profiles.append(profile_service(space.service, variants=space.dim("variant").values))
        options = TuneOptions(
            service=space.service, space=args.space, strategy="grid", trials=len(space.configs),
            slo_ms=DEMO_SLO_MS, seed=repeat, out=args.work / f"repeat-{repeat}", resume=True,
            finalists=0, repeats=0,
        )  # fmt: skip
        outcome = run_tune(options)
        for record in outcome.result.trials:
            goodput[record.key].append(record.goodput_rps if record.status == "ok" else 0.0)
            print(f"repeat {repeat} {record.key}: {record.status} {record.goodput_rps:.1f} RPS", flush=True)
    meta = {
        "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "bench/record_surface.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load": {
            "plan": plan,
            "slo_p95_ms": DEMO_SLO_MS,
            "max_failure_ratio": 0.01,
        },
        "goodput": "the capacity search's finding: the best step's successful RPS with p95 <= SLO "
        "and failures <= 1% at a level that stands met; 0 if none met it",
        "repeats": args.repeats,
        "in_sample_for": {
            "guided": "its tie-break rule (equal predictions go to the looser batching caps first) "
            "was designed on an earlier recording of this space on this machine kind"
        },
        "profile": "in-process profiles taken before each repeat, their points pooled",
        "profile_batch16_seconds_per_repeat": [
            [round(p.seconds, 4) for points in pr.points.values() for p in points if p.batch == 16]
            for pr in profiles
        ],
        "wall_seconds": round(time.monotonic() - t0),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    write_recorded(args.out, args.out.stem, space, goodput, pooled_profile(profiles), meta)
    best = max(goodput.items(), key=lambda item: sum(item[1]) / len(item[1]))
    print(f"wrote {args.out}: {len(goodput)} configs x {args.repeats}; best {best[0]} {best[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
