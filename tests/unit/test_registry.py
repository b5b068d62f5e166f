"""The service registry: a fourth service is one `register(ServiceSpec(...))` and every layer
(launcher, load, space, profiler priors, tuning, deploy) finds what it needs through it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.registry import ServiceSpec, register, service_keys, service_spec, unregister
from core.serveconfig import ServeConfig, load_winner
from core.server import BentoServer
from deploy.bento import bentofile
from deploy.context import RenderContext
from deploy.plan import DeployOptions, size
from deploy.prometheus import adapter_values
from loadtests.payloads import bodies
from loadtests.runner import LoadTarget
from services import adapter
from tests.fakes import FakeDeployer, FakeLoadRunner
from tuner.profile import prior_batch_times
from tuner.space import Machine, eligible_variants, parse_space
from tuner.tuning import TuneOptions, run_tune

FOURTH = ServiceSpec(
    key="fourth",
    import_path="acme.service:Fourth",
    bento_name="FourthService",
    endpoint="transform",
    row_field="values",
    rows="tests.unit.test_registry:fourth_rows",
    naive_endpoint="transform_one",
    packages=("bentoml", "acme-model"),
    priors={"cpu": {"cpu0": 0.002, "cpu1": 0.001, "p0": 0.1, "p1": 0.9}},
    sample_response=[0.5, 0.25],
)


def fourth_rows() -> list[list[float]]:
    return [[float(i), float(i) / 2] for i in range(10)]


@pytest.fixture
def fourth() -> Iterator[ServiceSpec]:
    register(FOURTH)
    try:
        yield FOURTH
    finally:
        unregister(FOURTH.key)


def test_unknown_services_are_named_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown service 'nope'; choose one of \['digits', 'embedding'"):
        service_spec("nope")
    with pytest.raises(ValueError, match="unknown service 'nope'"):
        ServeConfig(service="nope")


def test_launcher_and_load_find_the_fourth_service(fourth: ServiceSpec) -> None:
    assert "fourth" in service_keys(tunable_only=True)
    server = BentoServer(ServeConfig(service="fourth", workers=3, max_batch_size=8).server_spec(port=3999))
    try:
        command, environment = server.command(), server.environment()
        adapter_copy = (server.adapter_dir / "servetune_adapter.py").read_text()
    finally:
        server.stop()  # never started: removes its private home and log folder
    assert "servetune_adapter:service" in command  # every service is served through the adapter
    assert environment["PYTHONPATH"].split(os.pathsep)[0] == str(server.adapter_dir)
    assert adapter_copy == Path(adapter.__file__).read_text()
    assert environment["SERVETUNE_TARGET"] == "acme.service:Fourth"
    assert json.loads(environment["SERVETUNE_BATCHING"]) == {
        "transform": {"max_batch_size": 8, "max_latency_ms": 1000}
    }
    overrides = json.loads(environment["BENTOML_CONFIG_OVERRIDES"])
    assert overrides == {"services": {"FourthService": {"workers": 3}}}
    body = json.loads(bodies("fourth", rows_per_request=2, count=1)[0])
    assert list(body) == ["values"] and all(row in fourth_rows() for row in body["values"])
    assert LoadTarget.of("fourth").route == "/transform"
    assert LoadTarget.of("fourth", fourth.naive_endpoint).route == "/transform_one"
    assert LoadTarget.of("fourth").user_class == "ServiceUser"


def test_space_and_profiler_priors_come_from_the_entry(fourth: ServiceSpec) -> None:
    space = parse_space(
        {"service": "fourth", "max_batch_size": [4, 8], "workers": [1]}, machine=Machine(2, 0)
    )
    assert space.service == "fourth" and len(space) == 2 * 3
    assert eligible_variants("fourth") == ["fp32"]  # no model in the store: no variants
    assert prior_batch_times("fourth")["cpu"].cpu0 == 0.002


def test_a_fake_study_of_the_fourth_service_writes_a_winner_deploy_reads(
    fourth: ServiceSpec, tmp_path: Path
) -> None:
    deployer = FakeDeployer()
    options = TuneOptions(
        service="fourth", strategy="grid", trials=3, out=tmp_path, finalists=1, repeats=1,
        step_s=2, warmup_s=0, naive_baseline=True,
    )  # fmt: skip
    space = parse_space(
        {"service": "fourth", "max_batch_size": [4, 8, 16], "workers": [1]}, machine=Machine(2, 0)
    )
    runner = FakeLoadRunner(deployer)
    outcome = run_tune(options, runner, space, deployer=deployer)
    assert {call[1] for call in runner.calls} == {"fourth"}
    assert outcome.winner_file is not None
    winner = load_winner(outcome.winner_file)
    assert winner.config.service == "fourth"
    context = RenderContext(winner, DeployOptions(), size(winner, DeployOptions()), "b:1", "m:1")
    assert context.route == "/transform" and 'runner_name="FourthService"' in context.selector
    assert bentofile(context)["service"] == "acme.service:Fourth"
    assert [p.split("==")[0] for p in bentofile(context)["python"]["packages"]] == ["bentoml", "acme-model"]
    (rule,) = adapter_values(context)["rules"]["custom"]
    assert "/transform" in json.dumps(rule)
