"""Search space: YAML validation, defaults per service, stable keys, legality filtering."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import fake_model_store
from tuner.space import Config, Machine, SpaceError, default_space, load_space, parse_space
from tuner.spacefile import pow2

TWO_CORES = Machine(cores=2, gpus=0)


def test_pow2_range() -> None:
    assert pow2(8, 64) == (8, 16, 32, 64)
    assert pow2(3, 20) == (4, 8, 16)


def test_default_embedding_space_is_large_enough_and_legal() -> None:
    space = default_space("embedding", TWO_CORES)
    assert len(space) >= 24
    assert space.dim("max_batch_size").values == (8, 16, 32, 64)
    assert space.dim("gpus").values == (0,)
    for config in space.configs:
        assert config.workers * config.threads <= 2
        assert config.max_batch_size > 1


def test_default_digits_space_has_auto_threads() -> None:
    space = default_space("digits", Machine(cores=4, gpus=0))
    assert {(c.workers, c.threads) for c in space.configs} == {(1, 4), (2, 2)}


def test_illegal_combinations_are_filtered_with_a_reason() -> None:
    space = parse_space(
        {"service": "embedding", "max_batch_size": [8], "max_latency_ms": [100], "workers": [1, 2, 4],
         "threads": [1, 2], "gpus": [0, 1]},
        machine=TWO_CORES,
    )  # fmt: skip
    assert {(c.workers, c.threads, c.gpus) for c in space.configs} == {(1, 1, 0), (1, 2, 0), (2, 1, 0)}
    assert "workers x threads" in (space.why_illegal(Config(8, 100, 4, 1, 0)) or "")
    assert "gpus=1 > available 0" in (space.why_illegal(Config(8, 100, 1, 1, 1)) or "")
    assert Config(8, 100, 1, 1, 1) not in space


def test_gpus_are_listed_when_detected() -> None:
    space = parse_space({"service": "digits", "workers": [1], "threads": [1]}, machine=Machine(4, 2))
    assert space.dim("gpus").values == (0, 1, 2)


def test_config_key_is_stable_and_round_trips() -> None:
    config = Config(16, 200, 2, 1, 0, "fp32")
    assert config.key == "b16-l200-w2-t1-g0-fp32"
    assert Config.from_dict(config.to_dict()) == config
    assert config.serve_config("embedding").workers == 2


def test_neighbours_move_one_index_in_one_dimension() -> None:
    space = default_space("embedding", TWO_CORES)
    config = Config(16, 200, 1, 1, 0, "fp32")
    for other in space.neighbours(config):
        moved = [a != b for a, b in zip(space.indices(config), space.indices(other), strict=True)]
        assert sum(moved) == 1 or (sum(moved) == 2 and moved[2] and moved[3])  # workers + threads
        assert other in space


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"service": "nope"}, "service"),
        ({"service": "digits", "max_batch_size": [1, 8]}, "max_batch_size"),
        ({"service": "digits", "max_batch_size": {"pow2": [64, 8]}}, "max_batch_size"),
        ({"service": "digits", "workers": []}, "workers"),
        ({"service": "digits", "threads": "many"}, "threads"),
        ({"service": "digits", "batch": [8]}, "batch"),
        ({"service": "digits", "variant": ["int4"]}, "variant"),
    ],
)
def test_bad_documents_name_the_field(document: dict[str, object], field: str) -> None:
    with pytest.raises(SpaceError, match=field):
        parse_space(document, machine=TWO_CORES)


def test_bad_yaml_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("service: [unclosed\n")
    with pytest.raises(SpaceError, match="cannot read"):
        load_space(path, TWO_CORES)
    path.write_text("- a list\n")
    with pytest.raises(SpaceError, match="expected a mapping"):
        load_space(path, TWO_CORES)


def test_a_space_with_no_legal_config_is_refused() -> None:
    with pytest.raises(SpaceError, match="no legal config"):
        parse_space({"service": "digits", "workers": [4], "threads": [2]}, machine=TWO_CORES)


def test_workers_and_threads_trade_places_in_one_move() -> None:
    space = default_space("embedding", TWO_CORES)
    assert Config(16, 200, 2, 1, 0, "fp32") in space.neighbours(Config(16, 200, 1, 2, 0, "fp32"))


def test_variant_auto_lists_only_eligible_variants_in_the_store(monkeypatch: pytest.MonkeyPatch) -> None:

    stored = {"minilm-int8": {"eligible": True}, "minilm-pruned": {"eligible": False}}

    fake_model_store(monkeypatch, stored)
    space = parse_space({"service": "embedding", "variant": "auto"}, machine=TWO_CORES)
    assert space.dim("variant").values == ("fp32", "int8")
