"""Run Locust as a subprocess through load steps and measure each step window (client + server).

Locust is never imported here (it monkey-patches the importing process with gevent). One Locust
process follows a control file (`ControlledLoad`) for the whole step sequence, so connections
and the server live through all steps; every request is logged by the locustfile with its end
time, latency and status, and the MetricsReader marks every sub-window boundary. A step runs
`settle_s`, then sub-windows until its duration is covered and the last three agree on goodput
(within `tolerance`; server goodput when the reader measures sub-windows, else the client's
log), at most `max_extend` times its duration; the step window is the last `duration_s` of it.
The reader comes from the runner's `metrics` factory (default: scrape /metrics; PromQL plugs in).

What Locust sends: the target's request pool (`LoadTarget.requests`; for a registered service by
default `builtin_requests`, rows from its held-out pool), written to the work dir and read by
`loadtests/locustfile.py` (SERVETUNE_REQUESTS), or the user's own locustfile (`locustfile=`), run
together with servetune's shape and hooks (loadtests/locust_hooks.py: what it supports). The
server-side figures are read for the target's `route`; with a pool that mixes endpoints they
cover that route only, while the client figures cover every request.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import math
import os
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psutil

from core.measurement import Invalidity, InvalidReason, LoadStep, StepMeasurement, StopRule
from core.metrics import MetricsReader, ReaderFactory, ScrapeReader, WindowFigures, workers_seen
from core.polling import wait_until
from core.processes import spawn, stop_tree, tree_cpu_times
from core.registry import service_spec
from loadtests.requests import Request, builtin_requests, read_requests_file, route_of, write_pool
from loadtests.shapes import write_control

HERE = Path(__file__).resolve().parent
# Where the `loadtests` package (and core/, services/) is installed: the repo or site-packages.
PACKAGE_ROOT = HERE.parent
LOCUSTFILES = f"{HERE / 'locustfile.py'},{HERE / 'locust_shapes.py'}"
# servetune's shape first (Locust uses the first shape class it finds), then the hooks.
HOOK_FILES = (HERE / "locust_shapes.py", HERE / "locust_hooks.py")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
REQUESTS_FILE = "requests.jsonl"  # the pool in the work dir (SERVETUNE_REQUESTS)


@dataclass(frozen=True)
class LoadTarget:
    """A service, the route its server-side figures are read for, and the requests to send
    (None: a registered service's built-in pool, or whatever a user's locustfile sends)."""

    service: str
    route: str
    requests: tuple[Request, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.requests is not None and not self.requests:
            raise ValueError("a load target's request pool is empty")

    @classmethod
    def of(cls, service: str, endpoint: str | None = None, rows_per_request: int = 1) -> LoadTarget:
        """A registered service's endpoint, or `endpoint` (with or without the slash), loaded
        with the requests of its `requests_file` as written when it has one (those for its own
        endpoint go to `endpoint`: the naive baseline), else with bodies of `rows_per_request`
        rows from its row pool."""
        spec = service_spec(service)
        route = route_of(endpoint or spec.endpoint)
        if spec.requests_file is not None:
            routes = {*spec.routes, route} if spec.routes else None
            found = read_requests_file(Path(spec.requests_file), route, routes)
            moved = [Request(route, r.body) if r.route == spec.route else r for r in found]
            return cls(service, route, tuple(moved))
        return cls(service, route, tuple(builtin_requests(service, rows_per_request, route=route)))

    @classmethod
    def with_requests(cls, service: str, requests: Iterable[Request], route: str | None = None) -> LoadTarget:
        """A pool of any service; the measured `route` defaults to its most frequent one."""
        pool = tuple(requests)
        if not pool:
            raise ValueError("a load target's request pool is empty")
        if route is None:
            counts: dict[str, int] = {}
            for request in pool:
                counts[request.route] = counts.get(request.route, 0) + 1
            route = max(counts, key=lambda r: counts[r])
        return cls(service, route_of(route), pool)

    @property
    def user_class(self) -> str:
        """The Locust user class for servetune's locustfile (the registry's, else ServiceUser)."""
        try:
            return service_spec(self.service).locust_user
        except ValueError:
            return "ServiceUser"


class LoadRunError(RuntimeError):
    """Locust failed to start, died, or stopped following the runner."""


def check_url(url: str, allow_remote: bool) -> str:
    """The base URL without a trailing slash; loopback only unless `allow_remote`."""
    parsed = urlparse(url)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise ValueError(f"url must look like http://127.0.0.1:3000, got {url!r}")
    if not allow_remote and parsed.hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"url {url!r} is not on this machine; pass allow_remote=True (--url) to load it")
    return url.rstrip("/")


@dataclass(frozen=True)
class ClientFigures:
    """What the load generator saw in one window (quantiles over 2xx responses, ms)."""

    requests: int
    successes: int
    by_status: dict[str, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    failure_slices: tuple[tuple[int, int], ...] = ()


FAILURE_SLICES = 8  # slices of one step's requests that `failure_slices` counts failures in
SLICE_MIN_REQUESTS = 10


def failure_slices(events: Sequence[tuple[float, float, str]]) -> tuple[tuple[int, int], ...]:
    """(failures, requests) per slice of `events` (in completion order) cut into up to
    FAILURE_SLICES near-equal runs of at least SLICE_MIN_REQUESTS requests."""
    count = min(FAILURE_SLICES, len(events) // SLICE_MIN_REQUESTS)
    if count < 2:
        return ()
    edges = [round(i * len(events) / count) for i in range(count + 1)]
    return tuple(
        (sum(1 for _, _, status in events[lo:hi] if not status.startswith("2")), hi - lo)
        for lo, hi in itertools.pairwise(edges)
    )


class EventLog:
    """Reads the locustfile's per-request lines (`<prefix>.<pid>`) as they are appended."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, str] = {}
        self.events: list[tuple[float, float, str]] = []
        self._sorted = True

    def poll(self) -> None:
        for path in sorted(self.prefix.parent.glob(self.prefix.name + ".*")):
            with path.open("r") as handle:
                handle.seek(self._offsets.get(path, 0))
                chunk = handle.read()
                self._offsets[path] = handle.tell()
            text = self._partial.pop(path, "") + chunk
            lines = text.split("\n")
            if lines and lines[-1]:
                self._partial[path] = lines[-1]
            for line in lines[:-1]:
                parts = line.split()
                if len(parts) == 3:
                    self.events.append((float(parts[0]), float(parts[1]), parts[2]))
                    self._sorted = False

    def window(self, start: float, end: float) -> list[tuple[float, float, str]]:
        """Requests that completed in [start, end)."""
        if not self._sorted:
            self.events.sort()
            self._sorted = True
        lo = bisect.bisect_left(self.events, (start, -math.inf, ""))
        hi = bisect.bisect_left(self.events, (end, -math.inf, ""))
        return self.events[lo:hi]


def client_figures(events: Sequence[tuple[float, float, str]]) -> ClientFigures:
    by_status: dict[str, int] = {}
    ok: list[float] = []
    for _, latency, status in events:
        by_status[status] = by_status.get(status, 0) + 1
        if status.startswith("2"):
            ok.append(latency)
    p50, p95, p99 = np.quantile(ok, (0.50, 0.95, 0.99)) if ok else (math.nan,) * 3
    return ClientFigures(
        requests=len(events),
        successes=len(ok),
        by_status=by_status,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        max_ms=max(ok) if ok else math.nan,
        failure_slices=failure_slices(events),
    )


def spread(values: Sequence[float]) -> float:
    """Largest relative deviation from the mean ((max-min)/mean); inf for a zero mean."""
    mean = sum(values) / len(values)
    if mean <= 0:
        return 0.0 if max(values) <= 0 else math.inf
    return (max(values) - min(values)) / mean


def uneven_workers(requests: dict[str, float], workers: int, min_share: float = 0.5) -> list[Invalidity]:
    """Workers below `min_share` of their fair share of requests (missing workers count as 0)."""
    total = sum(requests.values())
    if workers < 2 or total < 10 * workers:
        return []
    fair = total / workers
    found = []
    for index in range(1, workers + 1):
        got = requests.get(str(index), 0.0)
        if got < min_share * fair:
            detail = f"worker {index} served {got / total:.0%} of the requests (fair share {1 / workers:.0%})"
            found.append(Invalidity(InvalidReason.UNEVEN_WORKERS, detail))
    return found


WORKER_MARK = "_bentoml_impl.worker.service"


def local_server_workers(url: str) -> int | None:
    """BentoML workers of the server listening on `url`'s port on this machine, or None."""
    parsed = urlparse(url)
    if parsed.hostname not in LOOPBACK_HOSTS or parsed.port is None:
        return None
    try:
        pids = [
            c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == parsed.port and c.pid
        ]
        if not pids:
            return None
        proc = psutil.Process(pids[0])
        parent = proc.parent()
        root = parent if WORKER_MARK in " ".join(proc.cmdline()) and parent is not None else proc
        count = sum(1 for child in root.children() if WORKER_MARK in " ".join(child.cmdline()))
    except (psutil.Error, OSError):
        return None
    return count or None


@dataclass
class GeneratorCpu:
    """CPU seconds of the Locust process tree, per process, between two samples."""

    root: psutil.Process
    last: dict[int, float] = field(default_factory=dict)
    last_at: float = 0.0

    def sample(self) -> tuple[float, float]:
        """(total cores, busiest process cores) since the previous sample."""
        now = time.monotonic()
        times = tree_cpu_times(self.root)
        elapsed = now - self.last_at
        deltas = [t - self.last.get(pid, t) for pid, t in times.items()] if self.last_at else []
        self.last, self.last_at = times, now
        if not deltas or elapsed <= 0:
            return 0.0, 0.0
        return sum(deltas) / elapsed, max(deltas) / elapsed


@dataclass(frozen=True)
class SubWindow:
    start: float
    end: float
    server_goodput_rps: float | None
    generator_cores: float
    generator_peak_core: float


@dataclass(frozen=True)
class LoadReport:
    """One accepted step window: the tuner's StepMeasurement plus the raw figures behind it."""

    measurement: StepMeasurement
    client: ClientFigures
    server: WindowFigures | None
    sub_windows: tuple[SubWindow, ...]
    window_start: float
    window_end: float

    def to_dict(self) -> dict[str, object]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class LocustRunner:
    """LoadRunner over a Locust subprocess; see the module docstring for the timing rules."""

    rows_per_request: int = 1
    processes: int = 1
    settle_s: float = 1.0
    tolerance: float = 0.10
    max_extend: float = 2.0
    cpu_saturation: float = 0.9
    allow_remote: bool = False
    start_timeout_s: float = 60.0
    log_dir: Path | None = None
    metrics: ReaderFactory = ScrapeReader  # base URL -> the reader of that server's metrics
    # Locust stops itself after this long: a backstop, the runner stops it after the last step
    # (and core.watchdog when servetune dies).
    max_run_s: float = 3600.0
    # A user's locustfile run instead of loadtests/locustfile.py, with servetune's shape and
    # hooks (loadtests/locust_hooks.py says what pacing supports); None: servetune's ServiceUser.
    locustfile: Path | None = None
    last_reports: list[LoadReport] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.locustfile is not None:
            path = Path(self.locustfile).expanduser().resolve()
            if not path.is_file():
                raise ValueError(f"locustfile {self.locustfile} not found")
            if "," in str(path):
                raise ValueError(f"locustfile {path}: Locust cannot take a path with a comma")
            self.locustfile = path

    def run_steps(
        self,
        url: str,
        service: str | LoadTarget,
        steps: Iterable[LoadStep],
        stop_after: StopRule | None = None,
        endpoint: str | None = None,
        expected_workers: int | None = None,
    ) -> list[StepMeasurement]:
        """LoadRunner protocol: one StepMeasurement per step run."""
        return [r.measurement for r in self.run(url, service, steps, stop_after, endpoint, expected_workers)]

    def run(
        self,
        url: str,
        service: str | LoadTarget,
        steps: Iterable[LoadStep],
        stop_after: StopRule | None = None,
        endpoint: str | None = None,
        expected_workers: int | None = None,
    ) -> list[LoadReport]:
        """Run `steps` against `url` in one Locust process; stop after `stop_after` says so.

        `service` is a registered service's name (its built-in pool to `endpoint`, default its
        batchable one) or a LoadTarget (its pool and route; no `endpoint` then).
        `steps` is consumed lazily (an adaptive search chooses each step after the last one was
        passed to `stop_after`). `expected_workers` (default: counted from the local server's
        processes) lets a silent worker be flagged.
        """
        base = check_url(url, self.allow_remote)
        target = self.target(service, endpoint)
        pending = _checked(iter(steps))
        first = next(pending, None)
        if first is None:
            return []
        self.last_reports = []
        workers = expected_workers or local_server_workers(base)
        with (
            contextlib.closing(self.metrics(base)) as reader,
            tempfile.TemporaryDirectory(prefix="servetune-locust-", dir=self.log_dir) as tmp,
        ):
            work = Path(tmp)
            pool = self._pool(target)
            if pool is not None:
                write_pool(pool, work / REQUESTS_FILE)
            control = work / "control.json"
            events = EventLog(work / "events")
            write_control(control, 0, first.users, first.rate)
            proc = self._start(base, target, work, control, self.max_run_s)
            interrupted = False
            index = 0
            try:
                cpu = GeneratorCpu(psutil.Process(proc.pid))
                step: LoadStep | None = first
                while step is not None:
                    if index:
                        write_control(control, index, step.users, step.rate)
                    timeout = self.start_timeout_s if index == 0 else 15.0
                    self._wait_ack(control, index, proc, timeout, work)
                    time.sleep(self.settle_s)
                    report = self._measure(step, target, reader, events, cpu, proc, work, workers)
                    self.last_reports.append(report)
                    if stop_after is not None and stop_after(report.measurement):
                        break
                    step, index = next(pending, None), index + 1
            except BaseException:
                interrupted = True  # a signal or an error: no need to let Locust finish on its own
                raise
            finally:
                write_control(control, index + 1, 1, None, stop=True)
                _stop(proc, own_exit_s=0.0 if interrupted else 0.5)
        return list(self.last_reports)

    def target(self, service: str | LoadTarget, endpoint: str | None = None) -> LoadTarget:
        """What `run` loads: `service` itself when a LoadTarget, else the registered service's
        built-in pool to `endpoint`; with a user's locustfile no pool is needed, only the route
        to measure (`endpoint`, or the registered service's batchable one)."""
        if isinstance(service, LoadTarget):
            if endpoint is not None:
                raise ValueError("give the route in the LoadTarget, not as endpoint")
            return service
        if self.locustfile is not None:
            if endpoint is None:
                try:
                    endpoint = service_spec(service).endpoint
                except ValueError:
                    raise ValueError(
                        f"{service!r} is not a registered service: give the endpoint whose server "
                        "figures to read (endpoint=, or a LoadTarget)"
                    ) from None
            return LoadTarget(service, route_of(endpoint))
        return LoadTarget.of(service, endpoint, self.rows_per_request)

    def _pool(self, target: LoadTarget) -> tuple[Request, ...] | None:
        if target.requests is not None or self.locustfile is not None:
            return target.requests
        return tuple(builtin_requests(target.service, self.rows_per_request, route=target.route))

    def _command(self, url: str, target: LoadTarget) -> list[str]:
        files = LOCUSTFILES
        if self.locustfile is not None:
            files = ",".join(str(p) for p in (*HOOK_FILES, self.locustfile))
        cmd = [
            sys.executable, "-m", "locust", "-f", files, "--headless", "--host", url,
            "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "2",
            "--exit-code-on-error", "0",
        ]  # fmt: skip
        if self.processes > 1:
            cmd += ["--processes", str(self.processes)]
        if self.locustfile is None:
            cmd.append(target.user_class)  # a user's file: every user class in it runs
        return cmd

    def _start(
        self, url: str, target: LoadTarget, work: Path, control: Path, budget_s: float
    ) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            SERVETUNE_SHAPE="control",
            SERVETUNE_CONTROL=str(control),
            SERVETUNE_EVENTS=str(work / "events"),
            SERVETUNE_SERVICE=target.service,
            SERVETUNE_ENDPOINT=target.route,
            SERVETUNE_ROWS=str(self.rows_per_request),
            SERVETUNE_PROCESSES=str(self.processes),
            SERVETUNE_MAX_RUN_S=f"{budget_s:.0f}",
            PYTHONUNBUFFERED="1",
        )
        env.pop("SERVETUNE_REQUESTS", None)
        if (work / REQUESTS_FILE).is_file():
            env["SERVETUNE_REQUESTS"] = str(work / REQUESTS_FILE)
        if not _on_site_path(PACKAGE_ROOT):  # a source checkout: let Locust import servetune
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
        # A user's locustfile finds its relative paths from the current dir; servetune's own
        # runs in the work dir (Locust puts the cwd first on sys.path: nothing there to shadow).
        cwd = Path.cwd() if self.locustfile is not None else work
        with (work / "locust.log").open("wb") as log:
            return spawn(self._command(url, target), "locust", env=env, stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)  # fmt: skip

    def _wait_ack(
        self, control: Path, seq: int, proc: subprocess.Popen[bytes], timeout_s: float, work: Path
    ) -> None:
        ack = control.with_name(control.name + ".ack")

        def applied() -> bool:
            if proc.poll() is not None:
                raise LoadRunError(f"locust exited with code {proc.returncode}:\n{_log_tail(work)}")
            with contextlib.suppress(OSError, ValueError):
                return bool(json.loads(ack.read_text()).get("seq") == seq)
            return False

        if wait_until(applied, timeout_s, interval_s=0.05):
            return
        raise LoadRunError(
            f"locust did not apply load step {seq} within {timeout_s:.0f}s:\n{_log_tail(work)}"
        )

    def _measure(
        self,
        step: LoadStep,
        target: LoadTarget,
        reader: MetricsReader,
        events: EventLog,
        cpu: GeneratorCpu,
        proc: subprocess.Popen[bytes],
        work: Path,
        workers: int | None,
    ) -> LoadReport:
        sub_s = min(5.0, max(0.5, step.duration_s / 3))
        per_window = max(3, round(step.duration_s / sub_s))
        cap_s = step.duration_s * max(1.0, self.max_extend)
        marks = [reader.mark()]
        cpu.sample()
        t0 = time.time()
        subs: list[SubWindow] = []
        stable = aborted = False
        while True:
            next_at = t0 + (len(subs) + 1) * sub_s
            time.sleep(max(0.0, next_at - time.time()))
            if proc.poll() is not None:
                raise LoadRunError(f"locust exited with code {proc.returncode}:\n{_log_tail(work)}")
            mark = reader.mark()
            cores, peak = cpu.sample()
            end = mark.at
            fig = reader.window(marks[-1], mark, target.route)
            goodput = fig.goodput_rps if fig is not None else None
            subs.append(SubWindow(marks[-1].at, end, goodput, cores, peak))
            marks.append(mark)
            if _overloaded(step, events, subs[-1], fig):
                aborted = True
                break
            if len(subs) >= per_window:
                stable = self._stable(subs[-3:], events)
                if stable or (end - t0) >= cap_s - 1e-6:
                    break
        time.sleep(0.35)  # the locustfile flushes its request log every 0.2 s
        events.poll()
        per_window = min(per_window, len(subs))
        used = subs[-per_window:]
        start, end = used[0].start, used[-1].end
        client = client_figures(events.window(start, end))
        first, last = marks[-per_window - 1], marks[-1]
        server = reader.window(first, last, target.route, marks[-per_window:-1])
        reasons: list[Invalidity] = []
        peak = max(s.generator_peak_core for s in used)
        if peak >= self.cpu_saturation:
            detail = f"load generator saturated ({peak:.2f} cores in one process)"
            reasons.append(Invalidity(InvalidReason.GENERATOR_SATURATED, detail))
        if server is not None and server.requests_per_worker:
            seen = set(server.requests_per_worker) | set(server.batches_per_worker)
            if last.snapshot is not None:
                seen |= workers_seen(last.snapshot)
            known = max([int(w) for w in seen if w.isdigit()] + [workers or 0])
            reasons += uneven_workers(server.requests_per_worker, known)
        measurement = _measurement(step, end - start, client, server, used, stable, reasons)
        if aborted:
            measurement = replace(measurement, aborted=True)
        return LoadReport(measurement, client, server, tuple(subs), start, end)

    def _stable(self, last3: Sequence[SubWindow], events: EventLog) -> bool:
        rates = [s.server_goodput_rps for s in last3]
        if any(r is None for r in rates):
            events.poll()
            rates = [
                sum(1 for e in events.window(s.start, s.end) if e[2].startswith("2")) / (s.end - s.start)
                for s in last3
            ]
        return spread([float(r or 0.0) for r in rates]) <= self.tolerance


def _measurement(
    step: LoadStep,
    seconds: float,
    client: ClientFigures,
    server: WindowFigures | None,
    used: Sequence[SubWindow],
    stable: bool,
    reasons: list[Invalidity],
) -> StepMeasurement:
    failures = {code: n for code, n in client.by_status.items() if not code.startswith("2")}
    seconds = max(seconds, 1e-9)
    return StepMeasurement(
        step=step,
        duration_s=seconds,
        requests=client.requests,
        successes=client.successes,
        failures_by_status=failures,
        rps=client.requests / seconds,
        goodput_rps=client.successes / seconds,
        failure_ratio=(client.requests - client.successes) / client.requests if client.requests else 0.0,
        client_p50_ms=_finite(client.p50_ms),
        client_p95_ms=_finite(client.p95_ms),
        client_p99_ms=_finite(client.p99_ms),
        server_p50_ms=server.p50_ms if server else None,
        server_p95_ms=server.p95_ms if server else None,
        server_p99_ms=server.p99_ms if server else None,
        in_progress=server.in_progress if server else None,
        batch_size_hist=dict(server.batch_size_hist) if server else {},
        requests_per_worker=dict(server.requests_per_worker) if server else {},
        generator_cpu=sum(s.generator_cores for s in used) / len(used),
        stable=stable,
        valid=not reasons,
        invalid=tuple(reasons),
        server_source=server.source if server else None,
        failure_slices=client.failure_slices,
        gpu_utilization=server.gpu_utilization if server else None,
        gpu_memory_peak_bytes=server.gpu_memory_peak_bytes if server else None,
        gpu_memory_device_peak_bytes=server.gpu_memory_device_peak_bytes if server else None,
        gpu_memory_total_bytes=server.gpu_memory_total_bytes if server else None,
    )


ABORT_MIN_REQUESTS = 20


def _overloaded(
    step: LoadStep, events: EventLog, sub: SubWindow, server: WindowFigures | None = None
) -> bool:
    """The step's abort rule: this sub-window's p95 above `abort_above_ms` (the server's when it
    measured the sub-window, as the SLO judges; else the client's), or half of its requests
    failed (judged on at least ABORT_MIN_REQUESTS completions)."""
    if step.abort_above_ms is None:
        return False
    events.poll()
    window = events.window(sub.start, sub.end)
    if len(window) < ABORT_MIN_REQUESTS:
        return False
    figures = client_figures(window)
    failed = 1.0 - figures.successes / figures.requests
    p95 = server.p95_ms if server is not None and server.p95_ms is not None else figures.p95_ms
    return failed >= 0.5 or _finite(p95) > step.abort_above_ms


def _on_site_path(folder: Path) -> bool:
    """Whether `folder` is a site-packages dir (the child interpreter imports from it anyway)."""
    sites = [*site.getsitepackages(), site.getusersitepackages()]
    return any(Path(s).resolve() == folder for s in sites if s)


def _checked(steps: Iterator[LoadStep]) -> Iterator[LoadStep]:
    for step in steps:
        if step.users < 1 or not step.duration_s > 0:
            raise ValueError(f"a load step needs users >= 1 and duration_s > 0, got {step}")
        yield step


def _finite(value: float) -> float:
    """nan (no successful request) becomes +inf so an SLO check fails instead of passing."""
    return math.inf if math.isnan(value) else value


def _log_tail(work: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join((work / "locust.log").read_text(errors="replace").splitlines()[-lines:])
    return ""


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 8.0, own_exit_s: float = 3.0) -> None:
    """Let Locust stop on its own (control says stop) for `own_exit_s`, then SIGTERM its process
    group and SIGKILL whatever is left (core.processes.stop_tree)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(own_exit_s)
    stop_tree(proc, grace_s, term_group=True)
