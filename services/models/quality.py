"""Quality of a compressed variant against fp32, and in-process throughput (interleaved runs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Accuracy guard defaults: digits may lose at most one accuracy point, MiniLM keeps cosine >= 0.98.
DIGITS_MAX_ACCURACY_DROP = 0.01
MINILM_MIN_COSINE = 0.98


def embed(model: SentenceTransformer, sentences: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Unit-length embeddings as a float32 array (N, dim)."""
    with torch.inference_mode():
        vectors = model.encode(
            list(sentences),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    return np.asarray(vectors, dtype=np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, dim) arrays."""
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def retrieval_accuracy(first: np.ndarray, second: np.ndarray) -> float:
    """Fraction of pairs whose partner is the nearest of all second sentences (cosine)."""
    sims = first @ second.T
    return float((sims.argmax(axis=1) == np.arange(len(first))).mean())


@dataclass(frozen=True)
class EmbeddingQuality:
    mean_cosine: float
    min_cosine: float
    retrieval_fp32: float
    retrieval_variant: float
    sentences: int
    pairs: int

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "mean_cosine": round(self.mean_cosine, 6),
            "min_cosine": round(self.min_cosine, 6),
            "retrieval_fp32": round(self.retrieval_fp32, 6),
            "retrieval_variant": round(self.retrieval_variant, 6),
            "sentences": self.sentences,
            "pairs": self.pairs,
        }


def embedding_quality(
    reference: SentenceTransformer,
    variant: SentenceTransformer,
    sentences: Sequence[str],
    pairs: Sequence[tuple[str, str]],
) -> EmbeddingQuality:
    """Cosine of variant vs fp32 embeddings on `sentences`, and the paraphrase retrieval check."""
    ref = embed(reference, sentences)
    var = embed(variant, sentences)
    cos = cosine_rows(ref, var)
    firsts = [a for a, _ in pairs]
    seconds = [b for _, b in pairs]
    return EmbeddingQuality(
        mean_cosine=float(cos.mean()),
        min_cosine=float(cos.min()),
        retrieval_fp32=retrieval_accuracy(embed(reference, firsts), embed(reference, seconds)),
        retrieval_variant=retrieval_accuracy(embed(variant, firsts), embed(variant, seconds)),
        sentences=len(sentences),
        pairs=len(pairs),
    )


Runner = Callable[[int], int]
"""Runs a workload at a batch size; returns how many items it processed."""


def interleaved_throughput(
    runners: dict[str, Runner],
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 3,
    threads: int = 2,
) -> dict[str, dict[int, float]]:
    """Items/s per runner and batch size: runners alternate within each repeat, best run kept.

    The thread count is fixed for the whole measurement (restored afterwards); taking the best
    of the repeats, measured side by side, makes the ratios robust on a shared machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    best: dict[str, dict[int, float]] = {name: dict.fromkeys(batch_sizes, 0.0) for name in runners}
    try:
        for run in runners.values():  # warm-up (allocations, one-off kernels)
            for bs in batch_sizes:
                run(bs)
        for _ in range(repeats):
            for bs in batch_sizes:
                for name, run in runners.items():
                    start = time.perf_counter()
                    items = run(bs)
                    elapsed = time.perf_counter() - start
                    best[name][bs] = max(best[name][bs], items / max(elapsed, 1e-9))
    finally:
        torch.set_num_threads(before)
    return best


def embedding_runner(model: SentenceTransformer, sentences: Sequence[str], bs1_items: int = 32) -> Runner:
    """Encode a fixed slice of sentences: `bs1_items` one by one, or all in batches."""

    def run(batch_size: int) -> int:
        chosen = list(sentences[:bs1_items]) if batch_size == 1 else list(sentences)
        embed(model, chosen, batch_size=batch_size)
        return len(chosen)

    return run


def digits_runner(net: torch.nn.Module, x: np.ndarray, bs1_items: int = 300) -> Runner:
    """Classify normalised images: `bs1_items` one by one, or all in batches."""
    data = torch.as_tensor(x, dtype=torch.float32)

    def run(batch_size: int) -> int:
        chosen = data[:bs1_items] if batch_size == 1 else data
        with torch.inference_mode():
            for start in range(0, len(chosen), batch_size):
                net(chosen[start : start + batch_size])
        return len(chosen)

    return run


def rounded(figures: dict[int, float]) -> dict[str, Any]:
    """{1: x, 32: y} -> {"throughput_bs1": x, "throughput_bs32": y} rounded to 0.1 item/s."""
    return {f"throughput_bs{bs}": round(value, 1) for bs, value in figures.items()}
