"""TPE (Optuna's Tree-structured Parzen Estimator) through Optuna's ask/tell API."""

from __future__ import annotations

import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import Trial, TrialState, create_trial

from tuner.history import TrialView
from tuner.space import Config, SearchSpace
from tuner.strategies.base import StrategyBase

FAILED_VALUE = -1e12  # TPE only ranks values: failed trials land in the "bad" group
MAX_RETRIES = 64


class TPESearch(StrategyBase):
    """Each free dimension is an integer index distribution. Before asking, the trials measured
    since the last ask are told to Optuna (its own proposals by their trial, resumed or foreign
    ones added as finished trials); an illegal or known proposal is told back at once (illegal =
    failed state, known = its stored score) and Optuna is asked again."""

    name = "tpe"

    def __init__(self, space: SearchSpace, seed: int = 0, n_startup_trials: int = 5) -> None:
        super().__init__(space, seed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.distributions: dict[str, BaseDistribution] = {
            d.name: IntDistribution(0, len(d) - 1) for d in space.free_dimensions
        }
        self.pending: dict[str, Trial] = {}
        self.read = 0  # trials of the history already told to Optuna

    def _config(self, params: dict[str, int]) -> Config:
        indices = [params.get(d.name, 0) for d in self.space.dimensions]
        return self.space.from_indices(indices)

    def _params(self, config: Config) -> dict[str, int]:
        indices = dict(zip((d.name for d in self.space.dimensions), self.space.indices(config), strict=True))
        return {name: indices[name] for name in self.distributions}

    def _sync(self, history: TrialView) -> None:
        for record in history.trials(self.read):
            value = FAILED_VALUE if record.score is None else record.score
            trial = self.pending.pop(record.key, None)
            if trial is not None:
                self.study.tell(trial, value)
            elif self.distributions:
                finished = create_trial(
                    params=self._params(record.cfg), distributions=self.distributions, value=value
                )
                self.study.add_trial(finished)
        self.read = len(history)

    def ask(self, history: TrialView) -> Config | None:
        self._sync(history)
        if not self.unseen(history):
            return None
        for _ in range(MAX_RETRIES):
            trial = self.study.ask(self.distributions)
            config = self._config(trial.params)
            if config not in self.space or config.key in self.pending:
                self.study.tell(trial, state=TrialState.FAIL)
            elif history.seen(config.key):
                known = history.score(config.key)
                self.study.tell(trial, FAILED_VALUE if known is None else known)
            else:
                self.pending[config.key] = trial
                return config
        return self.random_unseen(history)  # TPE keeps proposing known configs: explore instead
