"""Search strategies behind one ask/tell interface, looked up by name."""

from __future__ import annotations

from collections.abc import Callable

from tuner.space import SearchSpace
from tuner.strategies.base import SearchStrategy
from tuner.strategies.grid import GridSearch
from tuner.strategies.guided import GuidedSearch
from tuner.strategies.quick import QuickSearch
from tuner.strategies.random import RandomSearch
from tuner.strategies.tpe import TPESearch

STRATEGIES: dict[str, Callable[[SearchSpace, int], SearchStrategy]] = {
    "grid": GridSearch,
    "random": RandomSearch,
    "tpe": TPESearch,
    "quick": QuickSearch,
    "guided": GuidedSearch,
}


# What `servetune tune` and the demo use unless told otherwise (see bench/search_efficiency.py).
DEFAULT_STRATEGY = "guided"
STRATEGY_HELP = ", ".join(STRATEGIES) + f" (default {DEFAULT_STRATEGY})"


def make_strategy(name: str, space: SearchSpace, seed: int = 0) -> SearchStrategy:
    """A strategy by name, seeded; ValueError names the choices for an unknown name."""
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None
    return factory(space, seed)


__all__ = ["DEFAULT_STRATEGY", "STRATEGIES", "STRATEGY_HELP", "SearchStrategy", "make_strategy"]
