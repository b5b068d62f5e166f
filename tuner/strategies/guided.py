"""Profile-guided search: predict every config from an in-process profile, measure the most
promising first, and recalibrate the prediction after every real measurement.

The predictor is `tuner.predict.analytic_goodputs` on a `ServerModel` built from the profile's
batch times (what in-process profiling can know) and from the parts profiling cannot see: the
served per-request overhead, how badly oversubscribed threads slow down, and how much slower a
batch runs inside the server than in-process. Those are unknowns with a grid of candidate values;
every measurement reweights the candidates (a likelihood on log goodput), and a residual
correction from nearby measured configs covers what the model gets wrong locally. `ask` returns
the unseen config with the highest corrected prediction; every `local_every`-th ask instead
refines around the best measured config (its best-predicted unseen neighbour).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from tuner.history import TrialView
from tuner.predict import analytic_goodputs
from tuner.profile import VARIANT_SPEED, BatchTime, Device, Profile, prior_batch_times
from tuner.servermodel import ServerModel
from tuner.space import Config, SearchSpace
from tuner.strategies.base import StrategyBase

OVERHEAD_S = (0.0005, 0.001, 0.002, 0.004, 0.008)  # served per-request CPU overhead candidates
OVERSUBSCRIPTION = (1.0, 1.5, 2.0)
SERVED_SLOWDOWN = (1.0, 1.3, 1.7)  # a batch in the server vs in-process
LOG_SIGMA = 0.25  # model error + measurement noise on log goodput
LENGTH_SCALE = 1.0  # residual correction: index steps
SHRINK = 1.0  # residual correction: weight of "no correction"


def complete_batch_times(space: SearchSpace, profile: Profile | None) -> dict[tuple[str, Device], BatchTime]:
    """Batch times for every (variant, device) the space can ask for: measured where the profile
    has them, else fp32 of the same device times the variant's prior speed, else the prior."""
    measured = profile.batch_times() if profile is not None else {}
    prior = prior_batch_times(space.service)
    devices: list[Device] = sorted({"gpu" if g > 0 else "cpu" for g in space.dim("gpus").values})
    found: dict[tuple[str, Device], BatchTime] = {}
    for variant, device in itertools.product(space.dim("variant").values, devices):
        if (variant, device) in measured:
            found[(variant, device)] = measured[(variant, device)]
            continue
        base = measured.get(("fp32", device)) or prior[device]
        found[(variant, device)] = base.scaled(VARIANT_SPEED.get(variant, 1.0))
    return found


class GuidedSearch(StrategyBase):
    """Measure in the order of a profile-based prediction that learns from each measurement."""

    name = "guided"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        profile: Profile | None = None,
        slo_p95_ms: float = 200.0,
        max_failure_ratio: float = 0.01,
        local_every: int = 3,
    ) -> None:
        super().__init__(space, seed)
        self.profile = profile
        self.local_every = local_every
        self.configs = list(space.configs)
        self.position = {c.key: i for i, c in enumerate(self.configs)}
        self.coords = np.array([space.indices(c) for c in self.configs], dtype=float)
        batch_times = complete_batch_times(space, profile)
        self.thetas = list(itertools.product(OVERHEAD_S, OVERSUBSCRIPTION, SERVED_SLOWDOWN))
        self.log_prior = np.array([self._log_prior(*theta) for theta in self.thetas])
        self.predictions = np.array(
            [
                analytic_goodputs(
                    ServerModel(
                        {k: v.scaled(slowdown) for k, v in batch_times.items()},
                        cores=space.machine.cores, gpus=space.machine.gpus, request_overhead_s=overhead,
                        oversubscription=oversub, slo_p95_s=slo_p95_ms / 1000.0,
                        max_failure_ratio=max_failure_ratio,
                    ),
                    self.configs,
                )
                for overhead, oversub, slowdown in self.thetas
            ]
        )  # fmt: skip
        jitter = np.random.default_rng(seed).random(len(self.configs))
        # Equal predictions (the SLO, not the caps, binds) go to the looser batching caps first:
        # the model's steady-state batch ignores bursts, which larger caps absorb. Then seeded.
        self.tiebreak = 1.0 + 1e-3 * self._headroom() + 1e-6 * jitter
        self.asks = 0

    def _headroom(self) -> np.ndarray:
        """Per config, how loose its batching caps are: the mean of the max_batch_size and
        max_latency_ms positions, each scaled to 0..1."""
        caps = [self.space.dim("max_batch_size"), self.space.dim("max_latency_ms")]
        return np.array(
            [np.mean([d.index(getattr(c, d.name)) / max(1, len(d) - 1) for d in caps]) for c in self.configs]
        )

    @staticmethod
    def _log_prior(overhead: float, oversub: float, slowdown: float) -> float:
        """Mild preference for the values measured on this project's machine kind."""
        return -0.5 * (
            (math.log(overhead / 0.002) / 1.0) ** 2
            + ((oversub - 1.5) / 0.7) ** 2
            + (math.log(slowdown) / 0.5) ** 2
        )

    # -- the model ---------------------------------------------------------------------------
    def _measured(self, history: TrialView) -> tuple[np.ndarray, np.ndarray]:
        index, values = [], []
        for record in history.trials():
            if record.key in self.position:
                index.append(self.position[record.key])
                values.append(0.0 if record.score is None else max(0.0, float(record.score)))
        return np.array(index, dtype=int), np.array(values, dtype=float)

    def _posterior(self, history: TrialView) -> tuple[np.ndarray, np.ndarray]:
        """(weight, level scale) per candidate of the unknowns, given the measurements so far."""
        index, values = self._measured(history)
        if index.size == 0:
            weights = np.exp(self.log_prior - self.log_prior.max())
            return weights / weights.sum(), np.ones(len(self.thetas))
        eps = 0.05 * max(values.max(), 1e-9)
        log_y = np.log(values + eps)
        predicted = self.predictions[:, index]  # thetas x measured
        scale = np.array([self._scale(row, values) for row in predicted])  # absolute level per theta
        log_p = np.log(predicted * scale[:, None] + eps)
        loglik = -0.5 * np.sum((log_y[None, :] - log_p) ** 2, axis=1) / LOG_SIGMA**2
        posterior = self.log_prior + loglik
        weights = np.exp(posterior - posterior.max())
        return weights / weights.sum(), scale

    def belief(self, history: TrialView) -> dict[str, float]:
        """Posterior means of the unknowns (overhead_s, oversubscription, served_slowdown)."""
        weights, _ = self._posterior(history)
        thetas = np.array(self.thetas)
        mean = weights @ thetas
        return {
            "overhead_s": float(mean[0]),
            "oversubscription": float(mean[1]),
            "served_slowdown": float(mean[2]),
        }

    def predict(self, history: TrialView) -> np.ndarray:
        """Corrected predicted goodput of every config (in `space.configs` order)."""
        weights, scale = self._posterior(history)
        index, values = self._measured(history)
        mean = (weights * scale) @ self.predictions
        if index.size == 0:
            return mean
        eps = 0.05 * max(values.max(), 1e-9)
        log_y = np.log(values + eps)
        # local residual correction from measured neighbours (in index space)
        residual = log_y - np.log(mean[index] + eps)
        distance = ((self.coords[:, None, :] - self.coords[None, index, :]) ** 2).sum(axis=2)
        kernel = np.exp(-0.5 * distance / LENGTH_SCALE**2)
        correction = (kernel @ residual) / (kernel.sum(axis=1) + SHRINK)
        return np.maximum(0.0, (mean + eps) * np.exp(correction) - eps)

    @staticmethod
    def _scale(predicted: np.ndarray, measured: np.ndarray) -> float:
        both = (predicted > 0) & (measured > 0)
        if not both.any():
            return 1.0
        return float(np.exp(np.mean(np.log(measured[both]) - np.log(predicted[both]))))

    # -- ask / tell --------------------------------------------------------------------------
    def _best_measured(self, history: TrialView) -> Config | None:
        feasible = [
            (r.score, r.key) for r in history.trials() if r.score is not None and r.key in self.position
        ]
        if not feasible:
            return None
        return self.configs[self.position[max(feasible)[1]]]

    def ask(self, history: TrialView) -> Config | None:
        unseen = [i for i, c in enumerate(self.configs) if not history.seen(c.key)]
        if not unseen:
            return None
        self.asks += 1
        score = self.predict(history) * self.tiebreak
        best = self._best_measured(history)
        if best is not None and self.local_every > 0 and self.asks % self.local_every == 0:
            near = [
                self.position[c.key]
                for c in self.space.neighbours(best)
                if c.key in self.position and not history.seen(c.key)
            ]
            if near:
                return self.configs[max(near, key=lambda i: score[i])]
        return self.configs[max(unseen, key=lambda i: score[i])]

    def ranked(self, history: TrialView, top: int | None = None) -> list[tuple[Config, float]]:
        """Configs by corrected prediction (for reports)."""
        score = self.predict(history)
        order = np.argsort(-score)[:top]
        return [(self.configs[i], float(score[i])) for i in order]
