"""Write every artefact of a deployment into one directory.

Layout of DIR:
  bento/bentofile.yaml (+ Dockerfile, entrypoint.sh once built)
  k8s/*.yaml                 Namespace, Deployment, Service, NetworkPolicy, HPA, PDB
                             (kubectl apply -f DIR/k8s/)
  k8s/auth/secret.yaml       with --auth: the bearer-token Secret, a placeholder to fill in first
  k8s/monitoring/*.yaml      ServiceMonitor, PrometheusRule (need the Prometheus Operator CRDs),
                             the dashboard as a ConfigMap for the Grafana sidecar
  k8s/locust/*.yaml          distributed Locust (apply only to load-test)
  prometheus/rules.yml       the same rules for a plain Prometheus (`rule_files:`)
  prometheus/adapter-values.yaml  prometheus-adapter rule for the HPA's RPS metric
  grafana/dashboard.json
  locust/Dockerfile          the Locust image (build from the repository root)
  sizing.json                the numbers and how they were derived
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deploy import bento, grafana, k8s, locust, prometheus
from deploy.context import RenderContext


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (locustfile, long PromQL) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)


@dataclass
class Rendered:
    """Paths written, grouped by kind, for the CLI summary and the validators."""

    out: Path
    k8s: list[Path] = field(default_factory=list)
    crds: list[Path] = field(default_factory=list)
    rules: Path | None = None
    dashboard: Path | None = None
    other: list[Path] = field(default_factory=list)

    def all(self) -> list[Path]:
        singles = [p for p in (self.rules, self.dashboard) if p is not None]
        return [*self.k8s, *self.crds, *singles, *self.other]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_bentofile(context: RenderContext, out: Path) -> Path:
    return _write(out / "bento" / "bentofile.yaml", dump_yaml(bento.bentofile(context)))


def render_all(context: RenderContext, out: Path, locustfile_source: str) -> Rendered:
    """Render everything for `context` under `out` (existing files are overwritten)."""
    done = Rendered(out=out)
    done.other.append(write_bentofile(context, out))
    for name, obj in k8s.inference_objects(context).items():
        done.k8s.append(_write(out / "k8s" / name, dump_yaml(obj)))
    for name, obj in locust.objects(context, locustfile_source).items():
        done.k8s.append(_write(out / "k8s" / "locust" / name, dump_yaml(obj)))
    monitoring = {
        "servicemonitor.yaml": k8s.service_monitor(context),
        "prometheusrule.yaml": prometheus.prometheus_rule(context),
    }
    for name, obj in monitoring.items():
        done.crds.append(_write(out / "k8s" / "monitoring" / name, dump_yaml(obj)))
    board = grafana.dashboard(context)
    done.k8s.append(
        _write(
            out / "k8s" / "monitoring" / "grafana-dashboard-configmap.yaml",
            dump_yaml(grafana.dashboard_configmap(context, board)),
        )
    )
    done.rules = _write(out / "prometheus" / "rules.yml", dump_yaml(prometheus.rules_file(context)))
    done.other.append(
        _write(out / "prometheus" / "adapter-values.yaml", dump_yaml(prometheus.adapter_values(context)))
    )
    done.dashboard = _write(out / "grafana" / "dashboard.json", json.dumps(board, indent=2) + "\n")
    done.other.append(_write(out / "locust" / "Dockerfile", locust.dockerfile()))
    sizing = {
        "winner": context.winner.model_dump(mode="json"),
        "bento": context.bento_tag,
        "image": context.image,
        "sizing": context.sizing.as_dict(),
        "derivation": context.sizing.explain(),
    }
    done.other.append(_write(out / "sizing.json", json.dumps(sizing, indent=2) + "\n"))
    return done
