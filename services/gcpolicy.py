"""Garbage-collector policy for service workers: no 100-250 ms full collections under load.

Measured on the no-op service (1 worker, 8 closed-loop users): CPython's full (gen2) collection
ran about once a second and took 50-250 ms, walking the ~200k long-lived objects of the worker
(BentoML, pydantic, torch, the model); those pauses were the 100-250 ms request tail, seen the
same on the client and in the server's duration histogram. Freezing the objects alive after
start-up (gc.freeze) takes them out of every collection, and higher thresholds make
collections of the short-lived per-request garbage rarer; together they removed the tail
(p99 174 ms -> 23 ms, server side, same load). SERVETUNE_GC=default keeps CPython's policy;
SERVETUNE_GC_LOG=PATH appends every collection slower than 2 ms to PATH.<pid> (diagnosis).
"""

from __future__ import annotations

import gc
import os
import time

THRESHOLDS = (int(os.environ.get("SERVETUNE_GC_GEN0", "20000")), 50, 50)
SLOW_MS = 2.0


def tune_gc() -> bool:
    """Freeze everything alive now and raise the collection thresholds; False when disabled."""
    log = os.environ.get("SERVETUNE_GC_LOG")
    if log:
        _log_collections(f"{log}.{os.getpid()}")
    if os.environ.get("SERVETUNE_GC", "").strip().lower() == "default":
        return False
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return True


def _log_collections(path: str) -> None:
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000.0
        if ms >= SLOW_MS:
            with open(path, "a", encoding="utf-8") as out:
                out.write(f"{time.time():.3f} gen{info['generation']} {ms:.1f}ms\n")

    gc.callbacks.append(callback)
