import json

import pytest

import numpy as np

from caption_core.text import END_ID, FUNCTION_WORDS, PAD_ID, START_ID, UNK_ID, Vocabulary, clean_caption


def test_clean_caption_classic_rules():
    assert clean_caption("A child in a pink dress is climbing up a set of stairs in an entry way .") == \
        "a child in a pink dress is climbing up a set of stairs in an entry way"
    assert clean_caption("Two dogs, 3 balls & a 2nd man's hat!") == "two dogs balls a mans hat"
    assert clean_caption("I see a b c") == "see a"
    assert clean_caption("   ") == ""


def test_vocabulary_reserved_ids_and_min_count():
    v = Vocabulary.build(["a dog", "a dog runs", "a cat"], min_count=2)
    assert v.id_to_word[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert (PAD_ID, START_ID, END_ID, UNK_ID) == (0, 1, 2, 3)
    assert v.id_to_word[4:] == ["a", "dog"]  # most frequent first
    assert v.encode("a dog runs") == [START_ID, v.word_to_id["a"], v.word_to_id["dog"], UNK_ID, END_ID]
    assert v.decode(v.encode("a dog") + [v.word_to_id["a"]]) == "a dog"  # stops at <end>


def test_vocabulary_json_round_trip(tmp_path):
    v = Vocabulary.build(["a dog runs", "a cat sits"], min_count=1)
    path = tmp_path / "vocab.json"
    v.save(path)
    data = json.loads(path.read_text())
    assert data["id_to_word"][0] == "<pad>"
    w = Vocabulary.load(path)
    assert w == v and w.min_count == 1 and w.word_to_id == v.word_to_id


def test_vocabulary_rejects_bad_files():
    with pytest.raises(ValueError, match="reserved"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="not a vocabulary"):
        Vocabulary.from_dict({"id_to_word": []})


def test_sentence_bleu_and_cider():
    from caption_core.metrics import CiderD, sentence_bleu

    refs = ["A dog runs on the grass .", "A brown dog is running on grass"]
    assert sentence_bleu("a dog runs on the grass", refs)[3] == pytest.approx(1.0)
    assert sentence_bleu("a cat sleeps", refs)[0] < 0.5
    corpus = [refs, ["Two kids play in the snow"], ["A man rides a bike on a road"], ["A cat sits on a mat"]]
    cider = CiderD(corpus)
    good, bad = cider.score("a dog runs on the grass", refs), cider.score("a man rides a bike", refs)
    assert good > 1.0 and bad < 0.3 * good


def test_repeatable_ids_are_the_reserved_ones_and_the_function_words():
    v = Vocabulary.build(["a woman and a man sit on a bench", "two dogs run in the snow"])
    mask = v.repeatable()
    assert mask.shape == (len(v),) and mask.dtype == bool and mask[:4].all()
    assert {w for w, i in v.word_to_id.items() if mask[i] and i >= 4} == {"a", "and", "on", "two", "in", "the"}
    assert not mask[[v.word_to_id[w] for w in ("woman", "man", "bench", "dogs", "snow", "sit", "run")]].any()
    assert v.repeatable() is mask and not mask.flags.writeable  # made once, and nobody writes into it
    assert {"a", "the", "of", "with", "and"} <= FUNCTION_WORDS and not {"man", "dog", "white", "bike"} & FUNCTION_WORDS


def test_a_captioner_keeps_content_words_apart_with_no_repeat_within(tiny_parts):
    from caption_core.captioner import Captioner

    enc, dec, vocab = tiny_parts
    feats = np.random.default_rng(0).normal(size=(6, dec.config.feature_dim)).astype(np.float32)  # (N, D)
    cap = Captioner(enc, dec, vocab, detector=None)
    mask = vocab.repeatable()

    def repeats(per_image, gap):
        return sum(any(not mask[t] and t in h.tokens[max(0, i - gap):i] for i, t in enumerate(h.tokens))
                   for per in per_image for h in per)

    for strategy in ("greedy", "beam"):
        assert repeats(cap.decode(feats, strategy, {"max_length": 12, "min_length": 10}), 3) > 0  # a random decoder loops
        assert repeats(cap.decode(feats, strategy, {"max_length": 12, "min_length": 10, "no_repeat_within": 3}), 3) == 0
