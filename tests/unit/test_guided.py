"""The profile-guided strategy against simulated surfaces (no server)."""

from __future__ import annotations

import random
import statistics
import zlib
from pathlib import Path

import pytest

from tuner.profile import VARIANT_SPEED, Point, Profile, prior_batch_times, profile_key
from tuner.simulate import MINILM_CPU, ServerModel, SimulatedSurface, optimum, small_cpu_surface
from tuner.space import DIMENSIONS, Config, Dimension, Machine, SearchSpace, pow2
from tuner.strategies import make_strategy
from tuner.strategies.base import SearchStrategy
from tuner.strategies.guided import GuidedSearch, complete_batch_times
from tuner.strategies.random import RandomSearch

SEEDS = range(8)


def medium_surface(overhead_s: float = 0.0025) -> SimulatedSurface:
    """4 cores, 210 configs: big enough that a small budget separates strategies."""
    values = {
        "max_batch_size": pow2(2, 64), "max_latency_ms": (10, 25, 50, 100, 200, 500),
        "workers": (1, 2, 4), "threads": (1, 2, 4), "gpus": (0,), "variant": ("fp32",),
    }  # fmt: skip
    space = SearchSpace("embedding", [Dimension(n, tuple(values[n])) for n in DIMENSIONS], Machine(4, 0))
    model = ServerModel({("fp32", "cpu"): MINILM_CPU}, cores=4, request_overhead_s=overhead_s)
    return SimulatedSurface("cpu-4core", space, model, noise=0.08, requests=500)


SURFACE = medium_surface()


def search(strategy: SearchStrategy, surface: SimulatedSurface, seed: int, budget: int) -> list[Config]:
    """The study's de-dup rule: known configs are answered from memory, never measured twice."""
    seen: dict[str, float | None] = {}
    measured: list[Config] = []
    while len(measured) < budget:
        config = strategy.ask()
        if config is None:
            break
        if config.key in seen:
            strategy.tell(config, seen[config.key])
            continue
        rng = random.Random(zlib.crc32(f"{seed}/{config.key}".encode()))
        seen[config.key] = surface.measure(config, rng)
        measured.append(config)
        strategy.tell(config, seen[config.key])
    return measured


def best_ratio(surface: SimulatedSurface, configs: list[Config]) -> float:
    return max(surface.truth(c) for c in configs) / optimum(surface)[1]


def test_guided_beats_random_at_equal_budget_over_seeds() -> None:
    budget = round(0.05 * len(SURFACE.space))
    guided = [
        best_ratio(SURFACE, search(GuidedSearch(SURFACE.space, s, SURFACE.profile(s)), SURFACE, s, budget))
        for s in SEEDS
    ]
    rand = [best_ratio(SURFACE, search(RandomSearch(SURFACE.space, s), SURFACE, s, budget)) for s in SEEDS]
    assert statistics.median(guided) > statistics.median(rand)
    assert min(guided) > statistics.median(rand)
    assert statistics.median(guided) >= 0.95


def test_guided_measures_every_config_once_when_asked_for_all() -> None:
    surface = small_cpu_surface(requests=400)
    measured = search(GuidedSearch(surface.space, 0, surface.profile(0)), surface, 0, len(surface.space) + 5)
    assert sorted(c.key for c in measured) == sorted(c.key for c in surface.space.configs)


def test_the_first_proposal_comes_from_the_profile_and_is_good() -> None:
    strategy = GuidedSearch(SURFACE.space, 0, SURFACE.profile(0))
    first = strategy.ask()
    assert first is not None and first in SURFACE.space
    assert SURFACE.truth(first) >= 0.85 * optimum(SURFACE)[1]


def test_equal_predictions_go_to_the_looser_batching_caps_first() -> None:
    caps = SURFACE.space.dim("max_batch_size").values, SURFACE.space.dim("max_latency_ms").values

    def looseness(c: Config) -> float:
        return caps[0].index(c.max_batch_size) / (len(caps[0]) - 1) + caps[1].index(c.max_latency_ms) / (
            len(caps[1]) - 1
        )

    for seed in SEEDS:  # the seed orders only configs that tie on prediction and looseness
        guided = GuidedSearch(SURFACE.space, seed=seed, profile=SURFACE.profile(seed=0))
        predicted = dict(zip((c.key for c in guided.configs), guided.predict(), strict=True))
        first = guided.ask()
        assert first is not None
        tied = [c for c in guided.configs if predicted[c.key] == predicted[first.key]]
        assert len(tied) > 1, "this surface has ties at the top; the test needs them"
        assert looseness(first) == max(looseness(c) for c in tied)


def test_measurements_move_the_belief_about_the_served_overhead() -> None:
    heavy = medium_surface(overhead_s=0.008)
    strategy = GuidedSearch(heavy.space, 0, heavy.profile(0))
    before = strategy.belief()["overhead_s"]
    search(strategy, heavy, 0, 12)
    after = strategy.belief()["overhead_s"]
    assert after > before
    assert after > 1.3 * before


def test_infeasible_measurements_do_not_break_the_prediction() -> None:
    strategy = GuidedSearch(SURFACE.space, 0, SURFACE.profile(0))
    for config in SURFACE.space.configs[:5]:
        strategy.tell(config, None)
    ranked = strategy.ranked(top=3)
    assert len(ranked) == 3 and all(value >= 0 for _, value in ranked)
    assert strategy.ask() not in SURFACE.space.configs[:5]


def test_same_seed_same_sequence_and_the_registry_knows_guided() -> None:
    first = search(make_strategy("guided", SURFACE.space, 3), SURFACE, 3, 6)
    second = search(make_strategy("guided", SURFACE.space, 3), SURFACE, 3, 6)
    assert [c.key for c in first] == [c.key for c in second]


def test_missing_variants_and_devices_come_from_fp32_and_the_prior() -> None:
    values = {
        "max_batch_size": (8,), "max_latency_ms": (100,), "workers": (1,), "threads": (1,),
        "gpus": (0, 1), "variant": ("fp32", "int8"),
    }  # fmt: skip
    space = SearchSpace("embedding", [Dimension(n, tuple(values[n])) for n in DIMENSIONS], Machine(2, 1))
    points = [Point(n, t, 0.002 + 0.001 * n / t) for n in (1, 8, 32) for t in (1, 2)]
    profile = Profile("embedding", 2, {profile_key("fp32", "cpu"): points})
    times = complete_batch_times(space, profile)
    fp32, int8 = times[("fp32", "cpu")], times[("int8", "cpu")]
    assert int8.seconds(8, 1) == pytest.approx(fp32.seconds(8, 1) * VARIANT_SPEED["int8"])
    assert fp32.seconds(8, 1) == pytest.approx(0.002 + 0.008, rel=0.05)
    assert times[("fp32", "gpu")] == prior_batch_times("embedding")["gpu"]


def test_tune_resumes_guided_with_the_saved_profile_and_builds_others_by_name(tmp_path: Path) -> None:
    from tuner.tuning import PROFILE_FILE, TuneOptions, build_strategy

    points = [Point(n, t, 0.003 + 0.002 * n / t) for n in (1, 8, 32) for t in (1, 2)]
    saved = Profile("embedding", 2, {profile_key("fp32", "cpu"): points}, 0.001, "test")
    saved.save(tmp_path / PROFILE_FILE)
    space = SURFACE.space
    options = TuneOptions(service="embedding", strategy="guided", out=tmp_path, resume=True, slo_ms=150)
    strategy = build_strategy(options, space)
    assert isinstance(strategy, GuidedSearch)
    assert strategy.profile is not None
    assert strategy.profile.to_dict() == saved.to_dict()
    first = strategy.ask()
    assert first is not None and first in space
    tpe = build_strategy(TuneOptions(service="embedding", strategy="tpe", out=tmp_path), space)
    assert tpe.name == "tpe"
    with pytest.raises(ValueError, match="unknown strategy"):
        build_strategy(TuneOptions(service="embedding", strategy="nope", out=tmp_path), space)
