import pytest

from services.models.sentences import (
    length_stats,
    load_paraphrase_pairs,
    load_sentences,
    token_length_stats,
    word_length_stats,
)


def test_sentence_set_is_large_varied_and_realistic() -> None:
    sentences = load_sentences()
    assert len(sentences) >= 400
    assert len(set(sentences)) == len(sentences), "no duplicates"
    assert all(s == s.strip() and "\t" not in s for s in sentences)
    assert not any(s.split()[0].rstrip(".)").isdigit() for s in sentences), "no numbering"
    stats = word_length_stats(sentences)
    assert stats["min"] >= 5 and stats["max"] <= 40
    assert 14 <= stats["mean"] <= 21
    words = [len(s.split()) for s in sentences]
    assert sum(n <= 8 for n in words) >= 0.07 * len(words), "enough short sentences"
    assert sum(n >= 30 for n in words) >= 0.07 * len(words), "enough long sentences"


def test_paraphrase_pairs_differ_in_wording() -> None:
    pairs = load_paraphrase_pairs()
    assert len(pairs) >= 60
    assert all(a.strip() and b.strip() for a, b in pairs)
    assert all(a.lower() != b.lower() for a, b in pairs)
    assert len({a for a, _ in pairs}) == len(pairs)
    assert len({b for _, b in pairs}) == len(pairs)


def test_length_stats_on_known_values() -> None:
    stats = length_stats([5, 1, 3, 2, 4, 6, 7, 8, 9, 10, 11])
    assert stats == {"count": 11, "min": 1, "p10": 2, "median": 6.0, "mean": 6.0, "p90": 10, "max": 11}
    # linear interpolation between ranks (numpy's default), not the nearest rank
    small = length_stats([4, 1, 3, 2])
    assert (small["p10"], small["median"], small["p90"]) == (1.3, 2.5, 3.7)
    assert word_length_stats(["one two", "a b c d"])["mean"] == 3.0
    with pytest.raises(ValueError, match="at least one"):
        length_stats([])


def test_token_lengths_come_from_the_shipped_tokenizer() -> None:
    sentences = load_sentences()
    words = word_length_stats(sentences)
    tokens = token_length_stats(sentences)
    assert tokens["count"] == len(sentences)
    assert tokens["min"] >= words["min"] + 2, "[CLS] and [SEP] are counted"
    assert tokens["mean"] > words["mean"], "word pieces plus [CLS]/[SEP] outnumber words"
    assert tokens["max"] <= 256, "no sentence is truncated by the model"
    assert token_length_stats(["Hello world."])["max"] == 5  # [CLS] hello world . [SEP]
