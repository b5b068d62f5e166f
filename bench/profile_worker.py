"""Profile ONE BentoML worker of a servetune service under paced load (py-spy): where its time goes.

    flock /tmp/servetune-integration.lock .venv/bin/python bench/profile_worker.py \\
        --winner reports/demo/winner.yaml [--rate RPS] [--seconds 20] [--json PATH] [--out DIR]
    flock /tmp/servetune-integration.lock .venv/bin/python bench/profile_worker.py \\
        --batch 32 --latency 500 --workers 2 --threads 1 [--variant fp32] --rate 50
    .venv/bin/python bench/profile_worker.py --parse bench/results/profile-KEY.txt --seconds 20
        (re-analyse a saved profile: no server, no load)

1. Starts the config as the tuner does (core.deployer.LocalBentoDeployer: `bentoml serve`, own
   BENTOML_HOME, waits for every worker) and one Locust process (loadtests.runner.LocustRunner)
   sending the service's built-in request pool, paced to `--rate` requests/s with the tuner's
   users rule (rate x 2 x the SLO). No capacity search: the rate is `--rate`, or with a winner
   file 80% of its `goodput_rps` (measured when the tuner ran; this shared VM's speed drifts, so
   check "good/s" against "offered" in the output, and pass `--rate` when they differ).
2. After `--warmup` seconds of that load, `py-spy record --threads --format raw --rate 100
   --nonblocking` samples ONE worker (`--worker-index`, default 1, else the lowest index) for
   `--seconds`, without idle samples (`--idle` keeps them), while the load keeps running in 5 s
   steps. Non-blocking by default: in blocking mode py-spy stops the worker 100 times a second,
   and on 2 busy cores the stopped threads sit runnable after each resume, so py-spy counted
   threads blocked in Condition.wait / epoll as busy (a tqdm monitor thread "89% busy" against
   0.1% CPU in /proc); `--blocking` for consistent stacks at that price.
3. Parses the collapsed stacks: per thread, busy samples / ticks (rate x seconds, less the
   samples py-spy failed to take: its "Errors:", ~6% in non-blocking mode) = the share of wall
   time the thread was running or runnable (py-spy's raw output does not mark idle samples and its
   "Samples:" counts stacks, not ticks, so an `--idle` pass would add nothing but the tick
   count), next to the thread's CPU time from /proc over the same window (also for native
   threads py-spy cannot see); for the event-loop thread, the inclusive and self share of its busy
   samples per category (uvicorn protocol, event loop, OpenTelemetry, metrics middleware, access
   log, starlette, request parsing, response encoding, batch dispatcher, servetune guards, model,
   ...: `CATEGORIES`, matched on frame names and files); a top-20 of self-time functions.
Writes DIR/profile-KEY.txt (the raw collapsed stacks, control bytes of torn non-blocking reads
replaced by "?": feed it to flamegraph.pl or speedscope.app for a flame graph), its py-spy log
(.py-spy.log), DIR/profile-KEY.md (the tables, also printed) and DIR/profile-KEY.json (or
`--json`). Takes about 45-60 s once it holds the lock (server start 10-15 s with the models in
the store, Locust start, 5 s warm-up, 20 s profile, stop). Every process it starts (server,
Locust, py-spy) is stopped at the end, also on Ctrl-C / SIGTERM / errors.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.deployer import LocalBentoDeployer, LocalDeployment
from core.measurement import LoadStep, StepMeasurement
from core.processes import spawn, stop_tree
from core.serveconfig import ServeConfig, load_winner
from core.signals import exit_code, stop_reason, stop_signals
from loadtests.runner import LoadReport, LocustRunner

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
DEFAULT_SLO_MS = 200.0  # tuner.commands.demo.DEMO_SLO_MS
HORIZON_FACTOR = 2.0  # tuner.capacity.CapacityRules.horizon_factor: paced users = rate x this x SLO
WINNER_LOAD = 0.8  # default offered load with a winner file: this share of its goodput_rps
STEP_S = 5.0  # the load runs in steps of this long until py-spy has finished
TOP = 20

# -- the pure part: collapsed stacks -> figures ---------------------------------------------------


@dataclass(frozen=True)
class Category:
    """A bucket of frames: a frame belongs to the first category whose pattern it matches."""

    name: str
    pattern: str  # a regex searched in "function (file:line)" as py-spy writes a frame


# Order matters twice: a frame goes to the first category it matches (specific before generic),
# and a sample's self category is that of its innermost frame that matches any. The patterns are
# searched in "function (file:line)" with py-spy's short file names ("starlette/routing.py").
CATEGORIES: tuple[Category, ...] = (
    Category(
        "metrics scrape (GET /metrics: the load runner's reader)",
        r"generate_latest|prometheus_client/(openmetrics/)?exposition|prometheus_client/multiprocess\.py",
    ),
    Category("OpenTelemetry (trace context)", r"opentelemetry|_ServiceTraceContext"),
    Category("BentoML metrics middleware (prometheus_client)", r"http/instruments\.py|\(prometheus_client/"),
    Category("access log / logging", r"http/access\.py|\(logging/"),
    Category(
        "request parsing (body, pydantic)",
        r"parse_request|from_http_request|\(pydantic|pydantic_core|validate_(python|json)|multipart"
        r"|Request\.(body|json|stream|form) \(starlette/",
    ),
    Category(
        "response encoding (to_http_response, JSON)",
        r"to_http_response|serialize_model|services/responses\.py|orjson|\(json/|\bdumps\b|JSONResponse",
    ),
    Category("batch dispatcher (bentoml marshal)", r"marshal/dispatcher\.py"),
    Category(
        "model (torch / sentence_transformers / tokenizer)",
        r"\(torch/|sentence_transformers|\(transformers/|tokenizers|services/models/"
        r"|services/(embedding|digits|noop)\.py|\(numpy/",
    ),
    Category("servetune guards/middleware (services/)", r"\(services/"),
    Category("starlette (routing, middleware, responses)", r"\(starlette/"),
    Category("uvicorn protocol (httptools / h11)", r"\(uvicorn/|\(h11/|httptools"),
    Category(
        "thread hand-off (anyio, futures, threading)",
        r"\(anyio/|concurrent/futures|\(threading\.py|\(queue\.py",
    ),
    Category("BentoML server (other)", r"\(_bentoml_impl/|\(_bentoml_sdk/|\(bentoml/"),
    Category("asyncio (tasks, futures)", r"\(asyncio/"),
)
OTHER = "other"
# The event loop's own frames: a sample's frames up to the innermost of these are the loop's
# base (runpy, click, uvicorn.Server.run, asyncio.Runner.run; with asyncio's own loop also
# run_forever/_run_once/Handle._run), the same in every sample; only the frames above it are
# categorised. A sample with nothing above it ran inside the loop's C code (uvloop: polling,
# socket I/O, httptools' parser, callback scheduling) without a Python frame on top.
LOOP_BASE = re.compile(
    r"^(Runner\.run \(asyncio/runners\.py|\S*run_until_complete |\S*run_forever |\S*_run_once \(asyncio/"
    r"|Handle\._run \(asyncio/events\.py)"
)
IN_LOOP = "event loop itself (uvloop C code: polling, socket I/O, httptools parser)"
THREAD_FRAME = re.compile(r"^thread \((?P<tid>[^)]*)\)(?::\s*(?P<name>.*))?$")
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Stack:
    """One line of py-spy's raw (collapsed) output."""

    tid: str  # the thread id py-spy printed ("?" without --threads)
    thread_name: str
    frames: tuple[str, ...]  # outermost first, the thread frame removed
    count: int


@dataclass(frozen=True)
class ThreadRow:
    tid: str
    name: str
    role: str  # "event loop" or "other"
    samples: int
    wall_share: float  # samples / ticks: the share of the window the thread was busy
    top_category: str


@dataclass(frozen=True)
class CategoryRow:
    name: str
    inclusive: int  # loop-thread samples with at least one frame of this category
    self_samples: int  # loop-thread samples whose innermost categorised frame is of this category
    inclusive_share: float  # of the loop thread's busy samples
    self_share: float
    wall_share: float  # inclusive / ticks


@dataclass(frozen=True)
class FunctionRow:
    function: str
    file: str
    thread: str  # the thread (name) with most of its samples
    samples: int
    busy_share: float  # of every busy sample of the worker
    wall_share: float  # samples / ticks: share of one core


@dataclass(frozen=True)
class Profile:
    ticks: float
    total_samples: int
    loop_tid: str | None
    loop_samples: int
    threads: tuple[ThreadRow, ...]
    categories: tuple[CategoryRow, ...]
    top_self: tuple[FunctionRow, ...]


def parse_collapsed(text: str) -> list[Stack]:
    """py-spy `--format raw` lines ("frame;frame;... COUNT"); with `--threads` the first frame is
    "thread (TID): NAME". Blank and malformed lines are skipped."""
    stacks = []
    for line in text.splitlines():
        head, _, count = line.strip().rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames = head.split(";")
        tid, name = "?", ""
        match = THREAD_FRAME.match(frames[0])
        if match:
            tid, name = match["tid"], (match["name"] or "").strip()
            frames = frames[1:]
        stacks.append(Stack(tid, name, tuple(frames), int(count)))
    return stacks


def category_of(frame: str, categories: Sequence[Category] = CATEGORIES) -> str | None:
    for category in categories:
        if re.search(category.pattern, frame):
            return category.name
    return None


def split_frame(frame: str) -> tuple[str, str]:
    """(function, file) of "function (file:line)"; the line number is dropped."""
    match = FRAME.match(frame)
    return (match["function"], match["file"]) if match else (frame, "")


def _self_category(frames: Sequence[str], categories: Sequence[Category]) -> str:
    for frame in reversed(frames):
        name = category_of(frame, categories)
        if name is not None:
            return name
    return OTHER


def above_loop(frames: Sequence[str]) -> tuple[str, ...]:
    """The frames above the event loop's base (LOOP_BASE); all of them when it has none."""
    for i in range(len(frames) - 1, -1, -1):
        if LOOP_BASE.search(frames[i]):
            return tuple(frames[i + 1 :])
    return tuple(frames)


def analyse(
    stacks: Sequence[Stack], ticks: float, top: int = TOP, categories: Sequence[Category] = CATEGORIES
) -> Profile:
    """Figures of one worker's busy samples; `ticks` = sampling rate x seconds (samples of a thread
    that was busy the whole window). The event-loop thread is the one with the most samples through
    the asyncio runner / loop (LOOP_BASE), else MainThread; its samples are categorised on their
    frames above the loop's base."""
    if ticks <= 0:
        raise ValueError("ticks must be > 0")
    by_thread: dict[str, list[Stack]] = defaultdict(list)
    for stack in stacks:
        by_thread[stack.tid].append(stack)
    loop_votes = {
        tid: sum(s.count for s in group if any(LOOP_BASE.search(f) for f in s.frames))
        for tid, group in by_thread.items()
    }
    loop_tid = max(loop_votes, key=lambda t: loop_votes[t]) if loop_votes else None
    if loop_tid is not None and loop_votes[loop_tid] == 0:
        names = {tid: group[0].thread_name for tid, group in by_thread.items()}
        loop_tid = next((tid for tid, name in names.items() if name == "MainThread"), None)

    def selfs(group: Sequence[Stack], loop: bool) -> Counter[str]:
        counts: Counter[str] = Counter()
        for s in group:
            rest = above_loop(s.frames) if loop else s.frames
            counts[_self_category(rest, categories) if rest else IN_LOOP] += s.count
        return counts

    threads = []
    for tid, group in by_thread.items():
        samples = sum(s.count for s in group)
        top_category = selfs(group, tid == loop_tid).most_common(1)[0][0]
        role = "event loop" if tid == loop_tid else "other"
        threads.append(ThreadRow(tid, group[0].thread_name, role, samples, samples / ticks, top_category))
    threads.sort(key=lambda r: (r.role != "event loop", -r.samples))

    loop = by_thread.get(loop_tid, []) if loop_tid is not None else []
    loop_samples = sum(s.count for s in loop)
    inclusive: Counter[str] = Counter({IN_LOOP: 0})
    for s in loop:
        rest = above_loop(s.frames)
        found = {category_of(f, categories) for f in rest} - {None} if rest else {IN_LOOP}
        for name in found:
            inclusive[str(name)] += s.count
    own = selfs(loop, True)
    inclusive[OTHER] = own[OTHER]
    rows = [
        CategoryRow(
            name,
            inclusive[name],
            own[name],
            _share(inclusive[name], loop_samples),
            _share(own[name], loop_samples),
            inclusive[name] / ticks,
        )
        for name in [IN_LOOP, *(c.name for c in categories), OTHER]
        if inclusive[name] or own[name]
    ]
    rows.sort(key=lambda r: (-r.inclusive, -r.self_samples))

    leaves: Counter[tuple[str, str]] = Counter()
    leaf_threads: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for s in stacks:
        if not s.frames:
            continue
        key = split_frame(s.frames[-1])
        leaves[key] += s.count
        leaf_threads[key][s.thread_name or s.tid] += s.count
    total = sum(s.count for s in stacks)
    top_self = tuple(
        FunctionRow(
            function,
            file,
            leaf_threads[(function, file)].most_common(1)[0][0],
            n,
            _share(n, total),
            n / ticks,
        )
        for (function, file), n in leaves.most_common(top)
    )
    return Profile(ticks, total, loop_tid, loop_samples, tuple(threads), tuple(rows), top_self)


def analyse_collapsed(text: str, ticks: float, top: int = TOP) -> Profile:
    """`analyse` of py-spy's raw output text."""
    return analyse(parse_collapsed(text), ticks, top)


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def markdown(
    profile: Profile, cpu: dict[str, float] | None = None, names: dict[str, str] | None = None
) -> str:
    """The three tables; `cpu` (tid -> CPU seconds / wall seconds from /proc) adds a column and
    rows for threads py-spy did not see busy (native threads: OpenMP, tokenizers...)."""
    cpu = cpu or {}
    names = names or {}
    lines = [
        "## Threads (% of the profiled wall time)",
        "",
        "busy (py-spy): samples with the thread running or runnable (waiting for a CPU counts); "
        "CPU (/proc): its CPU time over the same window.",
        "",
    ]
    lines += [
        "| thread | name | role | busy samples | busy (py-spy) | CPU (/proc) | top self category |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    seen = set()
    for t in profile.threads:
        seen.add(t.tid)
        lines.append(
            f"| {t.tid} | {t.name or names.get(t.tid, '')} | {t.role} | {t.samples} | "
            f"{_pct(t.wall_share)} | {_pct(cpu.get(t.tid))} | {t.top_category} |"
        )
    for tid, share in sorted(cpu.items(), key=lambda kv: -kv[1]):
        if tid not in seen and share >= 0.01:
            lines.append(
                f"| {tid} | {names.get(tid, '')} (no Python samples) | native | 0 | - | {_pct(share)} | - |"
            )
    lines += [
        "",
        f"## Event-loop thread ({profile.loop_tid}): time by category",
        "",
        f"{profile.loop_samples} busy samples = {_pct(profile.loop_samples / profile.ticks)} of the "
        "window. Inclusive: samples with any frame of the category (they overlap); self: the "
        "category of the innermost categorised frame (sums to 100%).",
        "",
        "| category | inclusive (% of loop busy) | self (% of loop busy) | inclusive (% of wall) |",
        "|---|---:|---:|---:|",
    ]
    for c in profile.categories:
        lines.append(
            f"| {c.name} | {_pct(c.inclusive_share)} | {_pct(c.self_share)} | {_pct(c.wall_share)} |"
        )
    lines += [
        "",
        f"## Top {len(profile.top_self)} self-time functions (all threads)",
        "",
        "| function | file | mostly in thread | samples | % of busy samples | % of one core |",
        "|---|---|---|---:|---:|---:|",
    ]
    for f in profile.top_self:
        lines.append(
            f"| `{f.function}` | {f.file} | {f.thread} | {f.samples} | {_pct(f.busy_share)} | "
            f"{_pct(f.wall_share)} |"
        )
    return "\n".join(lines) + "\n"


# -- the run: server, load, py-spy -------------------------------------------------------------------


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of every thread of `pid`, by thread id."""
    with contextlib.suppress(psutil.Error):
        return {str(t.id): t.user_time + t.system_time for t in psutil.Process(pid).threads()}
    return {}


def thread_names(pid: int) -> dict[str, str]:
    """The kernel's name (comm) of every thread of `pid`."""
    names = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                names[task.name] = (task / "comm").read_text().strip()
    return names


def py_spy() -> str:
    """The py-spy next to this Python (the venv's), else the one on PATH."""
    here = Path(sys.executable).with_name("py-spy")
    found = str(here) if here.is_file() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    return found


class PySpy:
    """One `py-spy record` of one process; started in the background, always stopped."""

    def __init__(
        self, pid: int, output: Path, seconds: int, rate: int, nonblocking: bool, idle: bool
    ) -> None:
        self.pid, self.output, self.seconds, self.rate = pid, output, seconds, rate
        self.command = [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(output),
            "--threads",
        ]
        if nonblocking:
            self.command.append("--nonblocking")
        if idle:
            self.command.append("--idle")
        self.log = output.with_suffix(".py-spy.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = self.ended_at = 0.0
        self.cpu_before: dict[str, float] = {}
        self.cpu_after: dict[str, float] = {}
        self._waiter: threading.Thread | None = None

    def start(self) -> None:
        self.cpu_before = thread_cpu(self.pid)
        self.started_at = time.time()
        with self.log.open("wb") as log:
            self.process = spawn(
                self.command, "py-spy", stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        assert self.process is not None
        self.process.wait()
        self.ended_at = time.time()
        self.cpu_after = thread_cpu(self.pid)

    def done(self) -> bool:
        return self.process is not None and self.process.poll() is not None and bool(self.ended_at)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_tree(self.process, grace_s=3.0)
        if self._waiter is not None:
            self._waiter.join(5.0)

    def cpu_shares(self) -> dict[str, float]:
        wall = self.ended_at - self.started_at
        if wall <= 0:
            return {}
        return {
            tid: (self.cpu_after[tid] - before) / wall
            for tid, before in self.cpu_before.items()
            if tid in self.cpu_after
        }

    def errors(self) -> int:
        """Samples py-spy failed to take (its "Errors:"; each loses every thread's stack)."""
        found = re.search(r"Samples: \d+ Errors: (\d+)", self.log_text())
        return int(found[1]) if found else 0

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace").strip()
        return ""


def pick_worker(deployment: LocalDeployment, index: int) -> tuple[int, psutil.Process]:
    workers = deployment.server.workers() or deployment.workers
    if not workers:
        raise SystemExit("no BentoML worker process found under the server")
    for found, proc in workers:
        if found == index:
            return found, proc
    return workers[0]


def users_for(rate: float, slo_ms: float) -> int:
    """The tuner's paced users: rate x HORIZON_FACTOR x the SLO (at least 1)."""
    return max(1, math.ceil(rate * HORIZON_FACTOR * slo_ms / 1000.0))


def choose_config(args: argparse.Namespace) -> tuple[ServeConfig, float, float, str]:
    """(config, offered rate, SLO ms, where the config came from)."""
    if args.winner is not None:
        winner = load_winner(args.winner)
        if args.service is not None and args.service != winner.config.service:
            raise SystemExit(f"{args.winner}: a winner for {winner.config.service!r}, not {args.service!r}")
        rate = args.rate if args.rate is not None else WINNER_LOAD * winner.goodput_rps
        return winner.config, rate, args.slo_ms or winner.slo_p95_ms, f"winner file {args.winner}"
    if args.rate is None:
        raise SystemExit("--rate is required without --winner")
    knobs = {
        "service": args.service or "embedding",
        "max_batch_size": args.batch,
        "max_latency_ms": args.latency,
        "workers": args.workers,
        "threads": args.threads,
        "variant": args.variant,
    }
    config = ServeConfig.model_validate({k: v for k, v in knobs.items() if v is not None})
    return config, args.rate, args.slo_ms or DEFAULT_SLO_MS, "command-line knobs"


def _steps(warmup_s: float, users: int, rate: float) -> Iterator[LoadStep]:
    yield LoadStep(users=users, duration_s=warmup_s, rate=rate)
    while True:
        yield LoadStep(users=users, duration_s=STEP_S, rate=rate)


def load_figures(reports: Sequence[LoadReport], worker_index: int) -> dict[str, Any]:
    """Client and server figures of the steps that ran while py-spy sampled."""
    if not reports:
        return {}
    ms: list[StepMeasurement] = [r.measurement for r in reports]
    seconds = sum(m.duration_s for m in ms)
    per_worker: Counter[str] = Counter()
    for m in ms:
        per_worker.update({k: v for k, v in m.requests_per_worker.items()})
    total = sum(per_worker.values())
    return {
        "seconds": round(seconds, 1),
        "rps": sum(m.requests for m in ms) / seconds,
        "goodput_rps": sum(m.successes for m in ms) / seconds,
        "failures": sum(m.requests - m.successes for m in ms),
        "client_p50_ms_median_step": sorted(m.client_p50_ms for m in ms)[len(ms) // 2],
        "client_p95_ms_worst_step": max(m.client_p95_ms for m in ms),
        "server_p95_ms_worst_step": max(
            (m.server_p95_ms for m in ms if m.server_p95_ms is not None), default=None
        ),
        "requests_per_worker": dict(per_worker),
        "profiled_worker_request_share": _share(per_worker.get(str(worker_index), 0.0), total)
        if total
        else None,
        "generator_cpu_max": max(m.generator_cpu for m in ms),
        "steps": [dataclasses.asdict(m) for m in ms],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    config, rate, slo_ms, source = choose_config(args)
    if config.service in ("embedding", "digits"):
        from tuner.commands.demo import ensure_models

        ensure_models()
    key = config.knobs().key
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"profile-{key}.txt"
    users = users_for(rate, slo_ms)
    load_before = os.getloadavg()
    print(
        f"{config.service} {key} ({source}): {rate:.1f} req/s offered by {users} paced users; "
        f"load average {' '.join(f'{x:.2f}' for x in load_before)}",
        flush=True,
    )
    runner = LocustRunner(settle_s=1.0, max_extend=1.0)
    deployer = LocalBentoDeployer(config.service, ready_timeout_s=180.0)
    t0 = time.time()
    spy: PySpy | None = None
    with deployer.deploy(config) as deployment:
        index, worker = pick_worker(deployment, args.worker_index)
        print(
            f"server up in {time.time() - t0:.0f} s at {deployment.url}; profiling worker {index} "
            f"(pid {worker.pid}) of {len(deployment.workers)}",
            flush=True,
        )
        spy = PySpy(worker.pid, raw, args.seconds, args.sample_rate, not args.blocking, args.idle)
        max_steps = 2 + math.ceil((args.seconds + 30.0) / STEP_S)

        def stop_after(measured: StepMeasurement) -> bool:
            assert spy is not None
            if spy.process is None:  # the warm-up step is over: sample from now on
                print(
                    f"warm-up: {measured.rps:.1f} req/s sent, {measured.goodput_rps:.1f} good/s, client p95 "
                    f"{measured.client_p95_ms:.0f} ms; py-spy for {args.seconds:.0f} s ...",
                    flush=True,
                )
                spy.start()
                return False
            return spy.done() or len(runner.last_reports) >= max_steps

        try:
            reports = runner.run(
                deployment.url,
                config.service,
                _steps(args.warmup, users, rate),
                stop_after,
                expected_workers=config.workers,
            )
            if spy.process is not None and not spy.done():  # the load stopped first (max_steps)
                spy.process.wait(timeout=args.seconds + 30.0)
        finally:
            spy.stop()
        names = thread_names(worker.pid)
        faults = deployment.worker_faults()
    if spy.process is None or spy.process.returncode != 0 or not raw.is_file():
        raise SystemExit(f"py-spy failed (exit {spy.process and spy.process.returncode}):\n{spy.log_text()}")
    raw.write_text(re.sub(r"[\x00-\x08\x0b-\x1f]", "?", raw.read_text(errors="replace")))
    errors = spy.errors()
    ticks = max(1, args.sample_rate * args.seconds - errors)
    profile = analyse_collapsed(raw.read_text(), ticks)
    cpu = spy.cpu_shares()
    load = load_figures([r for r in reports[1:] if r.window_end > spy.started_at], index)
    header = (
        f"# One worker under load: {config.service} {key}\n\n"
        f"Config from {source}. Offered {rate:.1f} req/s ({users} paced users); while sampled: "
        f"{load.get('rps', math.nan):.1f} req/s sent, {load.get('goodput_rps', math.nan):.1f} good/s, client "
        f"p50 {load.get('client_p50_ms_median_step', math.nan):.0f} ms (median step), p95 "
        f"{load.get('client_p95_ms_worst_step', math.nan):.0f} ms (worst step); worker {index} (pid "
        f"{worker.pid}) got {_pct(load.get('profiled_worker_request_share'))} of the requests.\n"
        f"py-spy {args.sample_rate} Hz x {args.seconds:.0f} s, {'' if args.blocking else 'non'}blocking"
        f"{', idle samples kept' if args.idle else ''}: {profile.total_samples} busy samples, {errors} "
        f"failed samples (not counted in the {ticks} ticks the shares divide by); the "
        f"worker used {sum(cpu.values()):.2f} cores (/proc). Load average "
        f"{' '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after (2 shared cores). Raw stacks: {raw.name}.\n\n"
    )
    text = header + markdown(profile, cpu, names)
    if faults:
        text += "\nWorker faults during the run: " + "; ".join(faults) + "\n"
    (out / f"profile-{key}.md").write_text(text)
    print(text)
    return {
        "service": config.service,
        "config": config.model_dump(),
        "key": key,
        "config_source": source,
        "offered_rps": rate,
        "users": users,
        "slo_ms": slo_ms,
        "worker_index": index,
        "worker_pid": worker.pid,
        "py_spy": {
            "command": spy.command,
            "seconds": args.seconds,
            "rate": args.sample_rate,
            "ticks": ticks,
            "errors": errors,
            "log": spy.log_text(),
            "started_at": spy.started_at,
            "ended_at": spy.ended_at,
        },
        "thread_cpu_share": cpu,
        "thread_names": names,
        "worker_cpu_cores": sum(cpu.values()),
        "load": load,
        "profile": dataclasses.asdict(profile),
        "worker_faults": faults,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "raw": str(raw),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--service", default=None, help="registered service (default: the winner's, else embedding)"
    )
    parser.add_argument(
        "--winner", type=Path, default=None, help="winner file (e.g. reports/demo/winner.yaml)"
    )
    parser.add_argument("--batch", type=int, default=None, help="max_batch_size (without --winner)")
    parser.add_argument("--latency", type=int, default=None, help="max_latency_ms (without --winner)")
    parser.add_argument("--workers", type=int, default=None, help="workers (without --winner)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per worker (without --winner)"
    )
    parser.add_argument("--variant", default=None, help="model variant (without --winner; default fp32)")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help=f"offered req/s (default with --winner: {WINNER_LOAD * 100:.0f}%% of its goodput_rps)",
    )
    parser.add_argument(
        "--slo-ms", type=float, default=None, help="sizes the paced users (default: winner's or 200)"
    )
    parser.add_argument("--seconds", type=int, default=20, help="py-spy sampling time")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before sampling")
    parser.add_argument("--sample-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument(
        "--worker-index", type=int, default=1, help="worker to profile (else the lowest index)"
    )
    parser.add_argument("--blocking", action="store_true", help="let py-spy pause the worker per sample")
    parser.add_argument("--idle", action="store_true", help="py-spy --idle (keep idle samples)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the profile files")
    parser.add_argument("--json", type=Path, default=None, help="figures JSON (default OUT/profile-KEY.json)")
    parser.add_argument("--parse", type=Path, default=None, help="re-analyse a saved raw profile and exit")
    parser.add_argument("--errors", type=int, default=0, help="with --parse: py-spy's Errors: count")
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.sample_rate < 1 or args.warmup < 1:
        parser.error("--seconds, --warmup >= 1 and --sample-rate >= 1")
    if args.parse is not None:
        text = args.parse.read_text(errors="replace")
        print(markdown(analyse_collapsed(text, max(1, args.sample_rate * args.seconds - args.errors))))
        return 0
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    try:
        with stop_signals():  # SIGTERM/SIGHUP stop py-spy, Locust and the server as Ctrl-C does
            result = run(args)
    except KeyboardInterrupt as exc:
        print(
            f"interrupted by {stop_reason(exc)}: py-spy, Locust and the server are stopped", file=sys.stderr
        )
        return exit_code(exc)
    path = args.json or args.out / f"profile-{result['key']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
