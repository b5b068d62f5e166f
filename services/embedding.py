"""TextEmbedding: a list of sentences -> L2-normalised all-MiniLM-L6-v2 vectors (384 floats)."""

from __future__ import annotations

from typing import Annotated

import bentoml
import numpy as np
from pydantic import Field, StringConstraints

from services.config import service_config
from services.gcpolicy import tune_gc
from services.guards import install_guards
from services.knobs import apply_placement, read_knobs
from services.models.variants import load_minilm_variant, model_dtype
from services.responses import VectorRows
from services.reuseport import spread_connections_over_workers

SERVICE_NAME = "TextEmbedding"
MAX_SENTENCES_PER_REQUEST = 64
# Longer strings are rejected (400). Within the limit, text beyond the model's 256 word
# pieces is truncated by the tokenizer, as sentence-transformers does.
MAX_SENTENCE_CHARS = 2000
KNOBS = read_knobs()
spread_connections_over_workers()  # an even split of connections over workers

Sentence = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=MAX_SENTENCE_CHARS, pattern=r"\S")
]
Sentences = Annotated[list[Sentence], Field(min_length=1, max_length=MAX_SENTENCES_PER_REQUEST)]


@bentoml.service(name=SERVICE_NAME, **service_config())
class TextEmbedding:
    """Embeds sentences; batches sentences from concurrent requests (adaptive batching)."""

    def __init__(self) -> None:
        self.device, self.threads = apply_placement(KNOBS, SERVICE_NAME)
        # Refuses a missing variant, one below its quality floor (VariantNotEligibleError) or one
        # this worker's device cannot run (VariantDeviceError: int8 on a GPU, fp16/bf16 on a CPU).
        self.model_tag, self.model = load_minilm_variant(KNOBS.variant, KNOBS.model_tag, self.device)
        tune_gc()  # no 100-250 ms full GC pauses under load (services/gcpolicy.py)

    @bentoml.api(
        batchable=True,
        max_batch_size=KNOBS.max_batch_size,
        max_latency_ms=KNOBS.max_latency_ms,
        output_spec=VectorRows,
    )
    def encode(self, sentences: Sentences) -> np.ndarray:
        """One unit-length 384-float vector per sentence (JSON, or float32 bytes when asked with
        `Accept: application/octet-stream`)."""
        return self._embed(sentences)

    @bentoml.api(output_spec=VectorRows)
    def encode_unbatched(self, sentences: Sentences) -> np.ndarray:
        """Same as /encode without adaptive batching: the naive baseline the tuner compares with."""
        return self._embed(sentences)

    def _embed(self, sentences: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(sentences),
            batch_size=len(sentences),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    @bentoml.api
    def info(self) -> dict[str, object]:
        """The model tag, variant, knobs and placement this worker runs with."""
        return {
            "model_tag": self.model_tag,
            "knobs": KNOBS.model_dump(),
            "device": self.device,
            "dtype": model_dtype(self.model),
            "threads": self.threads,
            "worker_index": bentoml.server_context.worker_index,
            "max_seq_length": self.model.max_seq_length,
        }


install_guards(TextEmbedding)  # auth (when configured), JSON only, 1 MB cap, true OpenAPI
