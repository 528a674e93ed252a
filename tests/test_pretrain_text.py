"""Text pretraining (issue 33): the merge decoder's language side learned from caption text without photos, then a
photo run that starts from it and keeps reading the text. Tiny corpus, tiny decoder, tiny Flickr folder."""

import json
import os

import numpy as np
import pytest

from caption_core.decoders import DecoderConfig, load_inference
from caption_core.text import Vocabulary
from helpers import make_flickr

TINY = DecoderConfig(embed_dim=16, units=32, feature_dropout=0.0, embed_dropout=0.0)


def make_text(root, flickr):
    """A caption-text folder: giraffes and zebras (words Flickr8k's squares never say), one caption of a Flickr8k dev
    photo (must be held out) and one of a coco-mini photo (likewise)."""
    (root / "coco").mkdir(parents=True)
    (root / "flickr30k").mkdir()
    dev_photo = open(os.path.join(flickr, "Flickr_8k.devImages.txt")).readline().strip()
    anns = [{"image_id": 100 + i, "id": i, "caption": cap} for i, cap in enumerate(
        ["A giraffe standing next to a tree."] * 12 + ["A zebra standing in the grass."] * 12)]
    anns.append({"image_id": 30752, "id": 99, "caption": "A forbidden caption of a coco-mini photo."})
    (root / "coco" / "captions_part.json").write_text(json.dumps({"images": [], "annotations": anns}))
    (root / "flickr30k" / "Flickr30k.token.txt").write_text(
        f"{dev_photo.split('_')[0]}.jpg#0\tA leaked caption of a flickr dev photo .\n")
    coco = root.parent / "coco-mini"
    coco.mkdir()
    (coco / "captions.json").write_text(json.dumps({
        "images": [{"id": 30752, "file_name": "000000030752.jpg"}],
        "annotations": [{"image_id": 30752, "id": 1, "caption": "A zebra next to a tree."}]}))
    return str(root), str(coco)


@pytest.fixture()
def corpus(tmp_path):
    flickr = make_flickr(tmp_path / "flickr", bad=False)
    text, coco = make_text(tmp_path / "text", flickr)
    return flickr, text, coco


def tiny_build(tmp_path, flickr, coco, name):
    """A BuildConfig over a tiny random vit_custom (16-d features) for a photo run on the tiny Flickr folder."""
    from caption_core.encoders import build_encoder
    from training.build import BuildConfig

    backbone = str(tmp_path / "backbone.keras")
    build_encoder("vit_custom", {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "stem": "linear",
                                 "batch_size": 4}).model.save(backbone)
    return BuildConfig(encoder="vit_custom", dataset=flickr, out=str(tmp_path / "weights"), name=name,
                       weights=backbone, cache=str(tmp_path / "cache"), runs=str(tmp_path / "runs"), ood_dev=(coco,))


def pretrain_cfg(out, epochs=6):
    from training.train_decoder import DecoderTrainConfig

    return DecoderTrainConfig(out=str(out), decoder=TINY, epochs=epochs, batch_size=8, min_count=2,
                              learning_rate=0.02, patience=20)


def test_pretraining_learns_the_text_holds_out_dev_photos_and_resumes(corpus, tmp_path):
    from training.pretrain_text import pretrain_text, training_text

    flickr, text, coco = corpus
    kept, report = training_text(text, flickr, [coco])
    assert report == {"coco": {"read": 25, "held_out": 1}, "flickr30k": {"read": 1, "held_out": 1}}
    assert not any("forbidden" in c or "leaked" in c for c in kept) and len(kept) == 24

    state = pretrain_text(pretrain_cfg(tmp_path / "lm"), text, flickr, [coco])
    info = json.load(open(tmp_path / "lm" / "corpus.json"))
    assert info["corpus_captions"] == 24 and info["dev_captions"] == 6 * 5 + 1
    vocab = Vocabulary.load(tmp_path / "lm" / "vocab.json")
    assert {"giraffe", "zebra", "square"} <= set(vocab.id_to_word)
    assert "forbidden" not in vocab and "leaked" not in vocab
    assert state["train_captions"] == 24 + 12 * 5  # the corpus and Flickr8k train's captions, all without photos
    # with no photo (zero features), the language it read: after "a giraffe" comes "standing", after "a zebra" too
    lm = load_inference(str(tmp_path / "lm" / "best.keras"),
                        DecoderConfig(**{**TINY.to_dict(), "vocab_size": len(vocab), "feature_dim": 1}))
    for animal in ("giraffe", "zebra"):
        carry = lm.initial_state(np.zeros((1, 1), np.float32))
        for token in vocab.encode(f"a {animal}")[:-1]:  # <start> a animal
            log_probs, carry = lm.step(np.array([token]), carry)  # (1, V)
        assert vocab.id_to_word[int(log_probs[0].argmax())] == "standing"

    # killed after 2 epochs and resumed: the same weights as the uninterrupted run
    cut = pretrain_text(pretrain_cfg(tmp_path / "cut"), text, flickr, [coco], stop_after_epochs=2)
    assert cut["epochs_done"] == 2
    resumed = pretrain_text(pretrain_cfg(tmp_path / "cut"), text, flickr, [coco])
    assert resumed["epochs_done"] == state["epochs_done"] == 6
    assert [h["dev_loss"] for h in resumed["history"]] == [h["dev_loss"] for h in state["history"]]


def test_a_photo_run_starts_from_the_text_and_keeps_reading_it(corpus, tmp_path):
    import keras

    from caption_core.bundle import verify_bundle
    from caption_core.captioner import Captioner
    from training.build import build
    from training.pretrain_text import pretrain_text
    from training.train_decoder import DecoderTrainConfig

    flickr, text, coco = corpus
    pretrain_text(pretrain_cfg(tmp_path / "lm", epochs=3), text, flickr, [coco])
    cfg = tiny_build(tmp_path, flickr, coco, "tiny-text")
    train = DecoderTrainConfig(out="", decoder=TINY, epochs=2, batch_size=8, min_count=1, learning_rate=0.01,
                               init_from=str(tmp_path / "lm"), text=text, text_mix=0.5)
    manifest = build(cfg, train)
    t = manifest["training"]["text"]
    assert sorted(t["init_from"]["layers"]) == ["embedding", "feature_projection:bias", "logits", "lstm", "merge_dense"]
    assert t["text_captions"] == 24 and t["text_per_epoch"] == 24  # 0.5 x 60 photo captions, at most all 24
    folder = os.path.join(str(tmp_path / "weights"), "tiny-text")
    verify_bundle(folder)
    assert Vocabulary.load(os.path.join(folder, "vocab.json")) == Vocabulary.load(tmp_path / "lm" / "vocab.json")
    assert Captioner.from_bundle(folder).caption(np.zeros((30, 30, 3), np.uint8))[0].captions[0].text

    # the photo run began with the pretrained language layers, and the projection's kernel of its own size
    fresh = DecoderTrainConfig(out=str(tmp_path / "probe"), decoder=TINY, init_from=str(tmp_path / "lm"))
    from training.train_decoder import transfer_language
    from caption_core.decoders import make_decoder

    lm = keras.saving.load_model(str(tmp_path / "lm" / "best.keras"), compile=False)
    vocab = Vocabulary.load(tmp_path / "lm" / "vocab.json")
    model = make_decoder(fresh.decoder_config(len(vocab), 16)).training_model
    transfer_language(model, str(tmp_path / "lm" / "best.keras"))
    for name in ("embedding", "lstm", "merge_dense", "logits"):
        for mine, theirs in zip(model.get_layer(name).get_weights(), lm.get_layer(name).get_weights()):
            np.testing.assert_array_equal(mine, theirs)
    kernel, bias = model.get_layer("feature_projection").get_weights()
    assert kernel.shape == (16, 32)
    np.testing.assert_array_equal(bias, lm.get_layer("feature_projection").get_weights()[1])

    with pytest.raises(ValueError, match="needs caption text"):
        DecoderTrainConfig(text_mix=1.0)


def test_shallow_fusion_adds_the_language_model_over_a_mapped_vocabulary():
    import keras

    from caption_core.decoders import FusedDecoder, MergeDecoder, vocabulary_map
    from caption_core.decoding import decode

    words = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "runs", "squares"])
    lm_words = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "giraffe", "a", "runs", "dog", "tree"])
    ids = vocabulary_map(words, lm_words)
    assert ids.tolist() == [0, 1, 2, 3, 5, 7, 6, 3]  # 'squares': the LM's <unk>
    keras.utils.set_random_seed(0)
    dec = MergeDecoder(DecoderConfig(vocab_size=8, feature_dim=4, embed_dim=8, units=8, max_length=7))
    lm = MergeDecoder(DecoderConfig(vocab_size=9, feature_dim=1, embed_dim=8, units=8, max_length=7))
    feats = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    tokens = np.array([1, 4, 7])
    fused = FusedDecoder(dec, lm, 0.5, ids)
    lp, state = fused.step(tokens, fused.initial_state(feats))
    lp_dec, _ = dec.step(tokens, dec.initial_state(feats))
    lp_lm, _ = lm.step(ids[tokens], lm.initial_state(np.zeros((3, 1), np.float32)))  # no photo
    expected = lp_dec + 0.5 * lp_lm[:, ids]
    expected -= np.log(np.exp(expected).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(lp, expected, atol=1e-5)
    assert len(state) == dec.state_arrays + lm.state_arrays and all(s.shape[0] == 3 for s in state)
    off = FusedDecoder(dec, lm, 0.0, ids)  # weight 0: the decoder alone, under every strategy
    for strategy in ("greedy", "beam"):
        alone = decode(dec.step, dec.initial_state(feats), 3, strategy)
        with_lm = decode(off.step, off.initial_state(feats), 3, strategy)
        assert [[h.tokens for h in r] for r in alone] == [[h.tokens for h in r] for r in with_lm]
    with pytest.raises(ValueError, match=">= 0"):
        FusedDecoder(dec, lm, -1.0, ids)

    from caption_core.decoders import EnsembleDecoder  # an ensemble fuses like one decoder

    ens = EnsembleDecoder([dec, dec], [(0, 4), (0, 4)])
    both = FusedDecoder(ens, lm, 0.5, ids)
    lp_ens, carry = both.step(tokens, both.initial_state(feats))
    np.testing.assert_allclose(lp_ens, lp, atol=1e-5)  # one decoder twice is that decoder
    assert len(carry) == 2 * dec.state_arrays + lm.state_arrays


def test_the_pretrain_text_command(corpus, tmp_path):
    import subprocess
    import sys

    flickr, text, coco = corpus
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-m", "training", "pretrain-text", "--corpus", text, "--dataset", flickr,
                          "--ood-dev", coco, "--out", str(tmp_path / "lm"), "--epochs", "1", "--units", "16",
                          "--embed-dim", "8", "--batch-size", "8", "--min-count", "2"],
                         capture_output=True, text=True, cwd=root)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "24 corpus captions" in run.stdout and f"--init-from {tmp_path / 'lm'}" in run.stdout
    assert json.load(open(tmp_path / "lm" / "state.json"))["config"]["decoder"]["units"] == 16
    bad = subprocess.run([sys.executable, "-m", "training", "build", "--encoder", "efficientnet_lite0", "--text-mix",
                          "1"], capture_output=True, text=True, cwd=root)
    assert bad.returncode == 2 and "needs caption text" in bad.stderr


def test_probe_epochs_move_the_image_projection_alone(corpus, tmp_path):
    import keras

    from training.build import load_splits
    from training.pretrain_text import pretrain_text
    from training.train_decoder import DecoderTrainConfig, train_decoder

    flickr, text, coco = corpus
    pretrain_text(pretrain_cfg(tmp_path / "lm", epochs=2), text, flickr, [coco])
    splits = load_splits(flickr, ["train", "dev"])
    feats = {s: (np.random.default_rng(1).normal(size=(len(ex), 6)).astype(np.float32), np.ones(len(ex), bool))
             for s, ex in splits.items()}
    cfg = DecoderTrainConfig(out=str(tmp_path / "probe"), decoder=TINY, epochs=1, batch_size=8, learning_rate=0.01,
                             init_from=str(tmp_path / "lm"), probe_epochs=1)
    train_decoder(cfg, splits["train"], *feats["train"], splits["dev"], *feats["dev"])
    lm = keras.saving.load_model(str(tmp_path / "lm" / "best.keras"), compile=False)
    after = keras.saving.load_model(str(tmp_path / "probe" / "best.keras"), compile=False)
    for name in ("embedding", "lstm", "merge_dense", "logits"):
        for mine, theirs in zip(after.get_layer(name).get_weights(), lm.get_layer(name).get_weights()):
            np.testing.assert_array_equal(mine, theirs)
    assert not np.array_equal(after.get_layer("feature_projection").get_weights()[1],
                              lm.get_layer("feature_projection").get_weights()[1])
