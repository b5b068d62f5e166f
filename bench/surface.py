"""Performance surfaces for the benchmarks: a space with a goodput per config, simulated or recorded.

`SimulatedSurface` asks the queueing simulator (tuner/simulator.py); `RecordedSurface` replays
real measurements read from bench/surfaces/*.json (written by bench/record_surface.py).
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tuner.profile import BatchTime, Device, Profile, synthetic_profile
from tuner.servermodel import ServerModel
from tuner.simulator import goodput_ceiling, max_goodput
from tuner.space import DIMENSIONS, Config, Dimension, Machine, SearchSpace


class Surface(Protocol):
    """A space with a score per config: `truth` noiseless, `measure` one noisy measurement."""

    name: str
    space: SearchSpace

    def truth(self, config: Config) -> float: ...

    def measure(self, config: Config, rng: random.Random) -> float | None: ...

    def profile(self, seed: int = 0) -> Profile | None: ...

    def optimum(self) -> tuple[Config, float]: ...


@dataclass
class SimulatedSurface:
    """Simulated goodput of every config of a space, plus log-normal measurement noise.

    `model` is the served truth; `inprocess` the batch times an in-process profile would show
    (default: the model's own), which is all the guided strategy is given.
    """

    name: str
    space: SearchSpace
    model: ServerModel
    noise: float = 0.08
    requests: int = 2000
    profile_noise: float = 0.05
    inprocess: Mapping[tuple[str, Device], BatchTime] | None = None
    _truth: dict[str, float] = field(default_factory=dict, repr=False)

    def truth(self, config: Config) -> float:
        if config.key not in self._truth:
            self._truth[config.key] = max_goodput(self.model, config, self.requests).goodput_rps
        return self._truth[config.key]

    def measure(self, config: Config, rng: random.Random) -> float | None:
        value = self.truth(config)
        if value <= 0:
            return None  # infeasible: no load level met the SLO
        return value * math.exp(rng.gauss(0.0, self.noise))

    def profile(self, seed: int = 0) -> Profile:
        """What an in-process profile shows: the in-process batch times with noise (and an
        in-process request overhead a fraction of the served one, as on a real server)."""
        threads = sorted(set(self.space.dim("threads").values))
        return synthetic_profile(
            self.space.service, self.model.cores, self.inprocess or self.model.batch_times, threads,
            noise=self.profile_noise, request_overhead_s=self.model.request_overhead_s / 20, seed=seed,
        )  # fmt: skip

    def optimum(self) -> tuple[Config, float]:
        """The best config by its noiseless value (the first in space order on a tie).

        Simulates only the configs whose `goodput_ceiling` could still beat the best found.
        """
        order = sorted(enumerate(self.space.configs), key=lambda item: -goodput_ceiling(self.model, item[1]))
        best: tuple[float, int, Config] | None = None
        for index, config in order:
            if best is not None and goodput_ceiling(self.model, config) < best[0]:
                break
            value = self.truth(config)
            if best is None or (value, -index) > (best[0], -best[1]):
                best = (value, index, config)
        if best is None:
            raise ValueError(f"{self.name}: the space has no config")
        return best[2], best[0]


@dataclass
class RecordedSurface:
    """Measured goodput per config with repeats (see `load`); `measure` replays one repeat."""

    name: str
    space: SearchSpace
    repeats: dict[str, list[float]]
    recorded_profile: Profile | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def truth(self, config: Config) -> float:
        return statistics.fmean(self.repeats[config.key])

    def measure(self, config: Config, rng: random.Random) -> float | None:
        value = rng.choice(self.repeats[config.key])
        return value if value > 0 else None

    def profile(self, seed: int = 0) -> Profile | None:
        return self.recorded_profile

    def optimum(self) -> tuple[Config, float]:
        """The best config by its mean repeat (the first in space order on a tie)."""
        best = max(self.space.configs, key=self.truth)
        return best, self.truth(best)

    @classmethod
    def load(cls, path: Path) -> RecordedSurface:
        """Read a recorded surface (JSON):

        {"name": str, "space": {"service": str, "cores": int, "gpus": int, "max_total_threads": int?,
          "dimensions": {"max_batch_size": [...], "max_latency_ms": [...], "workers": [...],
                         "threads": [...], "gpus": [...], "variant": [...]}},
         "points": [{"config": {...Config fields...}, "goodput_rps": [repeat, ...]}, ...],
         "profile": Profile.to_dict() (optional), "meta": {...how it was recorded...}}

        Every legal config of the space needs a point with at least one repeat.
        """
        try:
            data = json.loads(path.read_text())
            spec = data["space"]
            dims = [Dimension(name, tuple(spec["dimensions"][name])) for name in DIMENSIONS]
            space = SearchSpace(
                spec["service"], dims, Machine(int(spec["cores"]), int(spec.get("gpus", 0))),
                spec.get("max_total_threads"), spec.get("max_workers"),
            )  # fmt: skip
            repeats = {
                Config.from_dict(p["config"]).key: [float(v) for v in p["goodput_rps"]]
                for p in data["points"]
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a recorded surface: {exc}") from exc
        missing = [c.key for c in space.configs if not repeats.get(c.key)]
        if missing:
            raise ValueError(f"{path}: no measurement for {len(missing)} configs, e.g. {missing[:3]}")
        profile = Profile.from_dict(data["profile"]) if data.get("profile") else None
        return cls(str(data.get("name", path.stem)), space, repeats, profile, dict(data.get("meta", {})))


def write_recorded(
    path: Path,
    name: str,
    space: SearchSpace,
    goodput: Mapping[str, Sequence[float]],
    profile: Profile | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write a recorded surface in the format `RecordedSurface.load` reads (goodput by config key)."""
    by_key = {c.key: c for c in space.configs}
    unknown = sorted(set(goodput) - set(by_key))
    if unknown:
        raise ValueError(f"configs outside the space: {unknown[:3]}")
    document = {
        "name": name,
        "space": {
            "service": space.service, "cores": space.machine.cores, "gpus": space.machine.gpus,
            "max_total_threads": space.max_total_threads, "max_workers": space.max_workers,
            "dimensions": {d.name: list(d.values) for d in space.dimensions},
        },
        "points": [{"config": by_key[k].to_dict(), "goodput_rps": list(v)} for k, v in goodput.items()],
        "profile": profile.to_dict() if profile is not None else None,
        "meta": dict(meta or {}),
    }  # fmt: skip
    path.write_text(json.dumps(document, indent=1))
