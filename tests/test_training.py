"""End-to-end training on tiny data made here: a few images, a tiny encoder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from caption_core.bundle import verify_bundle
from caption_core.captioner import Captioner
from caption_core.encoders import build_encoder
from caption_core.images import load_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from helpers import COLOURS, make_flickr


@pytest.fixture()
def flickr(tmp_path):
    return make_flickr(tmp_path / "flickr")


def tiny_encoder():
    return build_encoder("vit_custom", {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "stem": "linear", "batch_size": 4})


def test_local_loader_counts_and_skips_bad_rows(flickr):
    from training.datasets import LoadReport, load_captions

    report = LoadReport()
    train = load_captions(flickr, "train", report)
    assert len(train) == 13 and all(len(e.captions) == 5 for e in train)  # 12 + the broken jpeg (found at extraction)
    assert report.skipped == {"no captions": 1}
    assert len(load_captions(flickr, "test")) == 6


def test_missing_dataset_says_where_it_looked(tmp_path):
    from training.datasets import DatasetError, load_captions

    with pytest.raises(DatasetError, match="no Flickr dataset in|neither a Flickr folder"):
        load_captions(str(tmp_path), "train")
    with pytest.raises(DatasetError, match="no dataset at"):
        load_captions(str(tmp_path / "nowhere"), "train")


def test_features_are_cached_resumed_and_keyed_by_config(flickr, tmp_path):
    from training.datasets import load_captions
    from training.features import extract_features

    examples = load_captions(flickr, "train")
    enc = tiny_encoder()
    cache = str(tmp_path / "cache")
    part, _ = extract_features(enc, examples, flickr, "train", cache, progress=False, stop_after=4)  # "killed"
    index_files = [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs if f == "index.json"]
    assert json.load(open(index_files[0]))["done"] == 4
    feats, valid = extract_features(enc, examples, flickr, "train", cache, progress=False)  # resumes
    assert feats.shape == (13, 16) and valid.sum() == 12 and not valid[-1]
    full = enc.encode_arrays(enc.preprocess(load_images([e.image for e in examples[:12]])))
    np.testing.assert_allclose(feats[:12], full, atol=1e-5)
    mtime = os.path.getmtime(index_files[0])
    again, _ = extract_features(enc, examples, flickr, "train", cache, progress=False)
    assert os.path.getmtime(index_files[0]) == mtime  # served from the cache
    other = build_encoder("vit_custom", {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "stem": "conv", "batch_size": 4})
    extract_features(other, examples, flickr, "train", cache, progress=False)
    assert len(os.listdir(os.path.join(cache, "features"))) == 2  # a changed config never reuses the cache


def test_decoder_training_resumes_to_the_same_result(flickr, tmp_path):
    from training.datasets import load_captions
    from training.features import extract_features
    from caption_core.decoders import DecoderConfig
    from training.train_decoder import DecoderTrainConfig, train_decoder

    enc = tiny_encoder()
    data = {s: load_captions(flickr, s) for s in ("train", "dev")}
    feats = {s: extract_features(enc, data[s], flickr, s, str(tmp_path / "c"), progress=False) for s in data}
    args = lambda out: DecoderTrainConfig(out=str(out), epochs=4, batch_size=8, min_count=1, patience=10,
                                          decoder=DecoderConfig(embed_dim=16, units=16), learning_rate=0.01)
    straight = train_decoder(args(tmp_path / "a"), data["train"], *feats["train"], data["dev"], *feats["dev"])
    train_decoder(args(tmp_path / "b"), data["train"], *feats["train"], data["dev"], *feats["dev"], stop_after_epochs=2)
    resumed = train_decoder(args(tmp_path / "b"), data["train"], *feats["train"], data["dev"], *feats["dev"], resume=True)
    a = [h["train_loss"] for h in straight["history"]]
    b = [h["train_loss"] for h in resumed["history"]]
    assert len(b) == 4
    np.testing.assert_allclose(a, b, rtol=1e-3)
    assert a[-1] < a[0]
    with pytest.raises(ValueError, match="other options"):
        train_decoder(DecoderTrainConfig(out=str(tmp_path / "b"), epochs=9), data["train"], *feats["train"],
                      data["dev"], *feats["dev"], resume=True)
    import dataclasses

    # a long run cut short: resumed with fewer --epochs, it stops where it is and keeps its best epoch
    train_decoder(args(tmp_path / "c"), data["train"], *feats["train"], data["dev"], *feats["dev"], stop_after_epochs=3)
    cut = train_decoder(dataclasses.replace(args(tmp_path / "c"), epochs=2), data["train"], *feats["train"],
                        data["dev"], *feats["dev"], resume=True)
    assert cut["epochs_done"] == 3 and cut["extended"] == [{"epochs_done": 3, "from": 4, "to": 2}]
    np.testing.assert_allclose([h["train_loss"] for h in cut["history"]], a[:3], rtol=1e-3)


def test_training_ignores_padding(flickr, tmp_path):
    """The same captions padded to different lengths give the same loss and gradients."""
    import tensorflow as tf

    from caption_core.decoders import DecoderConfig, MergeDecoder, masked_loss

    dec = MergeDecoder(DecoderConfig(vocab_size=10, feature_dim=4, embed_dim=8, units=8, feature_dropout=0.0, embed_dropout=0.0))
    feats = np.ones((2, 4), np.float32)
    short = np.array([[1, 5, 6, 2], [1, 7, 2, 0]], np.int32)
    long = np.pad(short, ((0, 0), (0, 5)))

    def loss_and_grads(caps):
        with tf.GradientTape() as tape:
            loss = masked_loss(caps[:, 1:], dec.training_model({"features": feats, "tokens": caps[:, :-1]}))
        grads = tape.gradient(loss, dec.training_model.trainable_variables)
        return float(loss), [tf.convert_to_tensor(g).numpy() for g in grads]

    (l1, g1), (l2, g2) = loss_and_grads(short), loss_and_grads(long)
    assert l1 == pytest.approx(l2, rel=1e-5)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_evaluation_scores_a_perfect_caption_as_perfect():
    from training.evaluate import score_captions

    refs = {"1": ["A dog runs on the grass .", "A brown dog is running ."], "2": ["Two kids play in the snow ."]}
    perfect = score_captions(refs, {"1": "A dog runs on the grass .", "2": "Two kids play in the snow ."})
    assert perfect["BLEU-1"] == pytest.approx(1.0, abs=1e-6) and perfect["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["ROUGE-L"] == pytest.approx(1.0)
    wrong = score_captions(refs, {"1": "a red car", "2": "a man on a bench"})
    assert wrong["CIDEr"] < 0.2 * perfect["CIDEr"] and perfect["CIDEr"] > 1.0 and wrong["BLEU-1"] < 0.5
    plain = score_captions(refs, {"1": "A dog runs on the grass .", "2": "Two kids play in the snow ."}, use_java=False)
    assert plain["tokenizer"] == "plain" and "METEOR" not in plain and plain["BLEU-4"] == pytest.approx(1.0, abs=1e-6)


def test_build_writes_a_bundle_that_the_captioner_loads(flickr, tmp_path):
    from caption_core.decoders import DecoderConfig
    from training.build import BuildConfig, build
    from training.train_decoder import DecoderTrainConfig

    vit_dir = tmp_path / "vit"
    vit_dir.mkdir()
    tiny_encoder().model.save(str(vit_dir / "backbone.keras"))
    (vit_dir / "result.json").write_text(json.dumps({"test_accuracy": 0.5, "test_images": 30, "epochs": 2,
                                                     "train_seconds": 3.0, "vit": {}, "train": {}, "machine": {}}))
    cfg = BuildConfig(encoder="vit_custom", dataset=flickr, out=str(tmp_path / "weights"), name="tiny-flickr",
                      weights=str(vit_dir / "backbone.keras"), cache=str(tmp_path / "cache"), runs=str(tmp_path / "runs"),
                      default_options={"beam_width": 2})
    manifest = build(cfg, DecoderTrainConfig(out="", epochs=12, batch_size=8, min_count=1, learning_rate=0.01, patience=20,
                                             decoder=DecoderConfig(embed_dim=16, units=32, feature_dropout=0.0,
                                                                   embed_dropout=0.0)))
    folder = str(tmp_path / "weights" / "tiny-flickr")
    assert verify_bundle(folder)["name"] == "tiny-flickr"
    assert set(manifest["files"]) >= {"decoder.keras", "vocab.json", "encoder.keras", "README.md",
                                      "captions_test_greedy.json", "captions_test_beam.json"}
    scores = manifest["metrics"]["flickr/test"]
    assert set(scores) == {"greedy", "beam"} and scores["beam"]["images"] == 6
    assert scores["greedy"]["BLEU-1"] > 0.5  # colours are easy: the encoder carries them
    assert manifest["training"]["train_images"] == 13 and manifest["training"]["command"]
    assert manifest["training"]["encoder_training"]["test_accuracy"] == 0.5
    card = open(os.path.join(folder, "README.md")).read()
    assert "test accuracy 0.5000" in card and "None images/s" not in card
    assert card.startswith("---\n") and "model-index:" in card and "- type: cider" in card  # Hub metadata
    assert "training_curve.png" in manifest["files"]
    assert Image.open(os.path.join(folder, "training_curve.png")).size == (640, 360)
    cap = Captioner.from_bundle(folder)
    img = np.zeros((30, 30, 3), np.uint8) + np.array(COLOURS["blue"], np.uint8)
    text = cap.caption(img)[0].captions[0].text
    assert "square" in text


def test_hub_schema_from_local_parquet(tmp_path):
    """The Hub code path (jxie/flickr8k and flickr30k schemas, uoft-cs/cifar10) on local parquet."""
    import io as _io

    import datasets

    from training.datasets import load_captions, load_cifar10

    def png(colour):
        buf = _io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buf, "PNG")
        return {"bytes": buf.getvalue(), "path": None}

    f8 = tmp_path / "flickr8k" / "data"
    f8.mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), **{f"caption_{k}": datasets.Value("string") for k in range(5)}})
    for split, n in (("train", 3), ("validation", 2), ("test", 2)):
        rows = {"image": [png((i * 40, 0, 0)) for i in range(n)], **{f"caption_{k}": [f"a red thing {k}"] * n for k in range(5)}}
        rows["caption_0"][0] = ""
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(f8 / f"{split}-00000-of-00001.parquet"))
    train = load_captions(str(tmp_path / "flickr8k"), "train")
    assert len(train) == 3 and len(train[0].captions) == 4 and isinstance(train[0].image, bytes)
    assert len(load_captions(str(tmp_path / "flickr8k"), "dev")) == 2

    f30 = tmp_path / "flickr30k" / "data"
    f30.mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string")),
                                  "split": datasets.Value("string"), "filename": datasets.Value("string")})
    for split in ("train", "val", "test"):
        datasets.Dataset.from_dict({"image": [png((0, 0, 200))], "caption": [["a blue thing", "blue"]], "split": [split],
                                    "filename": [f"{split}.jpg"]}, features=features).to_parquet(str(f30 / f"{split}-0.parquet"))
    dev = load_captions(str(tmp_path / "flickr30k"), "dev")
    assert dev[0].image_id == "val.jpg" and dev[0].captions == ("a blue thing", "blue")

    cf = tmp_path / "cifar" / "plain_text"
    cf.mkdir(parents=True)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    for split in ("train", "test"):
        datasets.Dataset.from_dict({"img": [png((0, 200, 0))] * 3, "label": [1, 2, 3]},
                                   features=features).to_parquet(str(cf / f"{split}-00000-of-00001.parquet"))
    x, y = load_cifar10(str(tmp_path / "cifar"), "test")
    assert x.shape == (3, 32, 32, 3) and y.tolist() == [1, 2, 3]


def test_hub_dataset_offline_fails_fast(tmp_path, monkeypatch):
    import time

    from caption_core.hub import OfflineError
    from training.datasets import load_captions

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    t = time.perf_counter()
    with pytest.raises(OfflineError, match="jxie/flickr8k"):
        load_captions("jxie/flickr8k", "train")
    assert time.perf_counter() - t < 5


def test_vit_training_runs_and_resumes(tmp_path):
    from caption_core.encoders.vit_custom import ViTCustomConfig
    from training.train_vit import ViTTrainConfig, train_vit

    data = tmp_path / "cifar"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"):
            (data / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(data / split / c / f"{i:04d}.jpg")
    vit = ViTCustomConfig(dim=16, depth=1, heads=2, mlp_dim=32, stem="linear")
    cfg = ViTTrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=2, batch_size=10, cache=str(tmp_path / "c"),
                         jit_compile=False)
    first = train_vit(cfg, vit)
    assert first["epochs"] == 2 and 0.0 <= first["test_accuracy"] <= 1.0 and first["test_images"] == 30
    more = train_vit(cfg, vit, resume=True)  # nothing left to do: evaluates the checkpoint again
    assert more["test_accuracy"] == pytest.approx(first["test_accuracy"])
    # and in a fresh process, where nothing has registered the custom layers yet
    code = ("import sys; from caption_core.encoders.vit_custom import ViTCustomConfig;"
            "from training.train_vit import ViTTrainConfig, train_vit;"
            f"cfg = ViTTrainConfig(data={str(data)!r}, out={str(tmp_path / 'run')!r}, epochs=2, batch_size=10,"
            f" cache={str(tmp_path / 'c')!r}, jit_compile=False);"
            "r = train_vit(cfg, ViTCustomConfig(dim=16, depth=1, heads=2, mlp_dim=32, stem='linear'), resume=True);"
            "print('ACC', r['test_accuracy'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split("ACC")[1]) == pytest.approx(first["test_accuracy"])
    enc = build_encoder("vit_custom", {**vit.to_dict(), "weights": first["backbone"]})
    assert enc.encode([np.zeros((32, 32, 3), np.uint8)]).shape == (1, 16)


def test_cli_help_and_bad_arguments():
    out = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for cmd in ("features", "train-decoder", "train-vit", "evaluate", "build", "push"):
        assert cmd in out.stdout
    bad = subprocess.run([sys.executable, "-m", "training", "build", "--encoder", "resnet"], capture_output=True,
                         text=True, cwd=ROOT)
    assert bad.returncode == 2 and "unknown encoder 'resnet'; valid: ['concat', 'dinov2', 'efficientnet_lite0'," in bad.stderr
    helped = subprocess.run([sys.executable, "-m", "training", "build", "--help"], capture_output=True, text=True,
                            cwd=ROOT)
    for flag in ("--encoder", "--epochs", "--units", "--max-length", "--beam-width", "--length-penalty", "--top-p"):
        assert flag in helped.stdout
    assert " ".join(helped.stdout.split()).count("(default: ") >= 20  # the config fields' comments and defaults
    import argparse

    from training.__main__ import parser

    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():  # every command's help formats ('59% distinct' in a comment once broke scst's)
        assert "usage" in sub.format_help(), name
    assert "59% distinct" in " ".join(commands["scst"].format_help().split())
    missing = subprocess.run([sys.executable, "-m", "training", "features", "--encoder", "efficientnet_lite0",
                              "--dataset", "/nonexistent/flickr"], capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no dataset at")
    option = subprocess.run([sys.executable, "-m", "training", "features", "--encoder", "efficientnet_lite0",
                             "--encoder-option", "precision"], capture_output=True, text=True, cwd=ROOT)
    assert option.returncode == 2 and "expected KEY=VALUE" in option.stderr


def test_encoder_options_reach_the_encoder(flickr, tmp_path):
    from training.__main__ import main

    assert main(["features", "--encoder", "efficientnet_lite0", "--dataset", flickr, "--splits", "dev",
                 "--cache", str(tmp_path), "--encoder-option", "precision=float32", "--encoder-option", "batch_size=2"]) == 0
    index = [json.load(open(os.path.join(d, "index.json"))) for d, _, fs in os.walk(tmp_path) if "index.json" in fs]
    assert index[0]["key"]["config"]["precision"] == "float32" and index[0]["complete"]
    assert main(["features", "--encoder", "efficientnet_lite0", "--dataset", flickr, "--splits", "dev",
                 "--cache", str(tmp_path), "--encoder-option", "precision=fp16"]) == 2


def test_kaggle_layout(tmp_path):
    from training.datasets import load_captions

    root = tmp_path / "kaggle"
    (root / "Images").mkdir(parents=True)
    rows = ["image,caption"]
    for i in range(8000):
        name = f"{i:05d}.jpg"
        if i < 10:
            Image.new("RGB", (8, 8)).save(root / "Images" / name)
        rows.append(f'{name},"A dog, running ."')
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    from training.datasets import LoadReport

    report = LoadReport()
    train = load_captions(str(root), "train", report)
    assert report.skipped["image file missing"] + len(train) == 6000
    assert all(e.captions == ("A dog, running .",) for e in train)


def test_push_offline_fails_fast_without_uploading(tmp_path, tiny_parts, monkeypatch):
    import time

    from caption_core.bundle import save_bundle
    from caption_core.hub import OfflineError
    from training.push import push_bundle

    enc, dec, vocab = tiny_parts
    folder = save_bundle(str(tmp_path / "b"), encoder=enc, decoder=dec, vocab=vocab)
    t = time.perf_counter()
    with pytest.raises(OfflineError, match="was not uploaded"):
        push_bundle(folder, "someone/tiny")
    assert time.perf_counter() - t < 5


def test_evaluate_command_writes_scores_into_the_manifest(flickr, tmp_path, tiny_parts):
    from caption_core.bundle import save_bundle
    from training.__main__ import main

    enc, dec, vocab = tiny_parts
    folder = save_bundle(str(tmp_path / "b"), encoder=enc, decoder=dec, vocab=vocab)
    code = main(["evaluate", folder, "--dataset", flickr, "--split", "dev", "--strategy", "greedy",
                 "--cache", str(tmp_path / "cache")])
    assert code == 0
    m = verify_bundle(folder)
    scores = m["metrics"]["flickr/dev"]["greedy"]
    assert scores["images"] == 6 and "CIDEr" in scores and "captions_dev_greedy.json" in m["files"]
    captions = json.load(open(os.path.join(folder, "captions_dev_greedy.json")))
    assert len(captions["captions"]) == 6 and captions["strategy"] == "greedy"


def test_tune_command_picks_the_default_decoding_on_dev(flickr, tmp_path, tiny_parts):
    from caption_core.bundle import save_bundle
    from training.__main__ import main

    enc, dec, vocab = tiny_parts
    folder = save_bundle(str(tmp_path / "b"), encoder=enc, decoder=dec, vocab=vocab)
    assert main(["tune", folder, "--dataset", flickr, "--beam-widths", "1", "2", "--length-penalties", "0", "1",
                 "--no-repeat-ngram-sizes", "0", "2",
                 "--cache", str(tmp_path / "cache")]) == 0
    m = verify_bundle(folder)
    assert m["tuning"]["split"] == "dev" and len(m["tuning"]["results"]) == 6  # (greedy + 2 alphas at width 2) x 2
    rows = m["tuning"]["results"]
    chosen = next(r for r in rows if {"strategy": r["strategy"], "options": r["options"]} == m["default_decoding"])
    clean = [r for r in rows if r["dangling_endings"] == 0] or rows
    assert chosen["CIDEr"] == max(r["CIDEr"] for r in clean)  # the best on dev among captions never cut short
    assert all("no_repeat_ngram_size" in r["options"] for r in rows)
    assert "README.md" in m["files"]
    assert main(["tune", folder, "--dataset", flickr, "--beam-widths", "1", "--cache", str(tmp_path / "cache")]) == 0
    assert verify_bundle(folder)["default_decoding"]["strategy"] == "greedy"  # the card was rewritten and re-recorded


def test_cache_key_follows_precision_and_encoder_revision(monkeypatch):
    from training.features import cache_key

    fp32 = build_encoder("efficientnet_lite0", {"precision": "float32"})
    bf16 = build_encoder("efficientnet_lite0", {"precision": "bfloat16"})
    assert cache_key(fp32, "data")["config"]["precision"] == "float32"
    assert cache_key(fp32, "data") != cache_key(bf16, "data")
    before = cache_key(fp32, "data")
    monkeypatch.setattr(type(fp32), "revision", type(fp32).revision + 1)
    assert cache_key(fp32, "data") != before


def test_prefetch_keeps_order_and_bounds_the_work_ahead():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from caption_core.batch import prefetch

    lock, started, consumed, most_ahead = threading.Lock(), [0], [0], [0]

    def work(i):
        with lock:
            started[0] += 1
            most_ahead[0] = max(most_ahead[0], started[0] - consumed[0])
        return i * i

    with ThreadPoolExecutor(max_workers=2) as pool:
        out = []
        for value in prefetch(pool, work, range(50), ahead=4):
            out.append(value)
            with lock:
                consumed[0] += 1
    assert out == [i * i for i in range(50)]
    assert most_ahead[0] <= 5  # the item being consumed plus 4 ahead


def test_evaluate_records_the_precision_of_the_features(flickr, tmp_path, tiny_parts):
    """The same bundle scored with float32 and bfloat16 features: two records, neither overwritten."""
    from caption_core.bundle import save_bundle
    from caption_core.decoders import DecoderConfig, MergeDecoder
    from training.__main__ import main

    _, _, vocab = tiny_parts
    enc = build_encoder("efficientnet_lite0", {"precision": "float32"})
    dec = MergeDecoder(DecoderConfig(vocab_size=len(vocab), feature_dim=1280, embed_dim=16, units=16, max_length=12))
    folder = save_bundle(str(tmp_path / "b"), encoder=enc, decoder=dec, vocab=vocab)
    assert Captioner.from_bundle(folder, {"precision": "bfloat16", "batch_size": 2}).encoder.precision == "bfloat16"
    for precision in ("float32", "bfloat16"):
        assert main(["evaluate", folder, "--dataset", flickr, "--split", "dev", "--strategy", "greedy",
                     "--cache", str(tmp_path / "cache"), "--encoder-option", f"precision={precision}"]) == 0
    m = verify_bundle(folder)
    assert m["metrics"]["flickr/dev"]["greedy"]["precision"] == "float32"
    assert m["metrics"]["flickr/dev (bfloat16 features)"]["greedy"]["precision"] == "bfloat16"
    assert {"captions_dev_greedy.json", "captions_dev_greedy_bfloat16.json"} <= set(m["files"])
    with pytest.raises(ValueError, match="unknown EfficientNetLiteConfig fields"):
        Captioner.from_bundle(folder, {"precison": "float32"})


def test_scst_rewards_and_baselines():
    from caption_core.text import END_ID, Vocabulary
    from training.scst import Rewards, advantages

    refs = [["a dog runs on the grass", "a brown dog runs"], ["a man rides a bike", "a person on a bike"]]
    vocab = Vocabulary.build(refs[0] + refs[1])
    ids = lambda text: [vocab.word_to_id[w] for w in text.split()] + [END_ID]  # noqa: E731
    with_end, plain = Rewards(refs, vocab, end_token=True), Rewards(refs, vocab, end_token=False)
    good, cut = ids("a brown dog runs"), ids("a brown dog runs on the")
    assert with_end(0, good) > with_end(1, good)  # its own photo's references reward it more
    # the end token makes a caption cut mid-phrase lose its last n-grams: a larger gap than without
    assert with_end(0, good) - with_end(0, cut) > plain(0, good) - plain(0, cut)
    r = np.array([1.0, 2.0, 3.0, 0.0, 0.0, 3.0])
    adv = advantages(r, 3)
    np.testing.assert_allclose(adv, [1 - 2.5, 2 - 2.0, 3 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0.0])
    np.testing.assert_allclose(adv.reshape(2, 3).sum(1), [0.0, 0.0], atol=1e-12)  # zero-sum within each photo
    np.testing.assert_allclose(advantages(r, 3, greedy=np.array([2.0, 1.0])), [-1, 0, 1, -1, -1, 2])


def test_scst_raises_the_reward_and_resumes(flickr, tmp_path, monkeypatch):
    """SCST on a tiny bundle: the sampled captions' reward rises, the run resumes after a stop to the same
    curve, and the bundle records both stages (or is left alone when no epoch beats the start on dev)."""
    from caption_core.decoders import DecoderConfig
    from training.build import BuildConfig, build
    from training.scst import SCSTConfig, scst_bundle
    from training.train_decoder import DecoderTrainConfig

    vit_dir = tmp_path / "vit"
    vit_dir.mkdir()
    tiny_encoder().model.save(str(vit_dir / "backbone.keras"))
    cfg = BuildConfig(encoder="vit_custom", dataset=flickr, out=str(tmp_path / "weights"), name="tiny",
                      weights=str(vit_dir / "backbone.keras"), cache=str(tmp_path / "cache"), runs=str(tmp_path / "runs"),
                      strategies=("greedy",), default_strategy="greedy")
    build(cfg, DecoderTrainConfig(out="", epochs=3, batch_size=8, min_count=1, learning_rate=0.01, patience=20,
                                  decoder=DecoderConfig(embed_dim=16, units=16, feature_dropout=0.0, embed_dropout=0.0,
                                                        max_length=10)))
    bundle = str(tmp_path / "weights" / "tiny")
    scst = lambda out, **kw: SCSTConfig(out=str(out), epochs=3, learning_rate=0.02, samples=4, batch_images=4,  # noqa: E731
                                        patience=10, min_distinct=0.0, max_dangling=100, xe_weight=0.1, **kw)
    common = dict(dataset=flickr, cache=str(tmp_path / "cache"), strategies=("greedy",))
    straight = scst_bundle(bundle, scst(tmp_path / "a"), out=str(tmp_path / "out_a"), **common)
    curve = straight["state"]["history"]
    assert [h["epoch"] for h in curve] == [0, 1, 2, 3]
    rewards = [h["train_reward"] for h in curve[1:]]
    assert rewards[-1] > rewards[0]
    calls = {"n": 0}
    import training.scst as mod

    real = mod.SCSTTrainer.run_epoch

    def stop_after_one(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(mod.SCSTTrainer, "run_epoch", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        scst_bundle(bundle, scst(tmp_path / "b"), out=str(tmp_path / "out_b"), **common)
    monkeypatch.setattr(mod.SCSTTrainer, "run_epoch", real)
    resumed = scst_bundle(bundle, scst(tmp_path / "b"), out=str(tmp_path / "out_b"), **common)
    np.testing.assert_allclose([h["train_reward"] for h in resumed["state"]["history"][1:]], rewards, rtol=1e-3)
    import dataclasses

    longer = scst_bundle(bundle, dataclasses.replace(scst(tmp_path / "b"), epochs=4), out=str(tmp_path / "out_b"),
                         **common)  # a finished run extended by one epoch: it goes on from its last checkpoint
    assert [h["epoch"] for h in longer["state"]["history"]] == [0, 1, 2, 3, 4]
    assert longer["state"]["extended"] == [{"epochs_done": 3, "from": 3, "to": 4}]
    with pytest.raises(ValueError, match="only --epochs may change"):
        scst_bundle(bundle, dataclasses.replace(scst(tmp_path / "b"), learning_rate=0.5), out=str(tmp_path / "out_b"),
                    **common)
    if straight["exported"]:
        m = verify_bundle(str(tmp_path / "out_a"))
        assert m["training"]["scst"]["best_epoch"] == straight["state"]["best_epoch"] > 0
        with pytest.raises(ValueError, match="already fine-tuned with SCST.*larger --epochs"):
            scst_bundle(str(tmp_path / "out_a"), scst(tmp_path / "c"), **common)  # a second stage: its record lost
        # its own run extended in place: the cross-entropy model's record stays the cross-entropy model's
        scst_bundle(str(tmp_path / "out_a"), dataclasses.replace(scst(tmp_path / "a"), epochs=4), **common)
        m2 = verify_bundle(str(tmp_path / "out_a"))
        assert [h["epoch"] for h in m2["training"]["scst"]["dev_curve"]] == [0, 1, 2, 3, 4]
        assert m2["cross_entropy_metrics"] == m["cross_entropy_metrics"]
        assert [e["cross_entropy"] for e in m2["training"]["scst"]["examples"]] == \
            [e["cross_entropy"] for e in m["training"]["scst"]["examples"]]
        assert "cross_entropy_metrics" in m and "Self-critical sequence training" in open(
            os.path.join(tmp_path / "out_a", "README.md")).read()
        # the decoder's weights alone: the optimizer state of the run stays in the run folder
        assert os.path.getsize(tmp_path / "out_a" / "decoder.keras") < 1.5 * os.path.getsize(os.path.join(bundle, "decoder.keras"))
    else:
        assert straight["state"]["best_epoch"] == 0 and not os.path.exists(tmp_path / "out_a")
    with pytest.raises(ValueError, match="baseline"):
        SCSTConfig(baseline="best")


def test_linear_probe_separates_what_features_carry(tmp_path, monkeypatch):
    """The probe on a tiny CIFAR-10 folder whose classes differ by colour: trained ViT weights saved from a
    model, and its random-init control; the fit subset is the first photos of each class by name."""
    from training import probe as probe_mod
    from training.datasets import CIFAR10_CLASSES

    data = tmp_path / "cifar"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k, c in enumerate(CIFAR10_CLASSES):
            (data / split / c).mkdir(parents=True)
            colour = np.array([(k * 83) % 256, (k * 151) % 256, (k * 37) % 256], np.float64)
            for i in range(7):
                img = np.clip(colour + rng.normal(0, 8, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(data / split / c / f"{i:04d}.jpg")
    images, labels = probe_mod.cifar_subset(str(data), "train", 5)
    assert images.shape == (50, 32, 32, 3) and list(labels[:6]) == [0, 0, 0, 0, 0, 1]

    enc = build_encoder("vit_custom", {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "stem": "linear"})
    weights = str(tmp_path / "vit.keras")
    enc.save_files(str(tmp_path))
    (tmp_path / "encoder.keras").rename(weights)
    monkeypatch.setitem(probe_mod.PROBED, "vit_custom", ({"weights": weights}, {"dim": 16, "depth": 1, "heads": 2,
                                                                                "mlp_dim": 32, "stem": "linear"}))
    report = str(tmp_path / "probes.json")
    cfg = probe_mod.ProbeConfig(cifar=str(data), per_class=5, cache=str(tmp_path / "c"))
    out = probe_mod.probe(cfg, ["vit_custom"], report)
    rows = {r["weights"]: r for r in out["rows"]}
    assert set(rows) == {"pretrained", "random init"} and out["subset"]["train_images"] == 50
    assert rows["pretrained"]["accuracy"] >= 0.9  # colours are linearly separable even through random weights
    assert rows["pretrained"]["fingerprint"] != rows["random init"]["fingerprint"]
    assert rows["pretrained"]["images_per_second_float32"] > 0
    again = probe_mod.probe(cfg, ["vit_custom"], report)  # features from the cache; the speed measured before kept
    assert {r["weights"]: r["images_per_second_float32"] for r in again["rows"]} == \
        {k: r["images_per_second_float32"] for k, r in rows.items()}
    with pytest.raises(ValueError, match="no probe settings for encoder 'resnet'"):
        probe_mod.probe(cfg, ["resnet"])


def test_scst_selects_a_guided_bundle_on_its_beam_search(flickr, tiny_parts):
    """A bundle whose default is guided decoding, with an encoder that has no classifier (vit_custom): SCST's dev
    scores decode features alone, so they use the default's beam search (guidance is chosen after training)."""
    from caption_core.captioner import Captioner
    from training.datasets import load_captions
    from training.scst import dev_scores

    enc, dec, vocab = tiny_parts
    cap = Captioner(enc, dec, vocab, {"default_decoding": {"strategy": "guided", "options": {"beam_width": 2,
                                                                                             "guide_threshold": 0.2}}})
    examples = [e for e in load_captions(flickr, "dev") if os.path.exists(e.image)]
    feats = enc.encode([e.image for e in examples])
    with pytest.raises(ValueError, match="has no ImageNet classifier"):
        cap.decode(feats, "guided")  # what SCST tripped over
    row = dev_scores(cap, examples, feats, np.ones(len(examples), bool))
    assert set(row) >= {"CIDEr", "distinct_share"} and 0.0 <= row["CIDEr"]


def test_scst_eligibility_keeps_diversity_where_the_model_started():
    from training.scst import SCSTConfig, eligible

    cfg = SCSTConfig()
    row = lambda share, dangling=0: {"distinct_share": share, "dangling_endings": dangling}  # noqa: E731
    assert eligible(cfg, row(0.75)) and not eligible(cfg, row(0.69)) and not eligible(cfg, row(0.9, 1))
    strong, weak = row(0.8), row(0.37)  # cross-entropy models: Lite0-like, and a weak encoder's
    assert not eligible(cfg, row(0.69), strong)  # a strong model may not fall under 70%
    assert eligible(cfg, row(0.41), weak) and eligible(cfg, weak, weak)  # a weak one may not lose diversity...
    assert not eligible(cfg, row(0.36), weak)  # ...but need not reach 70% either


def test_scst_patience_waits_for_captions_that_improve_but_are_not_eligible_yet():
    """The dev curve of a real run (Lite0 attention, seed 1): the cross-entropy model's greedy dev captions had one
    dangling ending, kept until epoch 5. Counting only eligible improvements stopped the run after epoch 2 with the
    cross-entropy model; counting any better dev CIDEr runs on and chooses epoch 5, the first without one."""
    from training.scst import SCSTConfig, record_epoch

    def run(curve, **fields):
        cfg = SCSTConfig(**fields)
        state = {"best_epoch": 0, "best_dev_cider": None, "bad_epochs": 0, "stopped": None,
                 "history": [{"epoch": 0, **curve[0]}]}
        chosen = []
        for epoch, dev in enumerate(curve[1:], 1):
            if state["stopped"]:
                break
            improved, ok = record_epoch(cfg, state, epoch, dev)
            chosen += [epoch] if improved else []
            assert ok == (dev["dangling_endings"] <= cfg.max_dangling)
            state["history"].append({"epoch": epoch, **dev})
        return state, chosen

    row = lambda cider, dangling: {"CIDEr": cider, "distinct_share": 0.85, "dangling_endings": dangling}  # noqa: E731
    measured = [row(0.4706, 1), row(0.4789, 1), row(0.4913, 1), row(0.4943, 1), row(0.4997, 1), row(0.5039, 0)]
    state, chosen = run(measured)
    assert chosen == [5] and state["best_epoch"] == 5 and state["stopped"] is None
    assert state["best_dev_cider"] == 0.5039 and state["bad_epochs"] == 0
    state, chosen = run(measured, max_dangling=1)  # what that run was given instead: every epoch eligible
    assert chosen == [1, 2, 3, 4, 5] and state["best_epoch"] == 5
    stalled = [row(0.47, 0), row(0.49, 0), row(0.485, 1), row(0.48, 0), row(0.50, 0)]
    state, chosen = run(stalled)  # two epochs without a better CIDEr: stopped before the fourth epoch's figures
    assert chosen == [1] and state["stopped"].startswith("early stopping") and len(state["history"]) == 4
    ineligible_peak = [row(0.47, 0), row(0.52, 1), row(0.50, 0), row(0.49, 0), row(0.48, 0)]
    state, chosen = run(ineligible_peak)  # a new chosen epoch resets patience though the peak was ineligible
    assert chosen == [2] and state["best_epoch"] == 2 and state["best_dev_cider"] == 0.50
    assert state["stopped"] and len(state["history"]) == 5
