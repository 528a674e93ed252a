"""Object words as input (issue 33): a merge decoder that reads the photo's object words beside its features, so
that caption text without photos trains it too (a caption's own COCO / ImageNet words stand in for the photo).
Tiny corpus, tiny decoder, a tiny random detector."""

import os

import numpy as np
import pytest

from caption_core.decoders import DecoderConfig
from caption_core.detectors import Detection, Objects
from caption_core.object_words import ObjectWords, noisy_vectors, object_tags
from caption_core.text import Vocabulary
from helpers import make_flickr
from test_pretrain_text import TINY, make_text, tiny_build


def vocab_of(*captions):
    return Vocabulary.build(list(captions), min_count=1)


def test_tags_from_a_caption_and_from_a_photo():
    vocab = vocab_of("a man and a dog on a bench", "two giraffes near a pizza", "a puppy")
    tags = object_tags(vocab)
    assert tags[:2] == ("coco:person", "coco:bicycle") and len([t for t in tags if t.startswith("coco:")]) == 80
    assert "imagenet:dog" in tags and "imagenet:pizza" in tags
    words = ObjectWords(tags, vocab, detector_threshold=0.5, classifier_threshold=0.4)
    named = [tags[i] for i in words.caption_indices("a man and a puppy on a bench")]
    assert set(named) == {"coco:person", "coco:dog", "coco:bench", "imagenet:dog", "imagenet:bench"}  # puppy: a dog
    assert words.caption_indices("two giraffes") == (tags.index("coco:giraffe"),)  # the plural names it too

    # a photo: the detector's categories at its threshold, the classifier's words at its own
    probs = np.zeros((2, 1000), np.float32)
    dog_classes = [k for k, w in enumerate(words.word_map.class_word) if w == "dog"]
    probs[0, dog_classes[:3]] = 0.2  # three dog breeds: "dog" 0.6 in all
    probs[1, dog_classes[0]] = 0.3  # below 0.4
    objects = [Objects((Detection("person", 0.9, (0, 0, 0.5, 1)), Detection("cup", 0.3, (0, 0, 0.1, 0.1)))), None]
    v = words.photo_vectors(probs, objects, 2)  # (2, W)
    assert v.shape == (2, len(tags)) and words.names(v[0]) == ["coco:person", "imagenet:dog"]
    assert words.names(v[1]) == []

    with pytest.raises(ValueError, match="must start with"):
        ObjectWords(("dog",), vocab)
    with pytest.raises(ValueError, match="merge decoder only"):
        DecoderConfig(kind="attention", object_words=("coco:dog",))


def test_noisy_text_tags_drop_and_add_at_their_rates():
    rng = np.random.default_rng(0)
    indices = [(0, 1)] * 4000
    v = noisy_vectors(indices, 10, drop=0.25, distractor=0.0, rng=rng)
    assert v[:, 2:].sum() == 0 and abs(v[:, :2].mean() - 0.75) < 0.02
    v = noisy_vectors([(3,)] * 2000 + [(5,)] * 2000, 10, drop=0.0, distractor=0.5, rng=rng)
    extra = v.sum(1) - 1  # the caption's own tag is always there; a distractor drawn from the tags used (3, 5)
    assert abs((extra > 0).mean() - 0.25) < 0.03  # half the rows get one, half of those repeat their own tag
    assert v[:, [0, 1, 2, 4, 6, 7, 8, 9]].sum() == 0


def test_text_teaches_the_decoder_to_write_about_the_words_it_reads(tmp_path):
    """Trained on text alone (zero features, each caption's own tags), the decoder writes "giraffe" when it reads
    coco:giraffe and "zebra" when it reads coco:zebra: the words steer it."""
    from caption_core.decoders import load_inference
    from caption_core.decoding import get_strategy
    from training.train_decoder import DecoderTrainConfig, train_decoder
    from caption_core.flickr import CaptionExample as Example

    flickr = make_flickr(tmp_path / "flickr", bad=False)
    text, _ = make_text(tmp_path / "text", flickr)
    from training.pretrain_text import training_text

    captions, _ = training_text(text, flickr, [])
    captions = [c for c in captions if "giraffe" in c or "zebra" in c]
    # the photo rows: two photos captioned about the colour squares, no words read (nothing detected)
    train = [Example("p0", "", ("a red square",) * 5), Example("p1", "", ("a blue square",) * 5)]
    feats = np.eye(2, 4, dtype=np.float32)
    signals = (np.zeros((2, 1000), np.float32), [None, None])
    cfg = DecoderTrainConfig(out=str(tmp_path / "run"), decoder=TINY, epochs=12, batch_size=8, min_count=1,
                             learning_rate=0.02, patience=20, text=text, text_mix=3.0, read_words=True,
                             word_drop=0.0, word_distractor=0.0)
    state = train_decoder(cfg, train, feats, np.ones(2, bool), train, feats, np.ones(2, bool),
                          text_captions=captions, train_signals=signals, dev_signals=signals)
    assert state["text_per_epoch"] == 24
    vocab = Vocabulary.load(tmp_path / "run" / "vocab.json")
    tags = object_tags(vocab)
    config = cfg.decoder_config(len(vocab), 4, 0, tags)
    decoder = load_inference(str(tmp_path / "run" / "best.keras"), config)
    words = ObjectWords(tags, vocab)
    beam = get_strategy("greedy")
    for animal in ("giraffe", "zebra"):
        x = np.concatenate([np.zeros((1, 4), np.float32), words.photo_vectors(
            None, [Objects((Detection(animal, 0.9, (0, 0, 1, 1)),))], 1)], axis=1)  # (1, D + W)
        (hyp,), = beam.run(decoder.step, decoder.initial_state(x), 1, beam.make_options({"max_length": 8}))
        assert animal in vocab.decode(hyp.tokens).split()


def test_a_bundle_that_reads_words_builds_loads_and_captions(tmp_path, monkeypatch):
    from caption_core import detectors
    from caption_core.bundle import verify_bundle
    from caption_core.captioner import Captioner
    from training.build import build
    from training.train_decoder import DecoderTrainConfig

    tiny = detectors.build_detector("coco_ssd", {"weights": "random", "width": 0.25})
    monkeypatch.setitem(detectors._SHARED, "detector", tiny)  # the process's detector: a tiny random copy
    flickr = make_flickr(tmp_path / "flickr", bad=False)
    text, coco = make_text(tmp_path / "text", flickr)
    cfg = tiny_build(tmp_path, flickr, coco, "tiny-words")
    train = DecoderTrainConfig(out="", decoder=TINY, epochs=2, batch_size=8, min_count=1, learning_rate=0.01,
                               text=text, text_mix=0.5, read_words=True)
    manifest = build(cfg, train)
    folder = os.path.join(str(tmp_path / "weights"), "tiny-words")
    verify_bundle(folder)
    config = manifest["decoder"]["config"]
    assert config["object_words"][0] == "coco:person" and "giraffe" in Vocabulary.load(os.path.join(folder, "vocab.json"))
    captioner = Captioner.from_bundle(folder, detector=tiny)
    assert captioner.object_words is not None and captioner.object_words.size == len(config["object_words"])
    result = captioner.caption(np.zeros((30, 30, 3), np.uint8))[0]
    assert result.captions[0].text and isinstance(result.object_words, list)
    assert all(w.startswith(("coco:", "imagenet:")) for w in result.object_words)
    feats = captioner.encode([np.zeros((30, 30, 3), np.uint8)])
    with pytest.raises(ValueError, match="pass each photo's objects"):
        captioner.decode(feats, class_probs=np.zeros((1, 1000), np.float32))
    # the words it reads are part of what it decodes from: other words, another caption's probability
    probs = np.zeros((1, 1000), np.float32)
    none = captioner.decode(feats, "greedy", objects=[None], class_probs=probs)[0][0]
    giraffe = captioner.decode(feats, "greedy", objects=[Objects((Detection("giraffe", 0.9, (0, 0, 1, 1)),))],
                               class_probs=probs)[0][0]
    assert none.log_prob != giraffe.log_prob or none.text != giraffe.text
    explained = captioner.explain(np.zeros((30, 30, 3), np.uint8), grid=2)
    assert explained.heat.shape[1:] == (2, 2)

    # SCST fine-tunes it over the training photos' features and object words, and writes a bundle that reads them
    from training.scst import SCSTConfig, scst_bundle

    scst = SCSTConfig(out=str(tmp_path / "scst"), epochs=1, learning_rate=0.02, samples=2, batch_images=4,
                      patience=10, min_distinct=0.0, max_dangling=100)
    done = scst_bundle(folder, scst, flickr, cache=str(tmp_path / "cache"), out=str(tmp_path / "scst-bundle"),
                       strategies=("greedy",))
    assert [h["epoch"] for h in done["state"]["history"]] == [0, 1]
    if done["exported"]:
        assert verify_bundle(str(tmp_path / "scst-bundle"))["decoder"]["config"]["object_words"] == config["object_words"]


def test_an_ensemble_member_reads_the_words_after_its_slice():
    from caption_core.decoders import EnsembleDecoder, make_decoder

    tags = ("coco:dog", "imagenet:dog")
    plain = make_decoder(DecoderConfig(**{**TINY.to_dict(), "vocab_size": 12, "feature_dim": 3}))
    reads = make_decoder(DecoderConfig(**{**TINY.to_dict(), "vocab_size": 12, "feature_dim": 4, "object_words": tags}))
    ensemble = EnsembleDecoder([plain, reads], [(0, 3), (3, 7)])
    assert ensemble.config.object_words == tags and ensemble.config.input_dim == 9
    x = np.random.default_rng(0).normal(size=(2, 9)).astype(np.float32)  # (N, 3 + 4 + W)
    x[:, 7:] = [[1, 0], [0, 1]]
    tokens = np.array([1, 1])
    log_probs, _ = ensemble.step(tokens, ensemble.initial_state(x))  # (2, V)
    lp_plain, _ = plain.step(tokens, plain.initial_state(x[:, :3]))
    lp_reads, _ = reads.step(tokens, reads.initial_state(x[:, 3:]))  # its slice, then the words
    np.testing.assert_allclose(log_probs, np.log((np.exp(lp_plain) + np.exp(lp_reads)) / 2), atol=1e-5)
    other = make_decoder(DecoderConfig(**{**TINY.to_dict(), "vocab_size": 12, "feature_dim": 4,
                                          "object_words": ("coco:cat",)}))
    with pytest.raises(ValueError, match="the same ones"):
        EnsembleDecoder([reads, other], [(0, 4), (4, 8)])


def test_the_detections_of_a_photo_list_are_read_back_from_the_cache(tmp_path, monkeypatch):
    """The detector looks at a photo list once: the cached JSON is what a second call reads (its key compared as
    JSON gives it back: a key of tuples never matched its own file, and every dev-set sweep ran the detector again)."""
    from PIL import Image

    from caption_core import detectors
    from training.detections import detect_photos

    tiny = detectors.build_detector("coco_ssd", {"weights": "random", "width": 0.25})
    photos = []
    for i in range(3):
        path = tmp_path / f"p{i}.jpg"
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(path)
        photos.append((f"p{i}", str(path)))
    first = detect_photos(tiny, photos, str(tmp_path / "cache"))

    def refuse(*a, **k):
        raise AssertionError("the detector ran again")

    monkeypatch.setattr(tiny, "detect_arrays", refuse)
    again = detect_photos(tiny, photos, str(tmp_path / "cache"))
    assert [o.to_dict() for o in again] == [o.to_dict() for o in first]
