from services.models.sentences import (
    load_paraphrase_pairs,
    load_sentences,
    token_length_stats,
    word_length_stats,
)


def test_sentence_set_is_large_varied_and_realistic() -> None:
    sentences = load_sentences()
    assert len(sentences) >= 400
    assert len(set(sentences)) == len(sentences), "no duplicates"
    stats = word_length_stats(sentences)
    assert stats["min"] >= 5 and stats["max"] <= 40
    assert 14.5 <= stats["mean"] <= 21
    assert stats["p90"] - stats["p10"] >= 10, "lengths must really vary"


def test_paraphrase_pairs_differ_in_wording() -> None:
    pairs = load_paraphrase_pairs()
    assert len(pairs) >= 60
    assert all(a != b for a, b in pairs)
    assert len({a for a, _ in pairs}) == len(pairs)


def test_token_lengths_come_from_the_shipped_tokenizer() -> None:
    sentences = load_sentences()
    words = word_length_stats(sentences)
    tokens = token_length_stats(sentences)
    assert tokens["count"] == len(sentences)
    assert tokens["mean"] > words["mean"], "word pieces plus [CLS]/[SEP] outnumber words"
    assert tokens["max"] <= 256, "no sentence is truncated by the model"
