"""The benchmark's surfaces: simulated presets and their hidden parameters, recorded files, validation."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest

from bench.presets import (
    FIXED_FACTOR_RANGE,
    OVERHEAD_RANGE_S,
    OVERSUBSCRIPTION_RANGE,
    PARALLEL_SHIFT_RANGE,
    SLOWDOWN_RANGE,
    Hidden,
    draw_hidden,
    small_cpu_surface,
)
from bench.surface import RecordedSurface, write_recorded
from bench.validation import validate
from tuner.simulator import max_goodput
from tuner.space import Config
from tuner.strategies.guided import OVERHEAD_S, OVERSUBSCRIPTION, SERVED_SLOWDOWN

REQUESTS = 600
BENCH_SURFACES = sorted((Path(__file__).resolve().parents[2] / "bench" / "surfaces").glob("*.json"))
DRAWS = [draw_hidden(random.Random(seed)) for seed in range(200)]


def test_the_noiseless_surface_is_deterministic_and_measurements_are_noisy() -> None:
    first, second = small_cpu_surface(requests=REQUESTS), small_cpu_surface(requests=REQUESTS)
    config = first.space.configs[7]
    assert first.truth(config) == second.truth(config) > 0
    measured = [first.measure(config, random.Random(seed)) for seed in range(20)]
    assert len({round(m or 0.0, 6) for m in measured}) > 15
    again = [first.measure(config, random.Random(seed)) for seed in range(20)]
    assert measured == again


@pytest.mark.parametrize("hidden", [Hidden(), *DRAWS[:3]], ids=lambda h: f"{h.request_overhead_s:.4f}")
def test_the_pruned_optimum_is_the_best_of_every_config(hidden: Hidden) -> None:
    surface = small_cpu_surface(hidden, requests=REQUESTS)
    best, value = surface.optimum()
    simulated = len(surface._truth)
    brute = max(surface.space.configs, key=surface.truth)
    assert (best, value) == (brute, surface.truth(brute))
    if hidden == Hidden():
        assert simulated < len(surface.space)  # the ceiling spared some simulations


@pytest.mark.parametrize(
    ("grid", "drawn", "bounds"),
    [
        (OVERHEAD_S, [h.request_overhead_s for h in DRAWS], OVERHEAD_RANGE_S),
        (OVERSUBSCRIPTION, [h.oversubscription for h in DRAWS], OVERSUBSCRIPTION_RANGE),
        (SERVED_SLOWDOWN, [h.slowdown for h in DRAWS], SLOWDOWN_RANGE),
    ],
    ids=["overhead", "oversubscription", "slowdown"],
)
def test_drawn_hidden_parameters_reach_beyond_and_between_guideds_grid(
    grid: tuple[float, ...], drawn: list[float], bounds: tuple[float, float]
) -> None:
    assert bounds[0] < min(grid) and bounds[1] > max(grid)
    assert all(bounds[0] <= v <= bounds[1] for v in drawn)
    below, above = sum(v < min(grid) for v in drawn), sum(v > max(grid) for v in drawn)
    assert below >= 10 and above >= 10
    between = [v for v in drawn if min(grid) < v < max(grid)]
    assert all(min(abs(v / g - 1) for g in grid) > 1e-6 for v in between) and len(between) >= 50


def test_drawn_batch_shapes_are_outside_guideds_model_family() -> None:
    """guided can only scale a profiled batch uniformly; the drawn served batch changes shape."""
    assert all(FIXED_FACTOR_RANGE[0] <= h.fixed_factor <= FIXED_FACTOR_RANGE[1] for h in DRAWS)
    assert all(PARALLEL_SHIFT_RANGE[0] <= h.parallel_shift <= PARALLEL_SHIFT_RANGE[1] for h in DRAWS)
    inprocess = small_cpu_surface().inprocess
    assert inprocess is not None
    bt = inprocess[("fp32", "cpu")]
    shape_changes = 0
    for hidden in DRAWS[:20]:
        served = hidden.served(bt)
        fixed_ratio = served.seconds(1, 1) / bt.seconds(1, 1)
        big_ratio = served.seconds(64, 2) / bt.seconds(64, 2)
        shape_changes += abs(fixed_ratio / big_ratio - 1) > 0.05
    assert shape_changes >= 15


def test_the_centre_is_the_unchanged_model_and_a_draw_changes_it() -> None:
    centre = small_cpu_surface(Hidden(), requests=REQUESTS)
    assert centre.inprocess is not None
    assert centre.model.batch_times == centre.inprocess
    assert (centre.model.request_overhead_s, centre.model.oversubscription) == (0.0025, 1.5)
    drawn = small_cpu_surface(DRAWS[0], requests=REQUESTS)
    assert drawn.model.batch_times != drawn.inprocess
    assert drawn.model.request_overhead_s == DRAWS[0].request_overhead_s


def test_the_profile_shows_the_inprocess_batch_times_not_the_served_ones() -> None:
    slow = Hidden(slowdown=2.4, fixed_factor=1.0, parallel_shift=0.0)
    surface = small_cpu_surface(slow, requests=REQUESTS)
    fitted = surface.profile(seed=0).batch_times()[("fp32", "cpu")]
    assert surface.inprocess is not None
    inprocess, served = surface.inprocess[("fp32", "cpu")], surface.model.batch_times[("fp32", "cpu")]
    assert fitted.seconds(16, 2) == pytest.approx(inprocess.seconds(16, 2), rel=0.1)
    assert served.seconds(16, 2) == pytest.approx(2.4 * inprocess.seconds(16, 2))


def test_validate_reports_zero_error_for_the_model_itself_and_the_scale_of_a_wrong_one() -> None:
    model = small_cpu_surface(requests=REQUESTS).model

    def goodput(m: object, c: Config) -> float:
        return max_goodput(m, c, requests=REQUESTS).goodput_rps  # type: ignore[arg-type]

    configs = [Config(8, 200, 1, 2), Config(16, 500, 2, 1), Config(32, 100, 1, 1)]
    truth = [(c, goodput(model, c)) for c in configs]
    exact = validate(model, truth, predict=goodput)
    assert exact.median_abs_error == 0 and exact.rank_correlation == pytest.approx(1.0)
    slower = dataclasses.replace(model, batch_times={k: v.scaled(2.0) for k, v in model.batch_times.items()})
    wrong = validate(slower, truth, predict=goodput)
    assert 0.2 < wrong.median_abs_error < 0.8
    assert "median |error|" in wrong.summary()


def recorded_document(best: Config | None = None) -> dict[str, object]:
    """Every config of the 2-core space with three made-up repeats; `best` gets the highest."""
    surface = small_cpu_surface(requests=REQUESTS)
    points = [
        {"config": c.to_dict(), "goodput_rps": [100.0 + i, 110.0 + i, 0.0 if i % 5 == 0 else 90.0]}
        for i, c in enumerate(surface.space.configs)
    ]
    if best is not None:
        for point in points:
            if point["config"] == best.to_dict():
                point["goodput_rps"] = [500.0, 520.0, 540.0]
    dims = {d.name: list(d.values) for d in surface.space.dimensions}
    space = {"service": "embedding", "cores": 2, "gpus": 0, "dimensions": dims}
    return {"name": "tiny", "space": space, "points": points, "meta": {"how": "made up for a test"}}


def test_a_recorded_surface_loads_and_replays_its_repeats(tmp_path: Path) -> None:
    best = small_cpu_surface().space.configs[11]
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(recorded_document(best)))
    surface = RecordedSurface.load(path)
    assert len(surface.space) == 48
    config = surface.space.configs[0]
    assert surface.truth(config) == pytest.approx((100 + 110 + 0) / 3)
    replayed = {surface.measure(config, random.Random(seed)) for seed in range(30)}
    assert replayed == {100.0, 110.0, None}  # a zero repeat is a failed measurement
    assert surface.optimum() == (best, pytest.approx(520.0))
    assert surface.meta == {"how": "made up for a test"} and surface.profile() is None


def test_a_written_surface_reads_back(tmp_path: Path) -> None:
    space = small_cpu_surface().space
    goodput = {c.key: [float(i), float(i + 1)] for i, c in enumerate(space.configs)}
    path = tmp_path / "written.json"
    write_recorded(path, "written", space, goodput, meta={"by": "test"})
    surface = RecordedSurface.load(path)
    assert surface.repeats == goodput and surface.name == "written" and surface.meta == {"by": "test"}
    assert surface.space.describe() == space.describe()
    with pytest.raises(ValueError, match="outside the space"):
        write_recorded(path, "bad", space, {"b999-l1-w1-t1-g0-fp32": [1.0]})


def test_a_recorded_surface_with_a_missing_config_is_refused(tmp_path: Path) -> None:
    document = recorded_document()
    document["points"] = document["points"][1:]  # type: ignore[index]
    path = tmp_path / "gap.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="no measurement for 1 configs"):
        RecordedSurface.load(path)


def test_a_file_that_is_not_a_surface_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"points": []}))
    with pytest.raises(ValueError, match="not a recorded surface"):
        RecordedSurface.load(path)


@pytest.mark.parametrize("path", BENCH_SURFACES, ids=lambda p: p.name)
def test_the_shipped_recorded_surfaces_load_with_their_profile(path: Path) -> None:
    surface = RecordedSurface.load(path)
    assert len(surface.space) >= 48
    assert surface.optimum()[1] > 0
    assert surface.profile() is not None
    assert math.isfinite(surface.truth(surface.space.configs[0]))
