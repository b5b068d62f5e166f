"""A user's own service as a target: every bad target gets a one-line reason, and the pieces that
turn a described service into a space, a baseline and a pre-flight check.

No server starts here; the targets that need describing run `python -m services.describe` (about a
second each), on tiny services written to tmp_path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bench.depends_sessions import KEPT
from bench.depends_sessions import PROJECT as COMPOSED
from core.registry import register, service_spec
from core.serveconfig import TargetRef
from core.server import ServerSpec
from core.target import (
    TargetError,
    absolute_file_target,
    choose_endpoint,
    dependency_notes,
    looks_like_import_path,
    remote_dependency_warnings,
    resolve_target,
    session_warnings,
    spec_from_info,
    written_workers,
)
from loadtests.requests import request_schema, synthetic_requests
from services.adapter import after_init
from services.describe import ApiInfo, DependencyInfo, RemoteDependencyInfo, ServiceInfo
from tuner.cli import app
from tuner.commands import console as console_module
from tuner.commands.target import resolve_cli_target
from tuner.preflight import RequestsRejected, check_requests, raised_in_log, sample_requests
from tuner.space import DEFAULT_MAX_BATCH_SIZE, Machine, derived_space
from tuner.tuning import written_config

BROKEN = "import nothere  # a dependency the user forgot to install\n"
PLAIN = "import bentoml\n\n\nclass Plain:\n    pass\n\n\nVALUE = 3\n"
MULTI = """\
import bentoml


@bentoml.service(workers=2)
class Multi:
    @bentoml.api(batchable=True, max_batch_size=16, max_latency_ms=300)
    def embed(self, texts: list[str]) -> list[int]:
        return [len(t) for t in texts]

    @bentoml.api(batchable=True, max_batch_size=8, max_latency_ms=100)
    def rank(self, texts: list[str]) -> list[int]:
        return [len(t) for t in texts]

    @bentoml.api
    def health_check(self, name: str) -> str:
        return name
"""


NESTED = """\
import bentoml


@bentoml.service(runner_connection={"max_requests": 200})
class Leaf:
    @bentoml.api(batchable=True)
    def leaf(self, xs: list[int]) -> list[int]:
        return xs


@bentoml.service
class Middle:
    leaf = bentoml.depends(Leaf)

    @bentoml.api
    async def middle(self, x: int) -> int:
        return (await self.leaf.to_async.leaf([x]))[0]


@bentoml.service
class Top:
    middle = bentoml.depends(Middle)
    remote = bentoml.depends(url="http://127.0.0.1:9")

    @bentoml.api
    async def top(self, x: int) -> int:
        return await self.middle.to_async.middle(x)
"""


ROUTED = """\
import bentoml
from pydantic import BaseModel, Field


class Item(BaseModel):
    name: str = Field(min_length=1)
    qty: int = Field(ge=0, le=100)


@bentoml.service
class Routed:
    @bentoml.api(route="/v1/price", batchable=True, max_batch_size=4, max_latency_ms=50)
    def price(self, quantities: list[int]) -> list[float]:
        return [q * 2.5 for q in quantities]

    @bentoml.api(route="/v1/quote")
    async def quote(self, item: Item, discount: float = 0.0) -> dict:
        return {"name": item.name, "total": item.qty * 2.5 * (1 - discount)}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's folder: a service file with a missing import, a module with no service, and a
    service with two batchable APIs and one plain one."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "broken.py").write_text(BROKEN)
    (folder / "plain.py").write_text(PLAIN)
    (folder / "multi.py").write_text(MULTI)
    (folder / "composed.py").write_text(COMPOSED.format(options=""))  # the bench's two-service project
    (folder / "composed_kept.py").write_text(COMPOSED.format(options=KEPT))
    (folder / "nested.py").write_text(NESTED)
    (folder / "routed.py").write_text(ROUTED)
    return folder


@pytest.fixture(autouse=True)
def _clean_registry(clean_registry: None) -> None:
    """Every test here starts and ends with the built-in services only (tests/conftest.py)."""


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors go through a Rich console 80 columns wide under CliRunner; widen it so a long
    message (tmp paths) stays on one line and can be matched as written."""
    monkeypatch.setattr(console_module.err_console, "_width", 2000)


def tune(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["tune", *args])
    return result.exit_code, result.output


def info(*apis: ApiInfo, name: str = "Svc") -> ServiceInfo:
    return ServiceInfo(name=name, target="svc.py:Svc", working_dir="/somewhere", apis=list(apis))


def api(name: str, batchable: bool, batch: int = 32, latency: int = 500) -> ApiInfo:
    return ApiInfo(
        name=name, route="/" + name, batchable=batchable, max_batch_size=batch, max_latency_ms=latency
    )


# --- resolve_target: the reason, not a traceback --------------------------------------------------


def test_a_service_file_whose_import_fails_shows_the_import_errors_last_line(project: Path) -> None:
    with pytest.raises(TargetError) as caught:
        resolve_target("broken.py:Svc", project)
    message = str(caught.value)
    assert message.count("No module named 'nothere'") == 1  # said once, not BentoML's words + the cause's
    assert "cannot import" in message and "broken.py:Svc" in message
    assert "Traceback" not in message and len(message.splitlines()) == 1


def test_something_that_is_not_a_bentoml_service_is_named(project: Path) -> None:
    for target in ("plain.py:Plain", "plain.py:VALUE"):
        with pytest.raises(TargetError, match="is not a BentoML service") as caught:
            resolve_target(target, project)
        assert target in str(caught.value)


def test_a_missing_attribute_is_named(project: Path) -> None:
    with pytest.raises(TargetError) as caught:
        resolve_target("plain.py:Missing", project)
    assert "Missing" in str(caught.value) and "plain" in str(caught.value)
    assert "no attribute 'Missing'" in str(caught.value) or "not found" in str(caught.value)


def test_a_good_target_becomes_a_registered_spec_with_what_its_code_declares(project: Path) -> None:
    spec, described = resolve_target("multi.py:Multi", project, endpoint="/rank")
    assert described is not None and described.name == "Multi"
    assert sorted((a.name, a.batchable) for a in described.apis) == [
        ("embed", True), ("health_check", False), ("rank", True)
    ]  # fmt: skip
    assert spec is service_spec("Multi") and spec.external
    assert spec.endpoint == "rank" and spec.batchable
    assert spec.written_batching == (8, 100) and spec.written_workers == 2
    assert spec.working_dir == str(project.resolve())
    assert sorted(spec.routes) == ["/embed", "/health_check", "/rank"]
    assert spec.synthetic_load  # no requests file given
    plain_spec, _ = resolve_target("multi.py:Multi", project, endpoint="health_check")
    assert not plain_spec.batchable and plain_spec.written_batching is None


def test_an_api_with_a_route_of_its_own_is_loaded_there_and_batched_by_its_name(project: Path) -> None:
    """`@bentoml.api(route="/v1/price")` on `price`: the load, the OpenAPI schema and the metrics
    use the route, the adapter's batching the method's name; `--endpoint` takes either."""
    spec, described = resolve_target("routed.py:Routed", project, endpoint="price")
    assert described is not None
    assert (spec.endpoint, spec.route, spec.api) == ("v1/price", "/v1/price", "price")
    assert spec.batchable and spec.batches() and spec.batches("/v1/price")
    assert sorted(spec.routes) == ["/v1/price", "/v1/quote"]
    args = {"max_batch_size": 8, "max_latency_ms": 20}
    assert ServerSpec(spec, args=args).batching() == {"price": args}
    assert resolve_target("routed.py:Routed", project, endpoint="/v1/price")[0].route == "/v1/price"
    quote, _ = resolve_target("routed.py:Routed", project, endpoint="quote")
    assert (quote.route, quote.api, quote.batchable) == ("/v1/quote", "quote", False)
    schema, components = request_schema(described.openapi, quote.route), described.openapi.get("components")
    made = synthetic_requests(schema, quote.route, components=components)
    assert made and {r.route for r in made} == {"/v1/quote"}
    assert all(len(json.loads(r.body)["item"]["name"]) >= 1 for r in made)
    reference = TargetRef.of(spec)
    assert reference is not None and reference.endpoint == "v1/price"
    again, _ = resolve_target(reference.import_path(), project, endpoint=reference.endpoint)
    assert (again.route, again.api) == ("/v1/price", "price")


def test_the_cli_makes_up_bodies_for_an_api_with_a_route_of_its_own(project: Path) -> None:
    """No --requests: the bodies come from the OpenAPI schema of the API's own route (the CLI
    once looked for /quote and stopped) and go there."""
    spec = resolve_cli_target("routed.py:Routed", project, endpoint="quote", pool_dir=project)
    assert spec.synthetic_load and spec.requests_file is not None
    lines = [json.loads(line) for line in Path(spec.requests_file).read_text().splitlines()]
    assert lines and {line["endpoint"] for line in lines} == {"/v1/quote"}


def test_unknown_builtin_and_missing_requests_file_are_refused_without_describing(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="unknown service 'nosuch'"):
        resolve_target("nosuch")
    with pytest.raises(TargetError, match="no such file"):
        resolve_target("svc.py:Svc", tmp_path, requests_file=tmp_path / "missing.jsonl")
    with pytest.raises(TargetError, match="is not a folder"):
        resolve_target("svc.py:Svc", tmp_path / "nothere")


# --- the same through the CLI: exit code 2, the message, no traceback --------------------------


@pytest.mark.usefixtures("wide_console")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["broken.py:Svc"], "No module named 'nothere'"),
        (["plain.py:Plain"], "plain.py:Plain is not a BentoML service"),
        (
            ["multi.py:Multi", "--endpoint", "nope"],
            "--endpoint 'nope': Multi has no such API; it has /embed (batchable), /health_check, "
            "/rank (batchable)",
        ),
        (["multi.py:Multi"], "Multi has several batchable APIs; name one with --endpoint"),
    ],
    ids=["import-error", "not-a-service", "unknown-endpoint", "several-batchable"],
)
def test_cli_names_what_is_wrong_with_the_target(
    project: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    code, output = tune(*args, "--working-dir", str(project), "--out", str(tmp_path / "study"))
    assert code == 2, output
    assert expected in output
    assert "error:" in output and "Traceback" not in output
    assert not (tmp_path / "study").exists()  # refused before a study was started


@pytest.mark.usefixtures("wide_console")
def test_cli_names_the_file_and_line_of_a_bad_request(project: Path, tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"texts": ["a"]}\n{"texts": ["b"]}\n{"texts": [\n')
    code, output = tune(
        "multi.py:Multi", "--working-dir", str(project), "--endpoint", "embed",
        "--requests", str(requests), "--out", str(tmp_path / "study"),
    )  # fmt: skip
    assert code == 2, output
    assert f"{requests}:3: not valid JSON" in output
    assert "Traceback" not in output


def test_a_dependency_whose_client_drops_calls_in_flight_is_warned_about(project: Path) -> None:
    _, described = resolve_target("composed.py:Gateway", project)
    assert described is not None
    (scorer,) = described.dependencies  # BentoML is pinned: its defaults are 100 requests, 300 s
    assert (scorer.name, scorer.caller, scorer.batchable_routes) == ("Scorer", "Gateway", ["/score"])
    assert (scorer.session_max_requests, scorer.session_max_age_s) == (100, 300.0)
    (warning,) = session_warnings(described)
    assert "Gateway calls Scorer" in warning and "every 100 requests or 300 s" in warning
    assert '"max_requests": 1000000000' in warning and "Scorer's @bentoml.service" in warning
    (note,) = dependency_notes(described)
    assert "Gateway's dependency Scorer has batchable APIs (/score)" in note
    assert "batching, workers, threads and GPUs stay as written" in note
    _, kept = resolve_target("composed_kept.py:Gateway", project)
    assert kept is not None and kept.dependencies[0].session_max_requests == 1_000_000_000
    assert session_warnings(kept) == []


def test_nested_dependencies_name_their_caller_and_a_url_dependency_is_not_served(project: Path) -> None:
    _, described = resolve_target("nested.py:Top", project)
    assert described is not None
    found = {d.name: d for d in described.dependencies}
    assert set(found) == {"Middle", "Leaf"}  # the URL one is not started with the service
    assert found["Middle"].caller == "Top" and found["Leaf"].caller == "Middle"
    assert found["Leaf"].session_max_requests == 200  # its own runner_connection, not the default
    warnings = session_warnings(described)
    assert any("Middle calls Leaf" in w and "every 200 requests or 300 s" in w for w in warnings)
    assert any("Top calls Middle" in w for w in warnings) and len(warnings) == 2
    (remote,) = described.remote_dependencies
    assert (remote.caller, remote.attribute, remote.url, remote.deployment) == (
        "Top",
        "remote",
        "http://127.0.0.1:9",
        None,
    )
    (said,) = remote_dependency_warnings(described)
    assert "Top calls http://127.0.0.1:9 (Top.remote = bentoml.depends(url=...))" in said
    assert "servetune neither starts nor tunes it" in said


@pytest.mark.parametrize(
    ("target", "said"),
    [
        (
            "composed.py:Gateway",
            [
                "warning: Gateway calls Scorer",
                "note: Gateway's dependency Scorer has batchable APIs (/score)",
            ],
        ),
        ("nested.py:Top", ["warning: Top calls http://127.0.0.1:9 (Top.remote = bentoml.depends(url=...))"]),
    ],
)
@pytest.mark.usefixtures("wide_console")
def test_cli_warns_about_dependencies_before_anything_is_measured(
    project: Path, tmp_path: Path, target: str, said: list[str]
) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"values": [1.0]}\n{"values": [\n')
    code, output = tune(
        target, "--working-dir", str(project), "--requests", str(requests), "--out", str(tmp_path / "study"),
    )  # fmt: skip
    assert code == 2 and f"{requests}:2: not valid JSON" in output
    assert all(line in output for line in said), output


# --- pure pieces ---------------------------------------------------------------------------------


def test_session_warnings_follow_the_effective_limits() -> None:
    plain = info(api("encode", True))
    assert session_warnings(plain) == [] and dependency_notes(plain) == []

    def with_dependency(**limits: float | None) -> ServiceInfo:
        return plain.model_copy(update={"dependencies": [DependencyInfo(name="Dep", caller="Svc", **limits)]})

    assert session_warnings(with_dependency()) == []  # a BentoML that keeps its sessions
    assert session_warnings(with_dependency(session_max_requests=10**9, session_max_age_s=1e9)) == []
    (low,) = session_warnings(with_dependency(session_max_requests=5000))
    assert "Svc calls Dep" in low and "every 5000 requests," in low
    (aged,) = session_warnings(with_dependency(session_max_requests=10**9, session_max_age_s=300.0))
    assert "every 1000000000 requests or 300 s" in aged


def test_remote_dependencies_are_named_with_where_they_are_reached() -> None:
    plain = info(api("encode", True))
    assert remote_dependency_warnings(plain) == []
    remotes = [
        RemoteDependencyInfo(caller="Svc", attribute="search", url="http://10.0.0.5:3000"),
        RemoteDependencyInfo(caller="Svc", attribute="llm", deployment="my-llm"),
    ]
    by_url, by_deployment = remote_dependency_warnings(
        plain.model_copy(update={"remote_dependencies": remotes})
    )
    assert by_url.startswith("Svc calls http://10.0.0.5:3000 (Svc.search = bentoml.depends(url=...))")
    assert "BentoCloud deployment 'my-llm' (Svc.llm)" in by_deployment
    assert all("real traffic through Svc" in w for w in (by_url, by_deployment))


def test_choose_endpoint_picks_the_only_batchable_one_or_asks() -> None:
    one = info(api("health", False), api("encode", True), api("stats", False))
    assert choose_endpoint(one, None).name == "encode"
    assert choose_endpoint(one, "/stats").name == "stats"  # a slash is fine
    assert choose_endpoint(info(api("predict", False)), None).name == "predict"
    with pytest.raises(TargetError, match=r"several APIs; name one with --endpoint: /a, /b"):
        choose_endpoint(info(api("a", False), api("b", False)), None)
    with pytest.raises(TargetError, match=r"several batchable APIs.*/x \(batchable\), /y \(batchable\)"):
        choose_endpoint(info(api("x", True), api("y", True)), None)
    with pytest.raises(TargetError, match=r"has no such API; it has /health, /encode \(batchable\), /stats"):
        choose_endpoint(one, "encoder")
    with pytest.raises(TargetError, match="no APIs"):
        choose_endpoint(info(), None)
    routed = ApiInfo(name="price", route="/v1/price", batchable=True, max_batch_size=8, max_latency_ms=50)
    with pytest.raises(TargetError, match=r"it has /v1/price \(price\) \(batchable\), /stats$"):
        choose_endpoint(info(routed, api("stats", False)), "quote")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("service.py:MyService", True),
        ("pkg.module:MyService", True),
        ("path/to/service.py", True),
        ("pkg.module", True),
        ("embedding", False),
        ("digits", False),
    ],
)
def test_looks_like_import_path(name: str, expected: bool) -> None:
    assert looks_like_import_path(name) is expected


def test_absolute_file_target_anchors_a_file_that_exists_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "svc.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert absolute_file_target("sub/svc.py:Svc") == f"{tmp_path.resolve()}/sub/svc.py:Svc"
    assert absolute_file_target("sub/svc.py") == f"{tmp_path.resolve()}/sub/svc.py"
    # not a file here: left for BentoML to resolve against the working dir
    assert absolute_file_target("other.py:Svc") == "other.py:Svc"
    assert absolute_file_target("pkg.module:Svc") == "pkg.module:Svc"


def test_derived_space_has_batching_dimensions_only_for_a_batchable_endpoint() -> None:
    service = info(api("encode", True, 32, 1000), api("predict", False), name="Derived")
    machine = Machine(cores=4, gpus=0)
    register(spec_from_info(service, service.apis[0]))
    batchable = derived_space("Derived", machine)
    assert len(batchable.dim("max_batch_size").values) > 1
    assert len(batchable.dim("max_latency_ms").values) > 1
    assert batchable.dim("workers").values == (1, 2, 4)
    register(spec_from_info(service, service.apis[1]))
    plain = derived_space("Derived", machine)
    assert plain.dim("max_batch_size").values == (DEFAULT_MAX_BATCH_SIZE,)
    assert len(plain.dim("max_latency_ms").values) == 1
    assert plain.dim("workers").values == (1, 2, 4)
    # threads follow workers (cores // workers): one config per worker count, nothing to batch
    assert {(c.max_batch_size, c.workers, c.threads) for c in plain.configs} == {
        (DEFAULT_MAX_BATCH_SIZE, 1, 4), (DEFAULT_MAX_BATCH_SIZE, 2, 2), (DEFAULT_MAX_BATCH_SIZE, 4, 1)
    }  # fmt: skip
    assert len(set(batchable.configs)) == 3 * len(batchable.dim("max_batch_size").values) * len(
        batchable.dim("max_latency_ms").values
    )


def test_derived_space_lists_each_config_once() -> None:
    service = info(api("predict", False), name="Once")
    register(spec_from_info(service, service.apis[0]))
    space = derived_space("Once", Machine(cores=4, gpus=0))
    assert len(space.configs) == len(set(space.configs)) == 3


def test_written_config_is_the_decorators_batching_and_workers_at_all_cores() -> None:
    service = info(api("encode", True, 24, 700), api("predict", False), name="Written")
    service.workers = 3
    register(spec_from_info(service, service.apis[0]))
    written = written_config("Written", cores=8)
    assert (written.max_batch_size, written.max_latency_ms) == (24, 700)
    assert (written.workers, written.threads) == (3, 8)
    service.workers = "cpu_count"  # BentoML: one worker per core of the machine it runs on
    register(spec_from_info(service, service.apis[1]))
    plain = written_config("Written", cores=2)
    assert (plain.workers, plain.threads) == (os.cpu_count(), 2)
    assert written_workers("cpu_count", cores=6) == 6 and written_workers(None) == written_workers(0) == 1


# --- pre-flight: does the service accept the bodies at all? --------------------------------------


REQUESTS = [
    ("/a", b'{"n": 1}'),
    ("/a", b'{"n": 2}'),
    ("/b", b'{"m": 1}'),
    ("/a", b'{"n": 3}'),
    ("/a", b'{"n": 4}'),
    ("/b", b'{"m": 2}'),
]


def test_sample_requests_takes_every_routes_first_then_the_next_ones() -> None:
    sample = sample_requests(REQUESTS, count=4)
    expected = [(1, "/a"), (3, "/b"), (2, "/a"), (4, "/a")]
    assert [(position, route) for position, route, _ in sample] == expected
    assert [p for p, _, _ in sample_requests(REQUESTS, count=1)] == [1, 3]  # never fewer than the routes
    assert sample_requests([], count=4) == []


def client(answer: dict[bytes, tuple[int, str]], seen: list[bytes]) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        status, text = answer.get(request.content, (200, "[0.1]"))
        return httpx.Response(status, text=text)

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_a_4xx_stops_with_the_request_position_and_the_body() -> None:
    seen: list[bytes] = []
    rejected = {b'{"m": 1}': (422, json.dumps({"error": "field m: expected a list"}))}
    with pytest.raises(RequestsRejected) as caught, client(rejected, seen) as http:
        check_requests("http://svc", REQUESTS, "requests.jsonl", client=http)
    message = str(caught.value)
    assert "answered 422 to request 3 of requests.jsonl (POST /b)" in message
    assert "field m: expected a list" in message
    assert seen == [b'{"n": 1}', b'{"m": 1}']  # stopped at the first rejection


def test_every_sampled_request_failing_with_5xx_is_rejected_too() -> None:
    seen: list[bytes] = []
    failing = {body: (500, "internal error: shape mismatch") for _, body in REQUESTS}
    with (
        pytest.raises(RequestsRejected, match="failed every sampled request") as caught,
        client(failing, seen) as http,
    ):
        check_requests("http://svc", REQUESTS, "requests.jsonl", client=http)
    assert "request 1 (POST /a): 500 internal error: shape mismatch" in str(caught.value)
    assert len(seen) == 4


@pytest.mark.parametrize("status", [400, 500])
def test_rejected_synthetic_bodies_say_where_real_ones_go(status: int) -> None:
    """Bodies made up from the schema (no --requests) that the service refuses are not the user's
    to fix: the message asks for --requests instead."""
    refused = {body: (status, "cannot reshape array of size 1 into shape (4)") for _, body in REQUESTS}
    for synthetic in (True, False):
        with pytest.raises(RequestsRejected) as caught, client(refused, []) as http:
            check_requests("http://svc", REQUESTS, "made.jsonl", client=http, synthetic=synthetic)
        message = str(caught.value)
        assert ("pass --requests FILE" in message) is synthetic
        assert "cannot reshape array" in message
    assert ("fix the request bodies" in message) is (status < 500)


SERVER_LOG = """\
2026-12-04T12:27:00+0000 [ERROR] [entry_service:TensorScorer:1] Exception on /score [POST]
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/_bentoml_sdk/method.py", line 177, in wrapped
    return self.func(instance, *args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/home/me/proj/service.py", line 15, in score
    return x @ self.w
           ~~^~~~~~~~
TypeError: unsupported operand type(s) for @: 'list' and 'Tensor'
2026-12-04T12:27:00+0000 [INFO] [entry_service:TensorScorer:1] 127.0.0.1:32976 (status=500) 18.330ms
"""


def test_a_server_log_gives_its_last_exception_and_where_the_services_own_code_raised_it() -> None:
    assert raised_in_log(SERVER_LOG) == (
        "TypeError: unsupported operand type(s) for @: 'list' and 'Tensor' "
        "(/home/me/proj/service.py, line 15, in score)"
    )
    library_only = SERVER_LOG.replace("/home/me/proj/service.py", "/venv/lib/python3.11/site-packages/x.py")
    assert raised_in_log(library_only) == "TypeError: unsupported operand type(s) for @: 'list' and 'Tensor'"
    assert raised_in_log("[INFO] ready\nValueError: said, not raised") is None


def test_every_5xx_quotes_what_the_server_raised() -> None:
    failing = {body: (500, '{"error":"please check the server log."}') for _, body in REQUESTS}
    for log, quoted in ((SERVER_LOG, True), ("[INFO] nothing raised\n", False)):
        with pytest.raises(RequestsRejected) as caught, client(failing, []) as http:
            check_requests("http://svc", REQUESTS, "r.jsonl", client=http, server_log=lambda log=log: log)
        message = str(caught.value)
        assert ("the server's log ends with: TypeError: unsupported operand" in message) is quoted
        assert ("service.py, line 15, in score" in message) is quoted
        assert message.endswith("nothing was tuned")


def test_one_5xx_among_successes_passes() -> None:
    seen: list[bytes] = []
    with client({b'{"n": 2}': (503, "busy")}, seen) as http:
        check_requests("http://svc/", REQUESTS, "requests.jsonl", client=http)
    assert len(seen) == 4


def test_the_adapter_runs_its_callback_after_the_services_own_init() -> None:
    """Torch is often imported in __init__: the worker's threads are set and recorded after it."""
    events: list[str] = []

    class Inner:
        def __init__(self, name: str) -> None:
            events.append(f"init {name}")

    class Bare:  # no __init__ of its own
        pass

    class FakeService:
        inner: type = Inner

    after_init(FakeService, lambda: events.append("callback"))
    instance = Inner("x")
    assert events == ["init x", "callback"] and isinstance(instance, Inner)
    FakeService.inner = Bare
    after_init(FakeService, lambda: events.append("bare"))
    Bare()
    assert events[-1] == "bare"


def test_a_user_service_is_started_with_servetunes_fine_latency_buckets() -> None:
    """BentoML's default buckets jump from 100 to 250 ms: a p95 judged on them is off by up to 2x."""
    from core.server import ServerSpec
    from services.config import DURATION_BUCKETS

    service = info(api("encode", True), name="Buckets")
    spec = spec_from_info(service, service.apis[0])
    overrides = ServerSpec(spec, workers=2).config_overrides()["services"]["Buckets"]
    assert overrides["workers"] == 2
    assert overrides["metrics"]["duration"]["buckets"] == DURATION_BUCKETS


def test_variant_args_become_the_variant_dimension_and_reach_bentoml_serve() -> None:
    """A user's alternatives (--variant-arg name=value) are searched like model variants; each
    config's variant is passed to its server as that --arg."""
    from core.serveconfig import Config
    from core.server import BentoServer, ServerSpec

    service = info(api("encode", True), name="Variants")
    register(spec_from_info(service, service.apis[0], variant_args=("model=small", "model=large")))
    space = derived_space("Variants", Machine(cores=2, gpus=0))
    assert space.dim("variant").values == ("model=small", "model=large")
    config = Config(16, 200, 1, 2, 0, "model=large")
    server = BentoServer(ServerSpec(service_spec("Variants"), args=config.knob_args()))
    try:
        command = server.command()
    finally:
        server.stop()
    assert command[command.index("--arg") + 1] == "model=large"
    assert "variant=model=large" not in " ".join(command)


@pytest.mark.parametrize("label", ["model", "=x", "a=b/c", "a=b c"])
def test_a_malformed_variant_arg_is_refused(label: str) -> None:
    from pydantic import ValidationError

    from core.serveconfig import Config

    with pytest.raises(ValidationError):
        Config(variant=label)


def test_name_value_variants_are_refused_for_a_built_in_service() -> None:
    from tuner.space import SpaceError, parse_space

    with pytest.raises(SpaceError, match="name=value variants are for your own services"):
        parse_space({"service": "digits", "variant": ["model=small"]}, machine=Machine(2, 0))
    with pytest.raises(TargetError, match="--variant-arg is for your own services"):
        resolve_target("digits", variant_args=("model=small",))
