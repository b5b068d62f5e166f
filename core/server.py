"""Start and stop real `bentoml serve` processes: free port, own BENTOML_HOME, bounded logs."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from core.polling import wait_until
from core.processes import spawn, stop_tree
from core.registry import ServiceSpec
from core.startwatch import READY_TIMEOUT_S, STALL_S, StartProgress
from services import adapter
from services.config import DURATION_BUCKETS

REPO_ROOT = Path(__file__).resolve().parent.parent  # where servetune's own packages are installed
# services/adapter.py (it loads the target and sets the knobs) is served as a top-level module of
# its own, from a folder holding only it and the GPU sampler, as a Bento carries them: a user's
# service whose project has packages named like servetune's (`services`, `core`) imports its own.
ADAPTER_MODULE = "servetune_adapter"
ADAPTER = f"{ADAPTER_MODULE}:service"
ADAPTER_SOURCES = {
    f"{ADAPTER_MODULE}.py": "services/adapter.py",
    "servetune_gpumetrics.py": "services/gpumetrics.py",
}
BATCHING_KNOBS = ("max_batch_size", "max_latency_ms")
LOOPBACK = "127.0.0.1"
WORKER_MARK = "_bentoml_impl.worker.service"  # in the command line of every BentoML service worker


class ServerError(RuntimeError):
    """The server failed to start, died, or did not become ready; carries the log tail."""


@dataclass(frozen=True)
class ServerSpec:
    """Everything that decides how one server process is launched."""

    service: ServiceSpec
    args: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    gpus: int = 0
    port: int = 0
    host: str = LOOPBACK
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def working_dir(self) -> Path:
        return Path(self.service.working_dir) if self.service.working_dir else REPO_ROOT

    def batching(self) -> dict[str, dict[str, int]]:
        """The adaptive-batching parameters the adapter sets on the loaded endpoint."""
        if not self.service.batchable:
            return {}
        given = {k: int(self.args[k]) for k in BATCHING_KNOBS if self.args.get(k) is not None}
        return {self.service.api: given} if given else {}

    def threads(self, cores: int | None = None) -> int:
        """Torch/OpenMP threads per worker: the `threads` knob, else cores // workers."""
        value = self.args.get("threads")
        if value is not None:
            return int(value)
        return max(1, (cores or os.cpu_count() or 1) // max(1, self.workers))

    def serve_args(self) -> list[tuple[str, str]]:
        """`bentoml serve --arg` pairs: servetune's knobs for a service that reads them, plus the
        service's own arguments."""
        pairs = (
            [(k, str(v)) for k, v in self.args.items() if v is not None]
            if self.service.reads_knob_args
            else []
        )
        variant = str(self.args.get("variant") or "")
        if not self.service.reads_knob_args and "=" in variant:  # a user's alternative
            name, _, value = variant.partition("=")
            pairs.append((name, value))
        return pairs + list(self.service.service_args)

    def config_overrides(self) -> dict[str, Any]:
        service: dict[str, Any] = {"workers": self.workers}
        if self.gpus > 0:
            service["resources"] = {"gpu": self.gpus}
        if self.service.external:  # servetune's own services declare these buckets themselves
            service["metrics"] = {"enabled": True, "duration": {"buckets": DURATION_BUCKETS}}
        return {"services": {self.service.bento_name: service}}


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
PORTS_BELOW_EPHEMERAL = 12000  # how far below the ephemeral range a server's port is drawn


def ephemeral_low(path: Path = EPHEMERAL_RANGE_FILE) -> int:
    """The lowest port the OS hands out for port 0 (Linux's default 32768 where unreadable)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = LOOPBACK, low: int | None = None) -> int:
    """A TCP port free right now on `host`, drawn below the OS's ephemeral range: after we pick
    ours, `bentoml serve` reserves ephemeral ports for its own sockets (circus's control
    endpoints), and an ephemeral pick could be the one we chose ("Address already in use")."""
    top = ephemeral_low() if low is None else low
    span = range(max(1024, top - PORTS_BELOW_EPHEMERAL), top)
    draw = random.Random()
    for _ in range(200 if span else 0):
        port = draw.choice(span)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


def main_bentoml_home() -> Path:
    return Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml")).expanduser()


def adapter_folder(folder: Path) -> Path:
    """`folder` with the adapter and the GPU sampler under the names a Bento gives them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in ADAPTER_SOURCES.items():
        (folder / name).write_bytes((REPO_ROOT / source).read_bytes())
    return folder


def private_bentoml_home(parent: Path | None = None) -> Path:
    """A fresh BENTOML_HOME whose `models` links to the main store.

    Each running server needs its own home: its Prometheus multiprocess folder is wiped at
    every start, so two servers sharing one would corrupt each other's metrics.
    """
    home = Path(tempfile.mkdtemp(prefix="servetune-home-", dir=parent))
    models = main_bentoml_home() / "models"
    models.mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(models, target_is_directory=True)
    return home


class BoundedLog:
    """Keeps the first `head_bytes` of a stream in a file and the last lines in memory."""

    def __init__(self, path: Path, head_bytes: int = 2_000_000, tail_lines: int = 200) -> None:
        self.path = path
        self.head_bytes = head_bytes
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.dropped_bytes = 0
        self._written = 0
        self._thread: threading.Thread | None = None

    def follow(self, stream: Any) -> None:
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        with self.path.open("w", encoding="utf-8", errors="replace") as out:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                self.tail.append(line)
                if self._written + len(raw) <= self.head_bytes:
                    out.write(line)
                    out.flush()
                    self._written += len(raw)
                else:
                    self.dropped_bytes += len(raw)
            if self.dropped_bytes:
                out.write(f"\n[servetune: {self.dropped_bytes} bytes of log dropped; last lines:]\n")
                out.writelines(self.tail)

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def tail_text(self, lines: int = 40) -> str:
        return "".join(list(self.tail)[-lines:])


class BentoServer:
    """One `bentoml serve` process tree; use as a context manager so it is always stopped.

    Started through core.processes.spawn: its own session, and a watchdog stops the tree if
    servetune dies without stopping it.
    """

    def __init__(self, spec: ServerSpec, log_dir: Path | None = None) -> None:
        self.spec = spec
        self.port = spec.port or free_port(spec.host)
        self._own_dirs: list[Path] = []
        self.log_dir = log_dir or self._temp_dir("servetune-logs-")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.home = private_bentoml_home()
        self._own_dirs.append(self.home)
        self.adapter_dir = adapter_folder(self.home / "adapter")
        self.log = BoundedLog(self.log_dir / f"server-{self.port}.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.keep_log = False  # a temporary log directory is removed on a clean stop

    def _temp_dir(self, prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        self._own_dirs.append(path)
        return path

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "bentoml", "serve", ADAPTER,
            "--host", self.spec.host, "--port", str(self.port),
            "--working-dir", str(self.spec.working_dir),
        ]  # fmt: skip
        for key, value in self.spec.serve_args():
            cmd += ["--arg", f"{key}={value}"]
        return cmd

    @property
    def evidence_path(self) -> Path:
        return self.home / "servetune-workers.jsonl"

    def evidence(self) -> list[dict[str, Any]]:
        """One record per worker start: pid, worker index, torch threads, batching, devices."""
        try:
            lines = self.evidence_path.read_text().splitlines()
        except OSError:
            return []
        records = []
        for line in lines:
            with contextlib.suppress(ValueError):  # a line a worker is still writing
                records.append(json.loads(line))
        return [r for r in records if isinstance(r, dict)]

    def ready_workers(self, records: list[dict[str, Any]] | None = None) -> int:
        """How many of this server's workers have built the service (each records itself right
        after the service's `__init__`) and still run; `records`: the evidence, if read already."""
        live = {process.pid for _, process in self.workers()}
        found = self.evidence() if records is None else records
        return len({r.get("worker_index") for r in found if r.get("pid") in live})

    def all_workers_ready(self) -> bool:
        """Every worker the spec asks for is ready. /readyz answers as soon as one is, and a
        worker still importing has no listening socket yet (services/reuseport.py), so the first
        requests would all go to the others. True when no worker could record itself (an
        unwritable home): /readyz is then all there is to go by."""
        records = self.evidence()
        return not records or self.ready_workers(records) >= self.spec.workers

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        threads = str(self.spec.threads())
        own = [] if self.spec.service.external else [str(REPO_ROOT)]  # built-ins import services.*
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(self.adapter_dir), *own, env.get("PYTHONPATH")])
        )
        env.update(
            {
                adapter.ENV_TARGET: self.spec.service.import_path,
                adapter.ENV_WORKING_DIR: str(self.spec.working_dir),
                adapter.ENV_BATCHING: json.dumps(self.spec.batching()),
                adapter.ENV_THREADS: threads,
                adapter.ENV_GPUS: str(self.spec.gpus),
                adapter.ENV_EVIDENCE: str(self.evidence_path),
                "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
            }
        )
        env.update(
            BENTOML_HOME=str(self.home),
            BENTOML_DO_NOT_TRACK="True",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            BENTOML_CONFIG_OVERRIDES=json.dumps(self.spec.config_overrides()),
            PYTHONUNBUFFERED="1",
        )
        # libgomp's spinning idle threads starve the event loop when torch uses > 1 thread:
        # measured 10x fewer RPS on /encode_unbatched (1 worker x 2 threads) without this.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if self.spec.gpus <= 0:
            env["CUDA_VISIBLE_DEVICES"] = ""
        env.update(self.spec.extra_env)
        # A dependency's processes (bentoml.depends) get these back as they were: the knobs are
        # the target's alone.
        knobs = {n: env[n] for n in adapter.PRIOR_VARIABLES if n in env and env[n] != os.environ.get(n)}
        env[adapter.ENV_PRIOR] = adapter.prior_environment(dict(os.environ), knobs)
        env[adapter.ENV_SERVICE_NAME] = self.spec.service.bento_name
        return env

    def start(self, ready_timeout_s: float = READY_TIMEOUT_S, stall_s: float = STALL_S) -> None:
        """Launch and wait for /readyz (`wait_ready`); raises ServerError (after cleaning up)
        on failure."""
        self.process = spawn(
            self.command(),
            "server",
            env=self.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.log.follow(self.process.stdout)
        try:
            self.wait_ready(ready_timeout_s, stall_s)
        except ServerError as exc:
            self.keep_log = True
            self.stop()
            raise ServerError(f"{exc}\n(full log: {self.log.path})") from None
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, stall_s: float = STALL_S) -> None:
        """Poll /readyz until it answers 200 and every worker is ready (`all_workers_ready`).

        Raises ServerError when the process exits, when `startup_failure` names a reason, when
        its processes used (almost) no CPU for `stall_s` (a hung start), or when `timeout_s`
        runs out; the message carries the log tail.
        """
        assert self.process is not None
        progress = StartProgress(self.process.pid, window_s=stall_s)
        with httpx.Client(timeout=2.0) as client:

            def ready() -> bool:
                if self.process is not None and self.process.poll() is not None:
                    self.log.join(2.0)
                    raise ServerError(
                        f"server exited with code {self.process.returncode} before it was "
                        f"ready:\n{self.log.tail_text()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/readyz").status_code == 200 and self.all_workers_ready():
                        return True
                failure = self.startup_failure()
                if failure is not None:
                    raise ServerError(failure)
                if progress.stalled():
                    raise ServerError(
                        f"server start made no progress: its processes used under "
                        f"{progress.min_cpu_s:g} CPU seconds in {progress.idle_s():.0f} s with "
                        f"{self.ready_workers()} of {self.spec.workers} workers ready (a constructor "
                        f"that waits on something?):\n{self.log.tail_text()}"
                    )
                return False

            if not wait_until(ready, timeout_s, interval_s=0.2):
                raise ServerError(f"server not ready after {timeout_s:.0f}s:\n{self.log.tail_text()}")

    def startup_failure(self) -> str | None:
        """Why a server that is still starting will never be ready (None: keep waiting)."""
        return None

    def wait(self) -> int | None:
        """Block until the server process exits; its exit code."""
        return self.process.wait() if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def workers(self) -> list[tuple[int, psutil.Process]]:
        """(worker index, process) of the BentoML service workers running under this server now."""
        if self.process is None:
            return []
        found = []
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error, ValueError):
                    cmd = child.cmdline()
                    if WORKER_MARK in " ".join(cmd) and "--worker-id" in cmd:
                        found.append((int(cmd[cmd.index("--worker-id") + 1]), child))
        return sorted(found, key=lambda item: (item[0], item[1].pid))

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the server, wait, then SIGKILL its process group and any worker left; frees the port."""
        process = self.process
        if process is not None:
            stop_tree(process, grace_s)
            self.log.join()
            self.process = None
        if process is not None and process.returncode not in (0, -signal.SIGTERM, None):
            self.keep_log = True  # it crashed or had to be killed: keep its log
        for path in self._own_dirs:
            _remove_tree(path, keep_logs=path == self.log_dir and self.keep_log)

    def __enter__(self) -> BentoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _remove_tree(path: Path, keep_logs: bool) -> None:
    import shutil

    if keep_logs:
        return
    if (path / "models").is_symlink():
        (path / "models").unlink()
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_server(spec: ServerSpec, ready_timeout_s: float = READY_TIMEOUT_S) -> Iterator[BentoServer]:
    """Start a server, yield it, and always stop it (including on Ctrl-C)."""
    server = BentoServer(spec)
    try:
        server.start(ready_timeout_s)
        yield server
    finally:
        server.stop()
