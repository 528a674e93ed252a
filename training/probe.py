"""Linear probes: are an encoder's features pretrained? ``python -m training probe``.

One CIFAR-10 subset for every encoder: the first ``per_class`` photos of each class (by file name) of the
train split to fit, and of the test split to score. Each encoder's pooled features (float32 path; photos
upscaled from 32 px to the encoder's input size by the same preprocessing the app uses) go through a
standardisation and a multinomial logistic regression (scikit-learn, L2; its strength chosen by 5-fold
cross-validation on the train subset only). Every encoder is probed twice: with its pretrained weights and,
as the control, the same architecture randomly initialised. Extraction speed (images/s, float32, batches of
the encoder's size) is recorded from the same run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import numpy as np

from caption_core.config import Config
from caption_core.encoders import build_encoder

from .common import machine, read_json, write_json
from .datasets import CIFAR10_CLASSES, DatasetError, load_cifar10

log = logging.getLogger("training.probe")

VIT_CUSTOM_WEIGHTS = os.path.join("weights", "vit_custom-flickr8k", "encoder.keras")
# name -> (pretrained config, control config): the control is the same architecture, randomly initialised
PROBED = {
    "xception": ({}, {"weights": "random"}),
    "dinov2": ({}, {"weights": "random"}),
    "efficientnet_lite0": ({}, {"weights": "random"}),
    "efficientnet_lite1": ({}, {"weights": "random"}),
    "efficientnet_lite2": ({}, {"weights": "random"}),
    "vit_custom": ({"weights": VIT_CUSTOM_WEIGHTS}, {}),
    "vit_pretrained": ({}, None),  # a Hub model: probed where it is cached or online
}


@dataclasses.dataclass(frozen=True)
class ProbeConfig(Config):
    cifar: str = os.path.join("..", "shared", "data", "cifar10")  # CIFAR-10 ImageFolder (train/<class>/*.jpg)
    per_class: int = 100  # photos per class in each of the fit (train) and score (test) subsets
    cs: tuple = (0.001, 0.01, 0.1, 1.0)  # inverse L2 strengths tried by cross-validation on the fit subset
    cache: str = "cache"  # probe features are kept under <cache>/probes/
    seed: int = 0  # random initialisation of the controls and the cross-validation folds


def cifar_subset(source: str, split: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` photos of each class of ``split`` (by file name): uint8 (N, 32, 32, 3), labels."""
    from PIL import Image

    folder = os.path.join(source, split)
    if not os.path.isdir(folder):
        images, labels = load_cifar10(source, split)  # a parquet copy: its first photos of each class
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(CIFAR10_CLASSES))])
        return images[keep], labels[keep]
    images, labels = [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        if not os.path.isdir(os.path.join(folder, cls)):
            raise DatasetError(f"CIFAR-10 folder '{folder}' has no class folder '{cls}'")
        for name in sorted(os.listdir(os.path.join(folder, cls)))[:per_class]:
            with Image.open(os.path.join(folder, cls, name)) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def probe_features(encoder, images: np.ndarray, cache: str, tag: str) -> tuple[np.ndarray, float | None]:
    """Pooled features (N, D) of ``images`` (kept per encoder fingerprint under ``cache``), and the extraction
    speed in images/s when they were computed now (None from the cache)."""
    digest = encoder.weights_fingerprint().split(":")[-1][:12]
    path = os.path.join(cache, "probes", f"{encoder.name}-{digest}-{encoder.precision}-{tag}.npy")
    if os.path.exists(path):
        feats = np.load(path)
        if feats.shape == (len(images), encoder.output_dim):
            return feats, None
    from PIL import Image

    batch = encoder.preprocess([Image.fromarray(a) for a in images])  # (N, S, S, 3) uint8
    encoder.encode_arrays(batch[: encoder.config.batch_size])  # warm-up (graph tracing, first allocations)
    t0 = time.perf_counter()
    feats = encoder.encode_arrays(batch)  # (N, D)
    rate = len(images) / (time.perf_counter() - t0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, feats)
    return feats, rate


def fit_probe(train_x, train_y, test_x, test_y, cs, seed: int) -> dict:
    """Standardise, fit a multinomial logistic regression with C chosen by 5-fold CV: -> accuracy and C."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=list(cs), l1_ratios=(0.0,), cv=5, scoring="accuracy", max_iter=3000, random_state=seed,
        use_legacy_attributes=False))  # L2 only, chosen by accuracy
    model.fit(train_x, train_y)
    return {"accuracy": round(float((model.predict(test_x) == test_y).mean()), 4),
            "C": float(np.ravel(model[-1].C_)[0])}


def probe(cfg: ProbeConfig, names: list[str], report: str | None = None) -> dict:
    train_x, train_y = cifar_subset(cfg.cifar, "train", cfg.per_class)
    test_x, test_y = cifar_subset(cfg.cifar, "test", cfg.per_class)
    previous = (read_json(report) or {}).get("rows", []) if report else []
    rows = [r for r in previous if r.get("encoder") not in names]
    for name in names:
        if name not in PROBED:
            raise ValueError(f"no probe settings for encoder {name!r}; valid: {sorted(PROBED)}")
        pretrained, control = PROBED[name]
        for kind, options in (("pretrained", pretrained), ("random init", control)):
            if options is None:
                continue
            import keras
            import torch

            keras.utils.set_random_seed(cfg.seed)  # the controls' initialisation, in Keras and in torch
            torch.manual_seed(cfg.seed)
            try:
                encoder = build_encoder(name, {**options, **({"precision": "float32"} if _has_precision(name) else {})})
            except Exception as exc:  # weights that cannot be had here: say so in the table, go on
                rows.append({"encoder": name, "weights": kind, "error": f"{type(exc).__name__}: {exc}"})
                print(f"{name} [{kind}]: not probed: {exc}", flush=True)
                continue
            fx, rate = probe_features(encoder, train_x, cfg.cache, f"train{cfg.per_class}")
            tx, _ = probe_features(encoder, test_x, cfg.cache, f"test{cfg.per_class}")
            result = fit_probe(fx, train_y, tx, test_y, cfg.cs, cfg.seed)
            row = {"encoder": name, "weights": kind, "fingerprint": encoder.weights_fingerprint(),
                   "source": encoder.weights_source(), "dim": encoder.output_dim, "input_size": encoder.input_size,
                   **result, "images_per_second_float32": None if rate is None else round(rate, 1)}
            if rate is None:  # features from the cache: keep the speed measured when they were made
                row["images_per_second_float32"] = next(
                    (r.get("images_per_second_float32") for r in previous
                     if r.get("encoder") == name and r.get("weights") == kind), None)
            rows.append(row)
            print(f"{name} [{kind}]: CIFAR-10 probe accuracy {row['accuracy']:.1%} (C={row['C']}), "
                  f"{row['images_per_second_float32']} images/s float32", flush=True)
            del encoder
    out = {"subset": {"source": cfg.cifar, "train": f"first {cfg.per_class} photos per class of train (by name)",
                      "test": f"first {cfg.per_class} photos per class of test (by name)",
                      "train_images": int(len(train_y)), "test_images": int(len(test_y))},
           "method": "StandardScaler + LogisticRegressionCV (multinomial, L2, 5-fold CV on the train subset over "
                     f"C in {list(cfg.cs)}); features on the float32 path",
           "config": cfg.to_dict(), "machine": machine(), "rows": rows}
    if report:
        write_json(report, out)
    return out


def _has_precision(name: str) -> bool:
    from caption_core.encoders import get_encoder_class

    return "precision" in {f.name for f in dataclasses.fields(get_encoder_class(name).config_class)}
