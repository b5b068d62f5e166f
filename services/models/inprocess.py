"""In-process batch runners: `run(n, repeat)` does the model work of one batch of n items.

The profiler (`tuner/profile.py`) times them; the service registry names them per service.
`device` places the model as a service worker would ("cpu", "cuda:0"); fp16 / bf16 need a GPU.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

BatchRunner = Callable[[int, int], None]  # run(n, repeat)


def embedding_batch_runner(variant: str = "fp32", seed: int = 0, device: str = "cpu") -> BatchRunner:
    """Encode n shipped sentences (a seeded sample per repeat) with the stored MiniLM variant."""
    from services.models.sentences import load_sentences
    from services.models.variants import load_minilm_variant

    _, model = load_minilm_variant(variant, device=device)
    sentences = load_sentences()

    def run(n: int, repeat: int) -> None:
        chosen = random.Random(seed * 1000 + repeat * 100 + n).sample(sentences, min(n, len(sentences)))
        model.encode(
            chosen, batch_size=n, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )

    return run


def digits_batch_runner(variant: str = "fp32", seed: int = 0, device: str = "cpu") -> BatchRunner:
    """Classify n held-out digits with the stored digits variant."""
    import torch

    from services.models.data import held_out_raw, normalise
    from services.models.variants import load_digits_variant

    _, net = load_digits_variant(variant, device=device)
    images = np.asarray(held_out_raw()[0], dtype=np.float32).reshape(-1, 64)

    def run(n: int, repeat: int) -> None:
        rows = np.random.default_rng(seed * 1000 + repeat).integers(0, len(images), n)
        x = torch.from_numpy(normalise(images[rows])).to(device)
        with torch.inference_mode():
            torch.softmax(net(x), dim=1).cpu()  # on a GPU: wait for the batch, as the service does

    return run
