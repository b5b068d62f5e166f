"""The study's trial history: the one copy of what was measured, which strategies read.

The study appends every finished measurement (`TrialHistory`); a strategy gets a `TrialView` of
it on every ask, as Optuna's samplers read the study's storage. The view shows the search
trials, one per config in the order measured, and the configs the study refused as illegal;
finalist repeats and baselines are the study's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tuner.space import Config
from tuner.store import TrialRecord


class TrialHistory:
    """Every record of a study in order, with the search trials indexed by config key."""

    def __init__(self, records: Iterable[TrialRecord] = ()) -> None:
        self._records: list[TrialRecord] = []
        self._trials: list[TrialRecord] = []
        self._by_key: dict[str, TrialRecord] = {}
        self._refused: set[str] = set()
        for record in records:
            self.append(record)

    def append(self, record: TrialRecord) -> None:
        """Add a finished measurement (a config's first search trial becomes its trial, unless
        it is unfinished: that one measured nothing, and the config may be asked again)."""
        self._records.append(record)
        if record.kind == "trial" and not record.unfinished and record.key not in self._by_key:
            self._by_key[record.key] = record
            self._trials.append(record)

    def refuse(self, config: Config) -> None:
        """Note a config the study would not measure (outside the space)."""
        self._refused.add(config.key)

    @property
    def records(self) -> list[TrialRecord]:
        """Every record (trials, finalist repeats, baselines) in the order measured."""
        return list(self._records)

    def count(self) -> int:
        """The number of records of every kind."""
        return len(self._records)

    def next_number(self) -> int:
        """The number the next record gets: one past the highest so far, so a store whose
        records were dropped by hand never hands out a number twice."""
        return max((record.number for record in self._records), default=-1) + 1

    def __len__(self) -> int:
        """The number of configs measured by the search."""
        return len(self._trials)

    def trials(self, start: int = 0) -> Sequence[TrialRecord]:
        """The search trials in the order measured, from number `start` (0-based) on."""
        return tuple(self._trials[start:])

    def trial(self, key: str) -> TrialRecord | None:
        """The config's search trial, if it was measured."""
        return self._by_key.get(key)

    def seen(self, key: str) -> bool:
        """Measured, or refused by the study: not worth proposing again."""
        return key in self._by_key or key in self._refused

    def view(self) -> TrialView:
        return TrialView(self)


class TrialView:
    """What a strategy may read of a study's history (it only grows; the view cannot change it)."""

    def __init__(self, history: TrialHistory) -> None:
        self._history = history

    def __len__(self) -> int:
        """The number of configs measured by the search."""
        return len(self._history)

    def trials(self, start: int = 0) -> Sequence[TrialRecord]:
        """The search trials in the order measured, from number `start` (0-based) on."""
        return self._history.trials(start)

    def measured(self, key: str) -> bool:
        return self._history.trial(key) is not None

    def seen(self, key: str) -> bool:
        """Measured, or refused by the study: not worth proposing again."""
        return self._history.seen(key)

    def score(self, key: str) -> float | None:
        """The config's score (None when unmeasured, failed or infeasible)."""
        record = self._history.trial(key)
        return None if record is None else record.score
