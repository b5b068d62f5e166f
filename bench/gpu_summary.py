"""The GPU check's JSON: environment, every phase's figures, and the summary the README reports."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# The figures the README's "On a GPU" section reports; `summarize` fills every one (None: unmeasured).
SUMMARY_KEYS = (
    "device", "gpu_name", "served_config", "served_sentences_per_s", "inprocess_sentences_per_s",
    "served_over_inprocess", "inprocess_peak_sentences_per_s", "tuned_config", "tuned_goodput_rps",
    "naive_config", "naive_goodput_rps", "tuned_over_naive", "naive_gpu_config", "naive_gpu_goodput_rps",
    "tuned_over_naive_gpu", "winner_workers_per_gpu", "winner_variant", "winner_gpu_utilization",
    "winner_gpu_utilization_source",
)  # fmt: skip
# Beside them: how the tuned figures came about when the tune did not run as planned (None when it
# did): a lowered ask (1 trial) and/or "partial: tune cut at N s, best of K trials measured".
NOTE_KEYS = ("tuned_note",)
MODEL_NOTE = (
    "randomly initialised MiniLM (all-MiniLM-L6-v2's architecture and tokenizer): its cost, not its "
    "quality; the quality guards run on CPU (`servetune variants embedding`)"
)


def environment(device: str) -> dict[str, Any]:
    """Machine, GPU and package versions."""
    found: dict[str, Any] = {"python": platform.python_version(), "cores": os.cpu_count(), "device": device}
    for package in (
        "torch",
        "bentoml",
        "locust",
        "optuna",
        "sentence-transformers",
        "transformers",
        "pydantic",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    with contextlib.suppress(Exception):
        import torch

        found["cuda"] = torch.version.cuda
        if device == "cuda":
            props = torch.cuda.get_device_properties(0)
            found.update(
                gpu_name=props.name, gpu_memory_total_bytes=int(props.total_memory),
                gpu_count=torch.cuda.device_count(), capability=f"{props.major}.{props.minor}",
            )  # fmt: skip
    with contextlib.suppress(Exception):
        import pynvml

        pynvml.nvmlInit()
        found["driver"] = pynvml.nvmlSystemGetDriverVersion()
        pynvml.nvmlShutdown()
    return found


def best_served(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The served config with the most sentences/s on the batchable endpoint."""
    measured = [r for r in rows if r.get("ok") and r.get("sentences_per_s") and not r.get("endpoint")]
    return max(measured, key=lambda r: r["sentences_per_s"]) if measured else None


def naive_on_gpu(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The naive endpoint served on the GPU (the library's naive baseline runs on CPU)."""
    return next((r for r in rows if r.get("ok") and r.get("endpoint") and r.get("knee_goodput_rps")), None)


def summarize(
    env: dict[str, Any],
    inprocess: dict[str, Any] | None,
    rows: Sequence[dict[str, Any]],
    tune: dict[str, Any] | None,
) -> dict[str, Any]:
    """The README's figures (every SUMMARY_KEYS and NOTE_KEYS entry; None when its phase did not
    measure it; a tune cut short gives the figures its trials.jsonl held, with `tuned_note`).
    Goodputs are requests/s of the same requests (rows_per_request sentences each); `naive` is the
    tuner's naive baseline (CPU: torch threads = all cores), `naive_gpu` the same unbatched
    endpoint on the GPU."""
    summary: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS + NOTE_KEYS)
    summary.update(device=env.get("device"), gpu_name=env.get("gpu_name"))
    limits = (inprocess or {}).get("sentences_per_s", {})
    peaks = [v for per in limits.values() for v in per.values()]
    summary["inprocess_peak_sentences_per_s"] = max(peaks) if peaks else None
    best = best_served(rows)
    if best is not None:
        summary.update(
            served_config=best["config"], served_sentences_per_s=best["sentences_per_s"],
            inprocess_sentences_per_s=best.get("inprocess_sentences_per_s"),
            served_over_inprocess=best.get("served_over_inprocess"),
        )  # fmt: skip
    winner, naive = (tune or {}).get("winner"), (tune or {}).get("naive")
    summary["tuned_note"] = (tune or {}).get("note")
    if naive:
        summary.update(naive_config=naive["config"], naive_goodput_rps=naive["goodput_rps"])
    if winner:
        own, nvml = winner.get("gpu_utilization"), winner.get("gpu_utilization_nvml")
        source = "step" if own is not None else "nvml" if nvml is not None else None
        summary.update(
            tuned_config=winner["config"], tuned_goodput_rps=winner["goodput_rps"],
            tuned_over_naive=(tune or {}).get("tuned_over_naive"),
            winner_workers_per_gpu=winner.get("workers_per_gpu"), winner_variant=winner.get("variant"),
            winner_gpu_utilization=own if own is not None else nvml,
            winner_gpu_utilization_source=source,
        )  # fmt: skip
    on_gpu = naive_on_gpu(rows)
    if on_gpu is not None:
        summary.update(naive_gpu_config=on_gpu["config"], naive_gpu_goodput_rps=on_gpu["knee_goodput_rps"])
        if winner:
            summary["tuned_over_naive_gpu"] = round(winner["goodput_rps"] / on_gpu["knee_goodput_rps"], 3)
    return summary


def assemble(
    env: dict[str, Any],
    phases: dict[str, dict[str, Any]],
    inprocess: dict[str, Any] | None,
    rows: Sequence[dict[str, Any]],
    tune: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole JSON document (`phases`: name -> ok, wall_s, error)."""
    return {
        "summary": summarize(env, inprocess, rows, tune),
        "environment": env,
        "phases": phases,
        "inprocess": inprocess,
        "served": list(rows),
        "tune": tune,
        "model": MODEL_NOTE,
        **(extra or {}),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(document, indent=2, default=str) + "\n")
    partial.replace(path)
