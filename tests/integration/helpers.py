"""Helpers for tests that run real servers: metrics parsing and leftover-process checks."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from core.polling import wait_until


def metric_samples(url: str, name: str) -> list[tuple[str, dict[str, str], float]]:
    """All samples of the metric family `name` from `url`/metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    samples = []
    for family in text_string_to_metric_families(text):
        if family.name == name:
            samples.extend((s.name, dict(s.labels), float(s.value)) for s in family.samples)
    return samples


def labelled_totals(url: str, name: str, sample: str, label: str) -> Counter[str]:
    """The samples named `sample` of metric family `name` summed per value of `label`.

    BentoML counters grow from server start: a test takes this before and after its own requests
    and asserts on the difference, so it does not depend on what earlier tests sent.
    """
    totals: Counter[str] = Counter()
    for sample_name, labels, value in metric_samples(url, name):
        if sample_name == sample:
            totals[labels[label]] += value
    return totals


def status_totals(url: str) -> Counter[str]:
    """Requests counted so far per HTTP status code, over every endpoint and worker."""
    family = "bentoml_service_request"
    return labelled_totals(url, family, f"{family}_total", "http_response_code")


def bentoml_processes() -> list[psutil.Process]:
    """Every `bentoml serve` or BentoML worker process on this machine."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if "bentoml" in cmd and ("serve" in cmd or "_bentoml_impl" in cmd):
            found.append(proc)
    return found


def worker_processes(server_pid: int) -> list[psutil.Process]:
    """BentoML service worker processes below the server process."""
    parent = psutil.Process(server_pid)
    return [
        child
        for child in parent.children(recursive=True)
        if "_bentoml_impl.worker.service" in " ".join(child.cmdline())
    ]


def processes_mentioning(folder: Path) -> list[str]:
    """Live processes whose command line or working directory is inside `folder`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(folder) in cmd or str(folder) in (proc.info["cwd"] or ""):
                found.append(f"{proc.pid}: {cmd}")
    return found


def wait_all_workers(url: str, workers: int, timeout_s: float = 30.0) -> set[int]:
    """Call a built-in service's /info on fresh connections until every worker index has
    answered (or time runs out); the worker indices seen."""
    seen: set[int] = set()

    def all_seen() -> bool:
        with contextlib.suppress(httpx.HTTPError, ValueError, TypeError, KeyError):
            answer = httpx.post(f"{url}/info", json={}, headers={"Connection": "close"}, timeout=5.0)
            if answer.status_code == 200:
                seen.add(int(answer.json()["worker_index"]))
        return len(seen) >= workers

    wait_until(all_seen, timeout_s, interval_s=0.05)
    return seen
