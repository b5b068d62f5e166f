"""DigitsClassifier: 8x8 digit images (raw 0..16 intensities) -> label + probabilities."""

from __future__ import annotations

from typing import Annotated

import bentoml
import numpy as np
import torch
from pydantic import BaseModel, Field

from services.config import JSON_RESPONSE, service_config
from services.gcpolicy import tune_gc
from services.guards import install_guards
from services.knobs import apply_placement, read_knobs
from services.models.data import CLASS_LABELS, PIXEL_MAX, normalise
from services.models.variants import load_digits_variant, model_dtype
from services.reuseport import spread_connections_over_workers

SERVICE_NAME = "DigitsClassifier"
MAX_IMAGES_PER_REQUEST = 256
KNOBS = read_knobs()
spread_connections_over_workers()  # an even split of connections over workers

# strict: a JSON number only (an integer is fine); `false` or "1" is a client bug, not a pixel.
Pixel = Annotated[float, Field(strict=True, ge=0.0, le=PIXEL_MAX, allow_inf_nan=False)]
FlatImage = Annotated[list[Pixel], Field(min_length=64, max_length=64)]
ImageRow = Annotated[list[Pixel], Field(min_length=8, max_length=8)]
GridImage = Annotated[list[ImageRow], Field(min_length=8, max_length=8)]
Image = FlatImage | GridImage
Images = Annotated[list[Image], Field(min_length=1, max_length=MAX_IMAGES_PER_REQUEST)]


class Prediction(BaseModel):
    label: int
    probabilities: list[float]


@bentoml.service(name=SERVICE_NAME, **service_config())
class DigitsClassifier:
    """Classifies 8x8 digits; batches rows from concurrent requests (adaptive batching)."""

    def __init__(self) -> None:
        self.device, self.threads = apply_placement(KNOBS, SERVICE_NAME)
        # Refuses a missing variant, one below its quality floor (VariantNotEligibleError) or one
        # this worker's device cannot run (VariantDeviceError: int8 on a GPU, fp16/bf16 on a CPU).
        # An fp16/bf16 net casts its inputs to its dtype and returns float32 logits.
        self.model_tag, self.net = load_digits_variant(KNOBS.variant, KNOBS.model_tag, self.device)
        tune_gc()  # no 100-250 ms full GC pauses under load (services/gcpolicy.py)

    @bentoml.api(
        batchable=True,
        max_batch_size=KNOBS.max_batch_size,
        max_latency_ms=KNOBS.max_latency_ms,
    )
    def predict(self, images: Images) -> Annotated[list[Prediction], JSON_RESPONSE]:
        """Each image is 64 values or 8 rows of 8, intensities 0..16 as in load_digits."""
        flat = np.stack([np.ravel(np.asarray(image, dtype=np.float32)) for image in images])
        x = torch.from_numpy(normalise(flat))
        with torch.inference_mode():
            proba = torch.softmax(self.net(x.to(self.device)), dim=1).cpu().numpy()
        return [
            Prediction(label=int(row.argmax()), probabilities=[round(float(p), 6) for p in row])
            for row in proba
        ]

    @bentoml.api
    def info(self) -> dict[str, object]:
        """The model tag, variant, knobs and placement this worker runs with."""
        return {
            "model_tag": self.model_tag,
            "labels": CLASS_LABELS,
            "knobs": KNOBS.model_dump(),
            "device": self.device,
            "dtype": model_dtype(self.net),
            "threads": self.threads,
            "worker_index": bentoml.server_context.worker_index,
        }


install_guards(DigitsClassifier)  # auth (when configured), JSON only, 1 MB cap, true OpenAPI
