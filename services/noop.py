"""NoOp: a batchable endpoint that does no model work, to measure the serving stack itself."""

from __future__ import annotations

from typing import Annotated

import bentoml
from pydantic import Field

from services.config import service_config
from services.gcpolicy import tune_gc
from services.guards import install_guards
from services.knobs import read_knobs
from services.responses import FloatRows
from services.reuseport import spread_connections_over_workers

SERVICE_NAME = "NoOp"
MAX_ITEMS_PER_REQUEST = 256
KNOBS = read_knobs()
spread_connections_over_workers()  # an even split of connections over workers

Item = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # a JSON number: not `true`, "1", NaN
Items = Annotated[list[Item], Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)]


@bentoml.service(name=SERVICE_NAME, **service_config())
class NoOp:
    """Echoes its input through adaptive batching (same knobs as the model services)."""

    def __init__(self) -> None:
        self.gc_tuned = tune_gc()

    @bentoml.api(
        batchable=True,
        max_batch_size=KNOBS.max_batch_size,
        max_latency_ms=KNOBS.max_latency_ms,
        output_spec=FloatRows,
    )
    def echo(self, items: Items) -> list[float]:
        """Returns the items unchanged: one output row per input row."""
        return list(items)

    @bentoml.api(output_spec=FloatRows)
    def echo_unbatched(self, items: Items) -> list[float]:
        """Same as /echo without adaptive batching."""
        return list(items)

    @bentoml.api
    def info(self) -> dict[str, object]:
        """The knobs and worker index of this worker."""
        return {
            "knobs": KNOBS.model_dump(),
            "worker_index": bentoml.server_context.worker_index,
            "gc_tuned": self.gc_tuned,
        }


install_guards(NoOp)  # auth (when configured), JSON only, 1 MB cap, true OpenAPI
