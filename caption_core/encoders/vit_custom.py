"""A small Keras 3 ViT for 32x32 inputs, trained from scratch on CIFAR-10 by ``training``:
patch embedding, class token, position embedding, pre-norm transformer blocks; features are the
final class token (``dim``). Its weights travel in the bundle as ``encoder.keras``."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from ..config import Config
from .base import Encoder
from .weights import tensor_fingerprint

ENCODER_FILE = "encoder.keras"


@dataclasses.dataclass(frozen=True)
class ViTCustomConfig(Config):
    image_size: int = 32  # input side (CIFAR-10 is 32x32)
    patch_size: int = 4  # patch side: (32 / 4)^2 = 64 tokens + the class token
    stem: str = "conv"  # patch embedding: 'linear' (classic ViT) or 'conv' (3x3 conv stack, same stride)
    dim: int = 128  # token width == feature size D
    depth: int = 6  # transformer blocks
    heads: int = 4  # attention heads (dim % heads == 0)
    mlp_dim: int = 256  # hidden size of each block's MLP
    dropout: float = 0.0  # dropout in attention and MLP
    drop_path: float = 0.1  # stochastic depth of the last block (linear from 0)
    weights: str | None = None  # path of a saved backbone (.keras); None = random initialisation
    batch_size: int = 256  # images per forward pass
    pooling: str = "cls"  # 'cls': the class token (dim features); 'grid': the class token then every patch token
    # after the final norm, (1 + (image_size / patch_size)^2) x dim, flattened: what an attention decoder reads

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not a multiple of heads {self.heads}")
        if self.pooling not in ("cls", "grid"):
            raise ValueError(f"vit_custom pooling must be 'cls' or 'grid', got {self.pooling!r}")

    def architecture(self) -> dict:
        return {k: getattr(self, k) for k in ("image_size", "patch_size", "stem", "dim", "depth", "heads", "mlp_dim", "dropout", "drop_path")}


def architecture_of(model) -> dict:
    """ViTCustomConfig architecture fields read back from a built backbone."""
    patch = model.get_layer("patch_embedding").get_config()
    blocks = [layer.get_config() for layer in model.layers if layer.name.startswith("block_")]
    return {"image_size": model.input_shape[1], "patch_size": patch["patch_size"], "stem": patch["stem"],
            "dim": blocks[0]["dim"], "depth": len(blocks), "heads": blocks[0]["heads"], "mlp_dim": blocks[0]["mlp_dim"],
            "dropout": blocks[0]["dropout"], "drop_path": blocks[-1]["drop_path"]}


class ViTCustomEncoder(Encoder):
    name = "vit_custom"
    config_class = ViTCustomConfig
    licence = "trained by this project from scratch on CIFAR-10; same licence as the project"
    TRAIN_HINT = "python -m training train-vit"
    unkeyed_defaults = {"pooling": "cls"}

    @classmethod
    def build_hint(cls) -> str:
        return (f"python -m training build --encoder {cls.name} --weights runs/vit_custom/backbone.keras  "
                f"(after: {cls.TRAIN_HINT})")

    @classmethod
    def training_config(cls, weights: str | None = None, options: dict | None = None):
        cfg = super().training_config(weights, options)
        if not cfg.weights:
            raise ValueError(f"encoder '{cls.name}' needs its trained backbone: pass --weights "
                             f"runs/vit_custom/backbone.keras (made by: {cls.TRAIN_HINT})")
        return cfg

    def __init__(self, config: ViTCustomConfig | None = None, model=None):
        super().__init__(config)
        import keras
        import tensorflow as tf

        from .. import vit_layers

        if model is not None:
            self.model = model
        elif self.config.weights:
            if not os.path.isfile(self.config.weights):
                raise FileNotFoundError(f"encoder 'vit_custom': weights file '{self.config.weights}' does not exist; "
                                        "build one with: python -m training train-vit")
            self.model = keras.saving.load_model(self.config.weights, compile=False, safe_mode=True)
        else:
            self.model = vit_layers.build_vit_backbone(**self.config.architecture())
        if model is not None or self.config.weights:
            # the saved model is the truth about its architecture: describe() and output_dim follow it
            self.config = dataclasses.replace(self.config, **architecture_of(self.model))
        self.input_size = self.config.image_size
        self.output_dim = self.config.dim
        net = self.model
        if self.config.pooling == "grid":
            side = self.config.image_size // self.config.patch_size
            self.grid_shape, self.grid_extra = (side, side, self.config.dim), 1
            self.output_dim = (1 + side * side) * self.config.dim
            tokens = self.model.get_layer("final_norm").output  # (B, 1 + N, dim)
            net = keras.Model(self.model.input, keras.layers.Flatten()(tokens))  # (B, (1 + N) * dim)
        self._forward = tf.function(lambda x: net(x, training=False), jit_compile=False, reduce_retracing=True)

    def _encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(batch.astype(np.float32)))  # (N, D)

    def weights_fingerprint(self) -> str:
        return tensor_fingerprint(self.model.get_weights())  # not cached: training code may change them

    def provenance(self) -> dict | None:
        """How the backbone was trained (CIFAR-10 accuracy, time, hardware): ``result.json`` beside it,
        as ``python -m training train-vit`` writes it."""
        if not self.config.weights:
            return None
        path = os.path.join(os.path.dirname(os.path.abspath(self.config.weights)), "result.json")
        try:
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
        except (OSError, ValueError):
            return None
        return {k: result.get(k) for k in ("test_accuracy", "test_images", "epochs", "train_seconds", "vit", "train",
                                           "machine")}

    def describe(self) -> dict:
        d = super().describe()
        d["config"]["weights"] = ENCODER_FILE  # inside the bundle
        return d

    def save_files(self, folder: str) -> list[str]:
        self.model.save(os.path.join(folder, ENCODER_FILE))
        return [ENCODER_FILE]
