"""Load shapes: tick() follows the plan on a fake clock, without Locust."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.shapes import (
    ConstantRate,
    ControlledLoad,
    Step,
    StepLoad,
    per_user_interval,
    spawn_rate_for,
    write_control,
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_step_load_rises_step_by_step_then_stops() -> None:
    clock = Clock()
    shape = StepLoad.rising(start=2, step=3, count=3, duration_s=10, clock=clock)
    seen = []
    for t in [0, 9.99, 10, 19.9, 20, 29.99, 30, 45]:
        clock.t = t
        seen.append(shape.tick())
    assert seen == [(2, 8.0), (2, 8.0), (5, 20.0), (5, 20.0), (8, 32.0), (8, 32.0), None, None]
    assert all(users / spawn_rate_for(users) <= 0.25 for users in (1, 7, 500))  # a step's users start at once


def test_step_load_carries_each_steps_rate() -> None:
    clock = Clock()
    shape = StepLoad([Step(4, 5, rate=50), Step(4, 5, rate=100)], clock=clock)
    clock.t = 1
    assert shape.current_rate() == 50
    clock.t = 6
    assert shape.current_rate() == 100
    clock.t = 11
    assert shape.current_rate() is None and shape.tick() is None


@pytest.mark.parametrize("bad", [dict(users=0, duration_s=1), dict(users=1, duration_s=0),
                                 dict(users=1, duration_s=1, rate=0)])  # fmt: skip
def test_step_rejects_bad_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Step(**bad)  # type: ignore[arg-type]


def test_constant_rate_sizes_users_from_rate_and_latency() -> None:
    clock = Clock()
    shape = ConstantRate(rate=200, duration_s=30, expected_latency_s=0.05, headroom=2, clock=clock)
    assert shape.users == 20  # 200/s x 50 ms x 2
    assert shape.tick() == (20, 80.0)
    assert shape.current_rate() == 200
    clock.t = 30
    assert shape.tick() is None and shape.current_rate() is None
    assert ConstantRate(rate=1, duration_s=1, clock=clock).users == 1


def test_per_user_interval_splits_the_rate_over_users() -> None:
    assert per_user_interval(100, 10) == pytest.approx(0.1)
    assert per_user_interval(None, 10) is None
    assert per_user_interval(50, 0) == pytest.approx(0.02)


def test_controlled_load_follows_the_control_file_and_acknowledges(tmp_path: Path) -> None:
    clock = Clock()
    control = tmp_path / "control.json"
    shape = ControlledLoad(control, clock=clock)
    assert shape.tick() == (1, 1.0), "before the first control file it idles at one user"
    write_control(control, seq=0, users=4, rate=None)
    clock.t = 1.5
    assert shape.tick() == (4, 16.0)
    assert json.loads(shape.ack.read_text()) == {"seq": 0, "at": 1.5}
    write_control(control, seq=1, users=16, rate=80.0)
    clock.t = 3.0
    assert shape.tick() == (16, 64.0)
    assert shape.current_rate() == 80.0
    assert json.loads(shape.ack.read_text())["seq"] == 1
    write_control(control, seq=2, users=16, stop=True)
    assert shape.tick() is None
    control.unlink()
    assert shape.tick() is None, "a vanished control file after start stops the run"
