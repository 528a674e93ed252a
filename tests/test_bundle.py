import json
import os

import numpy as np
import pytest

from caption_core.bundle import BundleError, list_bundles, load_bundle, save_bundle, update_manifest, verify_bundle
from caption_core.captioner import Captioner


@pytest.fixture()
def bundle(tmp_path, tiny_parts):
    enc, dec, vocab = tiny_parts
    path = save_bundle(str(tmp_path / "weights" / "tiny"), encoder=enc, decoder=dec, vocab=vocab,
                       training={"seed": 0}, metrics={"greedy": {"CIDEr": 0.1}},
                       default_decoding={"strategy": "beam", "options": {"beam_width": 2}}, card="# tiny\n")
    return path


def images():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(3)]


def test_save_load_gives_identical_captions(bundle, tiny_parts):
    enc, dec, vocab = tiny_parts
    before = Captioner(enc, dec, vocab).caption(images(), strategy="beam", num_return=2, beam_width=2)
    loaded = Captioner.from_bundle(bundle)
    after = loaded.caption(images(), strategy="beam", num_return=2, beam_width=2)
    assert [[c.text for c in r.captions] for r in before] == [[c.text for c in r.captions] for r in after]
    # float16 storage: rounding alone, which grows with the size of the summed log-probabilities (about -30 for this
    # random tiny model: 0.0055 apart once, 1.8e-4 of it)
    np.testing.assert_allclose([c.score for r in before for c in r.captions],
                               [c.score for r in after for c in r.captions], rtol=5e-4, atol=5e-3)
    assert loaded.default_strategy == "beam" and loaded.default_options["beam_width"] == 2
    assert all(r.encode_ms > 0 and r.decode_ms > 0 for r in after)


def test_decoder_weights_ship_as_float16_and_float32_storage_is_exact(tmp_path, bundle, tiny_parts):
    from caption_core.decoders import read_keras_weights, weights_storage

    enc, dec, vocab = tiny_parts
    exact = save_bundle(str(tmp_path / "w32" / "tiny"), encoder=enc, decoder=dec, vocab=vocab, storage="float32")
    half, full = os.path.join(bundle, "decoder.keras"), os.path.join(exact, "decoder.keras")
    assert weights_storage(half) == "float16" and weights_storage(full) == "float32"
    assert json.load(open(os.path.join(bundle, "manifest.json")))["decoder"]["storage"] == "float16"
    nbytes = lambda path: sum(a.nbytes for arrays in read_keras_weights(path).values() for a in arrays)  # noqa: E731
    assert nbytes(half) * 2 == nbytes(full)  # half the weights' bytes (a tiny model's file is mostly its metadata)
    for name, arrays in read_keras_weights(full).items():  # the same weights, rounded to float16
        for a, b in zip(arrays, read_keras_weights(half)[name]):
            assert b.dtype == np.float16 and np.array_equal(a.astype(np.float16), b)
    before = Captioner(enc, dec, vocab).caption(images(), strategy="beam", num_return=2, beam_width=2)
    after = Captioner.from_bundle(exact).caption(images(), strategy="beam", num_return=2, beam_width=2)
    np.testing.assert_allclose([c.score for r in before for c in r.captions],
                               [c.score for r in after for c in r.captions], atol=1e-4)


def test_manifest_contents(bundle):
    m = json.load(open(os.path.join(bundle, "manifest.json")))
    assert m["encoder"]["name"] == "vit_custom" and m["encoder"]["config"]["weights"] == "encoder.keras"
    assert set(m["files"]) == {"decoder.keras", "vocab.json", "encoder.keras", "README.md"}
    assert all(len(d) == 64 for d in m["files"].values())
    assert {os.path.splitext(f)[1] for f in os.listdir(bundle)} <= {".json", ".keras", ".md"}  # no pickle, no .h5
    assert not [f for f in os.listdir(os.path.dirname(bundle)) if f.startswith(".")]  # no temp folders left


def test_tampered_file_is_refused(bundle):
    with open(os.path.join(bundle, "vocab.json"), "a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match="'vocab.json' does not match its checksum"):
        load_bundle(bundle)


def test_missing_file_is_refused(bundle):
    os.remove(os.path.join(bundle, "decoder.keras"))
    with pytest.raises(BundleError, match="'decoder.keras' is missing"):
        Captioner.from_bundle(bundle)


@pytest.mark.parametrize("name", ["../outside.json", "/etc/passwd", "sub/../../x"])
def test_manifest_pointing_outside_is_refused(bundle, name):
    path = os.path.join(bundle, "manifest.json")
    m = json.load(open(path))
    m["files"][name] = "0" * 64
    json.dump(m, open(path, "w"))
    with pytest.raises(BundleError, match="outside the bundle|not a relative path"):
        verify_bundle(bundle)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(str(tmp_path))
    with pytest.raises(BundleError, match="no bundle folder"):
        load_bundle(str(tmp_path / "nope"))


def test_update_manifest_and_resave_are_atomic(bundle, tiny_parts):
    extra = os.path.join(bundle, "captions_test.json")
    json.dump({"a": "b"}, open(extra, "w"))
    m = update_manifest(bundle, {"metrics": {"beam": {"BLEU-4": 0.2}}}, add_files=["captions_test.json"])
    assert m["metrics"]["beam"]["BLEU-4"] == 0.2 and "captions_test.json" in verify_bundle(bundle)["files"]
    enc, dec, vocab = tiny_parts
    save_bundle(bundle, encoder=enc, decoder=dec, vocab=vocab)  # overwrite in place
    assert "captions_test.json" not in verify_bundle(bundle)["files"]


def test_list_bundles(bundle, tmp_path):
    os.makedirs(tmp_path / "weights" / "broken")
    (tmp_path / "weights" / "broken" / "manifest.json").write_text("{not json")
    found = list_bundles(str(tmp_path / "weights"))
    assert [b["name"] for b in found] == ["broken", "tiny"]
    assert "error" in found[0] and found[1]["manifest"]["name"] == "tiny"
    assert list_bundles(str(tmp_path / "nothing")) == []


def test_word_log_probs(bundle):
    cap = Captioner.from_bundle(bundle)
    words, lp = cap.word_log_probs(cap.encode(images()[:2]), "A dog runs!")
    assert words == ["a", "dog", "runs", "<end>"] and lp.shape == (2, 4) and (lp <= 0).all()


def test_cli_captions_files_and_reports_bad_ones(bundle, tmp_path, capsys):
    from PIL import Image

    from caption_core.__main__ import main

    good = tmp_path / "good.png"
    Image.fromarray(images()[0]).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    code = main([str(good), str(bad), "--bundle", bundle, "--json", "--strategy", "greedy"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert lines[0]["image"] == str(good) and lines[0]["captions"][0]["text"]
    assert lines[1]["image"] == str(bad) and "not an image" in lines[1]["error"]
    assert main([str(good), "--bundle", str(tmp_path / "missing")]) == 2
    # consensus from the command line (a flag made from the registry): the n best with their agreement
    assert main([str(good), "--bundle", bundle, "--json", "--strategy", "beam", "--beam-width", "3", "--num-return", "3",
                 "--consensus", "true"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    agreements = [c["agreement"] for c in line["captions"]]
    assert len(agreements) == 3 and agreements == sorted(agreements, reverse=True)


def test_hf_bundle_offline_fails_fast(tmp_path, monkeypatch):
    import time

    from caption_core.hub import OfflineError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    t = time.perf_counter()
    with pytest.raises(OfflineError, match="someone/bundle"):
        load_bundle("hf://someone/bundle")
    with pytest.raises(BundleError, match="not of the form"):
        load_bundle("hf://just-a-name")
    assert time.perf_counter() - t < 5


def test_a_torch_encoder_bundle_is_served_without_tensorflow(tmp_path, tiny_parts):
    """EfficientNet (torch) + the NumPy decoder read from decoder.keras: TensorFlow and Keras never load."""
    import subprocess
    import sys

    from caption_core.decoders import DecoderConfig, MergeDecoder
    from caption_core.encoders import build_encoder

    _, _, vocab = tiny_parts
    enc = build_encoder("efficientnet_lite0", {"precision": "float32"})
    dec = MergeDecoder(DecoderConfig(vocab_size=len(vocab), feature_dim=1280, embed_dim=16, units=16, max_length=12))
    folder = save_bundle(str(tmp_path / "b"), encoder=enc, decoder=dec, vocab=vocab)
    code = ("import sys, numpy as np; from caption_core.captioner import Captioner; "
            "r = Captioner.from_bundle(sys.argv[1]).caption(np.zeros((40, 40, 3), np.uint8))[0]; "
            "assert r.captions[0].tokens; print(sorted(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['torch']"


def test_the_default_bundle_is_chosen_on_both_dev_sets_and_baselines_are_listed(tmp_path):
    from caption_core.bundle import BASELINE_FORMAT, best_first, dev_score, list_baselines, ood_score

    def manifest(cider, default=("beam", {"beam_width": 3})):
        rows = [{"strategy": "greedy", "options": {}, "CIDEr": 0.1},
                {"strategy": "beam", "options": {"beam_width": 3}, "CIDEr": cider}]
        return {"default_decoding": {"strategy": default[0], "options": default[1]},
                "tuning": {"split": "dev", "metric": "CIDEr", "results": rows}}

    found = {"a": manifest(0.40), "b": manifest(0.55), "c": {"metrics": {"x/test": {"beam": {"CIDEr": 0.9}}}},
             "d": manifest(0.60, default=("beam", {"beam_width": 5}))}  # its default was not among those tuned
    assert dev_score(found["b"]) == 0.55 and dev_score(found["c"]) is None and dev_score(found["d"]) is None
    assert best_first(found) == ["b", "a", "c", "d"]  # test scores never choose

    def chosen(cider, ood):  # a bundle whose default decoding `choose` scored on coco-mini too
        m = manifest(cider)
        m["ood_dev"] = {"rows": [{"strategy": "beam", "options": {"beam_width": 3}, "ood_dev": {"CIDEr": ood}}],
                        "chosen": 0}
        return m

    found.update(e=chosen(0.545, 0.50), f=chosen(0.53, 0.60), g=chosen(0.55, 0.40))
    assert ood_score(found["e"]) == 0.50 and ood_score(found["b"]) is None
    # the default: within 0.01 of the best Flickr8k dev score, the best out of domain (f is 0.02 behind: not it)
    assert best_first(found) == ["e", "b", "g", "f", "a", "c", "d"]
    found["e"]["default_decoding"] = {"strategy": "greedy", "options": {}}  # its default changed since: not scored
    assert ood_score(found["e"]) is None and best_first(found)[0] == "g"
    (tmp_path / "blind.json").write_text(json.dumps({"format": BASELINE_FORMAT, "name": "blind", "metrics": {}}))
    (tmp_path / "other.json").write_text("{}")
    (tmp_path / "broken.json").write_text("{")
    assert [b["name"] for b in list_baselines(str(tmp_path))] == ["blind"]
