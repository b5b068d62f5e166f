"""What every renderer needs: the winner, the options, the sizing and the names derived from them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.registry import ServiceSpec, service_spec
from core.serveconfig import WinnerFile
from deploy.plan import DeployOptions, Sizing

HTTP_PORT = 3000
CONTAINER_NAME = "bentoml"
BENTO_UID = 1034  # the user BentoML's generated Dockerfile creates (BENTO_USER_UID)


def dns_name(text: str) -> str:
    """A Kubernetes/Bento name from a service name: lower case, runs of other characters as `-`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "service"


@dataclass(frozen=True)
class RenderContext:
    """Inputs of one rendering; names are computed once so all artefacts agree."""

    winner: WinnerFile
    options: DeployOptions
    sizing: Sizing
    bento_tag: str
    model_tag: str

    @property
    def target(self) -> ServiceSpec:
        return service_spec(self.winner.config.service)

    @property
    def name(self) -> str:
        """Kubernetes name of the inference Deployment/Service (e.g. servetune-digits)."""
        return self.options.name or f"servetune-{dns_name(self.winner.config.service)}"[:50].rstrip("-")

    @property
    def external(self) -> bool:
        """A user's own service: the Bento runs it through the adapter."""
        return self.target.external

    @property
    def namespace(self) -> str:
        return self.options.namespace

    @property
    def image(self) -> str:
        """The option, else the image `bentoml containerize <bento_tag>` produces."""
        return self.options.image or self.bento_tag

    @property
    def route(self) -> str:
        """The inference route whose traffic is measured, alerted on and autoscaled on."""
        return f"/{self.target.endpoint}"

    @property
    def selector(self) -> str:
        """PromQL label matchers for this service's inference traffic (without braces)."""
        return (
            f'namespace="{self.namespace}", runner_name="{self.target.bento_name}", endpoint="{self.route}"'
        )

    @property
    def slo_seconds(self) -> float:
        return self.winner.slo_p95_ms / 1000.0

    @property
    def slo_quantile(self) -> str:
        """The latency quantile the tuner's SLO bounds: "p95" (default) or "p99"."""
        return self.winner.slo_quantile

    @property
    def slo_text(self) -> str:
        return f"{self.slo_quantile} <= {self.winner.slo_p95_ms:g} ms"

    def labels(self, component: str = "inference") -> dict[str, str]:
        return {
            "app.kubernetes.io/name": self.name if component == "inference" else f"{self.name}-{component}",
            "app.kubernetes.io/part-of": "servetune",
            "app.kubernetes.io/component": component,
        }

    def selector_labels(self, component: str = "inference") -> dict[str, str]:
        labels = self.labels(component)
        return {"app.kubernetes.io/name": labels["app.kubernetes.io/name"]}

    def config_overrides(self) -> dict[str, object]:
        """BENTOML_CONFIG_OVERRIDES for workers and GPUs.

        Keyed by the service's BentoML name: BentoML ignores a global `workers` key when the
        service decorator sets its own.
        """
        service: dict[str, object] = {"workers": self.sizing.workers}
        if self.sizing.gpus > 0:
            service["resources"] = {"gpu": self.sizing.gpus}
        return {"services": {self.target.bento_name: service}}
