"""schemathesis against each live service: no 5xx and nothing the OpenAPI does not declare.

The same runner as bench/fuzz.py (the schemathesis CLI over the live `/docs.json`, fixed seed),
with >= 300 cases per POST operation; about 25 s for digits and 55 s for embedding here.
"""

from __future__ import annotations

import pytest

from bench.fuzz import fuzz_service

pytestmark = pytest.mark.integration

CASES_PER_OPERATION = 300
SEED = 15
OPERATIONS = {
    "digits": {"POST /predict", "POST /info"},
    "embedding": {"POST /encode", "POST /encode_unbatched", "POST /info"},
}


@pytest.mark.parametrize("key", sorted(OPERATIONS))
def test_fuzzing_finds_no_server_error_and_no_undeclared_response(
    models_in_store: dict[str, str], key: str
) -> None:
    figures = fuzz_service(key, CASES_PER_OPERATION, seed=SEED, timeout_s=150, per_operation=True)
    report = "\n".join(figures.failures)
    assert figures.engine_errors == [], figures.engine_errors
    assert set(figures.operations) == OPERATIONS[key]
    for name, op in figures.operations.items():
        assert op.cases >= CASES_PER_OPERATION, f"{name}: only {op.cases} cases"
        # the coverage phase sent bodies under undeclared media types: refused, not parsed
        assert op.statuses["415"] >= 1, f"{name}: {dict(op.statuses)}"
        assert op.statuses["400"] >= 1 and op.statuses["200"] >= 1, f"{name}: {dict(op.statuses)}"
    assert figures.server_errors == 0, report
    assert figures.schema_violations == 0, report
    assert figures.errors == 0, report
    assert figures.alive_after, "the server stopped answering after the fuzzing"
