"""What every decoder kind shares: its config, the registry by kind, the Keras and NumPy base classes, the
teacher-forcing helpers and the masked loss, and the ``.keras`` reader (h5py, no Keras import).

A decoder kind is two classes: a ``KerasDecoder`` (the Keras training model, what is trained and saved) and a
``NumpyDecoder`` (the same graph in NumPy, what decodes: ``initial_state(features)`` and ``step(tokens, state)
-> (log_probs, state)``, which every decoding strategy drives). ``register_decoder`` files the Keras class
under its ``kind``; ``DecoderConfig.kind`` names it in every manifest. The kinds: ``merge`` (``merge.py``),
``attention`` (``attention.py``); ``ensemble.py`` decodes several members as one.

Padding is handled by the loss (``masked_loss`` with explicit sample weights), because Keras ``Add`` drops the
Embedding mask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import os
import re
import zipfile

import numpy as np

from ..config import Config

DECODERS: dict[str, type] = {}  # kind -> its KerasDecoder class (register_decoder); filled by the package's modules


def register_decoder(cls: type) -> type:
    """Class decorator: file a ``KerasDecoder`` subclass under its ``kind``."""
    if cls.kind in DECODERS and DECODERS[cls.kind] is not cls:
        raise ValueError(f"decoder kind {cls.kind!r} is registered twice")
    DECODERS[cls.kind] = cls
    return cls


@dataclasses.dataclass(frozen=True)
class DecoderConfig(Config):
    """Kind and sizes of a decoder. Saved in every bundle's manifest."""

    kind: str = "merge"  # 'merge' (pooled features, merged after the LSTM) or 'attention' (over the grid cells)
    vocab_size: int = 0  # number of ids, reserved tokens included (set from the vocabulary when training)
    feature_dim: int = 0  # D: size of the encoder's feature vector (set from the encoder when training)
    embed_dim: int = 256  # word embedding size
    units: int = 256  # LSTM units == image projection size == merge size (U)
    feature_dropout: float = 0.5  # dropout on the image features before the projection
    embed_dropout: float = 0.5  # dropout on word embeddings before the LSTM
    max_length: int = 32  # most tokens in a caption, <start> and <end> included
    # attention kind only:
    grid_cells: int = 0  # N: cells of the encoder's grid (set from the encoder when training)
    context_dim: int = 512  # E: each cell projected to this size (the context vector's size)
    attention_dim: int = 256  # A: size of the attention's hidden layer
    attention_penalty: float = 1.0  # weight of the doubly stochastic penalty (each cell attended ~once a caption)
    # merge kind only: object words read beside the features (caption_core.object_words)
    object_words: tuple = ()  # W tags ('coco:<category>', 'imagenet:<word>'): the input is the features then a (W,)
    # multi-hot of the tags the detector and the classifier give the photo; () reads none
    word_detector: float = 0.5  # a detection at least this confident puts its COCO category in
    word_classifier: float = 0.4  # an ImageNet word at least this probable (its classes summed) puts itself in

    def __post_init__(self):
        decoder_class(self.kind)  # raises on an unknown kind
        if self.object_words and self.kind != "merge":
            raise ValueError(f"object words are read by the merge decoder only, not by kind {self.kind!r}")

    @property
    def input_dim(self) -> int:
        """Size of what the decoder reads per photo: the encoder's features, then its object words."""
        return self.feature_dim + len(self.object_words)


def decoder_class(kind: str) -> type:
    """The Keras-side class of decoder ``kind`` (``build``, ``load``, ``inference_class``)."""
    try:
        return DECODERS[kind]
    except KeyError:
        raise ValueError(f"unknown decoder kind {kind!r}; valid: {sorted(DECODERS)}") from None


def make_decoder(config: DecoderConfig, training_model=None):
    """A new trainable decoder of ``config.kind`` (random weights, or those of ``training_model``)."""
    return decoder_class(config.kind)(config, training_model)


def load_decoder(path: str, config: DecoderConfig):
    """A trainable decoder of ``config.kind`` from its ``.keras`` file (Keras, safe mode)."""
    return decoder_class(config.kind).load(path, config)


def load_inference(path: str, config: DecoderConfig):
    """What decodes: the NumPy step of ``config.kind`` read from a ``.keras`` file with h5py (no Keras import)."""
    return decoder_class(config.kind).inference_class.load(path, config)


def masked_loss(targets, logits, sample_weight=None):
    """Mean sparse cross-entropy over non-pad targets. targets (B, T) int, logits (B, T, V)."""
    import keras
    from keras import ops

    per_token = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)  # (B, T)
    mask = ops.cast(ops.not_equal(targets, 0), per_token.dtype)  # (B, T)
    if sample_weight is not None:
        mask = mask * ops.cast(sample_weight, per_token.dtype)
    return ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0)


def teacher_forcing_pairs(token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padded captions (B, T) -> inputs (B, T-1) and targets (B, T-1), shifted by one."""
    token_ids = np.asarray(token_ids)
    return token_ids[:, :-1], token_ids[:, 1:]


def pad_captions(captions: list[list[int]], max_length: int) -> np.ndarray:
    """Id lists -> right-padded int32 array (B, L), cut to ``max_length`` (keeping <end> last)."""
    length = min(max_length, max(len(c) for c in captions))
    out = np.zeros((len(captions), length), dtype=np.int32)
    for i, ids in enumerate(captions):
        if len(ids) > length:
            ids = list(ids[: length - 1]) + [ids[-1]]
        out[i, : len(ids)] = ids
    return out


class NumpyDecoder:
    """What every NumPy inference class shares (the merge model's ``MergeInference``, the attention model's
    ``AttentionInference``): read from a ``.keras`` file with h5py, its weights by layer, the BLAS threads for a
    batch, teacher-forced log-probabilities through its own ``initial_state`` and ``step``."""

    _layer_weights: dict
    WHAT = "decoder"  # in error messages

    def _keep(self, config: "DecoderConfig", layer_weights: dict[str, list[np.ndarray]]) -> None:
        """Keep the config and the weights, refusing weights that lack one of the layers in ``LAYERS``."""
        self.config, self._layer_weights = config, layer_weights
        missing = [n for n in self.LAYERS if n not in layer_weights]
        if missing:
            raise ValueError(f"{self.WHAT} weights lack the layers {missing}")

    def _check_shapes(self, expected: dict[str, tuple], got: dict[str, tuple]) -> None:
        """ValueError naming every weight whose shape is not the one the config implies."""
        wrong = {k: (tuple(got[k]), v) for k, v in expected.items() if tuple(got[k]) != v}
        if wrong:
            raise ValueError(f"{self.WHAT} weights do not match the decoder config: " + ", ".join(
                f"{k} is {g}, config says {e}" for k, (g, e) in wrong.items()))

    def layer_weights(self) -> dict[str, list[np.ndarray]]:
        """Layer name -> weight arrays, as loaded (e.g. to copy them into another model)."""
        return self._layer_weights

    @classmethod
    def load(cls, path: str, config: DecoderConfig) -> "NumpyDecoder":
        """From a ``.keras`` file (``KerasDecoder.save``), read with h5py: nothing is unpickled, Keras is not imported."""
        return cls(config, read_keras_weights(path))

    @staticmethod
    def blas_threads(n_images: int):
        """Context for decoding ``n_images`` at once: one BLAS thread below 100 images (500 beam rows).
        A beam step is a few (B, 256) x (256, V) matmuls; OpenBLAS's threads cost more than they save there,
        and while the other core is busy (another request, the encoder) waking them costs milliseconds per
        matmul (benchmarks/RESULTS.md). Large batches keep every thread."""
        return contextlib.nullcontext() if n_images >= 100 else _one_blas_thread()

    def token_log_probs(self, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        return teacher_forced_log_probs(self, features, token_ids)


def teacher_forced_log_probs(decoder, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """Teacher-forced log-probability of each next token under ``decoder`` (its initial_state and step).

    features (N, D), token_ids (N, T) starting with <start> -> (N, T-1): log p(token[t+1] | ...).
    """
    inputs, targets = teacher_forcing_pairs(np.asarray(token_ids, dtype=np.int64))
    state = decoder.initial_state(features)
    rows = np.arange(len(inputs))
    out = np.empty(targets.shape, np.float32)  # (N, T-1)
    for t in range(inputs.shape[1]):
        log_probs, state = decoder.step(inputs[:, t], state)  # (N, V)
        out[:, t] = log_probs[rows, targets[:, t]]
    return out


class KerasDecoder:
    """A Keras model built by the kind's ``build`` (what is trained and saved), and its NumPy inference copy
    (what decodes: ``step``, ``initial_state``, ``token_log_probs``), exported on first use. The Keras weights
    are the source of truth: ``refresh`` re-exports them after training changes them."""

    kind: str
    inference_class: type
    build = None  # config -> Keras model

    def __init__(self, config: DecoderConfig, training_model=None):
        self.config = config
        self.training_model = type(self).build(config)
        if training_model is not None:
            self.training_model.set_weights(training_model.get_weights())
        self._inference = None

    def layer_weights(self) -> dict[str, list[np.ndarray]]:
        """Layer name -> weight arrays, for the layers inference reads."""
        return {name: [np.asarray(w) for w in self.training_model.get_layer(name).get_weights()]
                for name in self.inference_class.LAYERS}

    def refresh(self) -> None:
        """Re-export the inference weights from the Keras layers; call after training changes them."""
        self._inference = None

    @property
    def inference(self):
        if self._inference is None:
            self._inference = self.inference_class(self.config, self.layer_weights())
        return self._inference

    def save(self, path: str, storage: str = "float32") -> None:
        """The Keras model as ``.keras``; ``storage='float16'``: its float32 weights stored at half precision
        (``store_half``: what bundles ship; decoding casts them back to float32)."""
        self.training_model.save(path)
        if storage == "float16":
            store_half(path)
        elif storage != "float32":
            raise ValueError(f"unknown weight storage {storage!r}; valid: ['float16', 'float32']")

    @classmethod
    def load(cls, path: str, config: DecoderConfig):
        import keras

        trained = keras.saving.load_model(path, compile=False, safe_mode=True)
        return cls(config, training_model=trained)

    # decoding goes through the NumPy copy
    def blas_threads(self, n_images: int):
        return self.inference_class.blas_threads(n_images)

    @property
    def state_arrays(self) -> int:
        return self.inference_class.state_arrays

    def initial_state(self, features: np.ndarray):
        return self.inference.initial_state(features)

    def step(self, tokens: np.ndarray, state: tuple):
        return self.inference.step(tokens, state)

    def token_log_probs(self, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        return self.inference.token_log_probs(features, token_ids)


def _snake_case(name: str) -> str:
    """Keras' own name for a layer class in a saved file (``keras.src.utils.naming.to_snake_case``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def read_keras_weights(path: str) -> dict[str, list[np.ndarray]]:
    """Layer name -> weight arrays of a functional model saved as ``.keras`` (Keras 3: a zip of
    ``config.json`` and ``model.weights.h5``), read with h5py. Keras stores each layer under
    ``layers/<class in snake case>[_<n>]``, numbered in the order of the model's layers; the config
    gives that order and the names."""
    import h5py

    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            weights = z.read("model.weights.h5")
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"'{path}' is not a Keras 3 .keras file: {exc}") from None
    out: dict[str, list[np.ndarray]] = {}
    used: dict[str, int] = {}
    with h5py.File(io.BytesIO(weights), "r") as h5:
        layers = h5.get("layers")
        for layer in config.get("config", {}).get("layers", []):
            key = _snake_case(layer["class_name"])
            used[key] = used.get(key, -1) + 1
            group = layers.get(key if used[key] == 0 else f"{key}_{used[key]}") if layers is not None else None
            if group is None:
                continue
            arrays: list[tuple[tuple, np.ndarray]] = []
            group.visititems(lambda name, obj: arrays.append((_var_key(name), obj[()]))
                             if isinstance(obj, h5py.Dataset) else None)
            out[layer["config"]["name"]] = [a for _, a in sorted(arrays, key=lambda x: x[0])]
    return out


def store_half(path: str, out: str | None = None) -> str:
    """Rewrite a ``.keras`` file (``out``: elsewhere) with every float32 weight stored as float16: half the bytes; the
    NumPy decoders and Keras' loader cast them back to float32, so only storage changes (what that costs in caption
    quality is measured per bundle: docs/weights.md)."""
    import h5py

    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    if "model.weights.h5" not in members:
        raise ValueError(f"'{path}' is not a Keras 3 .keras file (no model.weights.h5)")
    buf = io.BytesIO()
    with h5py.File(io.BytesIO(members["model.weights.h5"]), "r") as src, h5py.File(buf, "w", track_order=True) as dst:
        dst.attrs.update(dict(src.attrs))

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                dst.require_group(name).attrs.update(dict(obj.attrs))
                return
            data = obj[()]
            if data.dtype == np.float32:
                data = data.astype(np.float16)
            dst.create_dataset(name, data=data, track_times=False).attrs.update(dict(obj.attrs))

        src.visititems(copy)
    members["model.weights.h5"] = buf.getvalue()
    target = out or path
    tmp = f"{target}.{os.getpid()}.tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    os.replace(tmp, target)
    return target


def weights_storage(path: str) -> str:
    """'float16' or 'float32': how a ``.keras`` file stores its floating-point weights."""
    import h5py

    with zipfile.ZipFile(path) as z:
        data = z.read("model.weights.h5")
    kinds: set = set()
    with h5py.File(io.BytesIO(data), "r") as h5:
        h5.visititems(lambda n, o: kinds.add(o.dtype) if isinstance(o, h5py.Dataset) and o.dtype.kind == "f" else None)
    return "float16" if kinds == {np.dtype(np.float16)} else "float32"


def _var_key(name: str) -> tuple:
    """'cell/vars/10' -> ('cell', 'vars', 10): variables in their saved order."""
    return tuple(int(p) if p.isdigit() else p for p in name.split("/"))


@functools.lru_cache(maxsize=1)
def _blas_libraries() -> tuple:
    """The BLAS libraries loaded in this process (threadpoolctl's controllers), found once."""
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


@contextlib.contextmanager
def _one_blas_thread():
    libs = _blas_libraries()
    before = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, before):
            lib.set_num_threads(n)


class Dense:
    """A weight matrix (K, N) for decoding's matmuls, multiplied the fastest way found for the rows at hand.

    A beam step multiplies a photo's few beam rows (B = 5) by matrices of 256 x 1,000-2,500, and OpenBLAS's gemm
    packs the whole matrix at every such call (for (5, 256) x (256, 2533) it took 1.4x the time of five
    matrix-vector products on an AVX2 machine, and MKL's gemm no less). Where NumPy's OpenBLAS has its small-matrix
    kernels (its AVX-512 cores: ``small_kernels``), a product of at most ``SMALL_KERNEL_MACS`` multiply-adds runs
    without packing: the rows go through column blocks that size, each block's weights read once for all rows (0.55-
    0.65x the time of the matrix-vector products on an AVX-512 machine, from 2 to 20 rows). Elsewhere, up to
    ``SMALL`` rows run one matrix-vector product per row on the transposed copy, a block of ``BLOCK`` bytes of it at
    a time (each block is then read from the core's cache by every row: 13% less again), the rows of a block in one
    stacked ``matmul`` call (9% less than a call per row). One row, or many: one gemm. The sums are the same dot
    products, accumulated in another order: float rounding apart, the same numbers."""

    SMALL = 7  # without small kernels, up to this many rows: matrix-vector products (a photo's beams); more: one
    # gemm (benchmarks/attention_speed.json: at 8 rows the gemm was as fast, at 10 faster)
    BLOCK = 1 << 19  # bytes of the transposed matrix per block: 512 KiB, a core's L2 cache here
    SMALL_KERNEL_ROWS = 20  # with small kernels, up to this many rows in column blocks (at 40 one gemm was as fast)
    SMALL_KERNEL_MACS = 100 ** 3  # the largest product OpenBLAS gives its small-matrix kernels (M * N * K)

    def __init__(self, w: np.ndarray, small_kernels: bool | None = None):
        self.w = np.ascontiguousarray(w, np.float32)  # (K, N)
        self.small_kernels = has_small_gemm_kernels() if small_kernels is None else small_kernels
        k, n = self.w.shape
        self.t, self.blocks = None, []  # the matrix-vector products' transposed copy and its blocks, where used
        if not self.small_kernels:
            self.t = np.ascontiguousarray(self.w.T)  # (N, K)
            step = max(16, self.BLOCK // (4 * k))
            self.blocks = [(a, min(a + step, n)) for a in range(0, n, step)]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (B, K) -> (B, N) float32."""
        rows = len(x)
        if rows == 1 or rows > (self.SMALL_KERNEL_ROWS if self.small_kernels else self.SMALL):
            return x @ self.w
        k, n = self.w.shape
        out = np.empty((rows, n), np.float32)
        if self.small_kernels:
            cols = max(16, self.SMALL_KERNEL_MACS // (rows * k) // 16 * 16)  # (rows, k) x (k, cols): one small kernel
            for a in range(0, n, cols):
                np.matmul(x, self.w[:, a:a + cols], out=out[:, a:a + cols])  # (B, cols)
            return out
        vectors = x[:, :, None]  # (B, K, 1): a stack of vectors, one matrix-vector product each (in NumPy's C loop)
        for a, b in self.blocks:
            out[:, a:b] = np.matmul(self.t[None, a:b], vectors)[..., 0]  # (B, n)
        return out


# OpenBLAS cores with small-matrix sgemm kernels (kernel/x86_64: SkylakeX and its successors, AVX-512), as
# threadpoolctl names them
SMALL_KERNEL_CORES = ("skylakex", "cooperlake", "sapphirerapids")


@functools.lru_cache(maxsize=1)
def has_small_gemm_kernels() -> bool:
    """True where NumPy's BLAS is an OpenBLAS whose core has small-matrix sgemm kernels (``Dense``). Set
    CAPTION_SMALL_GEMM=0 or 1 to decide instead (to compare the two paths on one machine)."""
    forced = os.environ.get("CAPTION_SMALL_GEMM")
    if forced in ("0", "1"):
        return forced == "1"
    return any(getattr(lib, "internal_api", "") == "openblas"
               and str(getattr(lib, "architecture", "")).lower() in SMALL_KERNEL_CORES for lib in _blas_libraries())


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function (what Keras' LSTM uses for its gates), without overflow warnings."""
    return 0.5 * (np.tanh(0.5 * x) + 1.0)
