"""Rendered artefacts validated offline: Kubernetes schemas, CRD schemas, promtool, dashboard PromQL."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core.serveconfig import ServeConfig, WinnerFile
from deploy import bento, locust, prometheus
from deploy.context import RenderContext
from deploy.grafana import dashboard_queries
from deploy.k8s import RPS_METRIC
from deploy.plan import DeployOptions, size
from deploy.render import Rendered, render_all
from deploy.validate import (
    check_promql,
    check_rules,
    load_documents,
    substitute_grafana,
    validate_manifests,
    validate_object,
)
from services.auth import AUTH_TOKEN_FILE_ENV, PLACEHOLDER_TOKEN, TokenFileError, read_token
from tuner.commands.deploy import DEFAULT_LOCUSTFILE

LOCUSTFILE = '''"""the registered user class next to another one"""
from locust import FastHttpUser, task


class ServiceUser(FastHttpUser):
    @task
    def predict(self) -> None:
        self.client.post("/predict", json={"images": [[0.0] * 64]})


class OtherUser(FastHttpUser):
    @task
    def encode(self) -> None:
        self.client.post("/encode", json={"sentences": ["a b c"]})
'''
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


@pytest.fixture(scope="module")
def needs_promtool() -> None:
    """promtool must exist in CI (.ci/run installs it); locally a missing one skips."""
    if shutil.which("promtool") is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: install the Debian package `prometheus`")
        pytest.skip("promtool not installed (apt-get install prometheus)")


def make_context(gpus: int = 0, auth: bool = False, **winner_fields: Any) -> RenderContext:
    config = ServeConfig(
        service="digits", max_batch_size=6, max_latency_ms=2000, workers=2, threads=1, gpus=gpus
    )
    fields: dict[str, Any] = {
        "slo_p95_ms": 250.0,
        "max_failure_ratio": 0.02,
        "goodput_rps": 180.0,
        "rss_mb": 640.0,
        "cores": 2,
    }
    fields.update(winner_fields)
    winner = WinnerFile(config=config, **fields)
    options = DeployOptions(
        peak_rps=500, namespace="ml-prod", locust_workers=3, monitoring_labels={"release": "kps"}, auth=auth
    )
    return RenderContext(winner, options, size(winner, options), "servetune-digits:abc123", "digits:v1")


@pytest.fixture(scope="module")
def context() -> RenderContext:
    return make_context()


@pytest.fixture(scope="module")
def rendered(context: RenderContext, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render_all(context, tmp_path_factory.mktemp("deploy"), LOCUSTFILE)


def only(paths: list[Path], kind: str) -> dict[str, Any]:
    docs = [d for p in paths for d in load_documents(p) if d["kind"] == kind]
    assert len(docs) >= 1, kind
    return docs[0]


def test_layout_and_kinds(rendered: Rendered) -> None:
    out = rendered.out
    for rel in ["bento/bentofile.yaml", "prometheus/rules.yml", "grafana/dashboard.json", "sizing.json"]:
        assert (out / rel).is_file(), rel
    kinds = sorted(d["kind"] for p in rendered.k8s + rendered.crds for d in load_documents(p))
    inference = ["Namespace", "Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler"]
    inference.append("PodDisruptionBudget")
    load_test = ["ConfigMap", "Deployment", "Service", "Deployment"]  # locust master, service, workers
    monitoring = ["ServiceMonitor", "PrometheusRule", "ConfigMap"]  # + the Grafana dashboard
    assert kinds == sorted([*inference, *load_test, *monitoring])
    assert all(p.parent == out / "k8s" / "monitoring" for p in rendered.crds)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_offline(rendered: Rendered, version: str) -> None:
    assert validate_manifests([*rendered.k8s, *rendered.crds], version) == {}


def test_validators_reject_mistakes(rendered: Rendered) -> None:
    deployment = only(rendered.k8s, "Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    assert validate_object(typo, "1.30.0"), "strict schema: unknown field"
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    assert validate_object(wrong_type, "1.30.0")
    monitor = only(rendered.crds, "ServiceMonitor")
    bad_monitor = copy.deepcopy(monitor)
    bad_monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert any("intervall" in p for p in validate_object(bad_monitor, "1.30.0"))
    rule = only(rendered.crds, "PrometheusRule")
    bad_rule = copy.deepcopy(rule)
    bad_rule["spec"]["groups"][0]["rules"][0]["alert"] = "Both"  # record and alert: not allowed
    assert validate_object(bad_rule, "1.30.0")


def test_monitoring_objects_carry_the_selector_labels(rendered: Rendered) -> None:
    monitoring = [p for p in rendered.k8s + rendered.crds if p.parent.name == "monitoring"]
    docs = [load_documents(p)[0] for p in monitoring]
    assert len(docs) == 3 and all(d["metadata"]["labels"]["release"] == "kps" for d in docs)
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert rendered.dashboard is not None
    (board,) = configmap["data"].values()
    assert json.loads(board) == json.loads(rendered.dashboard.read_text())


def test_deployment_resources_probes_and_security(rendered: Rendered, context: RenderContext) -> None:
    deployment = only(rendered.k8s[:5], "Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "servetune-digits:abc123"
    assert container["resources"]["requests"]["cpu"] == "2"  # 2 workers x 1 thread
    assert container["resources"]["requests"]["memory"] == f"{context.sizing.memory_request_mi}Mi"
    assert context.sizing.memory_request_mi >= 640 * 1.3
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    sec = container["securityContext"]
    assert sec["readOnlyRootFilesystem"] is True and sec["allowPrivilegeEscalation"] is False
    assert sec["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/tmp"] in {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["BENTOML_HOME"].startswith("/tmp/"), "BentoML writes its metrics dir under its home"
    assert json.loads(env["BENTOML_CONFIG_OVERRIDES"]) == {"services": {"DigitsClassifier": {"workers": 2}}}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "3000"


def test_everything_bentoml_writes_is_on_an_empty_dir(rendered: Rendered) -> None:
    pod = only(rendered.k8s, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs]
    env = {e["name"]: e["value"] for e in container["env"]}
    # BENTOML_HOME: prometheus_multiproc_dir; TMPDIR (unset: /tmp): BentoML's Unix sockets,
    # torch's inductor cache; HOME and XDG_CACHE_HOME: library caches
    needed = [env["BENTOML_HOME"], env.get("TMPDIR", "/tmp"), env["HOME"], env["XDG_CACHE_HOME"]]
    for path in needed:
        assert any(path == w or path.startswith(w.rstrip("/") + "/") for w in writable), path


def test_network_policy_admits_only_the_service_port(rendered: Rendered) -> None:
    policy = only(rendered.k8s, "NetworkPolicy")
    deployment = only(rendered.k8s, "Deployment")
    service = only(rendered.k8s, "Service")
    assert policy["metadata"]["namespace"] == "ml-prod"
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (port,) = service["spec"]["ports"]
    (container_port,) = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert port["targetPort"] == container_port["name"]
    assert policy["spec"]["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": container_port["containerPort"]}]}
    ], "one rule, one port, no other ingress"
    monitor = only(rendered.crds, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == port["name"], "metrics are scraped on that port"


def test_without_auth_there_is_no_secret_and_no_token_file(rendered: Rendered) -> None:
    assert not [d for p in rendered.k8s for d in load_documents(p) if d["kind"] == "Secret"]
    container = only(rendered.k8s, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert AUTH_TOKEN_FILE_ENV not in {e["name"] for e in container["env"]}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_auth_mounts_a_placeholder_secret_as_the_token_file(tmp_path: Path, version: str) -> None:
    done = render_all(make_context(auth=True), tmp_path, LOCUSTFILE)
    assert validate_manifests([*done.k8s, *done.crds], version) == {}
    secret_path = tmp_path / "k8s" / "auth" / "secret.yaml"
    assert secret_path in done.k8s, "outside k8s/*.yaml: applying the folder never resets the token"
    (secret,) = load_documents(secret_path)
    assert secret["kind"] == "Secret" and secret["stringData"] == {"token": PLACEHOLDER_TOKEN}
    pod = only(done.k8s, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[AUTH_TOKEN_FILE_ENV] == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert PLACEHOLDER_TOKEN not in json.dumps(container), "the token only reaches the pod as a file"
    placeholder = tmp_path / "token"
    placeholder.write_text(secret["stringData"]["token"])
    with pytest.raises(TokenFileError, match="placeholder"):
        read_token(placeholder)  # an unfilled Secret stops the service instead of guarding it


def test_gpu_winner_requests_gpus_and_the_default_torch_index() -> None:
    context = make_context(gpus=1)
    resources = context_deployment(context)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1 and resources["requests"]["nvidia.com/gpu"] == 1
    assert validate_object(context_deployment(context), "1.30.0") == []
    assert context.config_overrides() == {
        "services": {"DigitsClassifier": {"workers": 2, "resources": {"gpu": 1}}}
    }
    assert "extra_index_url" not in bento.bentofile(context)["python"], "GPU images need CUDA torch"
    assert bento.CPU_TORCH_INDEX in bento.bentofile(make_context())["python"]["extra_index_url"]


def context_deployment(context: RenderContext) -> dict[str, Any]:
    from deploy.k8s import deployment

    return deployment(context)


def parse_quantity(text: str) -> float:
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_hpa_is_sized_from_measured_goodput(rendered: Rendered) -> None:
    hpa = only(rendered.k8s, "HorizontalPodAutoscaler")["spec"]
    pods_metric, cpu_metric = hpa["metrics"]
    assert pods_metric["pods"]["metric"]["name"] == RPS_METRIC
    per_pod = parse_quantity(pods_metric["pods"]["target"]["averageValue"])
    assert per_pod == pytest.approx(180.0 * 0.7)
    assert hpa["minReplicas"] == -(-500 // per_pod)  # ceil(peak / per-pod target)
    assert hpa["maxReplicas"] > hpa["minReplicas"]
    assert cpu_metric["resource"]["target"]["averageUtilization"] == 70
    pdb = only(rendered.k8s, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    sizing = json.loads((rendered.out / "sizing.json").read_text())
    assert sizing["sizing"]["target_rps_per_pod"] == pytest.approx(per_pod)


def test_rules_pass_promtool_and_use_the_tuner_slo(rendered: Rendered, needs_promtool: None) -> None:
    assert rendered.rules is not None
    ok, output = check_rules(rendered.rules)
    assert ok, output
    alerts = {
        r["alert"]: r
        for g in yaml.safe_load(rendered.rules.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    latency = alerts["ServetuneLatencySLOBreached"]["expr"]
    assert latency.startswith("servetune:request_duration_seconds:p95_5m{") and latency.endswith("> 0.25")
    assert alerts["ServetuneErrorRatioHigh"]["expr"].endswith("> 0.02")  # max_failure_ratio
    assert alerts["ServetunePodOverMeasuredCapacity"]["expr"].endswith("> 180")  # goodput_rps
    crd_groups = only(rendered.crds, "PrometheusRule")["spec"]["groups"]
    assert crd_groups == yaml.safe_load(rendered.rules.read_text())["groups"]


def test_a_p99_slo_alerts_on_p99(tmp_path: Path, needs_promtool: None) -> None:
    context = make_context(slo_quantile="p99", slo_p95_ms=400.0)
    (latency,) = [r for r in prometheus.alert_rules(context) if r["alert"] == "ServetuneLatencySLOBreached"]
    assert latency["expr"].startswith("servetune:request_duration_seconds:p99_5m{")
    assert latency["expr"].endswith("> 0.4") and "p99 <= 400 ms" in latency["annotations"]["description"]
    rules = render_all(context, tmp_path, LOCUSTFILE).rules
    assert rules is not None and check_rules(rules)[0]


def test_promtool_catches_a_broken_rule(tmp_path: Path, needs_promtool: None) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "a:b", "expr": "sum(x"}]}]})
    )
    ok, output = check_rules(path)
    assert not ok and "parse error" in output


def test_dashboard_has_the_panels_and_every_query_parses(rendered: Rendered, needs_promtool: None) -> None:
    assert rendered.dashboard is not None
    board = json.loads(rendered.dashboard.read_text())
    titles = " | ".join(p["title"] for p in board["panels"])
    for wanted in ["Requests per second", "p50 / p95 / p99", "Error ratio by status", "in progress",
                   "Adaptive batch size", "CPU per pod", "Memory per pod"]:  # fmt: skip
        assert wanted in titles
    queries = dashboard_queries(board)
    assert len(queries) >= 12
    assert check_promql([substitute_grafana(q) for q in queries]) == {}
    broken = check_promql(["sum(rate(x[5m])", "up"])
    assert list(broken) == ["sum(rate(x[5m])"], "the checker must point at the broken query"
    with pytest.raises(ValueError, match="unknown Grafana variable"):
        substitute_grafana("rate(x[$unknown])")


def test_adapter_rule_query_parses(context: RenderContext, needs_promtool: None) -> None:
    (rule,) = prometheus.adapter_values(context)["rules"]["custom"]
    assert rule["name"]["as"] == RPS_METRIC
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", "bentoml_service_request_total")
        .replace("<<.LabelMatchers>>", 'namespace="ml-prod", pod=~"a|b"')
        .replace("<<.GroupBy>>", "pod")
    )
    assert check_promql([query, rule["seriesQuery"]]) == {}


def test_bentofile_bakes_in_the_winner_knobs(rendered: Rendered, context: RenderContext) -> None:
    doc = yaml.safe_load((rendered.out / "bento" / "bentofile.yaml").read_text())
    assert doc["service"] == "services.digits:DigitsClassifier"
    knobs = {"max_batch_size": 6, "max_latency_ms": 2000, "threads": 1, "variant": "fp32"}
    assert doc["args"] == {**knobs, "model_tag": "digits:v1"}
    assert doc["models"] == ["digits:v1"]
    assert doc["python"]["lock_packages"] is False
    assert any(re.fullmatch(r"torch==\d+\.\d+\.\d+", p) for p in doc["python"]["packages"])
    envs = {e["name"]: e["value"] for e in doc["envs"]}
    assert envs["BENTOML_DO_NOT_TRACK"] == "True"
    assert json.loads(envs["BENTOML_CONFIG_OVERRIDES"]) == context.config_overrides()


def test_locust_runs_the_services_user_against_the_cluster_service(rendered: Rendered) -> None:
    docs = {p.name: load_documents(p)[0] for p in rendered.k8s if p.parent.name == "locust"}
    assert docs["locustfile-configmap.yaml"]["data"]["locustfile.py"] == LOCUSTFILE
    master = docs["master-deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["args"]
    worker_deploy = docs["worker-deployment.yaml"]
    worker = worker_deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert master[-1] == "ServiceUser" and worker[-1] == "ServiceUser"
    env = docs["worker-deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "SERVETUNE_SERVICE", "value": "digits"} in env
    assert master[master.index("--host") + 1] == "http://servetune-digits.ml-prod.svc:3000"
    assert worker[worker.index("--master-host") + 1] == docs["master-service.yaml"]["metadata"]["name"]
    assert worker_deploy["spec"]["replicas"] == 3
    assert locust.pick_user_class(LOCUSTFILE.replace("ServiceUser", "MyUser"), "embedding") is None


def test_the_project_locustfile_has_the_registered_user_of_each_service() -> None:
    source = DEFAULT_LOCUSTFILE.read_text()
    assert locust.pick_user_class(source, "digits") is not None
    assert locust.pick_user_class(source, "embedding") is not None
