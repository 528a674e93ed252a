"""Train caption_core's ``vit_custom`` from scratch on CIFAR-10.

Augmentation (random crop with 4-pixel reflect padding, horizontal flips), AdamW with linear
warm-up then cosine decay, label smoothing, stochastic depth. A checkpoint (model + optimizer) is
written atomically after every epoch; ``--resume`` continues from it. At the end the test
accuracy is measured and the backbone is saved as ``backbone.keras`` for bundles.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import numpy as np

from caption_core.config import Config
from caption_core.encoders.vit_custom import ViTCustomConfig

from .common import Timer, machine, read_json, save_keras_atomic, set_seeds, versions, write_json
from .datasets import load_cifar10

log = logging.getLogger("training.train_vit")
DEFAULT_CIFAR = os.path.join("..", "shared", "data", "cifar10")


@dataclasses.dataclass(frozen=True)
class ViTTrainConfig(Config):
    data: str = DEFAULT_CIFAR  # CIFAR-10 ImageFolder (train/, test/) or Hub id (uoft-cs/cifar10)
    out: str = "runs/vit_custom"  # checkpoints, logs and the final backbone go here
    epochs: int = 30  # full passes over the 50,000 training images
    batch_size: int = 128  # images per step
    learning_rate: float = 1e-3  # peak, after warm-up
    warmup_epochs: float = 2.0  # linear warm-up from 0
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    label_smoothing: float = 0.1  # cross-entropy against 0.9 / 0.1 spread targets
    seed: int = 0  # seeds weights, augmentation and order
    jit_compile: bool = True  # XLA: faster for this model on CPU (docs/training.md)
    limit: int = 0  # use only the first N training images (0 = all; tests use a few)
    cache: str = "cache"  # decoded CIFAR arrays are kept here


def augment_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, num_classes: int):
    import tensorflow as tf

    def aug(x, y):
        x = tf.pad(x, [[4, 4], [4, 4], [0, 0]], mode="REFLECT")
        x = tf.image.random_crop(x, (32, 32, 3))
        x = tf.image.random_flip_left_right(x)
        return x, tf.one_hot(y, num_classes)

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda x, y: aug(tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def build_classifier(vit: ViTCustomConfig, num_classes: int = 10):
    import keras

    from caption_core import vit_layers

    backbone = vit_layers.build_vit_backbone(**vit.architecture())
    images = keras.Input((vit.image_size, vit.image_size, 3), name="images")
    logits = keras.layers.Dense(num_classes, name="head")(backbone(images))
    return keras.Model(images, logits, name="vit_classifier")


def compile_classifier(model, cfg: ViTTrainConfig, steps_per_epoch: int):
    import keras

    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, total - warmup), alpha=0.01,
        warmup_target=cfg.learning_rate, warmup_steps=warmup)
    opt = keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay, clipnorm=1.0)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "position", "cls_token"])
    model.compile(optimizer=opt, jit_compile=cfg.jit_compile,
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    return model


def train_vit(cfg: ViTTrainConfig, vit: ViTCustomConfig = ViTCustomConfig(), resume: bool = False) -> dict:
    """Train (or resume), evaluate on the test split, save ``backbone.keras``; return the results."""
    import keras

    from caption_core import vit_layers  # noqa: F401  (registers the custom layers before any load)

    os.makedirs(cfg.out, exist_ok=True)
    ckpt, state_path = os.path.join(cfg.out, "checkpoint.keras"), os.path.join(cfg.out, "state.json")
    state = read_json(state_path, {}) if resume else {}
    if resume and state:
        if state.get("vit") != vit.architecture() or state.get("train", {}).get("epochs") != cfg.epochs:
            raise ValueError(f"--resume: the checkpoint in {cfg.out} was made with another configuration; "
                             "use the same options or a new --out")
    set_seeds(cfg.seed + int(state.get("epochs_done", 0)))
    x_train, y_train = load_cifar10(cfg.data, "train", cfg.cache)
    x_test, y_test = load_cifar10(cfg.data, "test", cfg.cache)
    if cfg.limit:  # a seeded random subset (the folders are sorted by class)
        pick = np.random.default_rng(cfg.seed).permutation(len(x_train))[: cfg.limit]
        x_train, y_train = x_train[pick], y_train[pick]
        pick = np.random.default_rng(cfg.seed).permutation(len(x_test))[: cfg.limit]
        x_test, y_test = x_test[pick], y_test[pick]
    log.info("CIFAR-10: %d train, %d test images", len(x_train), len(x_test))
    steps = len(x_train) // cfg.batch_size
    if steps < 1:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(x_train)} training images")
    if resume and state and os.path.exists(ckpt):
        model = keras.saving.load_model(ckpt, compile=True, safe_mode=True)
        log.info("resuming after epoch %d from %s", state["epochs_done"], ckpt)
    else:
        state = {"epochs_done": 0, "history": [], "seconds": 0.0, "vit": vit.architecture(), "train": cfg.to_dict()}
        model = compile_classifier(build_classifier(vit), cfg, steps)
    train_ds = augment_dataset(x_train, y_train, cfg.batch_size, cfg.seed + state["epochs_done"], 10)

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            save_keras_atomic(self.model, ckpt)
            state["epochs_done"] = epoch + 1
            state["seconds"] += time.perf_counter() - self.t0
            state["history"].append({"epoch": epoch + 1, "loss": float(logs["loss"]),
                                     "train_accuracy": float(logs["accuracy"]),
                                     "seconds": round(time.perf_counter() - self.t0, 1)})
            write_json(state_path, state)
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {logs['loss']:.4f} train acc {logs['accuracy']:.4f} "
                  f"({time.perf_counter() - self.t0:.0f} s, {len(x_train) / (time.perf_counter() - self.t0):.0f} img/s)",
                  flush=True)

    if state["epochs_done"] < cfg.epochs:
        model.fit(train_ds, epochs=cfg.epochs, initial_epoch=state["epochs_done"], callbacks=[Checkpoint()],
                  verbose=2 if os.environ.get("CI") else 1)
    with Timer() as t:
        logits = model.predict(x_test.astype(np.float32), batch_size=500, verbose=0)
    accuracy = float((logits.argmax(1) == y_test).mean())
    backbone = model.get_layer("vit_custom")
    save_keras_atomic(backbone, os.path.join(cfg.out, "backbone.keras"))
    result = {"test_accuracy": accuracy, "test_images": int(len(y_test)), "epochs": state["epochs_done"],
              "train_seconds": round(state["seconds"], 1), "eval_seconds": round(t.seconds, 1),
              "vit": vit.architecture(), "train": cfg.to_dict(), "machine": machine(), "versions": versions(),
              "backbone": os.path.join(cfg.out, "backbone.keras")}
    write_json(os.path.join(cfg.out, "result.json"), result)
    print(f"test accuracy {accuracy:.4f} on {len(y_test)} images; backbone: {result['backbone']}", flush=True)
    return result
