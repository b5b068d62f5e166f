"""Offline validation of rendered artefacts.

- Kubernetes built-in kinds: the official OpenAPI-derived JSON schemas shipped with the
  `kubernetes-validate` package, strict (unknown fields are errors).
- ServiceMonitor / PrometheusRule (CRDs, not in those schemas): JSON schemas in deploy/schemas/,
  hand-written from the Prometheus Operator CRD field names (strict as well).
- Prometheus rules: `promtool check rules`.
- PromQL of the dashboard: each expression wrapped as a recording rule and checked with promtool,
  after substituting Grafana's variables.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.schema.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.schema.json",
}
# What Grafana substitutes before a query reaches Prometheus; values only need to parse.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "1h",
    "${namespace}": "servetune",
    "$namespace": "servetune",
}


class PromtoolMissing(RuntimeError):
    """promtool is not installed (Debian/Ubuntu: `apt-get install prometheus`)."""


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document in a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@cache
def _crd_validator(filename: str) -> Any:
    import jsonschema

    schema = json.loads((SCHEMAS / filename).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate_object(obj: dict[str, Any], k8s_version: str) -> list[str]:
    """Problems with one Kubernetes object (empty when valid)."""
    import kubernetes_validate

    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_SCHEMAS:
        validator = _crd_validator(CRD_SCHEMAS[key])
        return [
            f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
            for err in validator.iter_errors(obj)
        ]
    try:
        kubernetes_validate.validate(obj, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in getattr(exc, "path", [])) or "<root>"
        return [f"{where}: {str(exc).splitlines()[0]}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {key[0]} {key[1]} in Kubernetes {k8s_version}"]
    return []


def validate_manifests(paths: Iterable[Path], k8s_version: str) -> dict[str, list[str]]:
    """File -> problems, for every file with at least one problem."""
    problems: dict[str, list[str]] = {}
    for path in paths:
        for doc in load_documents(path):
            found = validate_object(doc, k8s_version)
            if found:
                label = f"{path} ({doc.get('kind')}/{doc.get('metadata', {}).get('name')})"
                problems.setdefault(label, []).extend(found)
    return problems


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise PromtoolMissing("promtool not found; install the Debian package `prometheus`")
    return found


def check_rules(path: Path) -> tuple[bool, str]:
    """`promtool check rules FILE`: (passed, output)."""
    done = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def substitute_grafana(expr: str) -> str:
    """Replace Grafana variables by sample values; raises on any variable left over."""
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    leftover = re.findall(r"\$\{?\w+\}?", expr)
    if leftover:
        raise ValueError(f"unknown Grafana variable(s) {leftover} in {expr!r}")
    return expr


def check_promql(exprs: list[str]) -> dict[str, str]:
    """Expression -> promtool's parse error, for every expression that does not parse."""
    rules = [{"record": f"servetune:check:{i}", "expr": expr} for i, expr in enumerate(exprs)]
    with tempfile.TemporaryDirectory(prefix="servetune-promql-") as tmp:
        path = Path(tmp) / "exprs.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
        ok, output = check_rules(path)
    if ok:
        return {}
    errors: dict[str, str] = {}
    for line in output.splitlines():
        match = re.search(r'"servetune:check:(\d+)": (.*)$', line)
        if match:
            errors[exprs[int(match.group(1))]] = match.group(2)
    return errors or {"<file>": output}
