"""BentoML's calls between services under concurrent load: how many fail, with and without
`runner_connection` limits raised on the dependency.

    .venv/bin/python -m bench.depends_sessions [--json PATH] [--requests 3000] [--concurrency 8,32]

A two-service project (a gateway calling a batchable scorer through `bentoml.depends`) is served
with plain `bentoml serve`, no servetune, once as written and once with
`runner_connection={"max_requests": 1000000000, "max_age": 1e9}` on the scorer. At each
concurrency, `--requests` requests go to the gateway from one asyncio httpx client; per variant
and concurrency: the answers by status and the failed fraction. Why it exists: BentoML >= 1.4.30
closes the client session between services every `max_requests` (default 100) requests or
`max_age` seconds, and the calls in flight on it fail with HTTP 500; servetune warns about it
(`core/target.py:session_warnings`) and this measures what the warning says.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.runfacts import BenchRun, write_json
from core.polling import wait_until
from core.processes import spawn, stop_tree
from core.server import free_port

KEPT = '(runner_connection={"max_requests": 1000000000, "max_age": 1e9})'
PROJECT = """\
import bentoml


@bentoml.service{options}
class Scorer:
    @bentoml.api(batchable=True, max_batch_size=16, max_latency_ms=200)
    def score(self, rows: list[list[float]]) -> list[float]:
        return [sum(row) for row in rows]


@bentoml.service
class Gateway:
    scorer = bentoml.depends(Scorer)

    @bentoml.api
    async def predict(self, values: list[float]) -> float:
        return (await self.scorer.to_async.score([values]))[0]
"""
VARIANTS = {"as written": "", "limits raised": KEPT}
BODY = {"values": [1.0, 2.0, 3.0]}


def failed_fraction(statuses: Counter[int]) -> float:
    """The share of answers that were not 2xx (transport errors count as status 0)."""
    total = sum(statuses.values())
    return sum(n for code, n in statuses.items() if not 200 <= code < 300) / total if total else 0.0


async def fire(url: str, requests: int, concurrency: int) -> Counter[int]:
    """`requests` POSTs to /predict, `concurrency` at a time; the answers by status."""
    statuses: Counter[int] = Counter()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:

        async def one() -> None:
            async with gate:
                try:
                    answer = await client.post("/predict", json=BODY)
                    statuses[answer.status_code] += 1
                except httpx.HTTPError:
                    statuses[0] += 1

        await asyncio.gather(*(one() for _ in range(requests)))
    return statuses


def measure(folder: Path, options: str, requests: int, concurrencies: list[int]) -> list[dict[str, Any]]:
    """Serve the project with `options` on the scorer; one row per concurrency."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "service.py").write_text(PROJECT.format(options=options))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "server.log").open("wb")
    cmd = [sys.executable, "-m", "bentoml", "serve", "service.py:Gateway", "--port", str(port)]
    server = spawn([*cmd, "--host", "127.0.0.1"], "server", cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_until(lambda: _ready(url), 120.0, interval_s=0.5):
            raise RuntimeError(f"the server did not start; see {folder / 'server.log'}")
        rows = []
        for concurrency in concurrencies:
            statuses = asyncio.run(fire(url, requests, concurrency))
            rows.append(
                {
                    "concurrency": concurrency,
                    "statuses": {str(k): v for k, v in sorted(statuses.items())},
                    "failed_fraction": round(failed_fraction(statuses), 4),
                }
            )
        return rows
    finally:
        stop_tree(server)
        log.close()


def _ready(url: str) -> bool | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200 or None
    except httpx.HTTPError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", default="8,32", help="comma-separated concurrent requests")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    run = BenchRun()
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="servetune-depends-sessions-") as work:
        for index, (name, options) in enumerate(VARIANTS.items()):
            results[name] = measure(Path(work) / f"project-{index}", options, args.requests, concurrencies)
            for row in results[name]:
                print(
                    f"{name:>14}, {row['concurrency']:>3} concurrent: {row['failed_fraction']:.1%} failed "
                    f"{row['statuses']}",
                    flush=True,
                )
    result = {
        "variants": {name: options or "(none)" for name, options in VARIANTS.items()},
        "requests": args.requests,
        "results": results,
        **run.facts(),
    }
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
