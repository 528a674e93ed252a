"""The attention decoder on tiny models: NumPy step = Keras graph, every strategy drives it, maps sum to 1,
padding stays out of the loss and the penalty, bundles round-trip, the page's explanation is its maps."""

import json
import os

import numpy as np
import pytest

from caption_core.captioner import Captioner
from caption_core.decoders import DecoderConfig, decoder_class, load_inference, make_decoder
from caption_core.decoding import STRATEGIES
from caption_core.encoders import build_encoder
from caption_core.text import END_ID, START_ID, Vocabulary, clean_caption

from helpers import COLOURS, make_flickr

CAPTIONS = ["A dog runs on the grass .", "A black cat sits on a mat", "Two dogs play in the snow",
            "A man rides a bike", "A girl in a red dress jumps"]


def tiny_config(vocab_size=40, cells=5, cell=6, **kw) -> DecoderConfig:
    return DecoderConfig(kind="attention", vocab_size=vocab_size, feature_dim=cells * cell, grid_cells=cells,
                         embed_dim=8, units=16, context_dim=12, attention_dim=10, max_length=12, **kw)


@pytest.fixture(scope="module")
def grid_parts():
    """A tiny random vit_custom encoder giving its 1 + 4 x 4 tokens, an attention decoder, a vocabulary."""
    vocab = Vocabulary.build([clean_caption(c) for c in CAPTIONS])
    enc = build_encoder("vit_custom", {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "drop_path": 0.0,
                                       "image_size": 16, "pooling": "grid"})
    cfg = DecoderConfig(kind="attention", vocab_size=len(vocab), feature_dim=enc.output_dim, grid_cells=enc.grid_cells,
                        embed_dim=8, units=16, context_dim=12, attention_dim=10, max_length=12)
    return enc, make_decoder(cfg), vocab


def test_numpy_step_matches_the_keras_graph(rng):
    import keras

    dec = make_decoder(tiny_config())
    feats = rng.normal(size=(3, 30)).astype(np.float32)  # (N, cells * C)
    tokens = rng.integers(4, 40, size=(3, 9)).astype(np.int32)
    tokens[:, 0] = START_ID
    tokens[2, 6:] = 0
    logits = dec.training_model({"features": feats, "tokens": tokens[:, :-1]}, training=False)  # (N, T, V)
    expected = np.take_along_axis(np.asarray(keras.ops.log_softmax(logits, axis=-1)), tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(dec.token_log_probs(feats, tokens), expected, atol=1e-5)


def test_maps_sum_to_one_over_the_cells_and_follow_the_photo(rng):
    dec = make_decoder(tiny_config())
    feats = rng.normal(size=(2, 30)).astype(np.float32)
    tokens = np.array([[START_ID, 5, 6, 7, END_ID]] * 2)
    maps = dec.attention_maps(feats, tokens)  # (N, T, cells)
    assert maps.shape == (2, 4, 5) and (maps >= 0).all()
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert not np.allclose(maps[0], maps[1])  # another photo, another map


def test_padding_counts_in_neither_the_loss_nor_the_penalty(rng):
    """Padded steps change no gradient: a caption padded with zeros trains exactly like the same caption alone."""
    import tensorflow as tf

    from caption_core.decoders import masked_loss

    dec = make_decoder(tiny_config(feature_dropout=0.0, embed_dropout=0.0))
    m = dec.training_model
    feats = rng.normal(size=(1, 30)).astype(np.float32)
    short = np.array([[START_ID, 5, 6, END_ID]], np.int32)
    padded = np.array([[START_ID, 5, 6, END_ID, 0, 0, 0]], np.int32)

    def loss_and_penalty(caps):
        with tf.GradientTape() as tape:
            loss = masked_loss(caps[:, 1:], m({"features": feats, "tokens": caps[:, :-1]}, training=True))
            penalty = tf.add_n(m.losses)
            total = loss + penalty
        return float(loss), float(penalty), tape.gradient(total, m.trainable_variables)

    a, b = loss_and_penalty(short), loss_and_penalty(padded)
    assert a[1] > 0  # the penalty is on in training
    assert abs(a[0] - b[0]) < 1e-6 and abs(a[1] - b[1]) < 1e-6
    for ga, gb in zip(a[2], b[2]):
        np.testing.assert_allclose(tf.convert_to_tensor(ga).numpy(), tf.convert_to_tensor(gb).numpy(), atol=1e-6)
    m({"features": feats, "tokens": short[:, :-1]}, training=False)
    assert not m.losses  # no penalty outside training (SCST's forward passes)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_drives_an_attention_decoder(grid_parts, strategy):
    enc, dec, vocab = grid_parts
    cap = Captioner(enc, dec, vocab, {"default_decoding": {"strategy": "beam"}})
    img = np.zeros((20, 20, 3), np.uint8) + np.array(COLOURS["blue"], np.uint8)
    result = cap.caption([img, img[::-1]], strategy, beam_width=2, beam_groups=2, seed=0)
    assert len(result) == 2
    for r in result:
        words = r.captions[0].text.split()
        att = r.attention
        assert att["words"] == [w for w in (vocab.id_to_word[t] for t in r.captions[0].tokens if t != END_ID)]
        assert len(words) <= len(att["words"])  # the text leaves <unk> and the like out
        maps, outside = np.asarray(att["maps"]), np.asarray(att["outside"])  # (T, 4, 4), (T,)
        assert maps.shape == (len(att["words"]), 4, 4) and att["grid"] == [4, 4]
        np.testing.assert_allclose(maps.sum(axis=(1, 2)) + outside, 1.0, atol=1e-4)


def test_the_explanation_of_an_attention_bundle_is_its_maps(grid_parts, monkeypatch):
    enc, dec, vocab = grid_parts
    cap = Captioner(enc, dec, vocab, {"default_decoding": {"strategy": "greedy"}})
    calls = []
    real = enc.encode_arrays
    monkeypatch.setattr(enc, "encode_arrays", lambda batch, *a, **k: calls.append(len(batch)) or real(batch, *a, **k))
    img = np.zeros((20, 20, 3), np.uint8) + np.array(COLOURS["red"], np.uint8)
    ex = cap.explain(img, "a dog runs on the grass")
    assert calls == [1]  # one encoder pass: no occluded copies
    assert ex.method == "attention" and ex.words == ["a", "dog", "runs", "on", "the", "grass"]
    assert ex.heat.shape == (6, 4, 4) and (ex.heat.sum(axis=(1, 2)) <= 1 + 1e-5).all()


def test_an_attention_bundle_round_trips_and_serves_without_keras(grid_parts, tmp_path):
    from caption_core.bundle import load_bundle, save_bundle

    enc, dec, vocab = grid_parts
    folder = save_bundle(str(tmp_path / "att"), encoder=enc, decoder=dec, vocab=vocab, storage="float32")
    manifest, enc2, inference, vocab2, _ = load_bundle(folder)
    assert manifest["decoder"]["config"]["kind"] == "attention" and manifest["encoder"]["grid_shape"] == [4, 4, 16]
    assert type(inference).__name__ == "AttentionInference"
    feats = enc.encode([np.zeros((16, 16, 3), np.uint8)])
    tokens = np.array([[START_ID, 5, 6, END_ID]])
    np.testing.assert_allclose(inference.token_log_probs(feats, tokens), dec.token_log_probs(feats, tokens), atol=1e-6)
    assert inference.state_arrays == 4 == dec.state_arrays


def test_beams_share_their_photos_grid(grid_parts, rng):
    """Each state row refers to its photo's projected grid (reordering rows copies references, not grids), and rows
    of one photo (read once for all) decode as rows of several (read row by row): the same numbers, the same beams."""
    from caption_core.decoding import decode

    _, dec, _ = grid_parts
    inf = dec.inference
    feats = rng.normal(size=(3, dec.config.feature_dim)).astype(np.float32)
    state = inf.initial_state(feats)
    assert len(state) == inf.state_arrays == 4 and state[0].dtype == object
    taken = tuple(s[np.array([0, 0, 0, 2, 2])] for s in state)  # what a beam search's reorder does
    assert taken[0][0] is taken[0][1] is taken[0][2] is state[0][0] and taken[0][3] is state[0][2]
    tokens = np.array([START_ID, 5, 6, 5, 6])
    one, _ = inf.step(tokens[:3], tuple(s[:3] for s in taken))  # (3, V): one photo's rows
    mixed, handed = inf.step(tokens, taken)  # (5, V): two photos' rows
    np.testing.assert_allclose(one, mixed[:3], atol=1e-5)
    # the grid is handed on, and its rows, gathered once, are read again without another copy until a reorder
    assert handed[0] is taken[0] and handed[0].rows()[0] is taken[0].rows()[0]
    assert state[0].rows()[0] is state[0][0].values  # the batch's photos in order: its own arrays
    together = decode(inf.step, inf.initial_state(feats), 3, "beam", {"beam_width": 3, "max_length": 8, "num_return": 3})
    for i in range(3):
        alone = decode(inf.step, inf.initial_state(feats[i:i + 1]), 1, "beam",
                       {"beam_width": 3, "max_length": 8, "num_return": 3})[0]
        assert [h.tokens for h in alone] == [h.tokens for h in together[i]]
        np.testing.assert_allclose([h.log_prob for h in alone], [h.log_prob for h in together[i]], atol=1e-4)


def test_an_ensemble_may_mix_decoder_kinds(grid_parts, tiny_parts, rng):
    """A merge member and an attention member over one vocabulary: each reads its slice of the features."""
    from caption_core.decoders import EnsembleDecoder
    from caption_core.decoding import decode

    _, att, vocab = grid_parts
    merge = make_decoder(DecoderConfig(vocab_size=len(vocab), feature_dim=8, embed_dim=8, units=8, max_length=12))
    ens = EnsembleDecoder([merge.inference, att.inference], [(0, 8), (8, 8 + att.config.feature_dim)])
    feats = rng.normal(size=(2, 8 + att.config.feature_dim)).astype(np.float32)
    tokens = np.array([[START_ID, 5, 6, END_ID]] * 2)
    mixed = np.exp(ens.token_log_probs(feats, tokens))
    alone = (np.exp(merge.token_log_probs(feats[:, :8], tokens)) + np.exp(att.token_log_probs(feats[:, 8:], tokens))) / 2
    np.testing.assert_allclose(mixed, alone, rtol=1e-5)
    hyps = decode(ens.step, ens.initial_state(feats), 2, "beam", {"beam_width": 3, "max_length": 8})
    assert len(hyps) == 2 and all(h for h in hyps)


def test_unknown_kind_and_missing_grid_are_loud():
    with pytest.raises(ValueError, match="valid: \\['attention', 'merge'\\]"):
        DecoderConfig(kind="transformer")
    with pytest.raises(ValueError, match="valid"):
        decoder_class("gru")
    with pytest.raises(ValueError, match="grid features"):
        make_decoder(DecoderConfig(kind="attention", vocab_size=10, feature_dim=32, grid_cells=0))


def test_grid_features_from_the_encoders_that_have_them():
    """Lite0's last feature map and its mean are the same tensor: the grid's mean is the pooled vector."""
    pooled = build_encoder("efficientnet_lite0", {"weights": "random", "precision": "float32"})
    grid = build_encoder("efficientnet_lite0", {"weights": "random", "precision": "float32", "pooling": "grid"})
    assert grid.grid_shape == (7, 7, 1280) and grid.output_dim == 49 * 1280 and grid.grid_cells == 49
    batch = (np.random.default_rng(0).random((2, 224, 224, 3)) * 255).astype(np.uint8)
    g = grid.encode_arrays(batch)  # (2, 49 * 1280)
    np.testing.assert_allclose(grid.pooled(g), pooled.encode_arrays(batch), atol=1e-4)
    np.testing.assert_allclose(grid.imagenet_logits(g), grid.classify(batch), atol=1e-3)  # the head reads the mean cell
    vit = build_encoder("vit_custom", {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "pooling": "grid"})
    assert vit.grid_shape == (8, 8, 16) and vit.grid_extra == 1 and vit.output_dim == 65 * 16
    with pytest.raises(ValueError, match="pooling"):
        build_encoder("efficientnet_lite0", {"weights": "random", "pooling": "max"})


def test_build_trains_an_attention_bundle_with_grid_features(tmp_path):
    """``build`` with --kind attention: grid features cached in float16, the penalty in the loss, a bundle whose
    captions come with maps."""
    from training.build import BuildConfig, build
    from training.train_decoder import DecoderTrainConfig

    flickr = make_flickr(tmp_path / "flickr")
    vit_dir = tmp_path / "vit"
    vit_dir.mkdir()
    build_encoder("vit_custom", {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "stem": "linear"}).model.save(
        str(vit_dir / "backbone.keras"))
    cfg = BuildConfig(encoder="vit_custom", dataset=flickr, out=str(tmp_path / "weights"), name="tiny-att",
                      weights=str(vit_dir / "backbone.keras"), cache=str(tmp_path / "cache"), runs=str(tmp_path / "runs"),
                      strategies=("greedy",), default_strategy="greedy")
    manifest = build(cfg, DecoderTrainConfig(out="", epochs=8, batch_size=8, min_count=1, learning_rate=0.01, patience=20,
                                             decoder=DecoderConfig(kind="attention", embed_dim=16, units=32,
                                                                   context_dim=16, attention_dim=16,
                                                                   feature_dropout=0.0, embed_dropout=0.0)))
    assert manifest["decoder"]["config"]["kind"] == "attention" and manifest["decoder"]["config"]["grid_cells"] == 65
    assert manifest["encoder"]["config"]["pooling"] == "grid"
    history = manifest["training"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    cached = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "cache") for f in fs if f == "features.npy"]
    assert cached and all(np.load(p, mmap_mode="r").dtype == np.float16 for p in cached)
    cap = Captioner.from_bundle(str(tmp_path / "weights" / "tiny-att"))
    img = np.zeros((30, 30, 3), np.uint8) + np.array(COLOURS["blue"], np.uint8)
    result = cap.caption(img)[0]
    assert result.attention and len(result.attention["maps"]) == len(result.attention["words"])
    assert json.dumps(result.attention)  # plain lists: it goes into the API as it is


def test_the_page_draws_an_attention_bundles_maps_with_its_caption(grid_parts, tmp_path):
    """Through the app's handlers: the caption's details carry the maps (the API's answer), the page draws one
    overlay per word from them, and Explain says it used attention, not occlusion."""
    os.environ["CAPTION_APP_NO_DEMO"] = "1"
    import app
    from caption_core.bundle import save_bundle
    from PIL import Image

    enc, dec, vocab = grid_parts
    save_bundle(str(tmp_path / "weights" / "tiny-attention"), encoder=enc, decoder=dec, vocab=vocab)
    demo = app.build_demo(app.AppConfig(weights_dir=str(tmp_path / "weights"), data_dir=None))
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8) + np.array(COLOURS["green"], np.uint8)).save(photo)
    h = demo.handlers
    _, _, details = h.caption(str(photo), "tiny-attention", "greedy", {})
    att = details["attention"]
    assert att["grid"] == [4, 4] and len(att["maps"]) == len(att["words"]) > 0
    gallery, caption = h.maps(str(photo), details)
    assert caption == details["captions"][0]["caption"] and [w for _, w in gallery] == att["words"]
    assert all(isinstance(img, Image.Image) for img, _ in gallery)
    gallery, _ = h.explain(str(photo), "tiny-attention", "a dog")
    assert [label for _, label in gallery][1].endswith("attention)")


def test_an_ensembles_attention_member_draws_its_maps(grid_parts, tiny_parts):
    """The default bundle is an ensemble whose first member attends: its captions come with that member's maps,
    labelled as its, the same maps the member alone gives on its slice of the features."""
    from caption_core.captioner import Captioner
    from caption_core.decoders import EnsembleDecoder
    from caption_core.encoders.concat import ConcatConfig, ConcatEncoder

    enc_g, att, vocab = grid_parts
    enc_m = tiny_parts[0]
    merge = make_decoder(DecoderConfig(vocab_size=len(vocab), feature_dim=enc_m.output_dim, embed_dim=8, units=8,
                                       max_length=12))
    concat = ConcatEncoder(ConcatConfig(members=({"name": "vit_custom", "config": {}}, {"name": "vit_custom", "config": {}})),
                           members=[enc_m, enc_g])
    ens = EnsembleDecoder([merge.inference, att.inference], concat.slices)
    manifest = {"decoder": {"members": [{"bundle": "tiny-merge"}, {"bundle": "tiny-attention"}]}}
    captioner = Captioner(concat, ens, vocab, manifest, detector=None)
    assert captioner.attends and not Captioner(enc_m, merge, vocab, detector=None).attends
    photo = np.full((40, 40, 3), 120, np.uint8)
    r = captioner.caption(photo, strategy="greedy", max_length=6)[0]
    att_maps = r.attention
    assert att_maps["member"] == "tiny-attention" and att_maps["grid"] == [4, 4]
    assert len(att_maps["maps"]) == len(att_maps["words"]) == len([t for t in r.captions[0].tokens if t != END_ID])
    feats = concat.encode([photo])
    (alone,) = Captioner(enc_g, att, vocab, detector=None).attention_maps(feats[:, concat.slices[1][0]:], [r.captions[0].tokens])
    assert alone["maps"] == att_maps["maps"] and "member" not in alone
    for m, o in zip(att_maps["maps"], att_maps["outside"]):
        assert abs(np.sum(m) + o - 1.0) < 1e-3
    ex = captioner.explain(photo)
    assert ex.method == "attention" and ex.heat.shape[1:] == (4, 4)


def test_an_attention_member_of_its_own_vocabulary_reads_its_own_ids(grid_parts, tiny_parts):
    """An ensemble over two vocabularies (the attention member's smaller): its maps are those the member alone gives
    for the same words, read with its own ids."""
    from caption_core.captioner import Captioner
    from caption_core.decoders import EnsembleDecoder
    from caption_core.decoders.ensemble import member_ids, union_vocabulary
    from caption_core.encoders.concat import ConcatConfig, ConcatEncoder

    enc_g, att, vocab = grid_parts
    enc_m = tiny_parts[0]
    bigger = Vocabulary.build([clean_caption(c) for c in ["a giraffe eats leaves", "a zebra at a sink", *CAPTIONS]])
    union = union_vocabulary([vocab, bigger])
    assert union.id_to_word != vocab.id_to_word  # the attention member's ids differ from the ensemble's
    merge = make_decoder(DecoderConfig(vocab_size=len(bigger), feature_dim=enc_m.output_dim, embed_dim=8, units=8,
                                       max_length=12))
    concat = ConcatEncoder(ConcatConfig(members=({"name": "vit_custom", "config": {}}, {"name": "vit_custom", "config": {}})),
                           members=[enc_m, enc_g])
    ens = EnsembleDecoder([merge.inference, att.inference], concat.slices,
                          [member_ids(union, bigger), member_ids(union, vocab)])
    captioner = Captioner(concat, ens, union, detector=None)
    photo = np.full((40, 40, 3), 120, np.uint8)
    feats = concat.encode([photo])
    words = "a dog runs on the grass".split()
    (maps,) = captioner.attention_maps(feats, [[union.word_to_id[w] for w in words]])
    (alone,) = Captioner(enc_g, att, vocab, detector=None).attention_maps(feats[:, concat.slices[1][0]:],
                                                                         [[vocab.word_to_id[w] for w in words]])
    assert maps["words"] == alone["words"] == words and maps["maps"] == alone["maps"]
