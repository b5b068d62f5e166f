"""The in-process profiler: the batch-time fit, the profile file, and a real (tiny) profile run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuner.profile import (
    BatchTime,
    Point,
    Profile,
    fit_batch_time,
    fit_error,
    pooled_profile,
    profile_key,
    profile_service,
    synthetic_profile,
    time_batches,
)

KNOWN_CPU = BatchTime(cpu0=0.006, cpu1=0.004, p0=0.4, p1=0.85)
KNOWN_GPU = BatchTime(cpu0=0.0, cpu1=0.0005, p0=0.0, p1=0.6, gpu0=0.003, gpu1=0.0002)


def exact_points(model: BatchTime) -> list[Point]:
    return [Point(n, t, model.seconds(n, t)) for n in (1, 2, 4, 8, 16, 32, 64) for t in (1, 2, 4)]


def test_the_fit_recovers_known_cpu_batch_times() -> None:
    fitted = fit_batch_time(exact_points(KNOWN_CPU))
    assert fitted.p0 == pytest.approx(0.4) and fitted.p1 == pytest.approx(0.85)
    assert fitted.cpu0 == pytest.approx(0.006, rel=1e-6) and fitted.cpu1 == pytest.approx(0.004, rel=1e-6)
    assert fit_error(fitted, exact_points(KNOWN_CPU)) < 1e-6


def test_the_fit_separates_the_gpu_part_that_threads_do_not_speed_up() -> None:
    fitted = fit_batch_time(exact_points(KNOWN_GPU), device="gpu")
    assert fit_error(fitted, exact_points(KNOWN_GPU)) < 0.01
    assert fitted.gpu0 == pytest.approx(0.003, rel=0.05)
    assert fitted.seconds(128, 8) == pytest.approx(KNOWN_GPU.seconds(128, 8), rel=0.05)  # extrapolates


def test_more_threads_speed_up_a_fitted_batch_but_never_beyond_linear() -> None:
    for n in (1, 8, 64):
        one, two, four = (KNOWN_CPU.seconds(n, t) for t in (1, 2, 4))
        assert one > two > four >= one / 4


def test_one_thread_count_fits_without_a_speedup() -> None:
    points = [Point(n, 1, 0.001 + 0.0005 * n) for n in (1, 4, 16)]
    fitted = fit_batch_time(points)
    assert fitted.seconds(8, 1) == pytest.approx(0.005, rel=1e-6)


def test_an_empty_profile_cannot_be_fitted() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fit_batch_time([])


def test_a_profile_survives_its_json_file(tmp_path: Path) -> None:
    profile = synthetic_profile("embedding", 2, {("fp32", "cpu"): KNOWN_CPU}, threads=(1, 2), noise=0.05)
    profile.save(tmp_path / "p.json")
    loaded = Profile.load(tmp_path / "p.json")
    assert loaded == profile
    fitted = loaded.batch_times()[("fp32", "cpu")]
    assert fitted.seconds(16, 2) == pytest.approx(KNOWN_CPU.seconds(16, 2), rel=0.1)


def test_pooled_profiles_fit_between_a_slow_and_a_fast_hour() -> None:
    slow = Profile("embedding", 2, {"fp32@cpu": exact_points(KNOWN_CPU.scaled(2.0))}, 0.002, "slow")
    fast = Profile("embedding", 2, {"fp32@cpu": exact_points(KNOWN_CPU)}, 0.001, "fast")
    pooled = pooled_profile([slow, fast])
    assert len(pooled.points["fp32@cpu"]) == 2 * len(fast.points["fp32@cpu"])
    assert pooled.request_overhead_s == pytest.approx(0.0015)
    seconds = pooled.batch_times()[("fp32", "cpu")].seconds(16, 1)
    assert KNOWN_CPU.seconds(16, 1) < seconds < 2 * KNOWN_CPU.seconds(16, 1)
    with pytest.raises(ValueError, match="at least one"):
        pooled_profile([])


def test_a_broken_profile_file_names_the_problem() -> None:
    with pytest.raises(ValueError, match="not a profile"):
        Profile.from_dict({"service": "digits"})


class BatchClock:
    """Stands in for `time` in tuner.profile: a clock that only the fake batches move."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> BatchClock:
    fake = BatchClock()
    monkeypatch.setattr("tuner.profile.time", fake)
    return fake


def test_time_batches_keeps_the_fastest_repeat_and_restores_the_thread_count(clock: BatchClock) -> None:
    calls: list[tuple[int, int]] = []
    threads_seen: list[int] = []

    def run(n: int, repeat: int) -> None:
        calls.append((n, repeat))
        threads = torch.get_num_threads()
        threads_seen.append(threads)
        clock.now += 0.01 * n / threads + (0.5 if repeat == 0 else 0.0)  # the first repeat is cold

    before = torch.get_num_threads()
    points = time_batches(run, batch_sizes=(1, 4), threads=(1, 2), repeats=2)
    assert [(p.batch, p.threads) for p in points] == [(1, 1), (4, 1), (1, 2), (4, 2)]
    assert [p.seconds for p in points] == pytest.approx([0.01, 0.04, 0.005, 0.02])
    assert set(threads_seen) == {1, 2} and torch.get_num_threads() == before
    assert calls.count((4, 1)) == 2, "each repeat once per thread count (warm-up runs batch 1)"


def test_a_spent_budget_stops_before_larger_batches(clock: BatchClock) -> None:
    def one_second(n: int, repeat: int) -> None:
        clock.now += 1.0

    def batches(budget_s: float) -> list[int]:
        points = time_batches(one_second, batch_sizes=(1, 2, 4), threads=(1,), repeats=1, budget_s=budget_s)
        return [p.batch for p in points]

    assert batches(0.0) == [1], "the first batch size is always measured"
    assert batches(2.5) == [1, 2]  # warm-up + batch 1 + batch 2 = 3 s: batch 4 is skipped
    assert batches(10.0) == [1, 2, 4]


def test_digits_profile_in_process(digits_tag: str) -> None:
    profile = profile_service("digits", batch_sizes=(1, 16), threads=(1,), repeats=1, cores=2)
    points = profile.points[profile_key("fp32", "cpu")]
    assert [(p.batch, p.threads) for p in points] == [(1, 1), (16, 1)]
    assert all(p.seconds > 0 for p in points)
    assert profile.request_overhead_s > 0 and profile.cores == 2
    assert set(profile.batch_times()) == {("fp32", "cpu")}, "the points fit a batch-time model"


def test_minilm_profile_uses_the_shipped_sentences(minilm_tag: str) -> None:
    profile = profile_service("embedding", batch_sizes=(1, 8), threads=(1,), repeats=1)
    (points,) = profile.points.values()
    assert [p.batch for p in points] == [1, 8]
    assert all(p.seconds > 0 for p in points)


def test_an_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown service"):
        profile_service("speech")
