"""The study's trial history and the read-only view strategies get of it."""

from __future__ import annotations

from tuner.history import TrialHistory
from tuner.space import Config
from tuner.store import TrialKind, TrialRecord

A, B, C = Config(8, 100, 1, 1), Config(16, 100, 1, 1), Config(32, 100, 1, 1)


def record(number: int, config: Config, score: float | None, kind: TrialKind = "trial") -> TrialRecord:
    status = "ok" if score is not None else "failed"
    return TrialRecord(
        number=number, kind=kind, key=config.key, config=config.to_dict(), status=status, score=score
    )


def test_only_a_configs_first_search_trial_is_its_trial() -> None:
    history = TrialHistory([record(0, A, 10.0), record(1, B, None), record(2, A, 99.0, "finalist")])
    history.append(record(3, C, 5.0, "baseline"))
    view = history.view()
    assert len(view) == 2 and history.count() == 4
    assert [r.key for r in view.trials()] == [A.key, B.key]
    assert [r.key for r in view.trials(1)] == [B.key]
    assert view.score(A.key) == 10.0  # not the finalist repeat
    assert view.score(B.key) is None and view.measured(B.key)
    assert not view.measured(C.key) and not view.seen(C.key)  # a baseline is not a search trial


def test_a_refused_config_is_seen_but_not_measured_and_the_view_follows_the_history() -> None:
    history = TrialHistory()
    view = history.view()
    history.refuse(C)
    assert view.seen(C.key) and not view.measured(C.key) and len(view) == 0
    history.append(record(0, A, 1.0))
    assert len(view) == 1 and view.seen(A.key)
    assert [r.key for r in history.records] == [A.key]


def test_the_next_number_follows_the_highest_even_after_records_were_dropped() -> None:
    assert TrialHistory().next_number() == 0
    history = TrialHistory([record(0, A, 1.0), record(2, B, 2.0)])  # record 1 dropped by hand
    assert history.count() == 2 and history.next_number() == 3
