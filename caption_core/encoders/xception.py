"""Xception (Keras, ImageNet weights), global average pooled: 299x299 -> 2048.

Inference runs a frozen graph (weights as constants, so TensorFlow's grappler folds the batch norms
into the convolutions and fuses the ReLUs for oneDNN: about 10% faster), in batches, and in
bfloat16 (Keras ``mixed_bfloat16``: float32 weights, bf16 arithmetic) where the CPU multiplies bf16
natively (``precision='auto'``). Speeds: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..hub import OfflineError, host_reachable
from ..config import Config
from .base import Encoder, resolve_precision

KERAS_WEIGHTS_FILE = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_WEIGHTS_HOST = "storage.googleapis.com"


@dataclasses.dataclass(frozen=True)
class XceptionConfig(Config):
    weights: str | None = "imagenet"  # 'imagenet' (Keras cache or download), a local weights file, or None (random)
    batch_size: int = 16  # images per forward pass
    precision: str = "auto"  # 'float32', 'bfloat16' (mixed_bfloat16) or 'auto': bfloat16 where the CPU has it natively

    def __post_init__(self):
        resolve_precision(self.precision)  # raises on an unknown name


def keras_cache_file(name: str) -> str:
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", name)


class XceptionEncoder(Encoder):
    revision = 2  # 2: frozen-graph inference with batch norms folded; bfloat16 where native
    name = "xception"
    config_class = XceptionConfig
    licence = "MIT (Keras Applications ImageNet weights)"
    input_size = 299
    output_dim = 2048

    def __init__(self, config: XceptionConfig | None = None):
        super().__init__(config)
        import keras

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
        if self.precision == "bfloat16":
            self.model = with_dtype_policy(self.model, "mixed_bfloat16")
        self._forward = frozen_forward(self.model)

    def _encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32) / 127.5 - 1.0  # (N, 299, 299, 3) in [-1, 1]
        return np.asarray(self._forward(x), dtype=np.float32)  # (N, 2048)


def with_dtype_policy(model, policy: str):
    """The same functional model, every layer rebuilt under ``policy``, with the same weights."""
    import keras

    clone = keras.models.clone_model(
        model, clone_function=lambda layer: layer.__class__.from_config({**layer.get_config(), "dtype": policy}))
    clone.set_weights(model.get_weights())
    return clone


def frozen_forward(model):
    """x (N, H, W, 3) float32 -> (N, D): the inference graph with its variables folded into constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    return lambda x: frozen(tf.constant(x))[0]
