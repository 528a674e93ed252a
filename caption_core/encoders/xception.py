"""Xception (Keras, ImageNet weights), global average pooled: 299x299 -> 2048."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..hub import OfflineError, host_reachable
from .base import ConfigMixin, Encoder

KERAS_WEIGHTS_FILE = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_WEIGHTS_HOST = "storage.googleapis.com"


@dataclasses.dataclass(frozen=True)
class XceptionConfig(ConfigMixin):
    weights: str | None = "imagenet"  # 'imagenet' (Keras cache or download), a local weights file, or None (random)
    batch_size: int = 16  # images per forward pass


def keras_cache_file(name: str) -> str:
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", name)


class XceptionEncoder(Encoder):
    name = "xception"
    config_class = XceptionConfig
    input_size = 299
    output_dim = 2048

    def __init__(self, config: XceptionConfig | None = None):
        super().__init__(config)
        import keras
        import tensorflow as tf

        weights = self.config.weights
        if weights == "imagenet" and not os.path.exists(keras_cache_file(KERAS_WEIGHTS_FILE)):
            if not host_reachable(KERAS_WEIGHTS_HOST):
                raise OfflineError(
                    "encoder 'xception' needs ImageNet weights: no internet and none cached "
                    f"({keras_cache_file(KERAS_WEIGHTS_FILE)}); pass weights=PATH (--weights PATH) or run online once"
                )
        elif weights not in (None, "imagenet", "random") and not os.path.isfile(weights):
            raise FileNotFoundError(f"encoder 'xception': weights file '{weights}' does not exist")
        self.model = keras.applications.Xception(
            include_top=False, pooling="avg", input_shape=(299, 299, 3),
            weights=None if weights == "random" else weights)
        self._forward = tf.function(lambda x: self.model(x, training=False), jit_compile=False, reduce_retracing=True)

    def _encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32) / 127.5 - 1.0  # (N, 299, 299, 3) in [-1, 1]
        return np.asarray(self._forward(x))  # (N, 2048)
