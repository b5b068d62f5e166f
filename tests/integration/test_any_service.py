"""Tuning a user's own, unmodified BentoML service (the examples/ folder), run from outside the repo.

Each test copies an example into tmp_path and runs there, as a user would: the injected batching
is proven from BentoML's own batch-size histogram and the adapter's per-worker evidence; a study
on each example names the as-written baseline and a winner; bodies the service rejects and a
service that crashes at start-up each stop with exit code 2, the reason, and nothing left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from core.polling import wait_until
from core.server import BentoServer, ServerSpec, port_is_free
from core.target import resolve_target
from tests.integration.cli_run import CliRun, child_setup
from tests.integration.helpers import labelled_totals, processes_mentioning

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BATCH_FAMILY = "bentoml_service_adaptive_batch_size"
# A short capacity search: a 1 s probe, steps of at most 3 s, a coarse (30%) bracket.
SHORT_SEARCH = ["--warmup-seconds", "1", "--max-step-seconds", "3", "--resolution", "0.3"]
IRIS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [4.9, 3.1, 1.5, 0.1],
        [5.8, 2.7, 5.1, 1.9], [6.0, 2.2, 4.0, 1.0]]  # fmt: skip


def copy_example(name: str, tmp_path: Path) -> Path:
    """The example folder copied outside the repository (a user's project)."""
    return Path(shutil.copytree(EXAMPLES / name, tmp_path / name))


@pytest.fixture(autouse=True)
def _clean_registry(clean_registry: None) -> None:
    """Every test here starts and ends with the built-in services only (tests/conftest.py)."""


@contextlib.contextmanager
def servetune(args: list[str], cwd: Path) -> Iterator[CliRun]:
    """`servetune ARGS` as a subprocess run from `cwd`; kills whatever it left on the way out."""
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True", COLUMNS="500")  # one line per message
    log_path = cwd.parent / f"servetune-{len(list(cwd.parent.glob('servetune-*.log')))}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuner.cli", *args], cwd=cwd, env=env, start_new_session=True,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=child_setup,
        )  # fmt: skip
    run = CliRun(proc, log_path)
    try:
        yield run
    finally:
        leftovers = [proc.pid] if proc.poll() is None else []
        leftovers += [child.pid for child in run.started()]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def finish(run: CliRun, timeout_s: float) -> tuple[int, str, set[int]]:
    """Wait for the CLI to exit, noting the server ports it used; (exit code, output, ports)."""
    ports: set[int] = set()

    def exited() -> bool:
        port = run.server_port()
        if port is not None:
            ports.add(port)
        return run.proc.poll() is not None

    if not wait_until(exited, timeout_s, interval_s=0.2):
        pytest.fail(f"servetune still running after {timeout_s:.0f} s:\n{run.output()[-3000:]}")
    return run.proc.returncode, run.output(), ports


def assert_nothing_left(run: CliRun, folder: Path, ports: set[int]) -> None:
    def clean() -> bool:
        return not run.started() and not processes_mentioning(folder) and all(map(port_is_free, ports))

    if not wait_until(clean, 10.0, interval_s=0.2):
        left = run.commands() + processes_mentioning(folder)
        raise AssertionError(
            f"left running: {left}; ports in use: {[p for p in ports if not port_is_free(p)]}"
        )


# --- a project whose packages are named like servetune's -----------------------------------------

SHADOWED_SERVICE = """
import bentoml
from core.helpers import LOUD
from services.helpers import greet


@bentoml.service
class Greeter:
    @bentoml.api
    def hello(self, name: str) -> str:
        text = greet(name)
        return text.upper() if LOUD else text
"""


@pytest.mark.timeout(240)
def test_a_project_with_packages_named_like_servetunes_imports_its_own(tmp_path: Path) -> None:
    """The user's `services` and `core` packages (servetune has packages of those names) are what
    the user's service imports when servetune serves it (the adapter is served on its own)."""
    project = tmp_path / "shadowed"
    for package, body in (
        ("services", "def greet(name):\n    return 'hi ' + name\n"),
        ("core", "LOUD = True\n"),
    ):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("")
        (project / package / "helpers.py").write_text(body)
    (project / "service.py").write_text(SHADOWED_SERVICE)
    spec, _ = resolve_target("service.py:Greeter", project)
    server = BentoServer(ServerSpec(spec, args={"threads": 1}), log_dir=tmp_path / "logs")
    try:
        server.start(ready_timeout_s=180)
        answer = httpx.post(f"{server.url}/hello", json={"name": "ada"}, timeout=30)
        assert answer.status_code == 200 and answer.text == "HI ADA", answer.text
    finally:
        server.stop()


# --- a composed service: the knobs are the target's, its dependency runs as written ------------

COMPOSED_SERVICE = """
import os

import bentoml


def threads_seen() -> dict:
    return {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


@bentoml.service(runner_connection={"max_requests": 1000000000, "max_age": 1e9})
class Backend:
    @bentoml.api(batchable=True, max_batch_size=4, max_latency_ms=300)
    def lengths(self, texts: list[str]) -> list[int]:
        return [len(t) for t in texts]

    @bentoml.api
    def environment(self) -> dict:
        return threads_seen()


@bentoml.service
class Front:
    backend = bentoml.depends(Backend)

    @bentoml.api
    async def measure(self, text: str) -> dict:
        length = (await self.backend.to_async.lengths([text]))[0]
        seen = await self.backend.to_async.environment()
        return {"length": length, "backend": seen, "front": threads_seen()}
"""


@pytest.mark.timeout(240)
def test_a_dependency_runs_with_its_own_environment_and_the_target_with_the_knobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread knobs reach the target's processes only: the dependency keeps the variables
    as the user's environment had them (here OMP_NUM_THREADS=5, MKL_NUM_THREADS unset)."""
    project = tmp_path / "composed"
    project.mkdir()
    (project / "service.py").write_text(COMPOSED_SERVICE)
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    spec, described = resolve_target("service.py:Front", project)
    assert described is not None and [d.name for d in described.dependencies] == ["Backend"]
    server = BentoServer(ServerSpec(spec, args={"threads": 1}), log_dir=tmp_path / "logs")
    try:
        server.start(ready_timeout_s=180)
        answer = httpx.post(f"{server.url}/measure", json={"text": "abcd"}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["length"] == 4
        assert body["front"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        assert body["backend"] == {"OMP_NUM_THREADS": "5", "MKL_NUM_THREADS": None}
    finally:
        server.stop()


# --- the injected batching takes effect ----------------------------------------------------------


def batch_buckets(url: str) -> Counter[str]:
    """Batches so far per histogram bucket (`le`), summed over workers; "+Inf" is the count."""
    return labelled_totals(url, BATCH_FAMILY, f"{BATCH_FAMILY}_bucket", "le")


def fire(url: str, bodies: list[bytes], rounds: int = 2) -> None:
    """`rounds` bursts of all `bodies` at once, each from its own thread; every answer must be 200."""
    with httpx.Client(timeout=120.0, limits=httpx.Limits(max_connections=len(bodies))) as client:

        def post(body: bytes) -> int:
            headers = {"Content-Type": "application/json"}
            return client.post(f"{url}/encode", content=body, headers=headers).status_code

        with ThreadPoolExecutor(len(bodies)) as pool:
            for _ in range(rounds):
                assert set(pool.map(post, bodies)) == {200}


def largest(buckets: Counter[str], up_to: float) -> float:
    """Batches larger than `up_to` (count minus the bucket le=up_to)."""
    key = next(le for le in buckets if le != "+Inf" and float(le) == up_to)
    return buckets["+Inf"] - buckets[key]


@pytest.mark.timeout(420)
def test_injected_batching_caps_the_batches_bentoml_forms(tmp_path: Path) -> None:
    """max_batch_size=2 set from outside: no batch above 2 under 24 concurrent requests, while the
    same load on the service as written (max_batch_size=32) forms larger batches."""
    project = copy_example("embedding", tmp_path)
    spec, _ = resolve_target("service.py:SentenceEmbedding", project)
    lines = (project / "requests.jsonl").read_text().splitlines()[:24]
    bodies = [line.encode() for line in lines]
    assert len(bodies) == 24

    injected = ServerSpec(spec, args={"max_batch_size": 2, "max_latency_ms": 1000, "threads": 1}, workers=2)
    server = BentoServer(injected, log_dir=tmp_path / "logs-injected")
    try:
        server.start(ready_timeout_s=240)
        fire(server.url, bodies)
        buckets = batch_buckets(server.url)
        assert buckets["+Inf"] > 0, "no adaptive batch was counted"
        assert largest(buckets, 2.0) == 0, f"a batch above the injected 2: {dict(buckets)}"
        assert largest(buckets, 1.0) > 0, f"no batch of 2 was formed: {dict(buckets)}"
        # /readyz answers once a worker is up; each worker records itself after its __init__
        wait_until(lambda: len(server.evidence()) >= 2, 180.0, interval_s=0.2)
        evidence = server.evidence()
        workers = server.workers()
        assert sorted(r["worker_index"] for r in evidence) == [1, 2]
        assert {r["torch_threads"] for r in evidence} == {1}
        assert all(
            r["batching"] == {"encode": {"max_batch_size": 2, "max_latency_ms": 1000}} for r in evidence
        )
        assert len(workers) == 2
        assert {r["pid"] for r in evidence} == {p.pid for _, p in workers}
    finally:
        server.stop()

    written = BentoServer(ServerSpec(spec, args={"threads": 1}, workers=1), log_dir=tmp_path / "logs-written")
    try:
        written.start(ready_timeout_s=240)
        assert [r["batching"] for r in written.evidence()] == [
            {"encode": {"max_batch_size": 32, "max_latency_ms": 1000}}
        ]
        fire(written.url, bodies)
        buckets = batch_buckets(written.url)
        assert largest(buckets, 2.0) > 0, (
            f"the written max_batch_size 32 never batched above 2: {dict(buckets)}"
        )
    finally:
        written.stop()


# --- whole studies from the user's folder --------------------------------------------------------


@pytest.mark.timeout(420)
def test_study_on_the_embedding_example_names_the_as_written_baseline_and_a_winner(tmp_path: Path) -> None:
    project = copy_example("embedding", tmp_path)
    args = ["tune", "service.py:SentenceEmbedding", "--requests", "requests.jsonl", "--trials", "2",
            "--finalists", "1", "--repeats", "1", "--slo-p95-ms", "500", "--time-budget", "3m",
            "--out", "study", *SHORT_SEARCH]  # fmt: skip
    with servetune(args, project) as run:
        code, output, ports = finish(run, 360)
        assert code == 0, output[-4000:]
        assert_nothing_left(run, project, ports)
    study = project / "study"
    assert "as-written baseline" in output
    assert any(line.startswith("winner ") for line in output.splitlines()), output[-3000:]
    assert "winner / as-written = " in output and "x" in output.split("winner / as-written = ")[1][:12]
    assert (study / "winner.yaml").is_file()
    assert "as written" in (study / "report.html").read_text()
    records = [json.loads(line) for line in (study / "trials.jsonl").read_text().splitlines()]
    written = [r for r in records if r["kind"] == "baseline" and r["label"] == "as-written"]
    assert len(written) == 1, [(r["kind"], r["label"]) for r in records]
    # as written: the decorator's batching (32 / 1000 ms), one worker
    assert (written[0]["config"]["max_batch_size"], written[0]["config"]["max_latency_ms"]) == (32, 1000)
    assert written[0]["config"]["workers"] == 1


@pytest.mark.timeout(300)
def test_a_non_batchable_endpoint_is_tuned_without_a_batching_dimension(tmp_path: Path) -> None:
    """The plain API, moved to a route of its own (`route="/v1/iris"`), is loaded, read from
    the metrics and written to the winner file there."""
    project = copy_example("mixed", tmp_path)
    source = (project / "service.py").read_text()
    assert source.count("    @bentoml.api\n    def predict_iris(") == 1
    routed = source.replace(
        "    @bentoml.api\n    def predict_iris(", '    @bentoml.api(route="/v1/iris")\n    def predict_iris('
    )
    (project / "service.py").write_text(routed)
    (project / "iris.jsonl").write_text("".join(json.dumps({"measurements": m}) + "\n" for m in IRIS))
    args = ["tune", "service.py:TabularModels", "--endpoint", "predict_iris", "--requests", "iris.jsonl",
            "--trials", "2", "--finalists", "0", "--slo-p95-ms", "200", "--no-written-baseline",
            "--out", "study", *SHORT_SEARCH]  # fmt: skip
    with servetune(args, project) as run:
        code, output, ports = finish(run, 270)
        assert code == 0, output[-4000:]
        assert_nothing_left(run, project, ports)
    settings = json.loads((project / "study" / "study.json").read_text())
    dimensions = settings["space"]["dimensions"]
    assert len(dimensions["max_batch_size"]) == 1 and len(dimensions["max_latency_ms"]) == 1, dimensions
    assert settings["service"] == "TabularModels"
    records = [json.loads(line) for line in (project / "study" / "trials.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"], [r["reason"] for r in records]
    assert len({(r["config"]["max_batch_size"], r["config"]["max_latency_ms"]) for r in records}) == 1
    (winner,) = [line for line in output.splitlines() if line.startswith("winner ") and "good RPS" in line]
    assert winner.split()[1].startswith("w"), f"shown without the batching it cannot take: {winner}"
    measured = json.loads((project / "study" / "steps.json").read_text())
    sources = {step["server_source"] for record in measured for step in record["steps"]}
    assert sources == {"scrape"}, f"the server's figures were read at the route: {sources}"
    written = yaml.safe_load((project / "study" / "winner.yaml").read_text())
    assert written["endpoint"] == "v1/iris" and "max_batch_size" not in written["config"]


# --- refusals: exit code 2, the reason, nothing left running -------------------------------------


@pytest.mark.timeout(240)
def test_bodies_the_service_rejects_stop_the_study_with_the_first_4xx_body(tmp_path: Path) -> None:
    project = copy_example("mixed", tmp_path)
    (project / "bad.jsonl").write_text('{"images": 5}\n' * 3)  # an int where rows of 64 pixels go
    args = ["tune", "service.py:TabularModels", "--endpoint", "classify_digits", "--requests", "bad.jsonl",
            "--trials", "2", "--out", "study", *SHORT_SEARCH]  # fmt: skip
    with servetune(args, project) as run:
        code, output, ports = finish(run, 180)
        assert code == 2, output[-4000:]
        assert ports, "the run never started a server"
        assert_nothing_left(run, project, ports)
    assert "the service answered 4" in output
    assert "to request 1 of bad.jsonl (POST /classify_digits)" in output
    assert "images" in output.split("(POST /classify_digits):")[1]  # the service's own words on the body
    assert "nothing was tuned" in output
    assert "Traceback" not in output


CRASHING = """\
import bentoml


@bentoml.service
class Crashing:
    def __init__(self) -> None:
        raise RuntimeError("boom")

    @bentoml.api
    def predict(self, text: str) -> str:
        return text
"""


def stopped_tune(tmp_path: Path, source: str, name: str) -> str:
    """`servetune tune` on a project of `source` and one request body: it must stop with exit 2
    and leave nothing running; its output."""
    project = tmp_path / name.lower()
    project.mkdir()
    (project / "service.py").write_text(source)
    (project / "requests.jsonl").write_text('{"text": "hello"}\n')
    args = ["tune", f"service.py:{name}", "--requests", "requests.jsonl", "--trials", "2",
            "--out", "study", *SHORT_SEARCH]  # fmt: skip
    with servetune(args, project) as run:
        code, output, ports = finish(run, 180)
        assert code == 2, output[-4000:]
        assert_nothing_left(run, project, ports)
    return output


@pytest.mark.timeout(240)
def test_a_service_that_crashes_at_start_up_stops_the_study_with_its_log(tmp_path: Path) -> None:
    output = stopped_tune(tmp_path, CRASHING, "Crashing")
    assert "the service did not start" in output
    assert "RuntimeError: boom" in output
    assert "Traceback" not in output.split("the service did not start")[0]  # no traceback of servetune's


FAILING = """\
import bentoml


@bentoml.service
class Failing:
    @bentoml.api
    def predict(self, text: str) -> str:
        return text + 1
"""


@pytest.mark.timeout(240)
def test_a_service_that_fails_every_request_stops_the_study_with_what_it_raised(tmp_path: Path) -> None:
    """BentoML answers a service's exception with a 500 that says "check the server log": the
    stop quotes that log's exception and the service's line that raised it."""
    flat = " ".join(stopped_tune(tmp_path, FAILING, "Failing").split())  # Rich wraps long lines
    assert "failed every sampled request of requests.jsonl" in flat
    assert "the server's log ends with: TypeError: can only concatenate str" in flat
    assert "service.py, line 8, in predict" in flat
    assert "nothing was tuned" in flat
