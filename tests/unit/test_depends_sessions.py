"""bench/depends_sessions.py's pure parts: the project it serves and how it counts failures."""

from __future__ import annotations

import ast
from collections import Counter

from bench.depends_sessions import KEPT, PROJECT, VARIANTS, failed_fraction


def test_failures_are_every_answer_but_a_2xx_transport_errors_included() -> None:
    assert failed_fraction(Counter({200: 97, 500: 2, 0: 1})) == 0.03
    assert failed_fraction(Counter({200: 10, 204: 5})) == 0.0
    assert failed_fraction(Counter()) == 0.0


def test_both_variants_are_valid_services_and_only_one_raises_the_limits() -> None:
    sources = {name: PROJECT.format(options=options) for name, options in VARIANTS.items()}
    for source in sources.values():
        ast.parse(source)
        assert "bentoml.depends(Scorer)" in source
    assert KEPT in sources["limits raised"] and "runner_connection" not in sources["as written"]
