"""The Deployer seam and its local implementation: `bentoml serve` via core.server.BentoServer."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import psutil

from core.serveconfig import Config
from core.server import BentoServer, ServerError
from core.startwatch import READY_TIMEOUT_S


class DeployError(RuntimeError):
    """The server did not start or did not become ready; the message carries the reason."""


class Deployment(Protocol):
    """A running service a load runner can aim at."""

    @property
    def url(self) -> str: ...

    def alive(self) -> bool: ...

    def peak_rss_mb(self) -> float | None: ...

    def log_tail(self) -> str: ...


@runtime_checkable
class WatchesWorkers(Protocol):
    """A deployment that can tell whether a worker process died since it started."""

    def worker_faults(self) -> list[str]:
        """One line per worker that died since the deployment was ready ([] when none did)."""
        ...


def worker_faults(deployment: Deployment) -> list[str]:
    """The deployment's worker faults, or [] when it cannot watch its workers."""
    return deployment.worker_faults() if isinstance(deployment, WatchesWorkers) else []


class Deployer(Protocol):
    """Starts a config and always stops it when the `with` block ends (also on Ctrl-C)."""

    def deploy(self, config: Config) -> AbstractContextManager[Deployment]: ...


class RssSampler:
    """Samples the resident memory of a process and all its children; keeps the peak sum."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def sample(self) -> int:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)


@dataclass
class LocalDeployment:
    """A BentoServer that is up, with its memory sampler and the workers it was ready with."""

    server: BentoServer
    sampler: RssSampler | None
    workers: list[tuple[int, psutil.Process]] = field(default_factory=list)

    def worker_faults(self) -> list[str]:
        """Workers of the ready server that are gone (BentoML restarts them; their requests fail)."""
        now = self.server.workers()
        faults = []
        for index, proc in self.workers:
            if _running(proc):
                continue
            new = [p.pid for i, p in now if i == index and p.pid != proc.pid]
            replaced = f"; BentoML replaced it with pid {new[0]}" if new else "; not replaced (yet)"
            faults.append(f"worker {index} (pid {proc.pid}) died during the trial{replaced}")
        return faults

    @property
    def url(self) -> str:
        return self.server.url

    def alive(self) -> bool:
        return self.server.alive()

    def peak_rss_mb(self) -> float | None:
        if self.sampler is None or self.sampler.peak_bytes <= 0:
            return None
        return self.sampler.peak_bytes / 2**20

    def log_tail(self) -> str:
        return self.server.log.tail_text(20)


WORKER_INIT_FAILED = "Initializing service error"


class FailFastServer(BentoServer):
    """A BentoServer that gives up as soon as a worker fails to initialise.

    BentoML keeps the parent alive and retries a worker whose service constructor raises (a
    missing model, say), so waiting for /readyz alone would burn the whole ready timeout.
    """

    def startup_failure(self) -> str | None:
        lines = list(self.log.tail)
        if any(WORKER_INIT_FAILED in line for line in lines):
            return "a worker failed to initialise: " + _last_error(lines)
        return None


def _running(proc: psutil.Process) -> bool:
    """Still the same live process (psutil checks the start time, so a reused pid is not)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _last_error(lines: list[str]) -> str:
    errors = [
        line.strip() for line in lines if ("Error: " in line or "Exception: " in line or "NotFound: " in line)
    ]
    return errors[-1] if errors else "see the server log"


class LocalBentoDeployer:
    """Runs each config as `bentoml serve` on 127.0.0.1 (free port, own BENTOML_HOME, bounded log)."""

    def __init__(
        self, service: str, log_dir: Path | None = None, ready_timeout_s: float = READY_TIMEOUT_S
    ) -> None:
        self.service = service
        self.log_dir = log_dir
        self.ready_timeout_s = ready_timeout_s

    @contextlib.contextmanager
    def deploy(self, config: Config) -> Iterator[LocalDeployment]:
        spec = config.serve_config(self.service).server_spec()
        log_dir = self.log_dir / config.key if self.log_dir is not None else None
        server = FailFastServer(spec, log_dir=log_dir)
        sampler: RssSampler | None = None
        try:
            try:
                server.start(self.ready_timeout_s)  # returns once every worker is ready
            except ServerError as exc:
                raise DeployError(str(exc)) from exc
            assert server.process is not None
            sampler = RssSampler(server.process.pid).start()
            yield LocalDeployment(server, sampler, server.workers())
        finally:
            if sampler is not None:
                sampler.stop()
            server.stop()
